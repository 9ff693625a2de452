"""What every query strategy shares: the pool view it reads, the selection it returns, batch filling.

A strategy sees model *outputs* (a :class:`Pool`), never a model: probabilities ``(n, C)``, per-token
probabilities for spans, optional vectors ``(n, d)`` and the raw texts for de-duplication. It returns a
:class:`Selection` with the per-item scores it ranked by (higher = more worth labelling), so that a UI can
show why an item was picked and a log can keep the numbers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from labelpilot.data.types import Prediction
from labelpilot.strategies.dedupe import NearDuplicateFilter

Vectors = Any  # np.ndarray (n, d) or a scipy.sparse matrix (n, d)


@dataclass
class Pool:
    """The unlabelled items as a strategy sees them; every array is aligned with the pool order.

    - ``probs``: (n, C) class probabilities in ``labels`` order. Single-label rows sum to 1; multi-label
      rows hold one independent probability per label. None for span tasks or before any model exists.
    - ``token_probs``: span tasks; one array per item, either (T,) max-probability of each token or
      (T, K) per-token marginals. An item with no tokens may hold an empty array.
    - ``vectors``: (n, d) dense or sparse item vectors (model embeddings or TF-IDF), for diversity and
      near-duplicate checks. ``labeled_vectors`` (m, d): the already-labelled items, for core-set.
    - ``texts``: the raw texts, used for exact-duplicate checks and, when ``vectors`` is None, to build
      TF-IDF vectors for near-duplicate checks.
    - ``valid``: (n,) bool, False for items that could not be predicted; they are never selected.
    - ``n_labeled``: the size of the labelled set the model was trained on, when known.
    """

    probs: np.ndarray | None = None
    labels: tuple[str, ...] = ()
    multi_label: bool = False
    threshold: float | np.ndarray = 0.5
    token_probs: Sequence[np.ndarray] | None = None
    vectors: Vectors | None = None
    labeled_vectors: Vectors | None = None
    texts: Sequence[str] | None = None
    valid: np.ndarray | None = None
    n_labeled: int | None = None  # how many items are labelled so far (lets strategies adapt to the phase)

    def __post_init__(self) -> None:
        n = self.size
        if self.probs is not None:
            self.probs = np.asarray(self.probs, dtype=np.float64)
            if self.probs.ndim != 2:
                raise ValueError(f"probs must be 2-D (n, C), got shape {self.probs.shape}")
        for name in ("token_probs", "texts"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise ValueError(f"{name} has {len(value)} items, the pool has {n}")
        if self.vectors is not None and self.vectors.shape[0] != n:
            raise ValueError(f"vectors have {self.vectors.shape[0]} rows, the pool has {n}")
        if self.valid is None:
            self.valid = np.ones(n, dtype=bool)
        else:
            self.valid = np.asarray(self.valid, dtype=bool)

    @property
    def size(self) -> int:
        for value in (self.probs, self.token_probs, self.texts, self.vectors):
            if value is not None:
                return int(value.shape[0]) if hasattr(value, "shape") else len(value)
        return 0 if self.valid is None else len(self.valid)

    @classmethod
    def from_predictions(
        cls,
        predictions: Sequence[Prediction],
        labels: Sequence[str],
        *,
        multi_label: bool = False,
        threshold: float | np.ndarray = 0.5,
        vectors: Vectors | None = None,
        labeled_vectors: Vectors | None = None,
        texts: Sequence[str] | None = None,
        n_labeled: int | None = None,
    ) -> Pool:
        """Build a pool from model predictions: probabilities in ``labels`` order, token probabilities when
        the model gives them, and a ``valid`` mask for predictions that failed."""
        n = len(predictions)
        labels = tuple(labels)
        valid = np.array([p.error is None for p in predictions], dtype=bool)
        probs: np.ndarray | None = None
        if any(p.probs for p in predictions):
            probs = np.zeros((n, len(labels)))
            col = {k: j for j, k in enumerate(labels)}
            for i, p in enumerate(predictions):
                if not p.probs:
                    if p.error is None and not multi_label and labels:
                        probs[i] = 1.0 / len(labels)  # no probabilities: as uncertain as it gets
                    continue
                for key, value in p.probs.items():
                    j = col.get(key)
                    if j is not None:
                        probs[i, j] = value
        token_probs = None
        if any(p.token_probs is not None for p in predictions):
            token_probs = [
                np.asarray(p.token_probs, dtype=np.float64) if p.token_probs is not None else np.zeros(0)
                for p in predictions
            ]
        return cls(
            probs=probs,
            labels=labels,
            multi_label=multi_label,
            threshold=threshold,
            token_probs=token_probs,
            vectors=vectors,
            labeled_vectors=labeled_vectors,
            texts=texts,
            valid=valid,
            n_labeled=n_labeled,
        )

    def token_counts(self) -> np.ndarray:
        """(n,) number of tokens per item (span pools), else the whitespace/char length of the text."""
        if self.token_probs is not None:
            return np.array([len(t) for t in self.token_probs], dtype=np.int64)
        if self.texts is not None:
            return np.array([max(1, len(t.split()) if " " in t else len(t)) for t in self.texts], dtype=np.int64)
        return np.ones(self.size, dtype=np.int64)


@dataclass
class Selection:
    """The outcome of one query.

    ``indices``: (k,) pool positions in the order they were chosen (first = most worth labelling).
    ``scores``: (n,) the per-item score the strategy ranked by, for every pool item (higher = more worth
    labelling; NaN for items that were not scored, e.g. invalid ones). ``strategy``: its name.
    ``info``: anything worth logging (duplicates skipped, candidates, clusters).
    """

    indices: np.ndarray
    scores: np.ndarray
    strategy: str
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.indices)

    def ranking(self) -> np.ndarray:
        """(n,) every pool position: the selected ones first (in selection order), then the rest by
        descending score (NaN last). This is the review order to show annotators."""
        chosen = [int(i) for i in self.indices]
        taken = np.zeros(len(self.scores), dtype=bool)
        taken[chosen] = True
        rest = np.flatnonzero(~taken)
        keyed = np.where(np.isnan(self.scores[rest]), -np.inf, self.scores[rest])
        rest = rest[np.argsort(-keyed, kind="stable")]
        return np.concatenate([np.asarray(chosen, dtype=np.int64), rest.astype(np.int64)])


@runtime_checkable
class QueryStrategy(Protocol):
    """A query strategy: one method, no model inside (small-text style).

    Constructors only store parameters (``random_state``, ``dedupe`` threshold, ...); ``select`` reads a
    :class:`Pool` and returns ``n`` distinct, non-duplicate items with the scores it used.
    """

    name: str

    def select(self, pool: Pool, n: int) -> Selection: ...


def check_random_state(seed: int | np.random.Generator | None) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def rank_by_score(scores: np.ndarray, rng: np.random.Generator, valid: np.ndarray | None = None) -> np.ndarray:
    """Pool positions by descending score; ties are broken at random (never by position, which would
    favour the top of the file). Invalid or NaN-scored items are left out."""
    scores = np.asarray(scores, dtype=np.float64)
    keep = ~np.isnan(scores)
    if valid is not None:
        keep &= valid
    idx = np.flatnonzero(keep)
    jitter = rng.random(len(idx))
    # lexsort: last key is primary -> score descending, then the random key
    order = np.lexsort((jitter, -scores[idx]))
    return idx[order]


def fill_batch(
    order: Iterable[int],
    n: int,
    pool: Pool,
    dedupe: float | None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Walk ``order`` and keep the first ``n`` items that are neither exact duplicates (normalised text)
    nor near-duplicates (cosine > ``dedupe`` on the pool vectors, or on TF-IDF of the texts) of an item
    already kept. ``dedupe=None`` only removes repeated positions."""
    filt = NearDuplicateFilter(pool.texts, pool.vectors, threshold=dedupe)
    chosen: list[int] = []
    seen: set[int] = set()
    for i in order:
        i = int(i)
        if i in seen:
            continue
        seen.add(i)
        if not pool.valid[i]:
            continue
        if filt.accept(i):
            chosen.append(i)
            if len(chosen) >= n:
                break
    return np.asarray(chosen, dtype=np.int64), {"skipped_duplicates": filt.skipped}
