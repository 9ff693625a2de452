"""``audit_project``: the audit of a Label Studio project's annotated tasks, for the training job to call after
a training (the lead wires it in; the dashboard and Label Studio predictions read its result).

It takes what ``jobs.training.train_bundle`` takes (the label config, tasks in export shape, model options,
families, a media fetcher) so the job can pass the same values, and audits every supported control: suspects
from out-of-fold predictions and, where tasks have several annotations, agreement. A control that cannot be
audited (too few annotations, no family, a fold that cannot be trained) gets a note, never an exception, so an
audit can never fail the training that called it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from labelpilot.audit.agreement import Agreement, agreement
from labelpilot.audit.inputs import from_tasks
from labelpilot.audit.oof import out_of_fold
from labelpilot.audit.suspects import Suspect, suspects_from_oof
from labelpilot.errors import LabelpilotError
from labelpilot.media import resolve_media
from labelpilot.models.base import Progress, family_for, options_for
from labelpilot.schema import parse_label_config

__all__ = ["ControlAudit", "ProjectAudit", "audit_project"]


@dataclass
class ControlAudit:
    control: str
    family: str | None
    examples: int
    folds: int
    suspects: list[Suspect] = field(default_factory=list)  # most suspect first
    agreement: Agreement | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self, top: int | None = 200) -> dict[str, Any]:
        return {
            "control": self.control, "family": self.family, "examples": self.examples, "folds": self.folds,
            "flagged": sum(s.flagged for s in self.suspects),
            "suspects": [asdict(s) for s in (self.suspects[:top] if top else self.suspects)],
            "agreement": self.agreement.to_dict() if self.agreement else None, "notes": self.notes,
        }


@dataclass
class ProjectAudit:
    controls: list[ControlAudit]
    seconds: float

    def score_by_task(self) -> dict[str, float]:
        """Each task's highest suspicion over the controls (for a ``mislabeling`` / score on its prediction)."""
        out: dict[str, float] = {}
        for c in self.controls:
            for s in c.suspects:
                if s.example_id is not None:
                    out[s.example_id] = max(out.get(s.example_id, 0.0), s.score)
        return out

    def to_dict(self, top: int | None = 200) -> dict[str, Any]:
        return {"seconds": round(self.seconds, 2), "controls": [c.to_dict(top) for c in self.controls]}


def audit_project(
    label_config: str,
    tasks: Sequence[dict[str, Any]],
    *,
    options: dict[str, Any] | None = None,
    families: dict[str, str] | None = None,
    folds: int = 5,
    seed: int = 0,
    repeats: int | None = None,
    media: Any = None,
    progress: Progress | None = None,
) -> ProjectAudit:
    """Audit every supported control of ``label_config`` on ``tasks`` (Label Studio export shape).

    ``options`` follows extra_params' ``model_options`` (``models.base.options_for``); ``media`` is a
    ``media.MediaFetcher`` for image tasks or URL texts (None: such tasks are left out with a note)."""
    t0 = time.perf_counter()
    schema = parse_label_config(label_config)
    out: list[ControlAudit] = []
    for control in schema.controls:
        audit_in = from_tasks(tasks, control)
        errors = resolve_media(audit_in.examples, control, media)
        keep = [i for i, err in enumerate(errors) if not err]
        notes = [f"task {audit_in.examples[i].id}: {err}" for i, err in enumerate(errors) if err][:20]
        examples = [audit_in.examples[i] for i in keep]
        annotations = [audit_in.annotations[i] for i in keep]
        result = ControlAudit(control.name, None, len(examples), 0, notes=notes)
        out.append(result)
        try:
            cls = family_for(control, (families or {}).get(control.name))
            if cls is None:
                result.notes.append(f"no model family for {control.kind} yet")
                continue
            oof = out_of_fold(control, examples, folds=folds, seed=seed, family=cls.name,
                              options=options_for(options, control.name, cls.name), progress=progress,
                              repeats=repeats)
        except LabelpilotError as exc:
            result.notes.append(exc.message)
            continue
        result.family, result.folds = oof.family, oof.folds
        result.notes.extend(oof.notes)
        result.suspects = suspects_from_oof(oof)
        if any(len(a) >= 2 for a in annotations):
            result.agreement = agreement(control, annotations)
    return ProjectAudit(out, time.perf_counter() - t0)
