"""The acceptance threshold of ``labelpilot loop accept`` (:mod:`labelpilot.loop.accept`): held-out predictions
of the human labels, the Wilson interval of their accuracy, and the lowest score at which they reach the target.

Held-out predictions come from :func:`labelpilot.loop.quality.out_of_fold` with fresh copies of the round's model;
the score is :func:`decision_confidence` (single-label: the confidence; multi-label: the least sure per-label
decision), rounded as ``predictions.csv`` rounds it, so a threshold chosen here means the same there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from labelpilot.data.types import Prediction
from labelpilot.errors import InputError, LabelpilotError
from labelpilot.loop import files
from labelpilot.loop.build import _check_known_labels, _factory
from labelpilot.loop.quality import out_of_fold

#: The threshold must leave at least this many held-out rows above it (one right answer is not 100 %).
MIN_HELD_OUT = 10
Z_95 = 1.959964


@dataclass
class HeldOut:
    """Out-of-fold predictions of human-labelled rows: score and whether the model was right."""

    ids: list[str]
    gold: list[tuple[str, ...]]
    pred: list[tuple[str, ...]]
    scores: np.ndarray
    correct: np.ndarray
    method: str
    detail: str


# -- statistics ----------------------------------------------------------------------------------------
def wilson(k: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``k / n`` (``(0, 1)`` when ``n`` is 0)."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def choose_threshold(
    scores: np.ndarray, correct: np.ndarray, target: float, min_n: int = MIN_HELD_OUT, *, lower_bound: bool = False,
    z: float = Z_95,
) -> float | None:
    """The lowest score ``t`` (one of ``scores``) such that the rows scoring ``>= t`` are right at least
    ``target`` of the time and are at least ``min_n``; None when no ``t`` reaches the target. ``lower_bound``:
    the Wilson lower bound of that share must reach ``target`` (the point estimate at the chosen ``t`` is
    biased upwards a little, since ``t`` is chosen where it just reaches the target)."""
    if scores.shape[0] == 0:
        return None
    order = np.argsort(-scores, kind="stable")
    s, c = scores[order], correct[order].astype(np.float64)
    cum_n = np.arange(1, s.shape[0] + 1)
    cum_acc = np.cumsum(c) / cum_n
    if lower_bound:
        zz = z * z
        centre = (cum_acc + zz / (2 * cum_n)) / (1 + zz / cum_n)
        half = z * np.sqrt(cum_acc * (1 - cum_acc) / cum_n + zz / (4 * cum_n * cum_n)) / (1 + zz / cum_n)
        cum_acc = centre - half
    # only cut between distinct scores: all rows tied at a score are in or out together
    last_of_tie = np.r_[s[1:] != s[:-1], True]
    ok = np.flatnonzero(last_of_tie & (cum_acc >= target - 1e-12) & (cum_n >= min_n))
    return float(s[ok[-1]]) if ok.shape[0] else None


def estimate(held: HeldOut | None, threshold: float | None, z: float = Z_95) -> dict[str, Any]:
    """Accuracy of the held-out rows at or above ``threshold`` (None: all), with its Wilson interval."""
    if held is None:
        return {"accuracy": None, "low": None, "high": None, "n": 0, "correct": 0}
    mask = np.ones(held.scores.shape[0], dtype=bool) if threshold is None else held.scores >= threshold
    n, k = int(mask.sum()), int(held.correct[mask].sum())
    if n == 0:
        return {"accuracy": None, "low": None, "high": None, "n": 0, "correct": 0}
    lo, hi = wilson(k, n, z)
    return {"accuracy": k / n, "low": lo, "high": hi, "n": n, "correct": k}


def decision_confidence(labels: Sequence[str], probs: dict[str, float] | None, score: float, multi: bool) -> float:
    """The score thresholds apply to (see the module docstring)."""
    if not multi or not probs:
        return float(score)
    chosen = set(labels)
    return float(min((p if k in chosen else 1.0 - p) for k, p in probs.items()))


# -- held-out predictions ----------------------------------------------------------------------------------
def held_out(
    init_rows: Sequence[files.SeedRow],
    train_also: Sequence[files.SeedRow],
    model: Any,
    control: Any,
    seed: int,
) -> HeldOut:
    """Out-of-fold predictions of ``init_rows`` by fresh copies of ``model`` (the loop's cross-validation),
    with ``train_also`` in every fold's training set."""

    make = _factory(model, control, seed)
    if make is None:
        raise InputError(
            "this model (a seed-003 plug-in, or one without get_params) cannot be re-created for held-out "
            "predictions, so no threshold can be chosen: pass --threshold T or --all",
            field="model",
        )
    _check_known_labels([*init_rows, *train_also], control)
    examples = [r.example() for r in init_rows]
    try:
        idx, preds, method, detail = out_of_fold(make, examples, seed=seed,
                                                 always_train=[r.example() for r in train_also])
    except LabelpilotError:
        raise
    except Exception as exc:  # a fold with too few classes and the like
        raise InputError(
            f"held-out predictions failed ({type(exc).__name__}: {exc}); pass --threshold T or --all", field="model"
        ) from None
    multi = bool(control.multiple)
    gold = [init_rows[i].labels for i in idx]
    pred = [p.labels if p.error is None else () for p in preds]
    scores = np.array([_held_score(p, multi) for p in preds], dtype=np.float64)
    if multi:
        correct = np.array([set(g) == set(p) for g, p in zip(gold, pred, strict=True)], dtype=bool)
    else:
        correct = np.array([p[:1] == g[:1] for g, p in zip(gold, pred, strict=True)], dtype=bool)
    return HeldOut([init_rows[i].sample_id for i in idx], gold, pred, scores, correct, method, detail)


def _held_score(p: Prediction, multi: bool) -> float:
    if p.error is not None:
        return -math.inf
    # the same rounding as predictions.csv, so a threshold taken from here means the same there
    probs = {k: round(float(v), 6) for k, v in (p.probs or {}).items()}
    return decision_confidence(p.labels, probs, round(float(p.score), 6), multi)


def threshold_for(
    held_in: tuple[Sequence[files.SeedRow], Sequence[files.SeedRow]], model: Any, control: Any, report: dict[str, Any],
    *, seed: int, choose: bool, accept_all: bool, threshold: float | None, target_accuracy: float, min_held_out: int,
    lower_bound: bool, notes: list[str],
) -> tuple[HeldOut | None, float | None, float, str]:
    """Held-out predictions (always when the model is there: they give the estimate) and the threshold:
    (held, threshold reported, threshold applied, how it was chosen)."""
    init_rows, added_rows = held_in
    held: HeldOut | None = None
    if model is not None:
        used_added = added_rows if int((report.get("split") or {}).get("added_used", 0)) else []
        try:
            if len(init_rows) < min_held_out:
                raise InputError(
                    f"{files.LABEL_FILE} has {len(init_rows)} rows, fewer than {min_held_out}: too few held-out "
                    "labels to choose a threshold; pass --threshold T or --all",
                    field=files.LABEL_FILE,
                )
            held = held_out(init_rows, used_added, model, control, seed)
        except InputError as exc:
            if choose:
                raise
            notes.append(f"accuracy not estimated: {exc.message}")
    if choose:
        assert held is not None
        t = choose_threshold(held.scores, held.correct, target_accuracy, min_held_out, lower_bound=lower_bound)
        if t is None:
            how = (f"no threshold reaches {target_accuracy:.3f} on {held.scores.shape[0]} held-out labels with at "
                   f"least {min_held_out} above it: nothing is accepted (lower --target-accuracy, or --threshold "
                   "/ --all)")
            t_eff = math.inf
        else:
            what = "the Wilson lower bound of the held-out labels' accuracy reaches" if lower_bound else (
                "the held-out labels reach")
            how = f"lowest score at which {what} {target_accuracy:.3f} ({held.detail})"
            t_eff = t
    elif accept_all:
        t, t_eff, how = None, -math.inf, "--all: every model label is accepted"
    else:
        t, t_eff, how = threshold, float(threshold), "--threshold, set by hand"

    return held, t, t_eff, how


def per_class(
    keys: Sequence[str], predicted: Sequence[Sequence[str]], accepted: np.ndarray, held: HeldOut | None,
    t: float | None, z: float,
) -> dict[str, Any]:
    """Per label: pool items predicted with it (``predicted``: each item's labels), accepted (``accepted``) and
    left, and the held-out accuracy of the items predicted with it at or above ``t`` (None: all)."""
    out: dict[str, Any] = {}
    for k in keys:
        in_k = np.array([k in labels for labels in predicted], dtype=bool)
        entry: dict[str, Any] = {"predicted": int(in_k.sum()), "accepted": int((in_k & accepted).sum()),
                                 "left_for_humans": int((in_k & ~accepted).sum())}
        if held is not None:
            mask = np.array([k in p for p in held.pred], dtype=bool)
            if t is not None:
                mask &= held.scores >= t
            n, c = int(mask.sum()), int(held.correct[mask].sum())
            lo, hi = wilson(c, n, z)
            entry["held_out"] = {"n": n, "accuracy": c / n if n else None, "low": lo if n else None,
                                 "high": hi if n else None}
        out[k] = entry
    return out


__all__ = ["MIN_HELD_OUT", "Z_95", "HeldOut", "choose_threshold", "decision_confidence", "estimate", "held_out",
           "per_class", "threshold_for", "wilson"]
