"""Learning curves of the active-learning simulation and their summary, shared by the text and NER parts.

:class:`Curve` is one strategy's run for one seed; :func:`summarise` turns the curves of every strategy into
the figures of the table (labels to reach 95% of the full-pool score, area, deficiency vs random, worst gap).
Kept apart from ``simulate.py`` so that ``simulate_ner.py`` can use them without importing the text part
(which imports ``simulate_ner``: the two used to import each other).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Curve:
    """One strategy, one seed: labelled counts, scores and seconds per round."""

    strategy: str
    seed: int
    labels: list[int] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    round_seconds: list[float] = field(default_factory=list)
    select_seconds: list[float] = field(default_factory=list)


def summarise(curves: dict[str, list[Curve]], full: float, target_frac: float = 0.95) -> dict[str, dict[str, Any]]:
    """Per strategy: mean curve, labels to reach ``target_frac * full``, normalised area, deficiency vs random,
    worst relative gap below random, mean seconds per round."""
    out: dict[str, dict[str, Any]] = {}
    target = target_frac * full
    means = {}
    for name, cs in curves.items():
        L = min(len(c.scores) for c in cs)
        M = np.array([c.scores[:L] for c in cs])
        means[name] = (np.array(cs[0].labels[:L]), M.mean(axis=0), M.std(axis=0))
    base = means.get("random")
    for name, (x, m, s) in means.items():
        hit = np.flatnonzero(m >= target)
        need = int(x[hit[0]]) if len(hit) else None
        area = float(np.trapezoid(m, x) / (x[-1] - x[0])) if len(x) > 1 else float(m[0])
        row: dict[str, Any] = {
            "labels_to_target": need,
            "budget": int(x[-1]),
            "auc": area,
            "final": float(m[-1]),
            "seconds_per_round": float(np.mean([np.mean(c.round_seconds) for c in curves[name] if c.round_seconds])),
            "select_seconds": float(np.mean([np.mean(c.select_seconds) for c in curves[name] if c.select_seconds])),
            "x": x.tolist(),
            "mean": m.tolist(),
            "std": s.tolist(),
        }
        if base is not None:
            bm = base[1]
            L = min(len(bm), len(m))
            denom = float(np.sum(np.maximum(full - bm[:L], 0)))
            row["deficiency"] = float(np.sum(np.maximum(full - m[:L], 0)) / denom) if denom > 0 else None
            row["worst_gap_vs_random"] = float(np.max((bm[:L] - m[:L]) / np.maximum(bm[:L], 1e-9)))
        out[name] = row
    rneed = out.get("random", {}).get("labels_to_target")
    for row in out.values():
        need = row["labels_to_target"]
        if rneed and need:
            row["saving_vs_random"] = 1.0 - need / rneed
        elif need and rneed is None and "random" in out:
            row["saving_vs_random_at_least"] = 1.0 - need / out["random"]["budget"]
    return out
