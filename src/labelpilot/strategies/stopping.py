"""When to stop labelling: agreement of consecutive models on the unlabelled pool, and overall uncertainty.

Two signals, both computed on the items still unlabelled (a "stop set" that costs no labels):

- **stabilising predictions** (Bloodgood & Vijay-Shanker 2009): Cohen's kappa between the labels that the
  previous and the current model predict on the same items; when kappa stays >= ``kappa`` (0.99) for
  ``window`` consecutive rounds, more labels barely change the model.
- **quality plateau**: the round's quality (cross-validated over all labels) improved by less than
  ``quality_delta`` over the last ``quality_window`` rounds compared with the best before them;
- **overall uncertainty**: the mean uncertainty of the pool; when it stops falling (changes by less than
  ``uncertainty_delta`` over the window) or is below ``max_uncertainty``, the model has little left to learn
  from this pool.

:func:`stop_advice` is stateless (give it the history); :class:`StoppingMonitor` keeps the history for
you across rounds. Both only *suggest* stopping: people decide.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np
from sklearn.metrics import cohen_kappa_score


def agreement(previous: Sequence[Hashable], current: Sequence[Hashable]) -> tuple[float, float]:
    """(Cohen's kappa, fraction of changed predictions) between two label sequences of equal length.

    Multi-label predictions should be passed as hashable canonical forms (e.g. sorted tuples or "a|b").
    Kappa is 1.0 when both are identical (even with a single class), 0.0 for empty input.
    """
    if len(previous) != len(current):
        raise ValueError(f"sequences differ in length: {len(previous)} vs {len(current)}")
    if not previous:
        return 0.0, 0.0
    a = [str(x) for x in previous]
    b = [str(x) for x in current]
    changed = float(np.mean([x != y for x, y in zip(a, b, strict=True)]))
    if changed == 0.0:
        return 1.0, 0.0
    kappa = float(cohen_kappa_score(a, b))
    return (0.0 if np.isnan(kappa) else kappa), changed


@dataclass
class StopAdvice:
    stop: bool
    reason: str
    kappa: float | None = None
    changed: float | None = None
    mean_uncertainty: float | None = None
    history: dict[str, list[float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {
            "stop": self.stop,
            "reason": self.reason,
            "kappa": self.kappa,
            "changed": self.changed,
            "mean_uncertainty": self.mean_uncertainty,
            "history": self.history,
        }


def stop_advice(
    kappas: Sequence[float],
    mean_uncertainties: Sequence[float],
    *,
    kappa: float = 0.99,
    window: int = 3,
    uncertainty_delta: float = 0.005,
    max_uncertainty: float | None = None,
    qualities: Sequence[float | None] = (),
    quality_window: int = 2,
    quality_delta: float = 0.01,
) -> StopAdvice:
    """Suggest stopping from per-round histories (oldest first; the last entry is this round).

    ``kappas[i]`` is the agreement of round i's model with round i-1's on the pool (NaN or missing for the
    first round); ``mean_uncertainties[i]`` the mean uncertainty of round i's model on its pool;
    ``qualities[i]`` round i's quality (e.g. cross-validated accuracy; None when not measured).
    """
    ks = [k for k in kappas if k is not None and not np.isnan(k)]
    us = [u for u in mean_uncertainties if u is not None and not np.isnan(u)]
    qs = [q for q in qualities if q is not None and not np.isnan(q)]
    hist = {"kappa": list(ks), "mean_uncertainty": list(us), "quality": list(qs)}
    last_k = ks[-1] if ks else None
    last_u = us[-1] if us else None
    if len(ks) >= window and min(ks[-window:]) >= kappa:
        reason = f"predictions stable: kappa >= {kappa} for the last {window} rounds"
        return StopAdvice(True, reason, last_k, None, last_u, hist)
    if len(qs) > quality_window and qs[-1] - max(qs[:-quality_window]) < quality_delta:
        best = max(qs[:-quality_window])
        reason = (f"quality plateau: {qs[-1]:.3f} now, best {best:.3f} before the last {quality_window} rounds "
                  f"(gain < {quality_delta})")
        return StopAdvice(True, reason, last_k, None, last_u, hist)
    if max_uncertainty is not None and last_u is not None and last_u <= max_uncertainty:
        return StopAdvice(True, f"mean uncertainty {last_u:.4f} <= {max_uncertainty}", last_k, None, last_u, hist)
    if len(us) > window and max(us[-window - 1 :]) - min(us[-window - 1 :]) < uncertainty_delta:
        reason = f"mean uncertainty flat (range < {uncertainty_delta}) over the last {window} rounds"
        return StopAdvice(True, reason, last_k, None, last_u, hist)
    need = max(0, window - len(ks))
    why = "keep labelling" + (f": need {need} more round(s) of agreement data" if need else ": model still changing")
    if len(qs) >= 2:
        why += f"; quality {qs[-2]:.3f} -> {qs[-1]:.3f}"
    return StopAdvice(False, why, last_k, None, last_u, hist)


class StoppingMonitor:
    """Keeps the previous round's predictions and the histories; call :meth:`update` once per round.

    ``update(ids, predicted, uncertainty)``: item ids of the pool, the predicted label of each (hashable),
    and the per-item uncertainty; agreement is computed on the ids both rounds predicted.
    """

    def __init__(
        self,
        kappa: float = 0.99,
        window: int = 3,
        uncertainty_delta: float = 0.005,
        max_uncertainty: float | None = None,
    ) -> None:
        self.kappa = kappa
        self.window = window
        self.uncertainty_delta = uncertainty_delta
        self.max_uncertainty = max_uncertainty
        self.kappas_: list[float] = []
        self.uncertainties_: list[float] = []
        self._previous: dict[Hashable, Hashable] | None = None

    def update(
        self, ids: Sequence[Hashable], predicted: Sequence[Hashable], uncertainty: Sequence[float] | np.ndarray
    ) -> StopAdvice:
        current = dict(zip(ids, predicted, strict=True))
        changed = None
        if self._previous is not None:
            common = [i for i in ids if i in self._previous]
            k, changed = agreement([self._previous[i] for i in common], [current[i] for i in common])
            self.kappas_.append(k)
        u = np.asarray(uncertainty, dtype=np.float64)
        self.uncertainties_.append(float(np.nanmean(u)) if u.size else float("nan"))
        self._previous = current
        advice = stop_advice(
            self.kappas_,
            self.uncertainties_,
            kappa=self.kappa,
            window=self.window,
            uncertainty_delta=self.uncertainty_delta,
            max_uncertainty=self.max_uncertainty,
        )
        advice.changed = changed
        return advice
