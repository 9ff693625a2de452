"""Uncertainty scores and the strategies that rank by them: random, least confidence, margin (breaking
ties), entropy, multi-label closeness to the decision threshold.

Score functions take probabilities ``(n, C)`` and return ``(n,)`` with *higher = more uncertain*. The
strategy classes pick the right score for the pool they see: a single-label pool uses the class
probabilities, a multi-label pool the per-label closeness to the threshold, a span pool (``token_probs``)
the token → item aggregation of :mod:`labelpilot.strategies.spans`.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from labelpilot.strategies.base import Pool, Selection, check_random_state, fill_batch, rank_by_score
from labelpilot.strategies.dedupe import DEFAULT_DEDUPE
from labelpilot.strategies.spans import span_scores

_EPS = 1e-12


def least_confidence(probs: np.ndarray) -> np.ndarray:
    """1 - max_c p(c|x). (n, C) -> (n,)."""
    return 1.0 - np.max(probs, axis=1)


def margin(probs: np.ndarray) -> np.ndarray:
    """Breaking ties: 1 - (p_top1 - p_top2). (n, C) -> (n,); 1 when the two best classes tie."""
    if probs.shape[1] < 2:
        return np.zeros(probs.shape[0])
    top2 = -np.partition(-probs, 1, axis=1)[:, :2]
    return 1.0 - (top2[:, 0] - top2[:, 1])


def entropy(probs: np.ndarray, normalise: bool = True) -> np.ndarray:
    """Prediction entropy -sum p log p, divided by log C when ``normalise`` (then in 0..1)."""
    p = np.clip(probs, _EPS, 1.0)
    h = -np.sum(p * np.log(p), axis=1)
    if normalise and probs.shape[1] > 1:
        h /= np.log(probs.shape[1])
    return h


def label_closeness(probs: np.ndarray, threshold: float | np.ndarray = 0.5) -> np.ndarray:
    """Multi-label: per-label closeness to the decision threshold, (n, L) in 0..1.

    1 when p == threshold, 0 when p is 0 or 1: ``1 - |p - t| / (t if p < t else 1 - t)``.
    """
    t = np.broadcast_to(np.asarray(threshold, dtype=np.float64), probs.shape)
    span = np.where(probs < t, t, 1.0 - t)
    return 1.0 - np.abs(probs - t) / np.maximum(span, _EPS)


def binary_entropy(probs: np.ndarray) -> np.ndarray:
    p = np.clip(probs, _EPS, 1 - _EPS)
    return -(p * np.log2(p) + (1 - p) * np.log2(1 - p))


MultiReduce = Literal["margin", "least_confidence", "mean", "max", "entropy"]


def multilabel_uncertainty(
    probs: np.ndarray, threshold: float | np.ndarray = 0.5, reduce: MultiReduce = "margin"
) -> np.ndarray:
    """(n, L) independent label probabilities -> (n,).

    - ``margin`` (default): the probabilities normalised over the labels, then breaking ties between the
      two likeliest labels: "which label is it?". Measured best on GoEmotions (bench/RESULTS.md);
    - ``least_confidence``: 1 - the highest label probability (no label is confidently present);
    - ``mean`` / ``max``: of :func:`label_closeness` to the threshold (all labels count / the single most
      undecided label). These favour items on the boundary of frequent labels and did *worse than random*
      on GoEmotions; kept for tasks with few, balanced labels;
    - ``entropy``: the mean binary entropy of the labels.
    """
    if reduce == "margin":
        q = probs / np.maximum(probs.sum(axis=1, keepdims=True), _EPS)
        return margin(q)
    if reduce == "least_confidence":
        return 1.0 - probs.max(axis=1)
    if reduce == "entropy":
        return binary_entropy(probs).mean(axis=1)
    close = label_closeness(probs, threshold)
    if reduce == "max":
        return close.max(axis=1)
    if reduce == "mean":
        return close.mean(axis=1)
    raise ValueError(f"unknown multi-label reduction {reduce!r}")


class RandomSampling:
    """Uniformly random items (the baseline every strategy must beat). Scores are the random keys."""

    name = "random"

    def __init__(self, random_state: int | None = None, dedupe: float | None = DEFAULT_DEDUPE) -> None:
        self.random_state = random_state
        self.dedupe = dedupe

    def select(self, pool: Pool, n: int) -> Selection:
        rng = check_random_state(self.random_state)
        scores = rng.random(pool.size)
        order = rank_by_score(scores, rng, pool.valid)
        idx, info = fill_batch(order, n, pool, self.dedupe)
        return Selection(idx, scores, self.name, info)


class UncertaintySampling:
    """Top-``n`` most uncertain items by ``measure``, with random tie-breaks and no duplicate texts.

    ``measure``: ``least_confidence`` | ``margin`` | ``entropy``. On a multi-label pool ``multi_reduce``
    decides how the label probabilities become one score (default: the same-named reduction of
    :func:`multilabel_uncertainty`; ``entropy`` for entropy). On a span pool ``span_aggregation`` decides
    how token scores become an item score (default ``mnlp``, which does not favour long sentences).
    """

    name = "uncertainty"

    def __init__(
        self,
        measure: Literal["least_confidence", "margin", "entropy"] = "margin",
        *,
        random_state: int | None = None,
        dedupe: float | None = DEFAULT_DEDUPE,
        multi_reduce: MultiReduce | None = None,
        span_aggregation: str = "mnlp",
    ) -> None:
        self.measure = measure
        self.random_state = random_state
        self.dedupe = dedupe
        self.multi_reduce = multi_reduce
        self.span_aggregation = span_aggregation

    def scores(self, pool: Pool) -> np.ndarray:
        """(n,) uncertainty of every pool item (NaN where it cannot be scored)."""
        if pool.probs is None:
            if pool.token_probs is not None:
                token_measure = "entropy" if self.measure == "entropy" else "lc"
                return span_scores(pool.token_probs, aggregation=self.span_aggregation, measure=token_measure)
            raise ValueError(f"{self.name} needs model probabilities; use cold_start or random for the first batch")
        if pool.multi_label:
            default = {"least_confidence": "least_confidence", "margin": "margin", "entropy": "entropy"}[self.measure]
            reduce: MultiReduce = self.multi_reduce or default  # type: ignore[assignment]
            s = multilabel_uncertainty(pool.probs, pool.threshold, reduce)
        elif self.measure == "least_confidence":
            s = least_confidence(pool.probs)
        elif self.measure == "margin":
            s = margin(pool.probs)
        elif self.measure == "entropy":
            s = entropy(pool.probs)
        else:
            raise ValueError(f"unknown uncertainty measure {self.measure!r}")
        s = s.astype(np.float64)
        s[~pool.valid] = np.nan
        return s

    def select(self, pool: Pool, n: int) -> Selection:
        rng = check_random_state(self.random_state)
        scores = self.scores(pool)
        order = rank_by_score(scores, rng, pool.valid)
        idx, info = fill_batch(order, n, pool, self.dedupe)
        return Selection(idx, scores, self.name, info)


class LeastConfidence(UncertaintySampling):
    """Items whose top class is least probable (1 - max p)."""

    name = "least_confidence"

    def __init__(self, **kwargs: object) -> None:
        super().__init__("least_confidence", **kwargs)  # type: ignore[arg-type]


class MarginSampling(UncertaintySampling):
    """Breaking ties: items whose two best classes are closest (1 - (p1 - p2))."""

    name = "margin"

    def __init__(self, **kwargs: object) -> None:
        super().__init__("margin", **kwargs)  # type: ignore[arg-type]


class EntropySampling(UncertaintySampling):
    """Items with the highest prediction entropy (normalised by log C)."""

    name = "entropy"

    def __init__(self, **kwargs: object) -> None:
        super().__init__("entropy", **kwargs)  # type: ignore[arg-type]


class MultiLabelUncertainty(UncertaintySampling):
    """Multi-label pools, scored by :func:`multilabel_uncertainty` with ``reduce`` (default ``margin``;
    ``mean``/``max`` closeness to ``pool.threshold``, ``least_confidence``, ``entropy``)."""

    name = "multilabel"

    def __init__(self, reduce: MultiReduce = "margin", **kwargs: object) -> None:
        super().__init__("margin", multi_reduce=reduce, **kwargs)  # type: ignore[arg-type]
        self.reduce = reduce

    def scores(self, pool: Pool) -> np.ndarray:
        if pool.probs is None:
            raise ValueError("multilabel uncertainty needs model probabilities")
        s = multilabel_uncertainty(pool.probs, pool.threshold, self.reduce)
        s[~pool.valid] = np.nan
        return s
