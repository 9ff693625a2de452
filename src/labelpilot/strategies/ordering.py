"""Turning scores into the order people label in (Label Studio and files).

Label Studio's Data Manager sorts tasks by the column **"Prediction score"**, which is the ``score`` a
backend returns with each prediction. labelpilot returns the model's *confidence* there (higher = surer),
so **sort "Prediction score" ascending** to get the least confident task first (that is least-confidence
order). To get the order of another strategy (margin, entropy, diverse batches) into the same column,
publish :func:`review_scores` instead of the confidence: it maps the strategy's ranking to a score in
(0, 1] that increases along the ranking, so an ascending sort reproduces it exactly.
"""

from __future__ import annotations

import numpy as np

from labelpilot.strategies.base import Selection


def review_order(scores: np.ndarray) -> np.ndarray:
    """Positions by descending uncertainty score (NaN last): the order to label in."""
    s = np.asarray(scores, dtype=np.float64)
    keyed = np.where(np.isnan(s), -np.inf, s)
    return np.argsort(-keyed, kind="stable")


def review_scores(selection_or_scores: Selection | np.ndarray) -> np.ndarray:
    """(n,) Label-Studio-ready scores in (0, 1]: ascending sort = the strategy's review order.

    With a :class:`Selection`, its batch comes first (in selection order), then the rest of the pool by
    score; with a plain score array, descending score order.
    """
    if isinstance(selection_or_scores, Selection):
        order = selection_or_scores.ranking()
    else:
        order = review_order(selection_or_scores)
    n = len(order)
    out = np.empty(n)
    out[order] = (np.arange(n) + 1) / max(n, 1)
    return out
