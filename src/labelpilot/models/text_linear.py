"""``text-linear``: fast linear text classification for Choices and Taxonomy on text.

Features
    Character n-grams (default 1-3) and word n-grams (default 1-2; jieba for text with CJK characters,
    a plain ``\\w+`` split otherwise) of ``Example.text``, plus the same over ``Example.text_pair`` in
    separate feature groups, plus the pair's delimiter-separated segments as whole tokens (TNEWS'
    ``keywords`` field is "a,b,c"). Every n-gram becomes a 64-bit key (a polynomial hash of its code
    points computed with numpy over the whole batch, mixed with a per-group salt; the group id is kept
    in the low 3 bits), so the vocabulary is a sorted ``uint64`` array, looked up through a table of
    bucket starts: no Python dict of strings, small memory, collisions negligible (about n^2 / 2^62).
    Values are sublinear TF-IDF, L2-normalised per feature group. Saved: vocabulary keys, idf, weights
    (float16 on disk) and the embedding projection, as ``.npz`` + JSON (no pickle).

Classifier
    Single-label: a one-vs-rest ``LinearSVC`` and a Complement Naive Bayes, mixed as
    ``softmax(a * svc / (1 + t * rowstd(svc)) + b * cnb / rowstd(cnb))`` with ``a, t, b`` fitted by
    log-loss on held-out data. Scaling the rows of scores to a common spread took TNEWS' held-out
    log-loss from 1.15 to 1.07 and accuracy +0.5 point compared with a plain linear mix; ``t`` stays
    near 0 when there are few classes. Prediction is two sparse-dense products and a softmax.
    Multi-label: one ``LinearSVC`` per label, Platt-scaled on held-out data (pooled, per label when there
    is enough data) and per-label thresholds on held-out data: by default the threshold (>= 0.5) with the
    most ``tp - fp`` (a proposed label saves a click when right and costs one when wrong), or the
    F1-optimal one with ``threshold_rule="f1"``.

Held-out data is ``val`` when given; otherwise k-fold out-of-fold scores for small sets, or a
stratified slice for large ones (then the model is refitted on everything if the time budget allows).

sklearn and jieba are imported lazily: a serving process that only predicts needs numpy and scipy
(jieba only for CJK text).
"""

from __future__ import annotations

import functools
import importlib
import re
import time
import unicodedata
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from labelpilot.data.bio import has_cjk, jieba_tokenizer
from labelpilot.data.types import Example, FitReport, Prediction
from labelpilot.encoders import EncoderUnavailable
from labelpilot.errors import InputError, NotFoundError, TrainingError
from labelpilot.models import encoder_hooks
from labelpilot.models.base import ModelBase, Progress, read_meta, saved_options
from labelpilot.schema.types import TAXONOMY_SEP, ControlSpec, TaskKind

__all__ = ["TextLinearModel"]

_FORMAT_VERSION = 1
_META_FILE = "text_linear.json"
_ARRAYS_FILE = "text_linear.npz"

# Feature groups (part of the saved format: keys are salted with the group id).
_G_CHAR, _G_WORD, _G_PAIR_CHAR, _G_PAIR_WORD, _G_PAIR_SEG = range(5)
_N_GROUPS = 5

_U64 = np.uint64
_P = _U64(0x100000001B3)  # odd multiplier of the polynomial string hash
_P2 = _U64(0x9E3779B97F4A7C15)
_M1 = _U64(0xBF58476D1CE4E5B9)
_M2 = _U64(0x94D049BB133111EB)
_S30, _S27, _S31 = _U64(30), _U64(27), _U64(31)

_ALNUM = re.compile(r"[^\W_]")
_WORDS = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")
_SEGMENT_SPLIT = re.compile(r"[,，;；|、/\n\t]+")
_MAX_SEGMENT = 32

_DEFAULTS: dict[str, Any] = {
    "C": 0.15,  # LinearSVC regularisation (smaller = stronger)
    # liblinear passes; None: 10 below 20,000 examples, else 3 (TNEWS 53k: same accuracy as 5 or 10,
    # training CPU 18 -> 12 s)
    "max_iter": None,
    "nb_alpha": 0.3,  # Complement NB smoothing
    "use_nb": True,  # mix Complement NB into single-label models
    "char_ngrams": (1, 3),
    "word_ngrams": (1, 2),
    "use_words": True,  # word n-grams (jieba for CJK text)
    "use_pair": True,  # features of Example.text_pair
    "pair_char_ngrams": (1, 3),
    "pair_words": False,  # word n-grams of text_pair too (TNEWS keywords: no gain, +40% featurizing time)
    "pair_word_ngrams": (1, 1),
    "pair_segments": True,  # delimiter-separated segments of text_pair as whole tokens
    "jieba_hmm": False,  # HMM new-word discovery: same TNEWS accuracy, 30% slower segmentation
    "min_df": None,  # None: 1 below 10,000 training texts, else 2
    "max_features": None,  # None: min(2M, 25M / n_classes) most frequent features
    "holdout": 0.1,  # held-out fraction when no val is given and the set is large
    "max_holdout": 5000,
    "cv_max_n": 3000,  # at most this many examples: k-fold out-of-fold scores instead of one slice
    "cv_folds": 5,
    #: folds from 500 examples on: each fold is big enough, and 4 fits instead of 6 keep a retrain on 1,000
    #: annotations near 0.5 s (a warm trainer's budget is 1 s)
    "cv_folds_large": 3,
    "refit": True,  # refit on everything after the held-out slice (when within time_budget)
    "time_budget": 27.0,  # seconds in all; the refit is skipped (with a note) when it would not fit
    "output_parent": False,  # taxonomy: also propose the ancestors that are label keys
    "embed_dim": 64,
    "embed_features": 20000,
    "seed": 0,
    # the text encoder (labelpilot.encoders), when it loads: zero-shot from label names before training,
    # a few-shot head mixed with the TF-IDF model after (models/text_zeroshot.py, models/text_fewshot.py)
    "encoder": True,
    "label_descriptions": None,  # {label key: description} for zero-shot, besides <Choice hint="...">
    # multi-label per-label thresholds: "gain" maximises tp - fp on held-out predictions (a proposed label
    # saves the annotator a click when right and costs one when wrong; never below 0.5), "f1" maximises F1
    "threshold_rule": "gain",
}

# learned state (everything fit sets), copied from the instance that trained
_LEARNED = (
    "classes_",
    "multilabel_",
    "vocab_",
    "idf_",
    "col_group_",
    "weights_",
    "nb_weights_",
    "nb_scale_",
    "svc_spread_",
    "bias_",
    "thresholds_",
    "calibration_",
    "embed_cols_",
    "embed_components_",
    "report_",
    "fewshot_",
)

# ---------------------------------------------------------------------------------------------
# hashing of n-grams into 64-bit keys (vectorised over a whole batch)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijective scramble of uint64 values."""
    x = (x ^ (x >> _S30)) * _M1
    x = (x ^ (x >> _S27)) * _M2
    return x ^ (x >> _S31)


def _salt(group: int, n: int) -> np.uint64:
    return _mix(np.array([group * 1009 + n * 7919 + 1], dtype=_U64))[0]


_SALTS = {(g, n): _salt(g, n) for g in range(_N_GROUPS) for n in range(0, 9)}
_GROUP_BITS = _U64(7)
_GROUP_CLEAR = _U64(0xFFFFFFFFFFFFFFF8)


