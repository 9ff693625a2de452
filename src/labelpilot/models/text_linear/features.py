"""text-linear features: n-grams hashed into 64-bit keys, vocabulary lookup, sublinear TF-IDF, the embedding.

Everything here is vectorised over a batch with numpy (see the family doc in :mod:`labelpilot.models.text_linear`).
The group ids and the hash constants are part of the saved format: changing them breaks saved models.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import os
import re
import threading
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from labelpilot.config import cache_dir
from labelpilot.data.bio import has_cjk, jieba_tokenizer
from labelpilot.data.types import Example
from labelpilot.encoders import persist_requested
from labelpilot.encoders.store import KeyedStore, stores_enabled

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


_SEP = "\x1f"
_word_store: tuple[int, str, KeyedStore] | None = None  # (pid, path, store): a forked child opens its own
_word_store_lock = threading.Lock()


@functools.lru_cache(maxsize=1)
def _jieba_version() -> str:
    try:
        return importlib.metadata.version("jieba")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _words_on_disk() -> KeyedStore:
    """jieba's words of texts segmented by an earlier process, by text hash (``<cache dir>/text-linear/``, one
    file per jieba version: its dictionary decides the words)."""
    global _word_store
    path = str(cache_dir("text-linear") / f"jieba-{_jieba_version()}-words.sqlite")
    with _word_store_lock:
        if _word_store is None or _word_store[:2] != (os.getpid(), path):
            _word_store = (os.getpid(), path, KeyedStore(Path(path), table="words"))
        return _word_store[2]


def _words_key(text: str, hmm: bool) -> bytes:
    return hashlib.blake2b(("1" if hmm else "0").encode() + text.encode("utf-8", "surrogatepass"),
                           digest_size=16).digest()


def _words_batch(texts: list[str], hmm: bool) -> list[list[str] | tuple[str, ...]]:
    """``_words`` of every text. Inside ``encoders.persisting()`` (``labelpilot loop``: the same pool is
    featurised again next round, in a new process) the Chinese texts' words are read from and written to
    the store on disk: jieba is ~80 % of featurising a 50k pool of TNEWS titles. ``LABELPILOT_ENCODER_STORE=0``
    turns this store off with the vector store."""
    if not persist_requested() or not stores_enabled():
        return [_words(t, hmm) for t in texts]
    out: list[list[str] | tuple[str, ...]] = []
    cjk: list[int] = []
    for i, t in enumerate(texts):
        if t and has_cjk(t):
            cjk.append(i)
            out.append(())
        else:
            out.append(_words(t, hmm))
    if not cjk:
        return out
    store = _words_on_disk()
    keys = [_words_key(texts[i], hmm) for i in cjk]
    found = store.get_blobs(keys)
    new: list[tuple[bytes, bytes]] = []
    for i, key in zip(cjk, keys, strict=True):
        blob = found.get(key)
        if blob is not None:
            out[i] = tuple(blob.decode("utf-8", "surrogatepass").split(_SEP)) if blob else ()
            continue
        words = _cjk_words(texts[i], hmm)
        out[i] = words
        joined = _SEP.join(words)
        if joined.count(_SEP) == max(len(words) - 1, 0):  # no separator inside a word
            new.append((key, joined.encode("utf-8", "surrogatepass")))
    store.put_blobs(new)
    return out


def _segments(text: str) -> list[str]:
    if not text:
        return []
    return [s for s in (p.strip() for p in _SEGMENT_SPLIT.split(text)) if 0 < len(s) <= _MAX_SEGMENT]


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



class _Featurizer:
    """The feature half of :class:`~labelpilot.models.text_linear.model.TextLinearModel` (a mixin: it uses the
    model's options and learned vocabulary)."""

    def _raw(self, examples: Sequence[Example]) -> _Raw:
        n = len(examples)
        texts = [_normalize(ex.text) for ex in examples]
        parts: list[tuple[np.ndarray, np.ndarray]] = []
        lo, hi = (int(v) for v in self.char_ngrams)
        parts.append(_char_keys(texts, lo, hi, _G_CHAR))
        hmm = bool(self.jieba_hmm)
        lo, hi = (int(v) for v in self.word_ngrams)
        if self.use_words and hi >= max(lo, 1):
            parts.append(_token_keys(_words_batch(texts, hmm), lo, hi, _G_WORD))
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
