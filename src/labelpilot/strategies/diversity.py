"""Batch-diverse and representative selection over item vectors (model embeddings or TF-IDF).

- :class:`KCenterGreedy` (core-set): each pick is the item farthest (cosine) from everything labelled
  or already picked.
- :class:`ClusterSampling`: k-means on the pool, the most typical item of each cluster.
- :class:`DiverseUncertainty`: the ``beta * n`` most uncertain items, clustered into ``n`` groups with
  k-means weighted by uncertainty, one item a cluster (Zhdanov 2019, "diverse mini-batch AL").
- :class:`Badge`: k-means++ seeding on gradient embeddings ``(p - onehot(argmax p)) ⊗ x`` of a linear
  softmax head (Ash et al. 2020): long gradients (uncertain) that point in different directions.
- :class:`ColdStart`: the first batch, before any model exists: clusters of the pool, the items closest
  to the centroids, each cluster's share of the batch proportional to its size.

Vectors may be sparse and high-dimensional; where k-means needs dense input the candidates are reduced
with a truncated SVD first.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from scipy import sparse
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.preprocessing import normalize

from labelpilot.strategies.base import Pool, Selection, check_random_state, fill_batch, rank_by_score
from labelpilot.strategies.dedupe import DEFAULT_DEDUPE
from labelpilot.strategies.uncertainty import RandomSampling, UncertaintySampling


def tfidf_vectors(texts: list[str] | Any, max_features: int = 100_000) -> sparse.csr_matrix:
    """(n, d) L2-normalised TF-IDF of character 1-2-grams (within words): language-agnostic, so it
    serves Chinese without a tokenizer and English alike."""
    vec = TfidfVectorizer(
        analyzer="char_wb", ngram_range=(1, 2), max_features=max_features, sublinear_tf=True, dtype=np.float32
    )
    return vec.fit_transform(list(texts)).tocsr()


def pool_vectors(pool: Pool) -> Any:
    """The pool's vectors, or TF-IDF of its texts when it has none (then stored on the pool)."""
    if pool.vectors is None:
        if pool.texts is None:
            raise ValueError("this strategy needs vectors (model embeddings) or texts to build TF-IDF from")
        pool.vectors = tfidf_vectors(pool.texts)
    return pool.vectors


def candidate_vectors(pool: Pool, rows: np.ndarray) -> Any:
    """Vectors of the pool items ``rows``: the pool's own, or TF-IDF fitted on just those texts (cheap for a
    candidate set, where fitting on a 50k pool would dominate the round)."""
    if pool.vectors is not None:
        return pool.vectors[rows]
    if pool.texts is None:
        raise ValueError("this strategy needs vectors (model embeddings) or texts to build TF-IDF from")
    return tfidf_vectors([pool.texts[int(i)] for i in rows])


def dense_reduced(matrix: Any, rng: np.random.Generator, dim: int = 64) -> np.ndarray:
    """Rows as dense L2-normalised vectors of at most ``dim`` dimensions (truncated SVD when wider)."""
    if sparse.issparse(matrix) or matrix.shape[1] > 4 * dim:
        k = min(dim, matrix.shape[1] - 1, max(matrix.shape[0] - 1, 1))
        if k >= 2:
            svd = TruncatedSVD(n_components=k, random_state=int(rng.integers(2**31 - 1)), algorithm="randomized")
            matrix = svd.fit_transform(matrix)
        else:
            matrix = matrix.toarray() if sparse.issparse(matrix) else matrix
    return normalize(np.asarray(matrix, dtype=np.float64))


def _cosine_to(matrix: Any, vector: Any) -> np.ndarray:
    """(n,) cosine similarity of L2-normalised rows to one L2-normalised row."""
    out = matrix @ vector.T
    return np.asarray(out.toarray() if sparse.issparse(out) else out).ravel()


