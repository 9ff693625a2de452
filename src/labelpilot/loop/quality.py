"""One round's training: the seed-003 split for early stopping, then the final model on **all** labels, and
a quality figure that uses all labels too.

Seed 003 holds ``val_size`` of ``input_label.csv`` out for early stopping, with the same seed every round.
Taken literally, those rows are never trained on and the validation set never grows: with 40 start labels
a round's accuracy comes from 8 examples. Here a round

1. fits on the seed-003 split (``train``, ``val``) when there is a validation set, as the protocol says
   (early stopping); its validation metrics are kept, named as such, but are not the round's quality.
   Skipped for families that validate themselves and do not stop early (they have k-fold / hold-out
   parameters, as ``text-linear`` does): there it would only double the training time;
2. fits the final model on all labels (``val=None``): the validation rows rejoin training (loop option
   ``refit=False`` keeps the model of step 1 instead);
3. measures quality over all labels, by the first of
   - the model family's own estimate when it fits without ``val`` (``text-linear``: k-fold out-of-fold
     predictions up to 3,000 labels, above that a held-out slice of 10 % that grows with the labels);
   - k-fold cross-validation run here (fresh models of the same class and parameters), up to
     :data:`CV_MAX_N` labels;
   - a stratified hold-out of :data:`HOLDOUT_FRACTION` of all labels (so it grows with them);
   - for seed-003 plug-ins (their training may be expensive and their split is their own): the plug-in's
     validation rows, predicted by the model of step 1.

The method is recorded in ``quality["method"]`` and printed. Metrics are computed here with a few lines of
numpy (accuracy, macro/micro F1, exact match) rather than sklearn.metrics, which would be the loop's only
reason to import it on this path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from labelpilot.data.types import Example, FitReport, Prediction
from labelpilot.errors import LabelpilotError

#: Up to this many labels the loop cross-validates a family that gives no estimate of its own.
CV_MAX_N = 3000
CV_FOLDS = 5
#: Above CV_MAX_N: this fraction of all labels (at most HOLDOUT_MAX) is held out, then the model is refit.
HOLDOUT_FRACTION = 0.1
HOLDOUT_MAX = 5000
#: Fewer labels than this: no quality figure (it would be noise).
MIN_LABELS = 10
#: Metric keys that mean "evaluated on data the model did not train on" in a family's FitReport.
QUALITY_KEYS = ("accuracy", "micro_f1", "macro_f1", "exact_match")


@dataclass
class RoundFit:
    """What :func:`fit_round` did."""

    report: FitReport  # the final model's report (its metrics are the round's quality metrics)
    quality: dict[str, Any]  # method, detail, n, metric, score, metrics
    early_stopping: dict[str, Any] | None = None  # the seed-003 split's fit: n_train, n_val, metrics
    refit: bool = True  # the final model was fitted on all labels (train + val)
    n_labels: int = 0  # labelled examples this round
    n_in_model: int = 0  # examples the final model was trained on
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_labels": self.n_labels,
            "n_in_model": self.n_in_model,
            "refit_on_all": self.refit and self.n_in_model >= self.n_labels,
            "early_stopping": self.early_stopping,
            "quality": self.quality,
            "notes": self.notes,
        }


def _key(labels: Sequence[str]) -> str:
    return "|".join(sorted(labels))


def metrics_of(gold: Sequence[tuple[str, ...]], pred: Sequence[Prediction], keys: Sequence[str], multi: bool) -> dict:
    """Accuracy and macro F1 (single-label), or micro/macro F1 and exact match (multi-label)."""
    g = np.array([[k in labs for k in keys] for labs in gold], dtype=bool).reshape(len(gold), len(keys))
    p = np.array([[k in pr.labels for k in keys] for pr in pred], dtype=bool).reshape(len(pred), len(keys))
    tp = (g & p).sum(axis=0).astype(float)
    denom = g.sum(axis=0) + p.sum(axis=0)
    used = g.sum(axis=0) > 0
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    out = {"macro_f1": float(f1[used].mean()) if used.any() else 0.0}
    if multi:
        out["micro_f1"] = float(2 * tp.sum() / denom.sum()) if denom.sum() else 0.0
        out["exact_match"] = float((g == p).all(axis=1).mean()) if len(gold) else 0.0
    else:
        out["accuracy"] = float(np.mean([pr.labels[:1] == labs[:1] for labs, pr in zip(gold, pred, strict=True)]))
    return out


def _headline(metrics: dict[str, float], multi: bool) -> tuple[str | None, float | None]:
    for name in (("micro_f1", "exact_match", "macro_f1") if multi else ("accuracy", "macro_f1")):
        if isinstance(metrics.get(name), int | float):
            return name, float(metrics[name])
    return None, None


def _folds(examples: Sequence[Example], k: int, seed: int) -> list[np.ndarray]:
    """Stratified folds: each label set's examples dealt round-robin after a seeded shuffle."""
    rng = np.random.default_rng(seed)
    groups: dict[str, list[int]] = {}
    for i, e in enumerate(examples):
        groups.setdefault(_key(e.target.labels if e.target else ()), []).append(i)
    fold_of = np.empty(len(examples), dtype=np.int64)
    offset = 0
    for key in sorted(groups):
        idx = rng.permutation(np.asarray(groups[key]))
        fold_of[idx] = (np.arange(idx.shape[0]) + offset) % k
        offset += idx.shape[0]
    return [np.flatnonzero(fold_of == f) for f in range(k)]


