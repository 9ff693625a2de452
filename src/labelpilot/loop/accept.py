"""``labelpilot loop accept``: seed 003's step 6 (take the model's labels as the dataset's) and step 8 (the final
model to the registry, as the start of the next project).

Input: the loop's folders as seed 003 defines them: ``input_dir`` (``input_label.csv``, optionally
``input_added_label.csv`` and ``input_unlabel.csv``) and ``output_dir`` of the last round
(``predictions.csv``, ``report.json`` and ``model/``, or the registry version named in ``report.json``).

Output (in ``final_dir``, default ``output_dir``), each file written to a temporary sibling and renamed:

- ``final_label.csv``: ``sampleId, path[, text], label, source, score``: every human label (``source`` =
  ``human``, empty ``score``), then the accepted model labels (``source`` = ``model``, ``score`` = the
  confidence the threshold was applied to), ``|``-separated when multi-label;
- ``final_unlabel.csv``: what is left for humans, in ``input_unlabel.csv``'s own format (``sampleId,path[,text]``),
  so it can feed another round;
- ``accept.json``: the threshold and how it was chosen, the estimated accuracy of the accepted labels with
  a Wilson interval, counts accepted / left for humans, per class, and the held-out rows the threshold was
  chosen on (``held_out.rows``: label, predicted, score, correct).

Which model labels are accepted: all (``accept_all``), those with a score at or above a given ``threshold``,
or (default) those above the lowest threshold at which the **held-out** human labels reach
``target_accuracy`` (``lower_bound``: at which the Wilson lower bound of their accuracy does). Held-out
predictions come from :func:`labelpilot.loop.quality.out_of_fold` (the loop's own cross-validation, or
hold-out above ``CV_MAX_N`` labels) with fresh copies of the round's model (:mod:`labelpilot.loop.threshold`:
the held-out predictions, the Wilson interval and the threshold choice). Only
the rows of ``input_label.csv`` are scored: the rows of ``input_added_label.csv`` are the hard examples the
strategy picked, not a random sample of the pool, so they are trained on in every fold but never scored
(they would make the estimate pessimistic and the threshold too high). The loop keeps no per-row
out-of-fold predictions of its own (``text-linear`` reports only metrics of its internal folds), hence the
refit here; it costs ``CV_FOLDS`` fits of the model.

Score: single-label, the model's confidence in its label (``predictions.csv``'s ``confidence``);
multi-label, the least sure of the per-label decisions (``p`` for a proposed label, ``1 - p`` for one left
out), so the whole set is judged, as accuracy is (exact match) for multi-label items.
The estimate is the share of correct held-out predictions at or above the threshold; the interval is
Wilson's score interval (it stays inside [0, 1] and is sane for small counts and for accuracies near 1).
Per class (``per_class``): pool items predicted with the label, accepted / left, and the held-out accuracy
of the items predicted with it above the threshold (multi-label: exact match of those items' sets).
With ``--all`` or ``--threshold`` the held-out predictions are still made when the model is there, for the
estimate; without a model (or with too few labels) the estimate is reported as missing, with the reason.

Spans and boxes: the operator in this tree trains choices only (``labelpilot loop`` builds a ``Choices``
config), so a model of another kind is refused with a clear message.
"""

from __future__ import annotations

import csv
import json
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from labelpilot.data.types import FitReport
from labelpilot.errors import InputError, NotFoundError
from labelpilot.files import LABEL_SEP, split_labels
from labelpilot.loop import files
from labelpilot.loop.build import _load_previous, _open_registry
from labelpilot.loop.runner import jsonable
from labelpilot.loop.threshold import (
    MIN_HELD_OUT,
    Z_95,
    HeldOut,
    choose_threshold,
    decision_confidence,
    estimate,
    per_class,
    threshold_for,
    wilson,
)
from labelpilot.models.bundle import Bundle
from labelpilot.registry import parse_model_ref