def _final_key(h: np.ndarray, group: int, n: int) -> np.ndarray:
    """Salted, mixed key of an n-gram of ``group``; the group id sits in the key's low 3 bits."""
    return (_mix(h ^ _SALTS[group, n]) & _GROUP_CLEAR) | _U64(group)


def _unique(a: np.ndarray, counts: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Sorted distinct values (and their counts) by sort + compare: numpy 2.4's ``np.unique`` takes a
    hash-based path that is ~7x slower on millions of uint64 keys."""
    s = np.sort(a)
    if s.shape[0] == 0:
        return s, (np.zeros(0, dtype=np.int64) if counts else None)
    first = np.empty(s.shape[0], dtype=bool)
    first[0] = True
    np.not_equal(s[1:], s[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    return s[starts], (np.diff(np.append(starts, s.shape[0])) if counts else None)


def _counts(n: int, doc: np.ndarray, col: np.ndarray, n_cols: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, cols, counts) of the distinct (doc, col) pairs, sorted row-major."""
    if doc.shape[0] < 20000:  # small batches: one sort
        pairs, tf = _unique(doc * n_cols + col, counts=True)
        rows = pairs // n_cols
        return rows, pairs - rows * n_cols, tf
    m = sp.coo_matrix(
        (np.ones(doc.shape[0], dtype=np.int32), (doc, col.astype(np.int32, copy=False))), shape=(n, n_cols)
    ).tocsr()
    m.sum_duplicates()
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(m.indptr))
    return rows, m.indices.astype(np.int64), m.data


def _codepoints(strings: list[str]) -> tuple[np.ndarray, np.ndarray]:
    lens = np.fromiter(map(len, strings), dtype=np.int64, count=len(strings))
    joined = "".join(strings).encode("utf-32-le", errors="replace")
    cp = np.frombuffer(joined, dtype=np.uint32).astype(_U64)
    cp += _U64(1)
    return cp, lens


_EMPTY_I = np.zeros(0, dtype=np.int64)
_EMPTY_U = np.zeros(0, dtype=_U64)


def _char_keys(texts: list[str], lo: int, hi: int, group: int) -> tuple[np.ndarray, np.ndarray]:
    """(doc index, key) of every character n-gram, lo <= n <= hi."""
    cp, lens = _codepoints(texts)
    total = int(cp.shape[0])
    if total == 0 or hi < 1:
        return _EMPTY_I, _EMPTY_U
    doc = np.repeat(np.arange(len(texts), dtype=np.int64), lens)
    remaining = np.repeat(np.cumsum(lens), lens) - np.arange(total, dtype=np.int64)
    padded = np.concatenate([cp, np.zeros(hi, dtype=_U64)])
    h = np.zeros(total, dtype=_U64)
    docs, keys = [], []
    for n in range(1, hi + 1):
        h = h * _P + padded[n - 1 : n - 1 + total]
        if n >= lo:
            m = remaining >= n
            docs.append(doc[m])
            keys.append(_final_key(h[m], group, n))
    return np.concatenate(docs), np.concatenate(keys)


def _string_keys(strings: list[str]) -> np.ndarray:
    """One key per (non-empty) string: a polynomial hash of its code points, mixed with its length."""
    cp, lens = _codepoints(strings)
    if not strings:
        return _EMPTY_U
    ends = np.cumsum(lens)
    starts = ends - lens
    power_idx = np.repeat(ends, lens) - np.arange(int(cp.shape[0]), dtype=np.int64) - 1
    powers = np.ones(int(lens.max()), dtype=_U64)
    if powers.shape[0] > 1:
        powers[1:] = np.cumprod(np.full(powers.shape[0] - 1, _P, dtype=_U64))
    h = np.add.reduceat(cp * powers[power_idx], starts)
    return h ^ (lens.astype(_U64) * _P2)


def _token_keys(tokens: list[list[str]], lo: int, hi: int, group: int) -> tuple[np.ndarray, np.ndarray]:
    """(doc index, key) of word n-grams, lo <= n <= hi, over per-document token lists."""
    lens = np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens))
    flat = [t for toks in tokens for t in toks]
    if not flat or hi < 1:
        return _EMPTY_I, _EMPTY_U
    base = _string_keys(flat)
    doc = np.repeat(np.arange(len(tokens), dtype=np.int64), lens)
    docs, keys = [], []
    h = base.copy()
    for n in range(1, hi + 1):
        if n > 1:
            k = base.shape[0] - n + 1
            if k <= 0:
                break
            h = _mix(h[:k]) * _P2 + base[n - 1 :]
            same = doc[: base.shape[0] - n + 1] == doc[n - 1 :]
            d = doc[:k][same]
            hn = h[same]
        else:
            d, hn = doc, h
        if n >= lo:
            docs.append(d)
            keys.append(_final_key(hn, group, n))
    if not docs:
        return _EMPTY_I, _EMPTY_U
    return np.concatenate(docs), np.concatenate(keys)


def _normalize(text: str | None) -> str:
    if not text:
        return ""
    if not isinstance(text, str):
        text = str(text)
    return " ".join(unicodedata.normalize("NFKC", text).lower().split())


@functools.lru_cache(maxsize=20_000)
def _cjk_words(text: str, hmm: bool) -> tuple[str, ...]:
    """jieba's words of a (normalised) text, cached: a warm trainer retokenises only texts it has not seen
    (1,000 TNEWS titles: 0.24 s of a 1.0 s retrain without the cache)."""
    toks = jieba_tokenizer().lcut(text, HMM=hmm)
    return tuple(t for t in toks if t.isalnum() or _ALNUM.search(t))


def _words(text: str, hmm: bool) -> list[str] | tuple[str, ...]:
    if not text:
        return []
    if has_cjk(text):
        return _cjk_words(text, hmm)
    return _WORDS.findall(text)


def _segments(text: str) -> list[str]:
    if not text:
        return []
    return [s for s in (p.strip() for p in _SEGMENT_SPLIT.split(text)) if 0 < len(s) <= _MAX_SEGMENT]


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def _row_scaled(s: np.ndarray) -> np.ndarray:
    """Each row divided by its standard deviation over the classes (rows without spread become 0).

    Complement NB scores grow with the text's length and vocabulary; on their own scale they would
    over-rule the SVC on long texts and vanish on short ones. (Softmax ignores the row means.)"""
    sd = s.std(axis=1, keepdims=True)
    return np.divide(s, sd, out=np.zeros_like(s), where=sd > 1e-12)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50.0, 50.0)))


# ---------------------------------------------------------------------------------------------