def sample_candidates(pool: Pool, max_candidates: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of the selectable pool items, a sorted random subset of ``max_candidates`` when there are more."""
    cand = np.flatnonzero(pool.valid)
    if len(cand) > max_candidates:
        cand = np.sort(rng.choice(cand, max_candidates, replace=False))
    return cand


def picks_then_ranked(
    picks: np.ndarray, scores: np.ndarray, n: int, pool: Pool, rng: np.random.Generator, dedupe: float | None,
    name: str,
) -> Selection:
    """The batch of a strategy that picks some items itself: ``picks`` first, then the rest of the valid pool
    by ``scores`` (to fill up after de-duplication), as one :class:`Selection` named ``name``."""
    order = np.concatenate([np.asarray(picks, dtype=np.int64), rank_by_score(scores, rng, pool.valid)])
    idx, info = fill_batch(order, n, pool, dedupe)
    return Selection(idx, scores, name, info)


class KCenterGreedy:
    """Core-set: repeatedly pick the valid item with the largest cosine distance to its nearest labelled
    or picked item. Scores: distance to the labelled set (1 when nothing is labelled)."""

    name = "kcenter"

    def __init__(self, random_state: int | None = None, dedupe: float | None = DEFAULT_DEDUPE) -> None:
        self.random_state = random_state
        self.dedupe = dedupe

    def select(self, pool: Pool, n: int) -> Selection:
        rng = check_random_state(self.random_state)
        X = normalize(pool_vectors(pool))
        size = X.shape[0]
        min_dist = np.ones(size)
        if pool.labeled_vectors is not None and pool.labeled_vectors.shape[0]:
            L = normalize(pool.labeled_vectors)
            for start in range(0, L.shape[0], 512):
                sims = X @ L[start : start + 512].T
                sims = sims.toarray() if sparse.issparse(sims) else np.asarray(sims)
                min_dist = np.minimum(min_dist, 1.0 - sims.max(axis=1))
        scores = min_dist.copy()
        scores[~pool.valid] = np.nan
        dist = np.where(pool.valid, min_dist, -np.inf)
        picks: list[int] = []
        for _ in range(min(n, int(pool.valid.sum()))):
            best = np.flatnonzero(dist == dist.max())
            i = int(rng.choice(best))
            picks.append(i)
            dist = np.minimum(dist, 1.0 - _cosine_to(X, X[i]))
            dist[i] = -np.inf
        return picks_then_ranked(np.asarray(picks, dtype=np.int64), scores, n, pool, rng, self.dedupe, self.name)


class ClusterSampling:
    """k-means with ``n`` clusters on the pool (or on a random ``max_candidates`` subsample); the item
    closest to each centroid. Scores: cosine similarity to the own centroid (typicality)."""

    name = "kmeans"
    #: None: ``n`` clusters, one pick each (:class:`ColdStart` sets fewer, with picks shared by cluster size)
    n_clusters: int | None = None

    def __init__(
        self, max_candidates: int = 20_000, random_state: int | None = None, dedupe: float | None = DEFAULT_DEDUPE
    ) -> None:
        self.max_candidates = max_candidates
        self.random_state = random_state
        self.dedupe = dedupe

    def select(self, pool: Pool, n: int) -> Selection:
        rng = check_random_state(self.random_state)
        cand = sample_candidates(pool, self.max_candidates, rng)
        picks, typical = representatives(candidate_vectors(pool, cand), n, rng, self.n_clusters)
        scores = np.full(pool.size, np.nan)
        scores[cand] = typical
        return picks_then_ranked(cand[picks], scores, n, pool, rng, self.dedupe, self.name)


def representatives(
    matrix: Any, n: int, rng: np.random.Generator, n_clusters: int | None = None, dim: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """Cluster the rows of ``matrix`` and return (ordered picks, typicality of every row).

    ``n_clusters`` defaults to ``n``; with fewer clusters than ``n`` each cluster gets a share of the
    picks proportional to its size (largest remainder), taken closest-to-centroid first. Picks are
    interleaved across clusters, so any prefix of the order is itself spread over the clusters.
    """
    rows = matrix.shape[0]
    if rows == 0 or n <= 0:
        return np.zeros(0, dtype=np.int64), np.zeros(rows)
    X = dense_reduced(matrix, rng, dim)
    k = max(1, min(n_clusters or n, rows))
    seed = int(rng.integers(2**31 - 1))
    km = (
        MiniBatchKMeans(k, random_state=seed, n_init=3, batch_size=2048)
        if rows > 5000
        else KMeans(k, random_state=seed, n_init=1)
    )
    assign = km.fit_predict(X)
    centres = normalize(km.cluster_centers_)
    typical = np.einsum("ij,ij->i", X, centres[assign])
    sizes = np.bincount(assign, minlength=k).astype(np.float64)
    want = min(n, rows)
    quota = np.floor(sizes / sizes.sum() * want).astype(int)
    for j in np.argsort(-(sizes / sizes.sum() * want - quota))[: want - quota.sum()]:
        quota[j] += 1
    members = [np.flatnonzero(assign == j) for j in range(k)]
    members = [m[np.argsort(-typical[m], kind="stable")] for m in members]
    picks: list[int] = []
    for r in range(int(quota.max(initial=0))):
        for j in np.argsort(-sizes, kind="stable"):
            if r < quota[j] and r < len(members[j]):
                picks.append(int(members[j][r]))
    return np.asarray(picks, dtype=np.int64), typical


class ColdStart(ClusterSampling):
    """The first batch, before any model exists: representative items, stratified by clusters.

    ``n_clusters`` (default: ``n``) k-means clusters of the pool vectors (TF-IDF of the texts when the pool
    has none); each cluster contributes picks in proportion to its size, most typical first. Scores:
    typicality (cosine to the own centroid).
    """

    name = "cold_start"

    def __init__(
        self,
        n_clusters: int | None = None,
        max_candidates: int = 20_000,
        random_state: int | None = None,
        dedupe: float | None = DEFAULT_DEDUPE,
    ) -> None:
        self.n_clusters = n_clusters
        self.max_candidates = max_candidates
        self.random_state = random_state
        self.dedupe = dedupe

    def select(self, pool: Pool, n: int) -> Selection:
        sel = super().select(pool, n)
        sel.info["clusters"] = self.n_clusters or n
        return sel


class DiverseUncertainty:
    """Uncertainty first, then diversity: the ``beta * n`` most uncertain items (by ``measure``) are
    clustered into ``n`` groups by k-means weighted by uncertainty; each cluster gives one item, its most
    uncertain member (``pick="top"``) or the one nearest the centroid (``pick="center"``). Clusters are
    ordered by the uncertainty of their pick. Scores: the uncertainty.

    Warm-up: while the pool says fewer than ``warmup`` (10) labelled items per class (``pool.n_labeled``),
    the batch is drawn at random (``warmup_with="random"``) or is :class:`ColdStart`'s representative items
    (``"representative"``); ``warmup=0`` turns it off. Random warm-up removed the early dip below random on
    TNEWS without costing much elsewhere (bench/RESULTS.md, "Active learning")."""

    name = "diverse"

    def __init__(
        self,
        measure: Literal["least_confidence", "margin", "entropy"] = "margin",
        beta: int = 10,
        pick: Literal["top", "center"] = "top",
        warmup: int = 10,
        warmup_with: Literal["random", "representative"] = "random",
        random_state: int | None = None,
        dedupe: float | None = DEFAULT_DEDUPE,
    ) -> None:
        self.measure = measure
        self.beta = beta
        self.pick = pick
        self.warmup = warmup
        self.warmup_with = warmup_with
        self.random_state = random_state
        self.dedupe = dedupe

    def select(self, pool: Pool, n: int) -> Selection:
        # Warm-up: while fewer than ``warmup`` items per class are labelled the model's uncertainty is mostly
        # noise (uncertainty strategies fell up to 18% below random right after a 100-item start on TNEWS),
        # so the batch is drawn at random (or the pool's most typical items) instead.
        n_classes = pool.probs.shape[1] if pool.probs is not None else 0
        if self.warmup and pool.n_labeled is not None and n_classes and pool.n_labeled < self.warmup * n_classes:
            first: Any = (
                RandomSampling(random_state=self.random_state, dedupe=self.dedupe)
                if self.warmup_with == "random"
                else ColdStart(random_state=self.random_state, dedupe=self.dedupe)
            )
            sel = first.select(pool, n)
            sel.strategy = self.name
            sel.info["phase"] = f"warm-up: {pool.n_labeled} labelled < {self.warmup} x {n_classes} classes"
            return sel
        rng = check_random_state(self.random_state)
        scores = UncertaintySampling(self.measure).scores(pool)
        ranked = rank_by_score(scores, rng, pool.valid)
        cand = ranked[: max(n, self.beta * n)]
        if len(cand) <= n or (pool.vectors is None and pool.texts is None):
            idx, info = fill_batch(ranked, n, pool, self.dedupe)
            return Selection(idx, scores, self.name, info)
        X = dense_reduced(candidate_vectors(pool, cand), rng)
        w = np.maximum(scores[cand], 1e-6)
        km = KMeans(n, random_state=int(rng.integers(2**31 - 1)), n_init=1)
        assign = km.fit_predict(X, sample_weight=w)
        picks = []
        for j in range(n):
            members = np.flatnonzero(assign == j)
            if not len(members):
                continue
            if self.pick == "center":
                d = np.linalg.norm(X[members] - km.cluster_centers_[j], axis=1)
                picks.append(int(cand[members[np.argmin(d)]]))
            else:
                picks.append(int(cand[members[np.argmax(scores[cand[members]])]]))
        picks_arr = np.asarray(picks, dtype=np.int64)
        picks_arr = picks_arr[np.argsort(-scores[picks_arr], kind="stable")]
        idx, info = fill_batch(np.concatenate([picks_arr, ranked]), n, pool, self.dedupe)
        info["candidates"] = len(cand)
        return Selection(idx, scores, self.name, info)


def gradient_embedding(
    probs: np.ndarray, X: np.ndarray, multi_label: bool = False, threshold: float = 0.5
) -> np.ndarray:
    """BADGE's last-layer gradient for a linear head: ``(p - y_hat) ⊗ x``, (n, C * d).

    ``y_hat`` is the one-hot argmax (single-label) or the thresholded labels (multi-label)."""
    if multi_label:
        y_hat = (probs >= threshold).astype(np.float64)
    else:
        y_hat = np.zeros_like(probs)
        y_hat[np.arange(len(probs)), probs.argmax(axis=1)] = 1.0
    g = probs - y_hat
    return (g[:, :, None] * X[:, None, :]).reshape(len(probs), -1)


class Badge:
    """BADGE: k-means++ seeding over gradient embeddings; the first pick is the longest gradient, each
    next one is drawn with probability proportional to its squared distance to the picks so far. Pools
    larger than ``max_candidates`` are subsampled at random first. Scores: gradient length."""

    name = "badge"

    def __init__(
        self,
        max_candidates: int = 5000,
        dim: int = 32,
        random_state: int | None = None,
        dedupe: float | None = DEFAULT_DEDUPE,
    ) -> None:
        self.max_candidates = max_candidates
        self.dim = dim
        self.random_state = random_state
        self.dedupe = dedupe

    def select(self, pool: Pool, n: int) -> Selection:
        if pool.probs is None:
            raise ValueError("badge needs model probabilities")
        rng = check_random_state(self.random_state)
        cand = sample_candidates(pool, self.max_candidates, rng)
        X = dense_reduced(candidate_vectors(pool, cand), rng, self.dim)
        threshold = float(np.mean(pool.threshold))
        G = gradient_embedding(pool.probs[cand], X, pool.multi_label, threshold)
        norms = np.einsum("ij,ij->i", G, G)
        scores = np.full(pool.size, np.nan)
        scores[cand] = np.sqrt(norms)
        picks = [int(np.argmax(norms))]
        d2 = np.einsum("ij,ij->i", G - G[picks[0]], G - G[picks[0]])
        while len(picks) < min(n, len(cand)):
            total = d2.sum()
            if total <= 0:
                break
            i = int(rng.choice(len(cand), p=d2 / total))
            picks.append(i)
            diff = G - G[i]
            d2 = np.minimum(d2, np.einsum("ij,ij->i", diff, diff))
            d2[picks] = 0.0
        return picks_then_ranked(cand[np.asarray(picks, dtype=np.int64)], scores, n, pool, rng, self.dedupe, self.name)