FINAL_LABEL_FILE = "final_label.csv"
FINAL_UNLABEL_FILE = "final_unlabel.csv"
ACCEPT_REPORT_FILE = "accept.json"
DEFAULT_TARGET = 0.95
CHOICE_KINDS = ("text-choices", "text-taxonomy", "image-choices")


@dataclass
class PoolRow:
    """One row of the loop's ``predictions.csv``."""

    sample_id: str
    path: str
    text: str | None
    labels: tuple[str, ...]
    score: float
    line: int



@dataclass
class AcceptResult:
    final_csv: Path
    unlabel_csv: Path
    report_path: Path
    report: dict[str, Any]
    model_ref: str | None = None
    notes: list[str] = field(default_factory=list)


# -- reading ---------------------------------------------------------------------------------------------

def read_predictions(path: Path, keys: Sequence[str], multi: bool) -> list[PoolRow]:
    """The loop's ``predictions.csv``, checked (columns, known labels, numeric scores)."""
    name = path.name
    if not path.is_file():
        raise InputError(f"{name} not found in {path.parent}: run `labelpilot loop` first", field=name)
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh)
            header = [h.strip() for h in next(reader, [])]
            records = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{name}: cannot read as a UTF-8 CSV: {exc}", field=name) from None
    need = ["sampleId", "label", "confidence"]
    missing = [h for h in need if h not in header]
    if "path" not in header and "text" not in header:
        missing.append("path")
    prob_cols = {k: f"prob_{k}" for k in keys}
    if multi:
        missing += [c for c in prob_cols.values() if c not in header]
    if missing:
        raise InputError(
            f"{name}: missing column(s) {', '.join(missing)} (expected the loop's predictions: sampleId, path, "
            f"label, confidence, ..., prob_<label>); header: {','.join(header)}",
            field=name,
        )
    col = {h: i for i, h in enumerate(header)}
    known = set(keys)
    out: list[PoolRow] = []
    seen: set[str] = set()
    for n, rec in enumerate(records, start=2):
        if not rec or all(not c.strip() for c in rec):
            continue
        if len(rec) != len(header):
            raise InputError(f"{name} line {n}: {len(rec)} fields, the header has {len(header)}", field=name)
        sid = rec[col["sampleId"]].strip()
        if not sid or sid in seen:
            raise InputError(f"{name} line {n}: {'duplicate' if sid else 'empty'} sampleId {sid!r}", field=name)
        seen.add(sid)
        labels = split_labels(rec[col["label"]])
        bad = [lab for lab in labels if lab not in known]
        if bad:
            raise InputError(
                f"{name} line {n} (sampleId={sid!r}): label(s) {', '.join(map(repr, bad))} unknown to the round "
                f"(its labels: {', '.join(keys)})",
                field=name,
            )
        try:
            score = float(rec[col["confidence"]])
            probs = {k: float(rec[col[c]]) for k, c in prob_cols.items() if c in col} if multi else None
        except ValueError:
            raise InputError(f"{name} line {n} (sampleId={sid!r}): confidence/prob_ is not a number",
                             field=name) from None
        text = rec[col["text"]] if "text" in col and rec[col["text"]] else None
        path_cell = rec[col["path"]] if "path" in col else ""
        out.append(PoolRow(sid, path_cell, text, labels, decision_confidence(labels, probs, score, multi), n))
    return out


def _read_report(output_dir: Path) -> dict[str, Any]:
    path = output_dir / files.REPORT_FILE
    if not path.is_file():
        raise InputError(
            f"{files.REPORT_FILE} not found in {output_dir}: it must be the output folder of `labelpilot loop`",
            field="output_dir",
        )
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: unreadable ({exc})", field="output_dir") from None
    if not isinstance(report, dict) or not isinstance(report.get("labels"), list):
        raise InputError(f"{path} is not a loop report (no labels)", field="output_dir")
    return report


def _model_ref(report: dict[str, Any], output_dir: Path, model_id: str | None) -> str | None:
    if model_id:
        return model_id
    model = report.get("model") or {}
    if model.get("registry"):
        return f"{model['registry']['name']}@{model['registry']['version']}"
    folder = output_dir / "model"
    return str(folder) if folder.is_dir() else None