class _KeyIndex:
    """Exact lookup of uint64 keys in the sorted vocabulary through a table of bucket starts.

    The keys are uniformly mixed, so bucket ``key >> shift`` of a table with ~1.5 slots per key holds
    0-2 keys: one or two gathers per lookup instead of ``searchsorted``'s twenty cache misses.
    """

    __slots__ = ("shift", "starts", "vocab")

    def __init__(self, vocab: np.ndarray) -> None:
        bits = max(4, int(np.ceil(np.log2(max(int(vocab.shape[0]), 1) * 1.5))))
        self.shift = _U64(64 - bits)
        top = (vocab >> self.shift).astype(np.int64)
        self.starts = np.searchsorted(top, np.arange((1 << bits) + 1)).astype(np.int32)
        self.vocab = vocab

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """Column of each key, -1 when the key is not in the vocabulary."""
        vocab = self.vocab
        out = np.full(keys.shape[0], -1, dtype=np.int64)
        if vocab.shape[0] == 0 or keys.shape[0] == 0:
            return out
        if keys.shape[0] < 4096:  # a few texts: one binary search is fewer numpy calls
            pos = np.minimum(np.searchsorted(vocab, keys), vocab.shape[0] - 1)
            found = vocab[pos] == keys
            out[found] = pos[found]
            return out
        bucket = (keys >> self.shift).astype(np.int64)
        lo = self.starts[bucket].astype(np.int64)
        hi = self.starts[bucket + 1]
        hit = (lo < hi) & (vocab[np.minimum(lo, vocab.shape[0] - 1)] == keys)
        out[hit] = lo[hit]
        rest = np.flatnonzero(~hit & (hi - lo > 1))
        step = 1
        while rest.shape[0]:
            cand = lo[rest] + step
            inside = cand < hi[rest]
            rest, cand = rest[inside], cand[inside]
            found = vocab[cand] == keys[rest]
            out[rest[found]] = cand[found]
            rest = rest[~found]
            step += 1
        return out


class _Raw:
    """n-gram keys of a batch: parallel arrays (doc index, key)."""

    __slots__ = ("doc", "key", "n")

    def __init__(self, n: int, doc: np.ndarray, key: np.ndarray) -> None:
        self.n, self.doc, self.key = n, doc, key