def _predict_folds(
    make: Callable[[], Any],
    examples: Sequence[Example],
    parts: list[np.ndarray],
    always_train: Sequence[Example] = (),
) -> tuple[list[int], list[Prediction]]:
    """Fit a fresh model without each part (plus ``always_train``, never held out) and predict that part;
    (indices, predictions)."""
    done: list[int] = []
    preds: list[Prediction] = []
    for part in parts:
        held = set(part.tolist())
        fold_model = make()
        fold_model.fit([*(e for i, e in enumerate(examples) if i not in held), *always_train], val=None)
        preds.extend(fold_model.predict([examples[i] for i in part]))
        done.extend(part.tolist())
    return done, preds


def out_of_fold(
    make: Callable[[], Any],
    examples: Sequence[Example],
    *,
    seed: int = 0,
    always_train: Sequence[Example] = (),
) -> tuple[list[int], list[Prediction], str, str]:
    """Predictions of ``examples`` by models that did not train on them: (indices, predictions, method,
    detail). Stratified :data:`CV_FOLDS`-fold cross-validation up to :data:`CV_MAX_N` examples, above that a
    stratified hold-out of :data:`HOLDOUT_FRACTION` (at most :data:`HOLDOUT_MAX`). ``always_train`` examples
    are in every fold's training set and never predicted (``loop accept``: the hard examples added after
    the start, which are not a random sample). Errors of the folds' fits propagate."""
    n = len(examples)
    extra = f" (+{len(always_train)} always trained on)" if always_train else ""
    if n <= CV_MAX_N:
        k = min(CV_FOLDS, n)
        parts = _folds(examples, k, seed)
        method, detail = "cross-validation", f"{k}-fold cross-validation over all {n} labels{extra} (run by the loop)"
    else:
        size = min(HOLDOUT_MAX, max(1, round(n * HOLDOUT_FRACTION)))
        parts = [np.sort(_folds(examples, max(2, round(n / size)), seed)[0])]
        method = "hold-out"
        detail = (f"a stratified hold-out of {parts[0].shape[0]} of {n} labels{extra} "
                  f"({HOLDOUT_FRACTION:.0%}, grows with them)")
    idx, preds = _predict_folds(make, examples, parts, always_train)
    return idx, preds, method, detail


def _loop_estimate(
    make: Callable[[], Any] | None, examples: Sequence[Example], keys: Sequence[str], multi: bool, seed: int
) -> dict[str, Any]:
    if make is None:
        return {"method": "none", "detail": "the model cannot be re-created for cross-validation", "n": 0}
    try:
        idx, preds, method, detail = out_of_fold(make, examples, seed=seed)
    except LabelpilotError as exc:
        return {"method": "none", "detail": f"cross-validation failed: {exc.message}", "n": 0}
    except Exception as exc:  # a fold (fewer classes, tiny data) must not fail the round: the final fit decides
        return {"method": "none", "detail": f"cross-validation failed: {type(exc).__name__}: {exc}", "n": 0}
    gold = [examples[i].target.labels if examples[i].target else () for i in idx]
    return {"method": method, "detail": detail, "n": len(idx), "metrics": metrics_of(gold, preds, keys, multi)}


def _family_estimate(report: FitReport, n_usable: int) -> dict[str, Any] | None:
    """The family's own out-of-sample estimate from a fit without ``val``, if it made one (metrics over
    ``n_val`` held-out labels, or ``cv_``-prefixed metrics as the image classifier reports them)."""
    cv = {k[3:]: float(v) for k, v in report.metrics.items()
          if k.startswith("cv_") and k[3:] in (*QUALITY_KEYS, "log_loss")}
    if cv and not any(k in report.metrics for k in QUALITY_KEYS):
        folds = int(report.metrics.get("cv_folds") or 0)
        return {"method": "cross-validation", "n": n_usable, "metrics": cv,
                "detail": f"{folds or 'k'}-fold cross-validation over all {n_usable} labels (by the model family)"}
    if report.n_val <= 0 or not any(k in report.metrics for k in QUALITY_KEYS):
        return None
    note = next((s for s in report.notes if s.startswith("metrics")), "")
    for prefix in ("metrics from ", "metrics on "):
        note = note.removeprefix(prefix)
    method = "cross-validation" if report.n_val >= n_usable else "hold-out"
    if method == "cross-validation":
        detail = f"{note or 'out-of-fold predictions'} over all {report.n_val} labels"
    else:
        detail = f"{note or f'a hold-out of {report.n_val} labels'} (of {n_usable}; grows with the labels)"
    metrics = {k: float(v) for k, v in report.metrics.items() if k in (*QUALITY_KEYS, "log_loss")}
    return {"method": method, "detail": f"{detail} (by the model family)", "n": int(report.n_val),
            "metrics": metrics}


