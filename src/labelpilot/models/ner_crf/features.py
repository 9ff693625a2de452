"""ner-crf token features: character classes, word shapes, case statistics and :func:`featurize`.

What one token's feature list holds is described in "Tags and features" of :mod:`labelpilot.models.ner_crf`;
the feature strings are part of a trained model (CRFsuite stores them), so changing them retrains.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Sequence

from labelpilot.data.bio import (
    Offsets,
    is_cjk,
    jieba_tokenizer,
)
from labelpilot.models.ner_crf.lac import _lac_importable, lac_words

log = logging.getLogger("labelpilot.models.ner_crf")  # the family's logger, whichever submodule logs

# ---------------------------------------------------------------------------------- features


def _char_class(tok: str) -> str:
    ch = tok[0]
    if is_cjk(ch):
        return "H"
    if tok.isdigit():
        return "D"
    if tok.isalpha():
        return "A"
    if any(c.isalnum() for c in tok):
        return "N"
    cat = unicodedata.category(ch)
    return {"P": "P", "S": "S"}.get(cat[0], "O")


def _shape(tok: str) -> str:
    out = []
    for c in tok:
        if c.isupper():
            out.append("X")
        elif c.islower():
            out.append("x")
        elif c.isdigit():
            out.append("d")
        else:
            out.append(c)
    return "".join(out)


def _short_shape(shape: str) -> str:
    out: list[str] = []
    for c in shape:
        if not out or out[-1] != c:
            out.append(c)
    return "".join(out)


def _word_ranges(n_chars: int, words: Sequence[tuple[int, int, str]]) -> tuple[list[int], list[int], list[str]]:
    """Char index -> (start, end, tag) of the analyser word containing it."""
    ws = [0] * n_chars
    we = [0] * n_chars
    wt = [""] * n_chars
    for s, e, t in words:
        for i in range(s, min(e, n_chars)):
            ws[i], we[i], wt[i] = s, e, t
    return ws, we, wt


_SENT_END = frozenset({".", "!", "?", "。", "！", "？", '"', "“", "”", ":", "：", "-", "(", "（"})


def _is_headline(toks: Sequence[str], classes: Sequence[str]) -> bool:
    alpha = [t for t, c in zip(toks, classes, strict=True) if c == "A" and len(t) > 1]
    return len(alpha) >= 3 and sum(t.isupper() for t in alpha) >= 0.8 * len(alpha)


def case_statistics(docs: Sequence[tuple[str, Offsets]], min_count: int = 2) -> dict[str, int]:
    """How often (percent) each lower-cased Latin word is capitalised where case is informative:
    not sentence-initial, not in an all-caps headline. Counted on the training texts (no labels)."""
    total: dict[str, int] = {}
    cap: dict[str, int] = {}
    for text, offsets in docs:
        toks = [text[s:e] for s, e in offsets]
        classes = [_char_class(t) for t in toks]
        if _is_headline(toks, classes):
            continue
        for i, (tok, c) in enumerate(zip(toks, classes, strict=True)):
            if c not in ("A", "N") or i == 0 or toks[i - 1] in _SENT_END or not tok[:1].isalpha():
                continue
            low = tok.lower()
            total[low] = total.get(low, 0) + 1
            if tok[:1].isupper():
                cap[low] = cap.get(low, 0) + 1
    return {w: round(100 * cap.get(w, 0) / n) for w, n in total.items() if n >= min_count}


def _case_bucket(pct: int | None) -> str:
    if pct is None:
        return "U"
    return "C" if pct >= 95 else "c" if pct >= 50 else "l" if pct >= 5 else "L"


def _analyser_words(
    text: str, use_jieba: bool, use_lac: bool
) -> tuple[list[tuple[int, int, str]] | None, Sequence[tuple[int, int, str]] | None]:
    """jieba's and LAC's words of ``text`` as ``(start, end, word-or-tag)`` ranges, each None when not used (LAC
    also when it cannot load or fails on this text: tagging goes on without its features)."""
    jb: list[tuple[int, int, str]] | None = None
    if use_jieba:
        jb = [(s, e, w) for w, s, e in jieba_tokenizer().tokenize(text)]
    lac: Sequence[tuple[int, int, str]] | None = None
    if use_lac and _lac_importable():
        try:
            lac = lac_words(text)
        except Exception as exc:  # pragma: no cover - LAC failure must not break tagging
            log.warning("LAC failed (%s); tagging without LAC features", exc)
    return jb, lac


def _word_features(
    f: list[str],
    i: int,
    toks: Sequence[str],
    low: str,
    shapes: Sequence[str],
    ids: Sequence[str],
    cases: Sequence[str] | None,
    headline: bool,
) -> None:
    """Append the features of a non-CJK word token ``toks[i]`` to ``f``: shape, affixes, capitalisation, hyphen
    parts, case statistics (``cases`` None when not used or not a letter/digit token) and the headline flag.
    ``ids`` are the padded identities (token ``i`` at ``i + 2``)."""
    tok, n, k = toks[i], len(toks), i + 2
    sh = _shape(tok)
    f.append("lw=" + low)
    f.append("sh=" + shapes[i])
    f.append("lsh=" + sh[:10])
    for m in range(1, 5):
        if len(tok) > m:
            f.append(f"p{m}=" + low[:m])
            f.append(f"s{m}=" + low[-m:])
    if tok[:1].isupper():
        f.append("up0")
        if i == 0 or (toks[i - 1] in (".", "!", "?", "。", '"', "“")):
            f.append("up0@start")
    f.append("sh-1=" + (shapes[i - 1] if i else "<s>"))
    f.append("sh+1=" + (shapes[i + 1] if i + 1 < n else "</s>"))
    f.append("sh-1sh=" + (shapes[i - 1] if i else "<s>") + "|" + shapes[i])
    f.append("shsh+1=" + shapes[i] + "|" + (shapes[i + 1] if i + 1 < n else "</s>"))
    f.append("sh-2=" + (shapes[i - 2] if i > 1 else "<s>"))
    f.append("sh+2=" + (shapes[i + 2] if i + 2 < n else "</s>"))
    f.append("w-1|sh=" + ids[k - 1] + "|" + shapes[i])
    f.append("sh|w+1=" + shapes[i] + "|" + ids[k + 1])
    f.append("s3-1=" + ids[k - 1][-3:])
    f.append("s3+1=" + ids[k + 1][-3:])
    if "-" in tok:
        parts = low.split("-")
        f.append("hp0=" + parts[0])
        f.append("hp1=" + parts[-1])
    if cases is not None:
        f.append("cr=" + cases[i])
        f.append("cr|up=" + cases[i] + str(tok[:1].isupper()))
        f.append("cr-1cr+1=" + (cases[i - 1] if i else "^") + (cases[i + 1] if i + 1 < n else "$"))
    if headline:
        f.append("headline")


def featurize(
    text: str,
    offsets: Offsets,
    *,
    use_jieba: bool = True,
    use_lac: bool = False,
    case_stats: dict[str, int] | None = None,
    extra: Sequence[str] | None = None,
) -> list[list[str]]:
    """CRF attribute lists, one per token (see the module doc); ``extra``: one more attribute per token.

    Longer than most functions here: one pass over the tokens that lists every feature in order (the feature
    strings are a trained model's input format, so they are easier to check side by side than spread out);
    non-CJK word features are :func:`_word_features`, the analysers' words :func:`_analyser_words`."""
    n = len(offsets)
    toks = [text[s:e] for s, e in offsets]
    has_cjk = any(is_cjk(t[0]) for t in toks)
    classes = [_char_class(t) for t in toks]
    idents = [t.lower() if c != "H" else t for t, c in zip(toks, classes, strict=True)]
    shapes = [_short_shape(_shape(t)) if c != "H" else "H" for t, c in zip(toks, classes, strict=True)]
    headline = _is_headline(toks, classes)
    cases: list[str] | None = None
    if case_stats is not None:
        cases = [_case_bucket(case_stats.get(idents[i])) if c in ("A", "N") else "-" for i, c in enumerate(classes)]

    jb, lac = _analyser_words(text, use_jieba and has_cjk, use_lac and has_cjk)
    jws, jwe, _ = _word_ranges(len(text), jb) if jb else ([], [], [])
    lws, lwe, lwt = _word_ranges(len(text), lac) if lac else ([], [], [])

    pad = ["<s>", "<s>"]
    ids = pad + idents + ["</s>", "</s>"]
    cls = ["^", "^", *classes, "$", "$"]
    feats: list[list[str]] = []
    lts: list[str] = []
    for i, ((s, e), tok) in enumerate(zip(offsets, toks, strict=True)):
        k = i + 2
        c = classes[i]
        f = [
            "b",
            "w=" + tok,
            "c=" + c,
            "w-1=" + ids[k - 1],
            "w+1=" + ids[k + 1],
            "w-2=" + ids[k - 2],
            "w+2=" + ids[k + 2],
            "w-1w=" + ids[k - 1] + "|" + ids[k],
            "ww+1=" + ids[k] + "|" + ids[k + 1],
            "w-1w+1=" + ids[k - 1] + "|" + ids[k + 1],
            "c-1cc+1=" + cls[k - 1] + cls[k] + cls[k + 1],
            "c-2c-1=" + cls[k - 2] + cls[k - 1],
            "c+1c+2=" + cls[k + 1] + cls[k + 2],
        ]
        if c == "H":
            f.append("w-2w-1=" + ids[k - 2] + "|" + ids[k - 1])
            f.append("w+1w+2=" + ids[k + 1] + "|" + ids[k + 2])
            f.append("w-1ww+1=" + ids[k - 1] + "|" + ids[k] + "|" + ids[k + 1])
        else:
            _word_features(f, i, toks, idents[i], shapes, ids, cases if c in ("A", "N") else None, headline)
        if i == 0:
            f.append("BOS")
        elif offsets[i - 1][1] < s:
            f.append("sp<")
        if i == n - 1:
            f.append("EOS")
        elif e < offsets[i + 1][0]:
            f.append("sp>")
        if jb is not None and c == "H":
            a, b = jws[s], jwe[s]
            ln = b - a
            pos = "S" if ln == 1 else ("B" if s == a else ("E" if e >= b else "M"))
            f.append(f"jb={pos}{min(ln, 5)}")
            if ln > 1:
                f.append("jw=" + text[a:b])
        if lac is not None:
            a = lws[s]
            lt = f"{lwt[s]}-{'B' if s == a else 'I'}"
            lts.append(lt)
            f.append("lt=" + lt)
            f.append(f"lt={lt}|{c}")
            if lwe[s] - a > 1 and c == "H":
                f.append("law=" + text[a : lwe[s]])
        if extra is not None:
            f.append(extra[i])
            f.append(f"{extra[i]}|{c}")
        feats.append(f)
    # context of analyser tags (after all tokens have theirs)
    if lac is not None:
        for i, ff in enumerate(feats):
            ff.append("lt-1=" + (lts[i - 1] if i else "<s>"))
            ff.append("lt+1=" + (lts[i + 1] if i + 1 < n else "</s>"))
    return feats