class TextLinearModel(ModelBase):
    """Character + word n-gram TF-IDF with a calibrated linear classifier (see the module doc).

    Options are also attributes (``model.C``), sklearn-style; :meth:`get_options` reads them back."""

    name: ClassVar[str] = "text-linear"
    kinds: ClassVar[frozenset[TaskKind]] = frozenset({TaskKind.TEXT_CHOICES, TaskKind.TEXT_TAXONOMY})
    DEFAULTS: ClassVar[dict[str, Any]] = _DEFAULTS
    TRANSIENT: ClassVar[tuple[str, ...]] = ("_zero_shot",)
    OPTION_TYPES: ClassVar[dict[str, tuple[type, ...]]] = {
        "max_iter": (int, type(None)), "min_df": (int, float, type(None)), "max_features": (int, type(None)),
        "label_descriptions": (dict, type(None))}
    META_FILE: ClassVar[str] = _META_FILE
    FORMAT_VERSION: ClassVar[int] = _FORMAT_VERSION

    def __init__(self, control: ControlSpec, **options: Any) -> None:
        super().__init__(control, **options)
        for key, value in self.options.items():
            setattr(self, key, value)
        if self.threshold_rule not in ("gain", "f1"):
            raise InputError(f"text-linear option threshold_rule must be 'gain' or 'f1', got {self.threshold_rule!r}",
                             field="threshold_rule")
        # learned state
        self.classes_: list[str] | None = None
        self.multilabel_: bool = False
        self.vocab_: np.ndarray | None = None  # sorted uint64 keys
        self.idf_: np.ndarray | None = None
        self.col_group_: np.ndarray | None = None
        self.weights_: np.ndarray | None = None  # (n_features, n_classes) float32, calibrated SVC logits
        self.nb_weights_: np.ndarray | None = None  # (n_features, n_classes) float32, Complement NB scores
        self.nb_scale_: float = 0.0  # weight of the NB scores after scaling each row to unit spread
        self.svc_spread_: float = 0.0  # SVC logits are divided by (1 + svc_spread_ * their row spread)
        self.bias_: np.ndarray | None = None  # (n_classes,)
        self.thresholds_: np.ndarray | None = None  # multi-label: tuned per-label thresholds
        self.calibration_: dict[str, Any] = {}
        self.embed_cols_: np.ndarray | None = None
        self.embed_components_: np.ndarray | None = None
        self.report_: FitReport | None = None
        self.fewshot_: Any = None  # text_fewshot.FewShotHead when the encoder was used
        self._fewshot_inputs: dict[str, Any] | None = None  # what _fit leaves for the few-shot head
        self._zero_shot: Any = None  # text_zeroshot.ZeroShot, built on first use
        self._single: tuple[str, list[Example]] | None = None  # _fit saw one label only: it and the examples
        self._control_cache: tuple[ControlSpec, np.ndarray, np.ndarray] | None = None
        self._index: _KeyIndex | None = None  # built from vocab_ on first use

    # -- parameters ---------------------------------------------------------------------------

    def get_options(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in _DEFAULTS}

    @property
    def is_fitted(self) -> bool:
        return self.weights_ is not None or self.fewshot_ is not None  # the head alone: one label annotated

    # -- features -----------------------------------------------------------------------------

    def _raw(self, examples: Sequence[Example]) -> _Raw:
        n = len(examples)
        texts = [_normalize(ex.text) for ex in examples]
        parts: list[tuple[np.ndarray, np.ndarray]] = []
        lo, hi = (int(v) for v in self.char_ngrams)
        parts.append(_char_keys(texts, lo, hi, _G_CHAR))
        hmm = bool(self.jieba_hmm)
        lo, hi = (int(v) for v in self.word_ngrams)
        if self.use_words and hi >= max(lo, 1):
            parts.append(_token_keys([_words(t, hmm) for t in texts], lo, hi, _G_WORD))
        if self.use_pair:
            pairs = [_normalize(ex.text_pair) for ex in examples]
            if any(pairs):
                lo, hi = (int(v) for v in self.pair_char_ngrams)
                parts.append(_char_keys(pairs, lo, hi, _G_PAIR_CHAR))
                lo, hi = (int(v) for v in self.pair_word_ngrams)
                if self.use_words and self.pair_words and hi >= max(lo, 1):
                    parts.append(_token_keys([_words(t, hmm) for t in pairs], lo, hi, _G_PAIR_WORD))
                if self.pair_segments:
                    parts.append(_token_keys([_segments(t) for t in pairs], 1, 1, _G_PAIR_SEG))
        doc = np.concatenate([p[0] for p in parts])
        key = np.concatenate([p[1] for p in parts])
        return _Raw(n, doc, key)

    def _build_vocab(self, raw: _Raw, n_classes: int) -> sp.csr_matrix:
        """Learn vocabulary + idf from ``raw`` and return its TF-IDF matrix (float64)."""
        uniq = _unique(raw.key)[0]
        n_uniq = int(uniq.shape[0])
        rows, terms, tf = _counts(raw.n, raw.doc, _KeyIndex(uniq).lookup(raw.key), n_uniq)
        df = np.bincount(terms, minlength=n_uniq)
        min_df = self.min_df if self.min_df is not None else (1 if raw.n < 10000 else 2)
        keep = df >= int(min_df)
        max_features = self.max_features
        if max_features is None:
            max_features = min(2_000_000, 25_000_000 // max(n_classes, 1))
        if int(keep.sum()) > int(max_features):
            order = np.argsort(-np.where(keep, df, -1), kind="stable")[: int(max_features)]
            keep = np.zeros(n_uniq, dtype=bool)
            keep[order] = True
        new_col = np.cumsum(keep) - 1
        self.vocab_ = uniq[keep]
        self.col_group_ = (self.vocab_ & _GROUP_BITS).astype(np.uint8)
        df_kept = df[keep].astype(np.float64)
        self.idf_ = (np.log((1.0 + raw.n) / (1.0 + df_kept)) + 1.0).astype(np.float32)
        hit = keep[terms]
        return self._assemble(raw.n, rows[hit], new_col[terms[hit]], tf[hit], np.float64)

    def _assemble(self, n: int, rows: np.ndarray, cols: np.ndarray, tf: np.ndarray, dtype: Any) -> sp.csr_matrix:
        """CSR of sublinear TF-IDF, L2-normalised per feature group; (rows, cols) sorted row-major."""
        assert self.idf_ is not None and self.col_group_ is not None and self.vocab_ is not None
        data = (1.0 + np.log(tf.astype(np.float64))) * self.idf_[cols]
        slot = rows * _N_GROUPS + self.col_group_[cols]
        norms = np.sqrt(np.bincount(slot, weights=data * data, minlength=n * _N_GROUPS))
        data /= norms[slot]
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
        return sp.csr_matrix(
            (data.astype(dtype, copy=False), cols.astype(np.int32, copy=False), indptr),
            shape=(n, int(self.vocab_.shape[0])),
        )

    def _lookup(self, raw: _Raw) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows, cols, tf) of the known features of ``raw``, sorted row-major."""
        assert self.vocab_ is not None
        n_feat = int(self.vocab_.shape[0])
        if raw.key.shape[0] == 0 or n_feat == 0:
            return _EMPTY_I, _EMPTY_I, _EMPTY_I
        index = self._index
        if index is None or index.vocab is not self.vocab_:
            index = self._index = _KeyIndex(self.vocab_)
        cols = index.lookup(raw.key)
        hit = cols >= 0
        return _counts(raw.n, raw.doc[hit], cols[hit], n_feat)

    def _transform(self, examples: Sequence[Example], dtype: Any = np.float32) -> sp.csr_matrix:
        raw = self._raw(examples)
        rows, cols, tf = self._lookup(raw)
        return self._assemble(raw.n, rows, cols, tf, dtype)

    # -- targets ------------------------------------------------------------------------------

    def _targets(self, examples: Sequence[Example]) -> tuple[list[int], list[tuple[str, ...]], list[str]]:
        """Usable example indices, their label tuples, and reasons for the skipped ones."""
        known = set(self.control.label_keys)
        taxonomy = self.control.kind == TaskKind.TEXT_TAXONOMY
        keep: list[int] = []
        labels: list[tuple[str, ...]] = []
        skipped: list[str] = []
        for i, ex in enumerate(examples):
            ident = ex.id if ex.id is not None else f"#{i}"
            if ex.target is None or not ex.target.labels:
                skipped.append(f"{ident}: no label for control {self.control.name!r}")
                continue
            labs = tuple(dict.fromkeys(ex.target.labels))
            unknown = [lab for lab in labs if lab not in known]
            if unknown:
                skipped.append(f"{ident}: label(s) {unknown} not in control {self.control.name!r}")
                continue
            if taxonomy and len(labs) > 1:  # keep the deepest selections: drop ancestors of others
                labs = tuple(a for a in labs if not any(b != a and b.startswith(a + TAXONOMY_SEP) for b in labs))
            keep.append(i)
            labels.append(labs)
        return keep, labels, skipped

    # -- training -----------------------------------------------------------------------------

    def fit(
        self,
        examples: Sequence[Example],
        *,
        val: Sequence[Example] | None = None,
        progress: Progress | None = None,
    ) -> FitReport:
        # import everything fit uses *before* limiting threads: threadpoolctl only reaches the BLAS
        # libraries loaded at that moment
        for module in ("scipy.linalg", "scipy.optimize", "sklearn.svm", "sklearn.utils.extmath"):
            importlib.import_module(module)
        from threadpoolctl import threadpool_limits

        # train a fresh instance and adopt its state at the end: a failed fit leaves this model as it was,
        # and predictions made meanwhile use the old state
        fresh = type(self)(self.control, **self.get_params())
        # BLAS threads only fight each other (and other processes) over small dense steps here
        with threadpool_limits(limits=1), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # liblinear's ConvergenceWarning at the capped max_iter
            try:
                report = fresh._fit(examples, val, progress)
                encoder_hooks.after_fit(fresh, report)
            except TrainingError:
                single, fresh._single = fresh._single, None
                head_only = encoder_hooks.fit_head_only(fresh, single[1], single[0]) if single else None
                if head_only is None:
                    raise
                report = head_only
        for attr in _LEARNED:
            setattr(self, attr, getattr(fresh, attr))
        self._index = None
        self._control_cache = None
        return report

    def _fit(self, examples: Sequence[Example], val: Sequence[Example] | None, progress: Progress | None) -> FitReport:
        t0 = time.perf_counter()
        total_steps = 6

        stage_seconds: dict[str, float] = {}
        last = [t0, "start"]

        def step(done: int, message: str) -> None:
            now = time.perf_counter()
            stage_seconds[str(last[1])] = stage_seconds.get(str(last[1]), 0.0) + now - float(last[0])
            last[:] = [now, message.split(" ")[0]]
            if progress is not None:
                progress(done, total_steps, message)

        step(0, "checking labels")
        keep, labels, skipped = self._targets(examples)
        if not keep:
            raise TrainingError(
                f"no usable training examples for control {self.control.name!r} "
                f"({len(skipped)} skipped, e.g. {skipped[:3]})",
                field=self.control.name,
            )
        order = {k: i for i, k in enumerate(self.control.label_keys)}
        classes = sorted({lab for labs in labels for lab in labs}, key=order.__getitem__)
        if len(classes) < 2:
            self._single = (classes[0], [examples[i] for i in keep])  # fit() may train the encoder head alone
            raise TrainingError(
                f"control {self.control.name!r} needs examples of at least 2 different labels to train; "
                f"got {len(keep)} example(s), all labelled {classes}",
                field=self.control.name,
            )
        multilabel = bool(self.control.multiple) or any(len(labs) > 1 for labs in labels)
        cls_idx = {c: i for i, c in enumerate(classes)}
        n, k = len(keep), len(classes)
        if multilabel:
            y: np.ndarray = np.zeros((n, k), dtype=np.int8)
            for r, labs in enumerate(labels):
                y[r, [cls_idx[lab] for lab in labs]] = 1
        else:
            y = np.array([cls_idx[labs[0]] for labs in labels], dtype=np.int64)

        train_examples = [examples[i] for i in keep]
        step(1, f"featurizing {n} texts")
        x = self._build_vocab(self._raw(train_examples), k)
        if x.shape[1] == 0:
            raise TrainingError(
                f"no text features for control {self.control.name!r}: all {n} training texts are empty",
                field=self.control.name,
            )

        val_x = val_y = None
        n_val_skipped = 0
        if val is not None:
            vkeep, vlabels, _ = self._targets(val)
            good = [j for j, labs in zip(vkeep, vlabels, strict=True) if all(lab in cls_idx for lab in labs)]
            n_val_skipped = len(val) - len(good)
            vlab = {j: labs for j, labs in zip(vkeep, vlabels, strict=True)}
            if good:
                val_x = self._transform([val[j] for j in good], np.float64)
                if multilabel:
                    val_y = np.zeros((len(good), k), dtype=np.int8)
                    for r, j in enumerate(good):
                        val_y[r, [cls_idx[lab] for lab in vlab[j]]] = 1
                else:
                    val_y = np.array([cls_idx[vlab[j][0]] for j in good], dtype=np.int64)

        notes: list[str] = []
        rng = np.random.default_rng(int(self.seed))
        n_final = n  # examples in the final model
        step(2, "fitting on the training part")
        if val_x is not None:
            fitted = self._fit_core(x, y, k, multilabel)
            cal_scores, cal_y = self._scores(fitted, val_x, k, multilabel), val_y
            eval_note = f"metrics on the {val_x.shape[0]} given validation examples"
            final = fitted
            n_eval = int(val_x.shape[0])
            heldout: dict[str, Any] = {"val": [val[j] for j in good], "val_y": val_y}
        elif n <= int(self.cv_max_n):
            folds = self._folds(y, multilabel, rng)
            cal_scores, cal_y = self._oof_scores(x, y, k, multilabel, folds)
            eval_note = f"metrics from {len(folds)}-fold out-of-fold predictions"
            final = None
            n_eval = n if folds else 0
            heldout = {"rows": np.arange(n) if folds else None}
        else:
            ho = self._holdout(y, multilabel, rng)
            tr = np.setdiff1d(np.arange(n), ho)
            t_fit = time.perf_counter()
            fitted = self._fit_core(x[tr], y[tr], k, multilabel)
            fit_seconds = time.perf_counter() - t_fit
            cal_scores, cal_y = self._scores(fitted, x[ho], k, multilabel), y[ho]
            eval_note = f"metrics on a held-out slice of {ho.shape[0]} examples"
            final = fitted
            n_eval = int(ho.shape[0])
            n_final = int(tr.shape[0])
            heldout = {"rows": ho}
            elapsed = time.perf_counter() - t0
            estimate = fit_seconds * n / max(tr.shape[0], 1) * 1.1 + 1.0
            if not self.refit:
                notes.append("model trained without the held-out slice (refit=False)")
            elif elapsed + estimate > float(self.time_budget):
                notes.append(
                    f"refit on all examples skipped: {elapsed:.1f}s spent, about {estimate:.1f}s more "
                    f"needed, time_budget={self.time_budget}s; the held-out slice is not in the model"
                )
            else:
                final = None
        step(3, "calibrating")
        self.multilabel_ = multilabel
        self.classes_ = classes
        metrics = self._calibrate(cal_scores, cal_y, k, multilabel)
        held_probs = getattr(self, "_heldout_probs", None)
        self._fewshot_inputs = {"train": train_examples, "y": y, "probs": held_probs, **heldout}
        if final is None:
            step(4, f"refitting on all {n} examples")
            final = self._fit_core(x, y, k, multilabel)
            n_final = n
        self._fold_weights(final, k, multilabel)
        step(5, "fitting the embedding")
        self._fit_embedding(x, rng)
        notes.append(eval_note)
        step(6, "done")
        stage_seconds.pop("start", None)
        notes.append("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in stage_seconds.items() if v >= 0.05))
        if n_val_skipped:
            notes.append(f"{n_val_skipped} validation example(s) without a usable label were ignored")
        report = FitReport(
            n_train=n_final,
            n_val=n_eval,
            labels=list(classes),
            metrics=metrics,
            seconds=time.perf_counter() - t0,
            skipped=skipped,
            notes=notes,
        )
        report.metrics["n_features"] = float(self.vocab_.shape[0]) if self.vocab_ is not None else 0.0
        if hasattr(report, "n_examples"):  # usable labelled examples given in all (train + val)
            report.n_examples = n + (int(val_x.shape[0]) if val_x is not None else 0)
        self.report_ = report
        return report

    def _folds(self, y: np.ndarray, multilabel: bool, rng: np.random.Generator) -> list[np.ndarray]:
        n = y.shape[0]
        n_folds = min(int(self.cv_folds if n < 500 else self.cv_folds_large), n)
        if n_folds < 2:
            return []
        fold_of = np.empty(n, dtype=np.int64)
        if multilabel:
            fold_of[rng.permutation(n)] = np.arange(n) % n_folds
        else:  # stratified: deal each class's examples round-robin over the folds
            offset = 0
            for c in np.unique(y):
                idx = rng.permutation(np.flatnonzero(y == c))
                fold_of[idx] = (np.arange(idx.shape[0]) + offset) % n_folds
                offset += idx.shape[0]
        return [np.flatnonzero(fold_of == f) for f in range(n_folds)]

    def _holdout(self, y: np.ndarray, multilabel: bool, rng: np.random.Generator) -> np.ndarray:
        n = y.shape[0]
        frac = min(float(self.holdout), float(self.max_holdout) / n)
        if multilabel:
            return np.sort(rng.permutation(n)[: max(1, round(n * frac))])
        picked = []
        for c in np.unique(y):
            idx = rng.permutation(np.flatnonzero(y == c))
            take = min(idx.shape[0] - 1, int(np.floor(idx.shape[0] * frac + rng.random())))
            if take > 0:
                picked.append(idx[:take])
        return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)

    def _fit_core(self, x: sp.csr_matrix, y: np.ndarray, k: int, multilabel: bool) -> dict[str, Any]:
        """Uncalibrated linear parts: svc (k, F) + intercept (k,), and for single-label the CNB (k, F)."""
        from sklearn.svm import LinearSVC

        n_feat = x.shape[1]
        max_iter = int(self.max_iter) if self.max_iter is not None else (3 if x.shape[0] >= 20000 else 10)
        svc_w = np.zeros((k, n_feat), dtype=np.float64)
        svc_b = np.zeros(k, dtype=np.float64)
        nb_w = None
        present = np.zeros(k, dtype=bool)
        if multilabel:
            for j in range(k):
                col = y[:, j]
                if col.min() == col.max():  # constant label in this part: a constant score
                    svc_b[j] = 2.0 if col[0] else -2.0
                    present[j] = bool(col[0])
                    continue
                clf = LinearSVC(C=float(self.C), max_iter=max_iter, random_state=int(self.seed))
                clf.fit(x, col)
                svc_w[j] = clf.coef_[0]
                svc_b[j] = clf.intercept_[0]
                present[j] = True
        else:
            labels_here = np.unique(y)
            present[labels_here] = True
            if labels_here.shape[0] >= 2:
                clf = LinearSVC(C=float(self.C), max_iter=max_iter, random_state=int(self.seed))
                clf.fit(x, y)
                if labels_here.shape[0] == 2:
                    a, b = labels_here
                    svc_w[a], svc_w[b] = -0.5 * clf.coef_[0], 0.5 * clf.coef_[0]
                    svc_b[a], svc_b[b] = -0.5 * clf.intercept_[0], 0.5 * clf.intercept_[0]
                else:
                    svc_w[labels_here] = clf.coef_
                    svc_b[labels_here] = clf.intercept_
            if self.use_nb:
                onehot = sp.csr_matrix((np.ones(y.shape[0]), (np.arange(y.shape[0]), y)), shape=(y.shape[0], k))
                counts = np.asarray((onehot.T @ x).todense())
                complement = counts.sum(axis=0, keepdims=True) - counts
                alpha = float(self.nb_alpha)
                nb_w = -(np.log(alpha + complement) - np.log(alpha * n_feat + complement.sum(axis=1, keepdims=True)))
                # centre per feature: softmax is unchanged, the numbers stay small
                nb_w -= nb_w.mean(axis=0, keepdims=True)
        return {
            "svc_w": svc_w.astype(np.float32),
            "svc_b": svc_b,
            "nb_w": nb_w.astype(np.float32) if nb_w is not None else None,
            "present": present,
        }

    def _scores(self, fitted: dict[str, Any], x: sp.csr_matrix, k: int, multilabel: bool) -> dict[str, Any]:
        svc = np.asarray(x @ fitted["svc_w"].T) + fitted["svc_b"]
        nb = np.asarray(x @ fitted["nb_w"].T) if fitted["nb_w"] is not None else None
        if not multilabel:  # classes absent from this part's training data sit at the bottom
            absent = ~fitted["present"]
            if absent.any() and (~absent).any():
                svc[:, absent] = svc[:, ~absent].min(axis=1, keepdims=True) - 1.0
                if nb is not None:
                    nb[:, absent] = nb[:, ~absent].min(axis=1, keepdims=True) - 1.0
        return {"svc": svc, "nb": nb}

    def _oof_scores(
        self, x: sp.csr_matrix, y: np.ndarray, k: int, multilabel: bool, folds: list[np.ndarray]
    ) -> tuple[dict[str, Any] | None, np.ndarray | None]:
        if not folds:
            return None, None
        n = x.shape[0]
        svc = np.zeros((n, k))
        nb = np.zeros((n, k)) if (self.use_nb and not multilabel) else None
        for idx in folds:
            tr = np.setdiff1d(np.arange(n), idx)
            ytr = y[tr]
            if not multilabel and np.unique(ytr).shape[0] < 2:
                continue
            part = self._scores(self._fit_core(x[tr], ytr, k, multilabel), x[idx], k, multilabel)
            svc[idx] = part["svc"]
            if nb is not None and part["nb"] is not None:
                nb[idx] = part["nb"]
        return {"svc": svc, "nb": nb}, y

    def _calibrate(
        self, scores: dict[str, Any] | None, y: np.ndarray | None, k: int, multilabel: bool
    ) -> dict[str, float]:
        """Fit the calibration (and thresholds) on held-out scores; return the held-out metrics."""
        if multilabel:
            return self._calibrate_multilabel(scores, y, k)
        return self._calibrate_single(scores, y, k)

    def _calibrate_single(self, scores: dict[str, Any] | None, y: np.ndarray | None, k: int) -> dict[str, float]:
        """Fit ``logits = a*svc / (1 + t*rowstd(svc)) + b*nb / rowstd(nb)`` by log-loss (weak prior).

        ``t`` lets the data choose between a plain temperature (t = 0: what is best with few classes,
        where the spread of the scores *is* the confidence) and scaling each row to a common spread
        (large t: better with many classes, e.g. TNEWS' 15)."""
        from scipy.optimize import minimize

        prior = np.array([2.0, 0.0, 0.5 if self.use_nb else 0.0])
        if scores is None or y is None or y.shape[0] == 0:
            self.calibration_ = {"a": float(prior[0]), "t": 0.0, "b": float(prior[2]), "fitted": False}
            return {}
        s1 = scores["svc"]
        sd1 = s1.std(axis=1, keepdims=True)
        s2 = _row_scaled(scores["nb"]) if scores["nb"] is not None else np.zeros_like(s1)
        m = y.shape[0]
        rows = np.arange(m)
        lam = 1.0 / m  # a weak prior that fades with more held-out data
        scale = np.array([1.0, 10.0, 0.5])

        def logits(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            u = 1.0 + p[1] * sd1
            return p[0] * s1 / u + p[2] * s2, u

        def objective(p: np.ndarray) -> tuple[float, np.ndarray]:
            z, u = logits(p)
            z -= z.max(axis=1, keepdims=True)
            logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
            g = np.exp(logp)
            g[rows, y] -= 1.0  # d nll / d logits, times m
            nll = -logp[rows, y].mean()
            grad = np.array(
                [
                    (g * s1 / u).sum() / m,
                    (g * (-p[0] * s1 * sd1 / (u * u))).sum() / m,
                    (g * s2).sum() / m,
                ]
            )
            d = (p - prior) / scale
            return nll + 0.5 * lam * float(d @ d), grad + lam * d / scale

        bounds = [(0.01, 50.0), (0.0, 100.0), (0.0, 50.0 if self.use_nb else 0.0)]
        res = minimize(objective, prior, jac=True, method="L-BFGS-B", bounds=bounds)
        a, t, b = (float(v) for v in res.x)
        self.calibration_ = {"a": a, "t": t, "b": b, "fitted": True}
        prob = _softmax(logits(res.x)[0])
        self._heldout_probs = prob
        pred = prob.argmax(axis=1)
        return {
            "accuracy": float((pred == y).mean()),
            "macro_f1": _macro_f1(y, pred, k),
            "log_loss": float(-np.log(np.clip(prob[rows, y], 1e-15, None)).mean()),
        }

    def _calibrate_multilabel(self, scores: dict[str, Any] | None, y: np.ndarray | None, k: int) -> dict[str, float]:
        self.thresholds_ = np.full(k, 0.5)
        if scores is None or y is None or y.shape[0] == 0:
            self.calibration_ = {"a": [2.0] * k, "c": [0.0] * k, "fitted": False}
            return {}
        s = scores["svc"]
        a_pool, c_pool = _platt(s.ravel(), y.ravel().astype(np.float64), 2.0, 0.0)
        a = np.full(k, a_pool)
        c = np.full(k, c_pool)
        for j in range(k):
            pos = int(y[:, j].sum())
            if pos >= 10 and y.shape[0] - pos >= 10:
                a[j], c[j] = _platt(s[:, j], y[:, j].astype(np.float64), a_pool, c_pool)
        prob = _sigmoid(a * s + c)
        for j in range(k):
            if int(y[:, j].sum()) >= 3:
                self.thresholds_[j] = (_best_threshold(prob[:, j], y[:, j]) if self.threshold_rule == "f1"
                                       else _gain_threshold(prob[:, j], y[:, j]))
        self.calibration_ = {"a": a.tolist(), "c": c.tolist(), "fitted": True}
        pred = (prob >= self.thresholds_).astype(np.int8)
        return _multilabel_metrics(y, pred)

    def _fold_weights(self, fitted: dict[str, Any], k: int, multilabel: bool) -> None:
        """Fold calibration into one (F, k) float32 weight matrix and a bias."""
        cal = self.calibration_
        if multilabel:
            a = np.asarray(cal["a"], dtype=np.float64)
            w = fitted["svc_w"] * a[:, None]
            b = fitted["svc_b"] * a + np.asarray(cal["c"], dtype=np.float64)
        else:
            w = cal["a"] * fitted["svc_w"]
            b = cal["a"] * fitted["svc_b"]
        # float16 on disk halves the model; rounding here keeps a loaded model bit-identical
        self.weights_ = np.ascontiguousarray(w.T.astype(np.float16), dtype=np.float32)
        self.bias_ = np.asarray(b, dtype=np.float64)
        self.nb_weights_ = None
        self.nb_scale_ = 0.0
        # a*s / (1 + t*sd(s)) == s' / (1 + (t/a)*sd(s')) with s' = a*s: keep t/a for the scaled weights
        self.svc_spread_ = 0.0 if multilabel else float(cal.get("t", 0.0)) / float(cal["a"])
        if not multilabel and fitted["nb_w"] is not None and cal.get("b"):
            self.nb_weights_ = np.ascontiguousarray(fitted["nb_w"].T.astype(np.float16), dtype=np.float32)
            self.nb_scale_ = float(cal["b"])

    def _fit_embedding(self, x: sp.csr_matrix, rng: np.random.Generator) -> None:
        from sklearn.utils.extmath import randomized_svd

        n, n_feat = x.shape
        if n < 3 or n_feat < 2:
            self.embed_cols_ = self.embed_components_ = None
            return
        df = np.bincount(x.indices, minlength=n_feat)
        top = min(int(self.embed_features), n_feat)
        cols = np.sort(np.argsort(-df, kind="stable")[:top]).astype(np.int64)
        rows = rng.permutation(n)[: min(n, 3000)]
        sub = x[rows][:, cols]
        dim = max(1, min(int(self.embed_dim), sub.shape[0] - 1, sub.shape[1] - 1))
        _, _, vt = randomized_svd(sub, dim, n_oversamples=8, n_iter=2, random_state=int(self.seed))
        self.embed_cols_ = cols
        self.embed_components_ = np.ascontiguousarray(vt.T, dtype=np.float32)  # (top, dim)

    # -- prediction ---------------------------------------------------------------------------

    def _logits(self, examples: Sequence[Example]) -> np.ndarray:
        assert self.weights_ is not None and self.bias_ is not None
        raw = self._raw(examples)
        rows, cols, tf = self._lookup(raw)
        if raw.n == 1:  # fast path: no sparse matrix
            assert self.idf_ is not None and self.col_group_ is not None
            data = (1.0 + np.log(tf.astype(np.float64))) * self.idf_[cols]
            groups = self.col_group_[cols]
            norms = np.sqrt(np.bincount(groups, weights=data * data, minlength=_N_GROUPS))
            data /= norms[groups]
            data32 = data.astype(np.float32)
            z = (data32 @ self.weights_[cols] + self.bias_)[None, :]
            if self.svc_spread_:
                z /= 1.0 + self.svc_spread_ * z.std(axis=1, keepdims=True)
            if self.nb_weights_ is not None:
                z += self.nb_scale_ * _row_scaled((data32 @ self.nb_weights_[cols])[None, :].astype(np.float64))
            return z
        x = self._assemble(raw.n, rows, cols, tf, np.float32)
        z = np.asarray(x @ self.weights_, dtype=np.float64) + self.bias_
        if self.svc_spread_:
            z /= 1.0 + self.svc_spread_ * z.std(axis=1, keepdims=True)
        if self.nb_weights_ is not None:
            z += self.nb_scale_ * _row_scaled(np.asarray(x @ self.nb_weights_, dtype=np.float64))
        return z

    def _control_view(self) -> tuple[np.ndarray, np.ndarray]:
        """(thresholds, allowed) for the current control: per-label thresholds with the control's
        overrides (``LabelSpec.score_threshold``, then ``ControlSpec.score_threshold``), and which known
        classes the control still has (a model loaded for an edited config never proposes a removed label)."""
        assert self.classes_ is not None
        cached = self._control_cache
        if cached is not None and cached[0] is self.control:
            return cached[1], cached[2]
        k = len(self.classes_)
        thr = self.thresholds_.astype(np.float64).copy() if self.thresholds_ is not None else np.full(k, 0.5)
        allowed = np.ones(k, dtype=bool)
        for j, key in enumerate(self.classes_):
            lab = self.control.label(key)
            allowed[j] = lab is not None
            if lab is not None and lab.score_threshold is not None:
                thr[j] = float(lab.score_threshold)
            elif self.control.score_threshold is not None:
                thr[j] = float(self.control.score_threshold)
        if not allowed.any():  # a control with none of the model's labels: propose them anyway
            allowed[:] = True
        self._control_cache = (self.control, thr, allowed)
        return thr, allowed

    def predict_proba(self, examples: Sequence[Example]) -> np.ndarray:
        """(n, n_classes) probabilities: softmax (single-label) or per-label sigmoid (multi-label)."""
        if not self.is_fitted:
            raise NotFoundError("text-linear model is not fitted", field=self.control.name)
        if self.weights_ is None:  # the encoder head alone (one label annotated)
            try:
                return self.fewshot_.combine(None, examples)
            except EncoderUnavailable as exc:
                raise NotFoundError(f"text-linear model needs the text encoder: {exc.message}",
                                    field=self.control.name) from exc
        z = self._logits(examples)
        if self.multilabel_:
            return _sigmoid(z)
        p = _softmax(z)
        return self.fewshot_.combine(p, examples) if self.fewshot_ is not None else p

    def zero_shot_ready(self) -> bool:
        """True when an untrained model can pre-label from its label names (the encoder loads and the names
        mean something): see models/text_zeroshot.py."""
        return encoder_hooks.zero_shot(self) is not None

    def predict(self, examples: Sequence[Example]) -> list[Prediction]:
        if not self.is_fitted:
            zero_shot = encoder_hooks.zero_shot(self)
            if zero_shot is None:
                raise NotFoundError("text-linear model is not fitted", field=self.control.name)
            return zero_shot.predict(examples)
        if not examples:
            return []
        try:
            return self._to_predictions(self.predict_proba(examples))
        except Exception:  # find the failing example(s); the others still get predictions
            out: list[Prediction] = []
            for ex in examples:
                try:
                    out.extend(self._to_predictions(self.predict_proba([ex])))
                except Exception as err:
                    out.append(Prediction(error=f"{type(err).__name__}: {err}"))
            return out

    def _to_predictions(self, probs: np.ndarray) -> list[Prediction]:
        assert self.classes_ is not None
        classes = self.classes_
        out: list[Prediction] = []
        thr, allowed = self._control_view()
        if self.multilabel_:
            chosen = (probs >= thr) & allowed
            # 1 at the threshold, 0 at 0 or 1: the distance is scaled by the room on its side
            room = np.where(probs >= thr, 1.0 - thr, thr)
            closeness = 1.0 - np.abs(probs - thr) / np.maximum(room, 1e-9)
            unc = closeness.mean(axis=1)
            for i in range(probs.shape[0]):
                row = probs[i]
                idx = np.flatnonzero(chosen[i])
                idx = idx[np.argsort(-row[idx], kind="stable")]
                labels = self._with_parents([classes[j] for j in idx])
                score = float(row[idx].mean()) if idx.shape[0] else float(1.0 - row.max())
                out.append(
                    Prediction(
                        labels=labels,
                        probs=dict(zip(classes, row.tolist(), strict=True)),
                        score=score,
                        uncertainty=float(unc[i]),
                    )
                )
            return out
        ranked = probs if allowed.all() else np.where(allowed, probs, 0.0)
        top2 = np.argsort(-ranked, axis=1, kind="stable")[:, :2]
        for i in range(probs.shape[0]):
            row = probs[i]
            best = int(top2[i, 0])
            second = float(ranked[i, top2[i, 1]]) if top2.shape[1] > 1 else 0.0
            out.append(
                Prediction(
                    labels=self._with_parents([classes[best]]),
                    probs=dict(zip(classes, row.tolist(), strict=True)),
                    score=float(row[best]),
                    uncertainty=float(1.0 - (row[best] - second)),
                )
            )
        return out

    def _with_parents(self, labels: list[str]) -> tuple[str, ...]:
        if not (self.output_parent and self.control.kind == TaskKind.TEXT_TAXONOMY):
            return tuple(labels)
        keys = set(self.control.label_keys)
        out = list(labels)
        for lab in labels:
            parts = lab.split(TAXONOMY_SEP)
            for depth in range(len(parts) - 1, 0, -1):
                parent = TAXONOMY_SEP.join(parts[:depth])
                if parent in keys and parent not in out:
                    out.append(parent)
        return tuple(out)

    def embed(self, examples: Sequence[Example]) -> np.ndarray | None:
        if not self.is_fitted or self.embed_cols_ is None or self.embed_components_ is None:
            return None
        x = self._transform(examples, np.float32)
        v = np.asarray(x[:, self.embed_cols_] @ self.embed_components_, dtype=np.float32)
        norms = np.linalg.norm(v, axis=1, keepdims=True)
        np.divide(v, norms, out=v, where=norms > 0)
        return v

    # -- persistence --------------------------------------------------------------------------

    def save(self, directory: Path) -> None:
        if not self.is_fitted:
            raise TrainingError("cannot save an unfitted text-linear model", field=self.control.name)
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {}
        if self.weights_ is not None:  # else the encoder head alone
            arrays.update(vocab=self.vocab_, idf=self.idf_, weights=self.weights_.astype(np.float16), bias=self.bias_)
        if self.nb_weights_ is not None:
            arrays["nb_weights"] = self.nb_weights_.astype(np.float16)
        if self.thresholds_ is not None:
            arrays["thresholds"] = self.thresholds_
        if self.embed_cols_ is not None and self.embed_components_ is not None:
            arrays["embed_cols"] = self.embed_cols_
            arrays["embed_components"] = self.embed_components_
        fewshot_meta = None
        if self.fewshot_ is not None:
            fs_arrays, fewshot_meta = self.fewshot_.to_saved()
            arrays.update(fs_arrays)
        tmp = directory / (_ARRAYS_FILE + ".tmp.npz")
        np.savez(tmp, **arrays)
        tmp.replace(directory / _ARRAYS_FILE)
        self.save_meta(
            directory,
            classes=self.classes_,
            multilabel=self.multilabel_,
            nb_scale=self.nb_scale_,
            svc_spread=self.svc_spread_,
            calibration=self.calibration_,
            fewshot=fewshot_meta,
            report=self.report_.to_dict() if self.report_ is not None else None,
        )

    @classmethod
    def load(cls, directory: Path, control: ControlSpec) -> TextLinearModel:
        directory = Path(directory)
        meta = read_meta(directory, _META_FILE, cls.name, _FORMAT_VERSION)
        if "options" not in meta:  # saved before the model contract (ModelBase) called them options
            meta["options"] = meta.get("params")
        model = cls(control, **saved_options(meta, _DEFAULTS))
        with np.load(directory / _ARRAYS_FILE, allow_pickle=False) as z:
            if "weights" in z:
                model.vocab_ = z["vocab"]
                model.idf_ = z["idf"]
                model.col_group_ = (model.vocab_ & _GROUP_BITS).astype(np.uint8)
                model.weights_ = np.ascontiguousarray(z["weights"], dtype=np.float32)
                model.bias_ = z["bias"]
            if "nb_weights" in z:
                model.nb_weights_ = np.ascontiguousarray(z["nb_weights"], dtype=np.float32)
            model.thresholds_ = z.get("thresholds")
            if "embed_cols" in z:
                model.embed_cols_ = z["embed_cols"]
                model.embed_components_ = z["embed_components"]
            model.fewshot_ = encoder_hooks.load_head(z, meta.get("fewshot"))
        model.classes_ = list(meta["classes"])
        model.multilabel_ = bool(meta["multilabel"])
        model.nb_scale_ = float(meta.get("nb_scale", 0.0))
        model.svc_spread_ = float(meta.get("svc_spread", 0.0))
        model.calibration_ = meta.get("calibration") or {}
        rep = meta.get("report")
        if rep:
            model.report_ = FitReport.from_dict(rep)
        return model


# ---------------------------------------------------------------------------------------------
# small numeric helpers


def _macro_f1(y: np.ndarray, pred: np.ndarray, k: int) -> float:
    tp = np.bincount(y[pred == y], minlength=k).astype(np.float64)
    n_true = np.bincount(y, minlength=k)
    n_pred = np.bincount(pred, minlength=k)
    used = (n_true + n_pred) > 0
    f1 = np.divide(2 * tp, n_true + n_pred, out=np.zeros(k), where=used)
    return float(f1[used].mean()) if used.any() else 0.0


def _multilabel_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    tp = (y & pred).sum(axis=0).astype(np.float64)
    n_true = y.sum(axis=0).astype(np.float64)
    n_pred = pred.sum(axis=0).astype(np.float64)
    denom = n_true + n_pred
    used = denom > 0
    per_label = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=used)
    micro = 2 * tp.sum() / denom.sum() if denom.sum() > 0 else 0.0
    return {
        "micro_f1": float(micro),
        "macro_f1": float(per_label[used].mean()) if used.any() else 0.0,
        "exact_match": float((y == pred).all(axis=1).mean()),
    }


def _platt(s: np.ndarray, t: np.ndarray, a0: float, c0: float) -> tuple[float, float]:
    """Fit p = sigmoid(a*s + c) by log-loss, with a weak prior towards (a0, c0)."""
    from scipy.optimize import minimize

    m = s.shape[0]
    lam = 1.0 / max(m, 1)
    prior = np.array([a0, c0])

    def objective(p: np.ndarray) -> tuple[float, np.ndarray]:
        z = p[0] * s + p[1]
        # log(1 + exp(z)) - t*z, computed stably
        loss = np.logaddexp(0.0, z) - t * z
        g = _sigmoid(z) - t
        d = p - prior
        return float(loss.mean() + 0.5 * lam * d @ d), np.array([(g * s).mean(), g.mean()]) + lam * d

    res = minimize(objective, prior, jac=True, method="L-BFGS-B", bounds=[(0.01, 50.0), (-50.0, 50.0)])
    return float(res.x[0]), float(res.x[1])


def _best_threshold(p: np.ndarray, t: np.ndarray) -> float:
    """The threshold in [0.05, 0.95] with the best F1 on (p, t); midway between neighbouring scores."""
    order = np.argsort(-p, kind="stable")
    ps, ts = p[order], t[order].astype(np.float64)
    tp = np.cumsum(ts)
    n_pos = ts.sum()
    f1 = 2 * tp / (np.arange(1, ps.shape[0] + 1) + n_pos)  # predicting the top i+1 as positive
    ok = (ps >= 0.05) & (ps <= 0.95)
    if not ok.any():
        return 0.5
    best = int(np.flatnonzero(ok)[np.argmax(f1[ok])])
    nxt = ps[best + 1] if best + 1 < ps.shape[0] else 0.0
    return float(np.clip((ps[best] + nxt) / 2.0, 0.05, 0.95))


def _gain_threshold(p: np.ndarray, t: np.ndarray) -> float:
    """The threshold (>= 0.5) with the most ``tp - fp`` on (p, t): a proposed label saves one click when
    right and costs one when wrong. Above every score (nothing proposed) when no cut gains."""
    order = np.argsort(-p, kind="stable")
    ps, ts = p[order], t[order].astype(np.float64)
    gain = np.cumsum(2.0 * ts - 1.0)  # tp - fp when the top i+1 are proposed
    ok = ps > 0.5
    if not ok.any():
        return 0.5
    best = int(np.flatnonzero(ok)[np.argmax(gain[ok])])
    if gain[best] <= 0.0:
        return float(min(max(0.5, ps[0] + 1e-6), 0.999))
    nxt = max(float(ps[best + 1]) if best + 1 < ps.shape[0] else 0.5, 0.5)
    return float(np.clip((ps[best] + nxt) / 2.0, 0.5, 0.999))
