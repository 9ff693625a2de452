"""The operator's round history, so that every round can advise whether to keep labelling.

One entry per round: labels used, the quality figure and its metric, Cohen's kappa and the fraction of
changed predictions against the previous round on the items both predicted, and the pool's mean
uncertainty. The history travels with the model and with the output:

- ``report.json`` (``history``) and ``<model folder>/loop_history.json`` of every round;
- a registry version's metrics (``al_quality``, ``al_n_labels``, ``al_kappa``, ``al_mean_uncertainty``),
  read back along the ``parent`` chain.

Where the previous round is found (first match): ``--model-id`` (a registry version, or a model folder with
its ``loop_history.json``); without ``--model-id``, on a round that is not the first, the previous round's
``report.json`` and ``predictions.csv`` in ``output_dir`` (the seed-003 demo reuses one output folder). The
previous ``predictions.csv`` gives the agreement signal without loading the previous model. A rerun of the
same round (as many labels as the last entry) replaces that entry instead of counting as a new round.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from labelpilot.errors import InputError, NotFoundError
from labelpilot.loop import files
from labelpilot.registry import parse_model_ref
from labelpilot.strategies import StopAdvice, agreement, stop_advice

HISTORY_FILE = "loop_history.json"
MAX_ROUNDS = 500


def _num(x: Any) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def from_registry(reg: Any, mv: Any) -> list[dict[str, Any]]:
    """Entries from a registry version and its parents (oldest first)."""
    out = []
    cur = mv
    for _ in range(MAX_ROUNDS):
        m = cur.metrics
        out.append({
            "n_labels": int(m["al_n_labels"]) if m.get("al_n_labels") is not None else None,
            "quality": _num(m.get("al_quality")),
            "kappa": _num(m.get("al_kappa")),
            "mean_uncertainty": _num(m.get("al_mean_uncertainty")),
            "source": f"{cur.name}@{cur.version}",
        })
        if not cur.parent:
            break
        try:
            cur = reg.get(*parse_model_ref(cur.parent))
        except (NotFoundError, InputError):
            break  # the parent was deleted or is not a registry reference
    return out[::-1]


def from_folder(model_dir: Path) -> list[dict[str, Any]]:
    path = model_dir / HISTORY_FILE
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return []
    return [e for e in data.get("rounds", []) if isinstance(e, dict)]


def from_output_dir(output_dir: Path, labels: Sequence[str]) -> tuple[list[dict[str, Any]], dict[str, str], str]:
    """(history, previous predictions sampleId -> label, note) from a previous round's output folder."""
    report_path = output_dir / files.REPORT_FILE
    if not report_path.is_file():
        return [], {}, f"no earlier round in {output_dir} (no {files.REPORT_FILE}) and no --model-id"
    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return [], {}, f"{report_path} is unreadable; history starts again"
    if list(report.get("labels") or []) != list(labels):
        return [], {}, f"the earlier round in {output_dir} had other labels; history starts again"
    previous: dict[str, str] = {}
    pred_path = output_dir / files.PREDICTIONS_FILE
    if pred_path.is_file():
        with pred_path.open(encoding="utf-8", newline="") as fh:
            for rec in csv.DictReader(fh):
                if rec.get("sampleId") is not None:
                    previous[rec["sampleId"]] = "|".join(sorted(p for p in (rec.get("label") or "").split("|") if p))
    return list(report.get("history") or []), previous, f"earlier rounds from {report_path}"


def drop_rerun(history: list[dict[str, Any]], n_labels: int) -> tuple[list[dict[str, Any]], bool]:
    """A rerun of the last round (as many labels): that entry is dropped, so it is replaced, not repeated."""
    if history and history[-1].get("n_labels") == n_labels:
        return history[:-1], True
    return history, False


def append(history: list[dict[str, Any]], entry: dict[str, Any]) -> list[dict[str, Any]]:
    """History with ``entry`` as the newest round, rounds numbered from 1."""
    new = [dict(e) for e in [*history, entry][-MAX_ROUNDS:]]
    for i, e in enumerate(new, start=1):
        e["round"] = i
    return new


def advise(
    history: list[dict[str, Any]],
    n_labels: int,
    quality: dict[str, Any],
    mean_uncertainty: float | None,
    previous: dict[str, str] | None,
    pool_ids: Sequence[str],
    predicted: Sequence[str],
) -> tuple[list[dict[str, Any]], StopAdvice]:
    """This round's entry appended to ``history``, and the stopping advice from all rounds. ``previous``:
    the previous round's predicted label per sampleId (its model's, or its ``predictions.csv``); agreement
    is measured on the pool items both rounds predicted."""
    kappa = changed = None
    if previous:
        common = [i for i, sid in enumerate(pool_ids) if sid in previous]
        if common:
            kappa, changed = agreement([previous[pool_ids[i]] for i in common], [predicted[i] for i in common])
    entry = {
        "n_labels": n_labels,
        "quality": quality.get("score"),
        "quality_metric": quality.get("metric"),
        "quality_method": quality.get("method"),
        "kappa": kappa,
        "changed": changed,
        "mean_uncertainty": mean_uncertainty,
    }
    rounds = append(history, entry)
    advice = stop_advice(
        [e["kappa"] for e in rounds if e.get("kappa") is not None],
        [e["mean_uncertainty"] for e in rounds if e.get("mean_uncertainty") is not None],
        qualities=[e.get("quality") for e in rounds],
    )
    advice.changed = changed
    return rounds, advice


def write_folder(model_dir: Path, history: list[dict[str, Any]]) -> None:
    (model_dir / HISTORY_FILE).write_text(json.dumps({"rounds": history}, indent=1), encoding="utf-8")


__all__ = [
    "HISTORY_FILE",
    "advise",
    "append",
    "drop_rerun",
    "from_folder",
    "from_output_dir",
    "from_registry",
    "write_folder",
]
