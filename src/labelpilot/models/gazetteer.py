"""Annotated strings proposed again where they recur: a gazetteer built from the annotations.

Built from the training examples: every annotated span text with its label, counted per example.
An entry is left out when it is

* too short: one CJK character, or a Latin/digit string of fewer than 2 characters, or digits only;
* conflicting: annotated with more than one label, the most frequent label having < 80 % of the counts;
* too common: found (at word boundaries) in the training texts more than twice as often unannotated as
  annotated (``中国`` labelled once but mentioned in 30 texts).

Matching (:meth:`Gazetteer.find`) is longest-first and left to right, never overlapping, and never
inside a word: a Latin match needs non-alphanumeric neighbours; a CJK match must start and end at jieba
word boundaries (so ``张三`` is not found inside ``张三丰``, nor ``北京`` inside ``北京市``... unless jieba
cuts there). ``exclude`` leaves out one example's own annotations: the CRF's in-gazetteer features for a
training sentence come from the *other* sentences (otherwise the feature would be on for exactly the
gold spans and the CRF would learn to trust it blindly).

Also :meth:`Gazetteer.token_features`: ``gz=B-<label>`` / ``gz=I-<label>`` (and ``gz=O``) per token.
Written here (not a library: pyahocorasick would do the scanning, but texts are short and the entries
few, so a dict keyed by first character is fast enough and keeps the boundary rules in one place).
"""

from __future__ import annotations

import functools
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from labelpilot.data.bio import Offsets, is_cjk, jieba_tokenizer
from labelpilot.data.types import Example

MAX_LEN = 40
CONFLICT_SHARE = 0.8
COMMON_RATIO = 2.0


def _usable(s: str) -> bool:
    if not s.strip() or len(s) > MAX_LEN or s.isdigit():
        return False
    if any(is_cjk(c) for c in s):
        return len(s) >= 2
    return sum(c.isalnum() for c in s) >= 2


@functools.lru_cache(maxsize=4096)  # the same texts are matched at every retrain
def _jieba_bounds(text: str) -> frozenset[int]:
    out = {0, len(text)}
    for _w, s, e in jieba_tokenizer().tokenize(text):
        out.add(s)
        out.add(e)
    return frozenset(out)


def _edges_ok(text: str, s: int, e: int, bounds: frozenset[int] | None) -> bool:
    first, last = text[s], text[e - 1]
    if first.isalnum() and not is_cjk(first) and s > 0 and text[s - 1].isalnum() and not is_cjk(text[s - 1]):
        return False
    if last.isalnum() and not is_cjk(last) and e < len(text) and text[e].isalnum() and not is_cjk(text[e]):
        return False
    if bounds is not None:
        if is_cjk(first) and s not in bounds:
            return False
        if is_cjk(last) and e not in bounds:
            return False
    return True


class Gazetteer:
    """String -> label, from annotated spans (see the module doc)."""

    def __init__(self, entries: dict[str, dict[str, int]] | None = None) -> None:
        #: string -> label -> number of examples where it was annotated with that label
        self.entries: dict[str, dict[str, int]] = entries or {}
        self._index()

    def _index(self) -> None:
        self.label_of: dict[str, str] = {}
        self._lengths: dict[str, list[int]] = defaultdict(list)
        for s, labs in self.entries.items():
            lab, n = max(labs.items(), key=lambda kv: (kv[1], kv[0]))
            if n >= CONFLICT_SHARE * sum(labs.values()):
                self.label_of[s] = lab
                self._lengths[s[0]].append(len(s))
        for lens in self._lengths.values():
            lens.sort(reverse=True)
            lens[:] = list(dict.fromkeys(lens))

    def __len__(self) -> int:
        return len(self.label_of)

    @classmethod
    def from_examples(cls, examples: Iterable[Example], labels: Iterable[str] | None = None) -> Gazetteer:
        keys = None if labels is None else set(labels)
        entries: dict[str, Counter[str]] = defaultdict(Counter)
        texts: list[str] = []
        for ex in examples:
            text = ex.text if isinstance(ex.text, str) else ""
            if ex.target is None or not text:
                continue
            texts.append(text)
            seen: set[tuple[str, str]] = set()
            for sp in ex.target.spans:
                if not 0 <= sp.start < sp.end <= len(text) or (keys is not None and sp.label not in keys):
                    continue
                s = text[sp.start : sp.end].strip()
                if _usable(s) and (s, sp.label) not in seen:
                    seen.add((s, sp.label))
                    entries[s][sp.label] += 1
        gaz = cls({s: dict(c) for s, c in entries.items()})
        gaz._drop_common(texts)
        return gaz

    def _drop_common(self, texts: Sequence[str]) -> None:
        """Leave out strings mentioned far more often than annotated (see the module doc)."""
        if not self.label_of:
            return
        found: Counter[str] = Counter()
        for text in texts:
            for s, e, _ in self.find(text):
                found[text[s:e]] += 1
            # a shorter entry hidden by a longer match is not counted: it was not "unannotated" there
        drop = [s for s, n in found.items() if n > (1 + COMMON_RATIO) * sum(self.entries[s].values())]
        for s in drop:
            del self.entries[s]
        if drop:
            self._index()

    def find(self, text: str, exclude: Iterable[tuple[str, str]] = ()) -> list[tuple[int, int, str]]:
        """``(start, end, label)`` matches, longest first, non-overlapping, at word boundaries.
        ``exclude``: ``(string, label)`` pairs whose count is lowered by one (one example's own spans)."""
        if not self.label_of or not text:
            return []
        skip = set(exclude)
        bounds: frozenset[int] | None = None
        out: list[tuple[int, int, str]] = []
        i, n = 0, len(text)
        while i < n:
            hit = None
            for ln in self._lengths.get(text[i], ()):
                cand = text[i : i + ln]
                lab = self.label_of.get(cand) if len(cand) == ln else None
                if lab is None or ((cand, lab) in skip and self.entries[cand][lab] <= 1):
                    continue
                if bounds is None and any(is_cjk(c) for c in text):
                    bounds = _jieba_bounds(text)
                if _edges_ok(text, i, i + ln, bounds):
                    hit = (i, i + ln, lab)
                    break
            if hit:
                out.append(hit)
                i = hit[1]
            else:
                i += 1
        return out

    def token_features(self, text: str, offsets: Offsets, exclude: Iterable[tuple[str, str]] = ()) -> list[str]:
        """One CRF attribute per token: ``gz=B-<label>``, ``gz=I-<label>`` or ``gz=O``."""
        feats = ["gz=O"] * len(offsets)
        matches = self.find(text, exclude)
        if not matches:
            return feats
        k = 0
        for s, e, lab in matches:
            while k < len(offsets) and offsets[k][1] <= s:
                k += 1
            j = k
            while j < len(offsets) and offsets[j][0] < e:
                feats[j] = ("gz=B-" if j == k else "gz=I-") + lab
                j += 1
        return feats

    def to_dict(self) -> dict[str, Any]:
        return {"entries": self.entries}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Gazetteer:
        raw = (data or {}).get("entries") or {}
        return cls({str(s): {str(k): int(v) for k, v in labs.items()} for s, labs in raw.items()})
