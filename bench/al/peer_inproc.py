"""small-text's query strategies driven by the protocol's own model (``protocol.py``'s ``peer:`` candidates).

The issue asks for small-text's best strategy "run with the same model and start". small-text's
confidence-based strategies only read ``clf.predict_proba(dataset)``, so here each round's text-linear
probabilities of the unlabelled pool are handed to the small-text strategy object through a classifier shim,
and the strategy's ``query`` picks the batch; the model, start set, batch and budget are the protocol's.
small-text is not a labelpilot dependency: it is imported from ``$PYTHONPATH`` (e.g. ``pip install --target
/tmp/al-peer-lib --no-deps small-text==1.4.1 dill tqdm``; it needs nothing else the venv lacks).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from labelpilot.strategies import Pool, Selection

#: small-text strategies that only need probabilities (its embedding-based ones need a small-text classifier).
PEER_STRATEGIES = ("BreakingTies", "LeastConfidence", "PredictionEntropy")


class _Probs:
    """The classifier shim: ``predict_proba`` returns the round's probabilities of the dataset's rows."""

    def __init__(self, probs: np.ndarray) -> None:
        self.probs = probs

    def predict_proba(self, dataset: Any) -> np.ndarray:
        return self.probs[np.asarray(dataset)]


class PeerStrategy:
    """A small-text query strategy behind labelpilot's ``select(pool, n)``."""

    def __init__(self, name: str, random_state: int | None = None) -> None:
        import small_text

        if name not in PEER_STRATEGIES:
            raise ValueError(f"peer strategy must be one of {', '.join(PEER_STRATEGIES)}")
        self.name = f"peer:{name}"
        self.qs = getattr(small_text, name)()
        np.random.seed(random_state)

    def select(self, pool: Pool, n: int) -> Selection:
        assert pool.probs is not None
        rows = np.arange(pool.size)
        idx = self.qs.query(_Probs(pool.probs), rows, rows, np.zeros(0, dtype=np.int64), np.zeros(0), n=n)
        return Selection(np.asarray(idx, dtype=np.int64), np.full(pool.size, np.nan), self.name)
