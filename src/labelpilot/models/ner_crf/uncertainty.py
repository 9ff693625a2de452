"""ner-crf uncertainty helpers: token entropies, MNLP and per-prediction uncertainty for active learning.

Pure functions of marginals / predictions (see "Scores and uncertainty" in :mod:`labelpilot.models.ner_crf`).
"""

from __future__ import annotations

import math

import numpy as np

from labelpilot.data.types import Prediction

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
