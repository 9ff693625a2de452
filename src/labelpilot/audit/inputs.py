"""What an audit reads: a labelled file (the formats ``labelpilot train`` reads, through its own reader) or a
Label Studio JSON export with its label config, where every annotation of a task is kept per annotator for the
agreement tables (training keeps only one: ``pick_annotation``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labelpilot.data.labelstudio import pick_annotation, result_target, task_training_example
from labelpilot.data.types import Example, Target
from labelpilot.errors import InputError
from labelpilot.schema import ControlSpec, parse_label_config

__all__ = ["AuditInput", "annotator_name", "load_ls_export"]


@dataclass
class AuditInput:
    control: ControlSpec
    examples: list[Example]  # one per task/row, with the annotation to audit as target
    annotations: list[dict[str, Target]] = field(default_factory=list)  # per task: annotator -> target
    bad_rows: list[str] = field(default_factory=list)


def annotator_name(annotation: Mapping[str, Any]) -> str:
    """Who made an annotation: ``completed_by``'s email (an export with user details) or its id."""
    who = annotation.get("completed_by")
    if isinstance(who, Mapping):
        who = who.get("email") or who.get("username") or who.get("id")
    return f"annotator {who}" if isinstance(who, int) else str(who) if who not in (None, "") else "unknown"


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise InputError(f"{path}: no such file", field="data")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a JSON file ({exc})", field="data") from exc


def load_ls_export(path: Path, config: str, control_name: str | None = None) -> AuditInput:
    """Tasks of a Label Studio export; the control is ``control_name`` or the config's first supported one."""
    schema = parse_label_config(config)
    if not schema.controls:
        raise InputError("the label config has no control labelpilot can model", field="config")
    if control_name is None:
        control = schema.controls[0]
    else:
        control = next((c for c in schema.controls if c.name == control_name), None)  # type: ignore[assignment]
        if control is None:
            raise InputError(f"no control {control_name!r} in the label config; known: "
                             f"{[c.name for c in schema.controls]}", field="control")
    tasks = _read_json(path)
    if isinstance(tasks, Mapping):
        tasks = [tasks]
    if not isinstance(tasks, list):
        raise InputError(f"{path}: a Label Studio export is a JSON list of tasks", field="data")
    out = from_tasks(tasks, control, source=path.name)
    if not out.examples:
        detail = f" ({out.bad_rows[0]})" if out.bad_rows else ""
        raise InputError(f"{path}: no annotated task for control {control.name!r}{detail}", field="data")
    return out


def from_tasks(tasks: Sequence[Any], control: ControlSpec, source: str = "tasks") -> AuditInput:
    """Examples (the annotation training would learn from: ``pick_annotation``) and every annotator's
    target per task, from tasks in Label Studio's export shape."""
    out = AuditInput(control, [])
    for n, task in enumerate(tasks, 1):
        if not isinstance(task, Mapping) or not isinstance(task.get("data"), Mapping):
            out.bad_rows.append(f"{source}: task #{n}: not a task object with 'data'")
            continue
        usable = [a for a in task.get("annotations") or [] if isinstance(a, Mapping) and not a.get("was_cancelled")]
        chosen = pick_annotation(usable)
        if chosen is None:
            continue
        example, reasons = task_training_example(task, list(chosen.get("result") or []), control)
        out.bad_rows.extend(f"{source}: task #{n}: {r}" for r in reasons)
        if example is None:
            continue
        if example.id is None:
            example.id = str(n)
        by_annotator: dict[str, Target] = {}
        for ann in usable:
            target, _ = result_target(ann.get("result") or [], control)
            if target is None:
                continue
            name = annotator_name(ann)
            key, k = name, 2
            while key in by_annotator:  # the same person twice: keep both, apart
                key, k = f"{name}#{k}", k + 1
            by_annotator[key] = target
        out.examples.append(example)
        out.annotations.append(by_annotator)
    return out

