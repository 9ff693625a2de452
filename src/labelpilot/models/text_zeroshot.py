"""Text classification from label names alone (before any annotation), for ``text-linear``.

Each label becomes a prototype: the mean of the encoder's vectors of its name put into a few templates
("This text is about {}." / "这是一条关于{}的内容。", the name alone), plus its description (the
``<Choice hint="...">`` attribute or the ``label_descriptions`` option) when given. A text's cosine
similarities to the prototypes, divided by a fixed temperature, go through a softmax. Single-label: the top
label. Multi-label: every label with probability > ``MULTI_MIN_PROB`` (0.5), often none -- a proposed
label saves the annotator a click when right and costs one when wrong, so only a label more likely right
than wrong pays (the top-label-plus-0.2 rule tuned for micro-F1 cost more edits than it saved on GoEmotions
and BDCI); a control's ``model_score_threshold`` replaces the 0.5. The temperature was fitted by log-loss
on samples of TNEWS train and TREC train (SST-2 held out) (bench/RESULTS.md, *Text encoder*).

Labels that mean nothing get no pre-label at all (never a confident-looking guess): a control is ready
for zero-shot only when every label (or its hint) reads as a word -- not a single letter or digit, not an
id like ``label_1``/``c12``/``A3``, not ``xx`` --, the labels are not all upper-case codes of 2-4 letters
without hints (``ABBR/DESC/ENTY``, ``POS/NEG``), and the label prototypes are not all near-identical.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from labelpilot.data.bio import has_cjk
from labelpilot.data.types import Example, Prediction
from labelpilot.encoders import TextEncoder
from labelpilot.schema.types import TAXONOMY_SEP, ControlSpec, TaskKind, placeholder_name

#: softmax temperature on cosine similarities (fitted by log-loss, see the module doc)
TEMPERATURE = 0.06
#: multi-label: labels with a probability above this are proposed (the control's score_threshold wins)
MULTI_MIN_PROB = 0.5
#: prototypes whose mean pairwise cosine is above this are "all the same": no zero-shot
MAX_MEAN_COSINE = 0.85

EN_TEMPLATES = ("{}", "This text is about {}.", "A text about {}.")
ZH_TEMPLATES = ("{}", "这是一条关于{}的内容。", "关于{}")

_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")
_CODE = re.compile(r"^[A-Z]{2,4}$")
_SHORT_WORDS = {"ok", "no", "go", "up", "on", "in", "tv", "ai", "uk", "us", "eu", "pc", "hr", "it", "ad", "me", "we"}


def clean_names(values: Sequence[str]) -> list[str]:
    """Readable forms of label values: ``news_sports`` -> ``sports`` (a prefix every label shares is
    dropped), ``NegativeReview`` -> ``negative review``."""
    words = [_CAMEL.sub(" ", v).replace("_", " ").replace("-", " ").split() for v in values]
    if len(words) > 1 and all(len(w) > 1 for w in words):
        first = {w[0].lower() for w in words}
        if len(first) == 1:
            words = [w[1:] for w in words]
    return [" ".join(w).strip() or v for w, v in zip(words, values, strict=True)]


def meaningful(name: str) -> bool:
    """Does a label name say something an encoder can match a text against?"""
    s = name.strip()
    if placeholder_name(s):
        return False
    if has_cjk(s):
        return True
    letters = re.sub(r"[^A-Za-z]", "", s)
    if len(letters) <= 2:
        return letters.lower() in _SHORT_WORDS and len(letters) == len(s)
    return len(set(letters.lower())) > 1  # "xxx", "aaaa"


@dataclass(frozen=True)
class LabelText:
    key: str
    name: str  # readable name
    hint: str | None


def label_texts(control: ControlSpec, descriptions: Mapping[str, str] | None = None) -> list[LabelText]:
    """The labels zero-shot chooses among, with their readable names and descriptions. For a taxonomy:
    the leaves, named by their path ("Sports / Football")."""
    labels = list(control.labels)
    if control.kind is TaskKind.TEXT_TAXONOMY:
        keys = [lab.key for lab in labels]
        labels = [lab for lab in labels if not any(k.startswith(lab.key + TAXONOMY_SEP) for k in keys)]
    parts = [lab.path if lab.path else (lab.value,) for lab in labels]
    leaf = clean_names([p[-1] for p in parts])
    out = []
    for lab, p, name in zip(labels, parts, leaf, strict=True):
        full = " / ".join([*clean_names(list(p[:-1])), name]) if len(p) > 1 else name
        hint = (descriptions or {}).get(lab.key) or lab.hint
        out.append(LabelText(lab.key, full, hint))
    return out


def _templates(name: str) -> tuple[str, ...]:
    return ZH_TEMPLATES if has_cjk(name) else EN_TEMPLATES


class ZeroShot:
    """Prototypes of one control's labels and the predictions made from them."""

    def __init__(self, control: ControlSpec, encoder: TextEncoder, descriptions: Mapping[str, str] | None = None):
        self.control = control
        self.encoder = encoder
        self.labels = label_texts(control, descriptions)
        self.reason = self._check()
        self.prototypes: np.ndarray | None = None
        self._proto_t: np.ndarray | None = None
        if self.reason is None:
            self.prototypes = self._prototypes()
            sims = self.prototypes @ self.prototypes.T
            k = sims.shape[0]
            mean_off = float((sims.sum() - np.trace(sims)) / max(k * (k - 1), 1))
            if mean_off > MAX_MEAN_COSINE:
                self.reason = f"the label names are all alike (mean cosine {mean_off:.2f})"
                self.prototypes = None

    @property
    def ready(self) -> bool:
        return self.prototypes is not None

    def _check(self) -> str | None:
        if len(self.labels) < 2 and not self.control.multiple:
            return "fewer than 2 labels"
        bad = [lab.key for lab in self.labels if not meaningful(lab.name) and not (lab.hint and meaningful(lab.hint))]
        if bad:
            return f"label names that say nothing about the text: {bad[:5]}"
        if all(_CODE.match(lab.name) and not lab.hint for lab in self.labels):
            # a scheme of codes (TREC's ABBR/DESC/ENTY…: 0.16 accuracy, below chance): ask for descriptions
            return "the label names are codes (add a hint=\"...\" description to each <Choice>)"
        return None

    def _prototypes(self) -> np.ndarray:
        rows = []
        for lab in self.labels:
            texts = [t.format(lab.name) for t in _templates(lab.name)]
            if lab.hint:
                texts += [t.format(lab.hint) for t in _templates(lab.hint)]
            v = self.encoder.encode(texts).mean(axis=0)
            rows.append(v / max(float(np.linalg.norm(v)), 1e-12))
        return np.asarray(rows, dtype=np.float32)

    def similarities(self, vectors: np.ndarray) -> np.ndarray:
        assert self.prototypes is not None
        if self._proto_t is None:  # (dim, k) C-contiguous: OpenBLAS is far slower with a transposed operand
            self._proto_t = np.ascontiguousarray(self.prototypes.T)
        return np.asarray(vectors, dtype=np.float32) @ self._proto_t

    def probabilities(self, vectors: np.ndarray) -> np.ndarray:
        """(n, k) calibrated probabilities from encoder vectors."""
        z = self.similarities(vectors).astype(np.float64) / TEMPERATURE
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def _threshold(self, key: str) -> float | None:
        """The control's ``model_score_threshold`` for a label (per label, then the control's), if set."""
        lab = self.control.label(key)
        if lab is not None and lab.score_threshold is not None:
            return float(lab.score_threshold)
        return float(self.control.score_threshold) if self.control.score_threshold is not None else None

    def predict(self, examples: Sequence[Example]) -> list[Prediction]:
        if not self.ready:
            return [Prediction() for _ in examples]  # nothing to say: an empty pre-label, not a guess
        probs = self.probabilities(self.encoder.encode([ex.text or "" for ex in examples]))
        keys = [lab.key for lab in self.labels]
        thr = [self._threshold(key) for key in keys]
        out = []
        for row in probs:
            order = np.argsort(-row, kind="stable")
            as_dict = dict(zip(keys, row.tolist(), strict=True))
            if self.control.multiple:
                picked = [int(j) for j in order
                          if (row[j] >= thr[j] if thr[j] is not None else row[j] > MULTI_MIN_PROB)]
                chosen = [keys[j] for j in picked]
                score = float(row[picked].mean()) if picked else float(1.0 - row[order[0]])
                unc = float(1.0 - (row[order[0]] - (row[order[1]] if row.shape[0] > 1 else 0.0)))
                out.append(Prediction(labels=tuple(chosen), probs=as_dict, score=score, uncertainty=unc))
            else:
                best = int(order[0])
                second = float(row[order[1]]) if row.shape[0] > 1 else 0.0
                out.append(Prediction(labels=(keys[best],), probs=as_dict, score=float(row[best]),
                                      uncertainty=float(1.0 - (row[best] - second))))
        return out