# -- writing -----------------------------------------------------------------------------------------------
def _tmp_csv(final: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return Path(tmp)


def _round_model(
    ref: str | None, reg: Any, output_dir: Path, keys: Sequence[str], *, need_model: bool, name: str | None,
    notes: list[str],
) -> tuple[Any, Any, str | None, str | None, Path | None]:
    """The round's model (model, control, parent ref, ref, its folder): loaded and checked, or Nones with a note."""
    model = control = None
    parent_ref = None
    model_path: Path | None = None
    in_other_registry = False
    if ref is None and need_model:
        raise InputError(
            f"no model: {output_dir}/model is missing and report.json names no registry version (pass --model-id)"
            + ("" if name else "; without a model no threshold can be chosen: pass --threshold T or --all"),
            field="model_id",
        )
    if ref is not None and reg is None and not Path(ref).is_dir():
        if need_model:
            raise InputError(f"the round's model is {ref} in a registry: pass --registry (the loop's)",
                             field="registry")
        notes.append(f"the round's model {ref} is in a registry that was not given: accuracy not estimated")
        ref, in_other_registry = None, True
    if ref is not None:
        _schema, control, model, parent_ref, _hist = _load_previous(ref, reg)
        if str(control.kind) not in CHOICE_KINDS:
            raise InputError(
                f"the round's model is a {control.kind} model: accept handles choices (single- and multi-label) "
                "only, as `labelpilot loop` does in this version; spans and boxes are not supported",
                field="model",
            )
        if list(control.label_keys) != keys:
            raise InputError(f"the model's labels ({', '.join(control.label_keys)}) are not the round's "
                             f"({', '.join(keys)})", field="model_id")
        in_registry = reg is not None and not Path(ref).is_dir()
        model_path = reg.get(*parse_model_ref(ref)).path if in_registry else Path(ref)

    if ref is None and not in_other_registry:
        notes.append(f"no model in {output_dir} (and no --model-id): accuracy not estimated")
    return model, control, parent_ref, ref, model_path



def _write_final(
    final_dir: Path, label_csv: tuple[list[str], list[list[object]]], unlabel_csv: tuple[list[str], list[list[object]]],
    out: dict[str, Any], *, name: str | None, reg: Any, model_path: Path | None, parent_ref: str | None,
    report: dict[str, Any],
) -> Any:
    """Stage the three files next to their targets (and register the model), then rename them in; the registry
    version or None."""
    header, rows_out = label_csv
    left_header, left_rows = unlabel_csv
    final_dir.mkdir(parents=True, exist_ok=True)
    staged: list[tuple[Path, Path]] = []
    try:
        staged.append((_tmp_csv(final_dir / FINAL_LABEL_FILE, header, rows_out), final_dir / FINAL_LABEL_FILE))
        staged.append((_tmp_csv(final_dir / FINAL_UNLABEL_FILE, left_header, left_rows),
                       final_dir / FINAL_UNLABEL_FILE))
        mv = None
        if name is not None:
            mv = _register(reg, name, model_path, parent_ref, report, out)
            out["model"]["registered"] = {"name": mv.name, "version": mv.version, "tag": mv.tag}
        fd, tmp = tempfile.mkstemp(prefix=f".{ACCEPT_REPORT_FILE}.", suffix=".tmp", dir=final_dir)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(jsonable(out), fh, ensure_ascii=False, indent=1)
        staged.append((Path(tmp), final_dir / ACCEPT_REPORT_FILE))
        for src, dst in staged:
            os.replace(src, dst)
    finally:
        for src, _dst in staged:
            if src.exists():
                src.unlink()
    return mv


def _read_round(
    input_dir: Path, output_dir: Path, keys: Sequence[str], multi: bool, notes: list[str]
) -> tuple[tuple[list[files.SeedRow], list[files.SeedRow], list[files.SeedRow]], list[PoolRow], list[PoolRow]]:
    """The loop's three input files, the round's predictions and those of them still without a human label."""
    init_rows = files.read_seed_rows(input_dir, files.LABEL_FILE, labelled=True)
    added_rows = files.read_seed_rows(input_dir, files.ADDED_FILE, labelled=True, required=False)
    unlabel_rows = files.read_seed_rows(input_dir, files.UNLABEL_FILE, labelled=False, required=False)
    files.check_disjoint([init_rows, added_rows])
    pool_all = read_predictions(output_dir / files.PREDICTIONS_FILE, keys, multi)
    human_ids = {r.sample_id for r in [*init_rows, *added_rows]}
    pool = [r for r in pool_all if r.sample_id not in human_ids]  # labelled since the round: the human wins
    if len(pool) < len(pool_all):
        notes.append(f"{len(pool_all) - len(pool)} predicted rows have a human label since the round; "
                     "the human label is kept")
    return (init_rows, added_rows, unlabel_rows), pool_all, pool


def _estimates(
    held: HeldOut | None, t: float | None, n_acc: int, n_human: int
) -> tuple[dict[str, Any], float | None]:
    """The estimated accuracy of the accepted model labels, and of the whole final set (human labels count
    as right)."""
    est = estimate(held, t)
    if held is None:
        est["note"] = "not estimated: no held-out predictions (see notes)"
    final_est = None
    if est["accuracy"] is not None and n_acc + n_human:
        final_est = (n_human + est["accuracy"] * n_acc) / (n_human + n_acc)
    return est, final_est


def _accepted(pool: Sequence[PoolRow], t_eff: float) -> tuple[np.ndarray, np.ndarray]:
    """(accepted, has a label) per pool row: a model label is accepted when its score reaches ``t_eff``."""
    scores = np.array([r.score for r in pool], dtype=np.float64)
    has_label = np.array([bool(r.labels) for r in pool], dtype=bool)
    accepted = has_label & (scores >= t_eff)
    return accepted, has_label


def _mode(accept_all: bool, threshold: float | None, target_accuracy: float, lower_bound: bool) -> dict[str, Any]:
    """``accept.json``'s account of how model labels were to be accepted (all, by hand, or by the target)."""
    choose = threshold is None and not accept_all
    return {
        "mode": "all" if accept_all else ("threshold" if threshold is not None else "target"),
        "target_accuracy": None if accept_all or threshold is not None else target_accuracy,
        "lower_bound_rule": bool(lower_bound and choose),
    }


def _check_arguments(
    input_dir: Path, output_dir: Path, target_accuracy: float, threshold: float | None, accept_all: bool
) -> None:
    """Refuse contradictory or out-of-range settings and missing folders (InputError naming the field)."""
    if accept_all and threshold is not None:
        raise InputError("give either --all or --threshold, not both", field="threshold")
    if not 0.0 < target_accuracy <= 1.0:
        raise InputError(f"target_accuracy must be in (0, 1], got {target_accuracy}", field="target_accuracy")
    if threshold is not None and not (math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
        raise InputError(f"threshold must be in [0, 1], got {threshold}", field="threshold")
    if not input_dir.is_dir():
        raise InputError(f"input_dir {input_dir} is not a folder", field="input_dir")
    if not output_dir.is_dir():
        raise InputError(f"output_dir {output_dir} is not a folder (the output of `labelpilot loop`)",
                         field="output_dir")


def _final_tables(
    seed_rows: tuple[Sequence[files.SeedRow], Sequence[files.SeedRow], Sequence[files.SeedRow]],
    pool: Sequence[PoolRow], pool_all: Sequence[PoolRow], accepted: np.ndarray, human_ids: set[str],
    notes: list[str],
) -> tuple[tuple[list[str], list[list[object]]], tuple[list[str], list[list[object]]]]:
    """(header, rows) of ``final_label.csv`` (human labels, then the accepted model labels) and of
    ``final_unlabel.csv`` (the rest of the pool, then unlabelled rows the round did not predict)."""
    init_rows, added_rows, unlabel_rows = seed_rows
    inline = any(r.inline for r in [*init_rows, *added_rows, *unlabel_rows]) or any(r.text for r in pool)
    header = ["sampleId", "path", *(["text"] if inline else []), "label", "source", "score"]
    rows_out: list[list[object]] = []
    for r in [*init_rows, *added_rows]:
        rows_out.append([r.sample_id, r.path, *([r.text if r.inline else ""] if inline else []),
                         LABEL_SEP.join(r.labels), "human", ""])
    for r, ok in zip(pool, accepted, strict=True):
        if ok:
            rows_out.append([r.sample_id, r.path, *([r.text or ""] if inline else []),
                             LABEL_SEP.join(r.labels), "model", f"{r.score:.6f}"])
    left = [r for r, ok in zip(pool, accepted, strict=True) if not ok]
    predicted_ids = {r.sample_id for r in pool_all}
    unpredicted = [r for r in unlabel_rows if r.sample_id not in predicted_ids and r.sample_id not in human_ids]
    if unpredicted:
        notes.append(f"{len(unpredicted)} rows of {files.UNLABEL_FILE} were not predicted by the round: left for "
                     "humans")
    left_header = ["sampleId", "path", *(["text"] if inline else [])]
    left_rows = [[r.sample_id, r.path, *([r.text or ""] if inline else [])] for r in left]
    left_rows += [[r.sample_id, r.path, *([r.text if r.inline else ""] if inline else [])] for r in unpredicted]
    return (header, rows_out), (left_header, left_rows)


def _held_out_report(held: HeldOut | None) -> dict[str, Any] | None:
    """``accept.json``'s ``held_out``: how the held-out predictions were made and every row of them."""
    return None if held is None else {
        "method": held.method, "detail": held.detail, "n": int(held.scores.shape[0]),
        "accuracy": float(held.correct.mean()) if held.correct.shape[0] else None,
        "rows": [{"sampleId": sid, "label": LABEL_SEP.join(g), "predicted": LABEL_SEP.join(pr),
                  "score": None if not math.isfinite(sc) else round(float(sc), 6), "correct": bool(ok)}
                 for sid, g, pr, sc, ok in zip(held.ids, held.gold, held.pred, held.scores, held.correct,
                                               strict=True)],
    }


def run_accept(
    input_dir: str | Path,
    output_dir: str | Path,
    *,
    target_accuracy: float = DEFAULT_TARGET,
    threshold: float | None = None,
    accept_all: bool = False,
    name: str | None = None,
    registry: Any = None,
    model_id: str | None = None,
    final_dir: str | Path | None = None,
    random_seed: int | None = None,
    min_held_out: int = MIN_HELD_OUT,
    lower_bound: bool = False,
) -> AcceptResult:
    """Write the final labelled set (see the module docstring). ``registry``: a
    :class:`~labelpilot.registry.Registry` or its root; needed for ``name`` (the final model is registered
    as a new version of ``name``) and to load a loop model that lives in a registry. ``model_id``: the
    round's model when ``report.json`` does not say (a folder or ``NAME@VERSION``). ``random_seed``: of
    the folds (default: the round's). ``lower_bound``: choose the threshold where the Wilson lower bound,
    not the estimate, reaches ``target_accuracy`` (fewer labels accepted, a safer claim)."""

    input_dir, output_dir = Path(input_dir), Path(output_dir)
    final_dir = Path(final_dir) if final_dir is not None else output_dir
    _check_arguments(input_dir, output_dir, target_accuracy, threshold, accept_all)

    report = _read_report(output_dir)
    keys = [str(k) for k in report["labels"]]
    multi = bool(report.get("multi_label"))
    seed = int(report.get("random_seed", 0)) if random_seed is None else random_seed
    notes: list[str] = []
    (init_rows, added_rows, unlabel_rows), pool_all, pool = _read_round(input_dir, output_dir, keys, multi, notes)
    human_ids = {r.sample_id for r in [*init_rows, *added_rows]}

    reg = _open_registry(registry)
    ref = _model_ref(report, output_dir, model_id)
    choose = threshold is None and not accept_all
    model, control, parent_ref, ref, model_path = _round_model(ref, reg, output_dir, keys, notes=notes, name=name,
                                                                need_model=name is not None or choose)
    held, t, t_eff, how = threshold_for((init_rows, added_rows), model, control, report, seed=seed, choose=choose,
                                         accept_all=accept_all, threshold=threshold, target_accuracy=target_accuracy,
                                         min_held_out=min_held_out, lower_bound=lower_bound, notes=notes)

    accepted, has_label = _accepted(pool, t_eff)
    n_acc, n_human = int(accepted.sum()), len(human_ids)
    est, final_est = _estimates(held, None if accept_all else t_eff, n_acc, n_human)

    (header, rows_out), (left_header, left_rows) = _final_tables(
        (init_rows, added_rows, unlabel_rows), pool, pool_all, accepted, human_ids, notes
    )

    classes = per_class(keys, [r.labels for r in pool], accepted, held, None if accept_all else t_eff, Z_95)
    out = {
        "input_dir": str(input_dir),
        "output_dir": str(output_dir),
        **_mode(accept_all, threshold, target_accuracy, lower_bound),
        "threshold": t,
        "threshold_rule": how,
        "score": "confidence of the label" if not multi else "least sure per-label decision (p or 1-p)",
        "multi_label": multi,
        "labels": keys,
        "estimated_accuracy": {**est, "interval": "Wilson 95%",
                               "on": "held-out human labels of input_label.csv at or above the threshold"},
        "estimated_accuracy_final_set": final_est,
        "counts": {"human": n_human, "predicted": len(pool), "accepted": n_acc, "left_for_humans": len(left_rows),
                   "no_label_predicted": int((~has_label).sum()), "coverage": n_acc / len(pool) if pool else None,
                   "final_labelled": n_human + n_acc},
        "per_class": classes,
        "held_out": _held_out_report(held),
        "model": {"from": ref, "registered": None},
        "files": {"final_label": str(final_dir / FINAL_LABEL_FILE),
                  "final_unlabel": str(final_dir / FINAL_UNLABEL_FILE)},
        "notes": notes,
    }

    mv = _write_final(final_dir, (header, rows_out), (left_header, left_rows), out, name=name, reg=reg,
                      model_path=model_path, parent_ref=parent_ref, report=report)
    return AcceptResult(final_dir / FINAL_LABEL_FILE, final_dir / FINAL_UNLABEL_FILE, final_dir / ACCEPT_REPORT_FILE,
                        out, None if mv is None else f"{mv.name}@{mv.version}", notes)


def _register(reg: Any, name: str, model_path: Path | None, parent: str | None, report: dict[str, Any],
              out: dict[str, Any]) -> Any:
    """The round's model as a new version of ``name`` (as ``labelpilot train`` stores its models), with the
    loop's training report and the accept figures in its metrics."""

    if reg is None:
        raise InputError("--name needs a registry: pass --registry or --data-dir", field="registry")
    if model_path is None:
        raise NotFoundError("no model to register", field="model_id")
    fit = FitReport.from_dict(report.get("fit") or {})
    est = out["estimated_accuracy"]
    extra = {"accept_accepted": out["counts"]["accepted"], "accept_human": out["counts"]["human"],
             "accept_coverage": out["counts"]["coverage"], "accept_threshold": out["threshold"],
             "accept_est_accuracy": est["accuracy"], "accept_est_low": est["low"], "accept_est_high": est["high"]}
    fit.metrics = {**fit.metrics, **{k: v for k, v in extra.items() if v is not None}}
    fit.notes = [*fit.notes, f"loop accept: {out['counts']['final_labelled']} final labels "
                 f"({out['counts']['human']} human, {out['counts']['accepted']} model)"]
    return reg.register(name, Bundle.load(model_path), report=fit, parent=parent)


__all__ = [
    "ACCEPT_REPORT_FILE",
    "FINAL_LABEL_FILE",
    "FINAL_UNLABEL_FILE",
    "AcceptResult",
    "choose_threshold",
    "decision_confidence",
    "run_accept",
    "wilson",
]
