"""Duplicate and near-duplicate checks for batches: nobody wants to label the same text twice in a row.

Exact duplicates are caught by hashing a normalised text (NFKC, lower case, punctuation and whitespace
removed). Near duplicates are caught by cosine similarity above a threshold (default 0.95) on the pool's
vectors, or, when the pool has none, on hashed character n-gram vectors of the texts (works for Chinese
and English alike, needs no fitting).
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.preprocessing import normalize

DEFAULT_DEDUPE = 0.95


def normalize_text(text: str) -> str:
    """NFKC, lower case, only letters and digits kept: "Hello,  World!" and "hello world" collide."""
    text = unicodedata.normalize("NFKC", text).lower()
    return "".join(ch for ch in text if unicodedata.category(ch)[0] in "LN")


def text_key(text: str) -> str:
    return hashlib.blake2b(normalize_text(text).encode("utf-8"), digest_size=12).hexdigest()


def text_vectors(texts: Sequence[str], n_features: int = 2**18) -> sparse.csr_matrix:
    """(n, n_features) L2-normalised hashed character 1-3-gram counts. Stateless, so it can be computed
    for any subset of a pool without fitting on the whole pool first."""
    vec = HashingVectorizer(
        analyzer="char_wb",
        ngram_range=(1, 3),
        n_features=n_features,
        alternate_sign=False,
        norm="l2",
        lowercase=True,
    )
    return vec.transform([unicodedata.normalize("NFKC", t) for t in texts]).tocsr()


class NearDuplicateFilter:
    """Accepts pool items one at a time, refusing exact and near duplicates of those already accepted.

    ``texts`` enables exact-duplicate checks; ``vectors`` (dense or sparse (n, d)) or, failing that, the
    texts enable cosine checks against ``threshold``; ``threshold=None`` disables the cosine check.
    """

    def __init__(self, texts: Sequence[str] | None, vectors: Any, threshold: float | None = DEFAULT_DEDUPE) -> None:
        self.texts = texts
        self.vectors = vectors
        self.threshold = threshold
        self.skipped = 0
        self._keys: set[str] = set()
        self._kept: Any = None  # stacked accepted vectors, (k, d)
        self._sparse = vectors is None or sparse.issparse(vectors)

    def _vector(self, i: int) -> Any:
        if self.vectors is not None:
            row = self.vectors[i]
            if sparse.issparse(row):
                return normalize(row.tocsr())
            row = np.asarray(row, dtype=np.float64).ravel()
            norm = np.linalg.norm(row)
            return row / norm if norm > 0 else row
        assert self.texts is not None
        return text_vectors([self.texts[i]])

    def accept(self, i: int) -> bool:
        if self.texts is not None:
            key = text_key(self.texts[i])
            if key in self._keys:
                self.skipped += 1
                return False
        else:
            key = None
        if self.threshold is not None and (self.vectors is not None or self.texts is not None):
            v = self._vector(i)
            if self._kept is not None:
                sims = (self._kept @ v.T).toarray().ravel() if self._sparse else self._kept @ v
                if sims.size and float(sims.max()) > self.threshold:
                    self.skipped += 1
                    return False
                self._kept = sparse.vstack([self._kept, v]).tocsr() if self._sparse else np.vstack([self._kept, v])
            else:
                self._kept = v if self._sparse else v[None, :]
        if key is not None:
            self._keys.add(key)
        return True
