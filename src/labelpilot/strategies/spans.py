"""Span (NER) tasks: token uncertainties aggregated to the unit the annotator labels, the item.

Per token: ``lc`` = 1 - max-probability, or ``entropy`` of the token's marginal distribution (needs
(T, K) marginals; with only (T,) max-probabilities it falls back to the binary entropy of the max).
Per item (``aggregation``):

- ``max``: the worst token (one bad token is enough to need a look);
- ``mean``: mean over tokens (all tokens count, not biased to long items);
- ``mnlp``: -(1/T) * sum_t log p_t, the negated length-normalised log-probability of the best labelling
  (Shen et al. 2017); ranks exactly like ascending MNLP;
- ``sum``: total over tokens (prefers long items on purpose, e.g. with a token budget off).

Batches may be filled to a *token* budget instead of an item count (``token_budget``), since annotation
cost grows with length: the batch never holds more tokens than the budget (:func:`budget_batch`; an item
longer than what is left is passed over for shorter ones below it). :func:`select_scored` is the same batch
filling for any per-item score (the seed-003 span round uses it for models without token probabilities).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from labelpilot.strategies.base import Pool, Selection, check_random_state, fill_batch, rank_by_score
from labelpilot.strategies.dedupe import DEFAULT_DEDUPE, NearDuplicateFilter

_EPS = 1e-12
Aggregation = Literal["max", "mean", "mnlp", "sum"]


def token_uncertainty(tokens: np.ndarray, measure: Literal["lc", "entropy"] = "lc") -> np.ndarray:
    """(T,) max-probabilities or (T, K) marginals -> (T,) per-token uncertainty."""
    t = np.asarray(tokens, dtype=np.float64)
    if t.ndim == 2:
        if measure == "entropy":
            p = np.clip(t, _EPS, 1.0)
            h = -np.sum(p * np.log(p), axis=1)
            return h / np.log(t.shape[1]) if t.shape[1] > 1 else h
        t = t.max(axis=1)
    if measure == "entropy":
        p = np.clip(t, _EPS, 1 - _EPS)
        return -(p * np.log2(p) + (1 - p) * np.log2(1 - p))
    return 1.0 - t


def item_score(
    tokens: np.ndarray, aggregation: Aggregation = "mnlp", measure: Literal["lc", "entropy"] = "lc"
) -> float:
    """One item's score from its tokens (NaN for an item with no tokens)."""
    t = np.asarray(tokens, dtype=np.float64)
    if t.size == 0:
        return float("nan")
    if aggregation == "mnlp":
        best = t.max(axis=1) if t.ndim == 2 else t
        return float(-np.mean(np.log(np.clip(best, _EPS, 1.0))))
    u = token_uncertainty(t, measure)
    if aggregation == "max":
        return float(u.max())
    if aggregation == "mean":
        return float(u.mean())
    if aggregation == "sum":
        return float(u.sum())
    raise ValueError(f"unknown span aggregation {aggregation!r}; use max, mean, mnlp or sum")


def span_scores(
    token_probs: Sequence[np.ndarray], aggregation: str = "mnlp", measure: Literal["lc", "entropy"] = "lc"
) -> np.ndarray:
    """(n,) item scores from a pool's per-item token probabilities."""
    return np.array([item_score(t, aggregation, measure) for t in token_probs], dtype=np.float64)  # type: ignore[arg-type]


def budget_batch(
    order: np.ndarray, n: int, pool: Pool, lengths: np.ndarray, token_budget: int, dedupe: float | None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Walk ``order`` (best first) and keep at most ``n`` items, never more than ``token_budget`` tokens in all:
    an item longer than what is left of the budget is passed over for shorter ones after it. Exact and near
    duplicates of kept items are skipped as in :func:`fill_batch`."""
    filt = NearDuplicateFilter(pool.texts, pool.vectors, threshold=dedupe)
    chosen: list[int] = []
    left = int(token_budget)
    passed = 0
    for i in order:
        i = int(i)
        if len(chosen) >= n or left <= 0:
            break
        size = int(lengths[i])
        if size > left:
            passed += 1
            continue
        if filt.accept(i):
            chosen.append(i)
            left -= size
    info = {"skipped_duplicates": filt.skipped, "token_budget": int(token_budget),
            "tokens": int(token_budget) - left, "over_budget_passed": passed}
    return np.asarray(chosen, dtype=np.int64), info


def select_scored(
    scores: np.ndarray,
    pool: Pool,
    n: int,
    *,
    name: str,
    token_budget: int | None = None,
    lengths: np.ndarray | None = None,
    random_state: int | None = None,
    dedupe: float | None = DEFAULT_DEDUPE,
) -> Selection:
    """The batch of the ``n`` best-scored items (higher = label sooner), filled to ``token_budget`` when given;
    ``lengths``: tokens per item (default :meth:`Pool.token_counts`). ``info["tokens"]``: the batch's tokens."""
    rng = check_random_state(random_state)
    order = rank_by_score(np.asarray(scores, dtype=np.float64), rng, pool.valid)
    sizes = pool.token_counts() if lengths is None else np.asarray(lengths, dtype=np.int64)
    if token_budget is None:
        idx, info = fill_batch(order, n, pool, dedupe)
        info["tokens"] = int(sizes[idx].sum())
    else:
        idx, info = budget_batch(order, n, pool, sizes, token_budget, dedupe)
    return Selection(idx, scores, name, info)


class SpanUncertainty:
    """Token → item uncertainty for span pools, optionally filling the batch to a token budget.

    With ``token_budget`` set, items are taken in score order while their tokens fit the budget (``n`` then
    caps the item count); the batch never exceeds the budget (:func:`budget_batch`).
    """

    name = "span"

    def __init__(
        self,
        aggregation: Aggregation = "mnlp",
        measure: Literal["lc", "entropy"] = "lc",
        *,
        token_budget: int | None = None,
        random_state: int | None = None,
        dedupe: float | None = DEFAULT_DEDUPE,
    ) -> None:
        self.aggregation = aggregation
        self.measure = measure
        self.token_budget = token_budget
        self.random_state = random_state
        self.dedupe = dedupe

    def select(self, pool: Pool, n: int) -> Selection:
        if pool.token_probs is None:
            raise ValueError("span uncertainty needs token probabilities (a span model's Prediction.token_probs)")
        scores = span_scores(pool.token_probs, self.aggregation, self.measure)
        return select_scored(scores, pool, n, name=self.name, token_budget=self.token_budget,
                             random_state=self.random_state, dedupe=self.dedupe)