def _self_estimates(model: Any) -> bool:
    """Whether the family estimates its quality itself when fitted without ``val`` (it has k-fold or
    hold-out parameters, as ``text-linear`` does)."""
    params = model.get_params() if callable(getattr(model, "get_params", None)) else {}
    return bool({"cv_folds", "cv_max_n", "holdout"} & set(params))


def _on_val(model: Any, val: Sequence[Example], keys: Sequence[str], multi: bool) -> dict[str, float]:
    preds = model.predict(list(val))
    return metrics_of([e.target.labels if e.target else () for e in val], preds, keys, multi)


def fit_round(
    model: Any,
    train: Sequence[Example],
    val: Sequence[Example] | None,
    *,
    keys: Sequence[str],
    multi: bool,
    make: Callable[[], Any] | None,
    plugin: bool = False,
    refit: bool = True,
    seed: int = 0,
) -> RoundFit:
    """Train ``model`` for one round (see the module docstring); ``make`` returns a fresh unfitted model of
    the same kind for the loop's own cross-validation (None: not possible)."""
    labelled = [*train, *(val or ())]
    notes: list[str] = []
    early: dict[str, Any] | None = None
    self_validates = not plugin and _self_estimates(model)
    if val and self_validates and refit:
        # e.g. text-linear: no early stopping, its val only calibrates, and its fit on all labels validates
        # itself by k-fold; fitting the split first would only double the round's training time
        notes.append(f"the {len(val)}-row seed-003 validation split was not fitted separately (the model family "
                     "validates itself and has no early stopping)")
        val = None
    if val:
        r0 = model.fit(list(train), val=list(val))
        val_metrics = {k: v for k, v in r0.metrics.items() if k in (*QUALITY_KEYS, "log_loss")}
        if not val_metrics:
            val_metrics = _on_val(model, val, keys, multi)
        early = {"n_train": len(train), "n_val": len(val), "metrics": val_metrics,
                 "note": "the seed-003 validation split, used for early stopping"
                 + ("; these rows then rejoin training" if refit else "; not in the final model (refit=False)")}
        if not refit:
            name, score = _headline(val_metrics, multi)
            quality = {"method": "hold-out", "detail": f"the seed-003 validation split ({len(val)} rows; does not "
                       "grow with the labels)", "n": len(val), "metrics": val_metrics, "metric": name, "score": score}
            n_in = r0.n_train or len(train)
            return RoundFit(r0, quality, early, refit=False, n_labels=len(labelled), n_in_model=n_in, notes=notes)
    # the loop's own estimate (when the family has none) runs first, so the final fit is the last one
    loop_quality = None
    if not plugin and not self_validates and len(labelled) >= MIN_LABELS:
        loop_quality = _loop_estimate(make, labelled, keys, multi, seed)
    report = model.fit(labelled, val=None)
    n_usable = len(labelled) - len(report.skipped)
    n_in_model = report.n_train or len(labelled)
    if n_in_model < n_usable:
        skipped = next((s for s in report.notes if "skipped" in s), "")
        notes.append(f"the final model holds {n_in_model} of {n_usable} labels" + (f": {skipped}" if skipped else ""))
    quality = _family_estimate(report, n_usable) if loop_quality is None else None
    if quality is None and loop_quality is not None:
        quality = loop_quality
        if quality.get("metrics"):
            report.metrics = {**report.metrics, **quality["metrics"]}
    elif quality is None and plugin:
        if early is not None:
            quality = {"method": "hold-out", "detail": f"the plug-in's validation split ({len(val or ())} rows), "
                       "predicted by the model before the refit", "n": len(val or ()), "metrics": early["metrics"]}
        else:
            quality = {"method": "none", "detail": "a plug-in without a validation split (val_size=0)", "n": 0}
    elif quality is None:
        quality = {"method": "none", "detail": f"fewer than {MIN_LABELS} labels" if len(labelled) < MIN_LABELS
                   else "the model family gives no estimate of its own", "n": 0}
    quality["metric"], quality["score"] = _headline(quality.get("metrics") or {}, multi)
    return RoundFit(report, quality, early, refit=True, n_labels=len(labelled), n_in_model=n_in_model, notes=notes)


def describe(fit: RoundFit) -> str:
    """One line for the CLI: what the final model holds and where the quality figure comes from."""
    q = fit.quality
    parts = [f"model trained on {fit.n_in_model} of {fit.n_labels} labels"]
    if fit.early_stopping:
        parts.append(
            f"{fit.early_stopping['n_val']} validation rows used for early stopping"
            + (", then refit on all" if fit.refit else ", not in the model (refit=False)")
        )
    if q.get("score") is not None:
        parts.append(f"quality: {q['metric']} {q['score']:.3f} from {q['detail']}")
    else:
        parts.append(f"quality: not measured ({q.get('detail', '')})")
    return "; ".join(parts + fit.notes)


__all__ = ["CV_MAX_N", "RoundFit", "describe", "fit_round", "metrics_of", "out_of_fold"]
