"""After a training: find the project's suspect annotations and show them where reviewers look.

The version is registered and served first; then, in the same job (progress ``auditing labels``), the
annotated tasks get out-of-fold predictions (:func:`labelpilot.audit.audit_project`), and the result goes to

* the version's report (``suspects`` rows, ``audit`` summary) — the dashboard's suspects panel and
  ``labelpilot models show`` read it;
* Label Studio, as predictions on the annotated tasks under their own model version ``<tag>-suspects``: the
  prediction's ``score`` is the suspicion (0..1) and its result the label the out-of-fold model proposes
  (choices; spans and boxes get an empty result, their suggestion is in the report). In the Data Manager a
  reviewer picks that model version (project settings → Predictions) and sorts by *Prediction score*.

Which trainings are audited: ``LABELPILOT_AUDIT`` = ``start`` (default: jobs from Start Training, i.e. the full
export a person asked for), ``always`` or ``off``; and only projects with ``LABELPILOT_AUDIT_MIN_TASKS`` (10) to
``LABELPILOT_AUDIT_MAX_TASKS`` (20,000) annotated tasks, since the audit costs about five more fits. A failing
audit never fails the job: the reason goes to the version's notes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from labelpilot.audit.project import ProjectAudit, audit_project
from labelpilot.config import Settings
from labelpilot.data.labelstudio import prediction_regions
from labelpilot.data.types import Prediction
from labelpilot.errors import LabelpilotError
from labelpilot.ids import ls_project_id, parse_uint
from labelpilot.lsclient import LabelStudioClient
from labelpilot.registry import ModelVersion, Registry
from labelpilot.schema import TaskKind, parse_label_config

log = logging.getLogger("labelpilot.training")

SUSPECT_ROWS = 200  # rows kept in the version's report (the CSV of `labelpilot audit` has them all)


def audit_due(settings: Settings, *, full_export: bool, n_tasks: int) -> str | None:
    """Why this training is not audited, or None when it is."""
    if settings.audit == "off":
        return "LABELPILOT_AUDIT=off"
    if settings.audit == "start" and not full_export:
        return "not a Start Training job (LABELPILOT_AUDIT=start)"
    if n_tasks < settings.audit_min_tasks:
        return f"{n_tasks} annotated tasks, fewer than LABELPILOT_AUDIT_MIN_TASKS={settings.audit_min_tasks}"
    if n_tasks > settings.audit_max_tasks:
        return f"{n_tasks} annotated tasks, more than LABELPILOT_AUDIT_MAX_TASKS={settings.audit_max_tasks}"
    return None


def suspect_predictions(audit: ProjectAudit, label_config: str, model_version: str) -> list[dict[str, Any]]:
    """One Label Studio prediction per audited task: score = its highest suspicion over the controls."""
    schema = parse_label_config(label_config)
    by_task: dict[str, dict[str, Any]] = {}
    for c in audit.controls:
        control = schema.control(c.control)
        for s in c.suspects:
            task_id = parse_uint(s.example_id)
            if task_id is None:
                continue
            entry = by_task.setdefault(s.example_id, {"task": task_id, "result": [], "score": 0.0,
                                                      "model_version": model_version})
            entry["score"] = round(max(entry["score"], float(s.score)), 4)
            if control.kind in (TaskKind.TEXT_CHOICES, TaskKind.IMAGE_CHOICES, TaskKind.TEXT_TAXONOMY):
                entry["result"] += prediction_regions(Prediction(labels=tuple(s.suggested), score=s.score), control)
    return list(by_task.values())


def report_rows(audit: ProjectAudit) -> list[dict[str, Any]]:
    rows = []
    for c in audit.controls:
        for s in c.suspects:
            rows.append({"task": s.example_id, "control": s.control, "score": round(float(s.score), 4),
                         "given": ", ".join(s.given), "suggested": ", ".join(s.suggested), "reason": s.reason,
                         "flagged": s.flagged})
    rows.sort(key=lambda r: r["score"], reverse=True)
    return rows[:SUSPECT_ROWS]


def run_audit(
    settings: Settings,
    project: dict[str, Any],
    tasks: list[dict[str, Any]],
    mv: ModelVersion,
    *,
    client: LabelStudioClient | None,
    media: Any = None,
    progress: Callable[[str], None] | None = None,
) -> ModelVersion:
    """Audit ``tasks`` (the export this version was trained on), store the result in ``mv``'s report and push
    it to Label Studio when ``client`` is given. Returns the updated version."""
    say = progress or (lambda _m: None)
    extra = project.get("extra_params") or {}
    registry = Registry.from_settings(settings)
    t0 = time.perf_counter()
    notes: list[str] = []
    try:
        audit = audit_project(
            project["label_config"], tasks,
            options=extra.get("model_options") if isinstance(extra, dict) else None,
            families=extra.get("families") if isinstance(extra, dict) else None,
            media=media, progress=lambda done, total, msg: say(f"auditing labels: {msg} ({done}/{total})"),
        )
    except LabelpilotError as exc:
        return registry.update_report(mv.name, mv.version, {"notes": [*mv.report.get("notes", []),
                                                                      f"label audit failed: {exc.message}"]})
    pushed = None
    ls_id = ls_project_id(mv.name.removeprefix("ls-project-"))
    if client is not None and ls_id is not None:
        say("auditing labels: sending suspects to Label Studio")
        version = f"{mv.tag}-suspects"
        try:
            pushed = {"model_version": version,
                      "created": client.import_predictions(ls_id, suspect_predictions(audit, project["label_config"],
                                                                                          version))}
        except LabelpilotError as exc:
            notes.append(f"suspects not sent to Label Studio: {exc.message}")
    summary = {"controls": [{k: v for k, v in c.to_dict(top=1).items() if k != "suspects"} for c in audit.controls],
               "label_studio": pushed, "seconds": round(time.perf_counter() - t0, 2)}
    log.info("project %s: label audit of %d tasks in %.1fs%s", mv.name, len(tasks), summary["seconds"],
             f", {pushed['created']} suspect predictions sent" if pushed else "")
    changes: dict[str, Any] = {"suspects": report_rows(audit), "audit": summary}
    if notes:
        changes["notes"] = [*mv.report.get("notes", []), *notes]
    return registry.update_report(mv.name, mv.version, changes)
