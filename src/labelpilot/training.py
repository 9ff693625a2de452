"""The one trainer: family choice, options, train/validation split, fit and report, for every door.

Label Studio jobs (:func:`labelpilot.jobs.training.train_bundle`), file training (``labelpilot train``,
:func:`labelpilot.batch.train_file`) and the seed-003 operator (:mod:`labelpilot.loop.runner`) all train through
this module, so a family is chosen, an option is checked and validation is held out the same way everywhere:

- family: :func:`labelpilot.models.base.family_for` (``families`` per control, the control's ``model_family``,
  else the default for its kind);
- options: :func:`labelpilot.models.base.options_for` picks a control's share of ``options`` and
  :func:`labelpilot.models.base.build_model` checks them (an unknown option is a ``ModelOptionsError``);
- split: :func:`labelpilot.split.holdout` (``val_size`` 0: every example trains the model);
- fit and report: one :class:`FitReport` for the bundle, metrics prefixed by the control name when the schema
  has several controls.

It sits above the models and the registry and below the loop, the jobs and batch (``LAYERS`` in
:mod:`labelpilot.testing.imports`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from labelpilot.data.labelstudio import pick_annotation, task_training_example
from labelpilot.data.types import Example, FitReport
from labelpilot.errors import TrainingError
from labelpilot.media import MediaFetcher, resolve_media
from labelpilot.models.base import Model, build_model, family_for, option_names, options_for
from labelpilot.models.bundle import Bundle
from labelpilot.schema import ControlSpec, LabelSchema, parse_label_config, require_supported
from labelpilot.split import holdout

Progress = Callable[[int, int, str], None]

#: The option of a family whose fit stops refitting on every example when it would run out of time.
TIME_BUDGET = "time_budget"


def build_examples(tasks: Sequence[Any], control: ControlSpec) -> tuple[list[Example], list[str]]:
    """The training examples of ``control`` in Label Studio tasks (export shape), and why tasks were skipped.
    A task's chosen annotation (``pick_annotation``) is its label; tasks without one are left out silently."""
    examples: list[Example] = []
    skipped: list[str] = []
    for task in tasks:
        if not isinstance(task, dict):
            skipped.append("a task that is not an object")
            continue
        ann = pick_annotation(task.get("annotations") or [])
        if ann is None:
            continue
        result = ann.get("result") or []
        example, reasons = task_training_example(task, result, control)
        skipped.extend(reasons)
        if example is not None:
            examples.append(example)
    return examples, skipped


def without_time_budget(cls: type, control: ControlSpec, options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` with an unlimited training ``time_budget`` when family ``cls`` has one and ``options`` do not
    set it: a model that must hold every example (no validation split, the loop's final model) never skips
    its refit on all of them (text-linear does when the refit would exceed its budget)."""
    options = dict(options)
    if TIME_BUDGET in option_names(cls, control) and TIME_BUDGET not in options:
        options[TIME_BUDGET] = float("inf")
    return options


def fit_counts(report: FitReport, *, n_given: int, n_val_split: int) -> str:
    """What the model holds and where its metrics come from, from the fit's report: ``n_given`` examples were
    passed to ``fit`` and ``n_val_split`` more were held out as ``val`` (by ``val_size``)."""
    usable = n_given - len(report.skipped)
    in_model = report.n_train or usable
    evaluated = next((n.removeprefix("metrics ") for n in report.notes if n.startswith("metrics")), "")
    if n_val_split:
        text = f"{in_model} train / {n_val_split} val (held out by --val-size, not in the model)"
    else:
        text = f"{in_model} of {usable} rows in the model (no validation split)"
        if report.n_val and evaluated:
            text += f"; metrics {evaluated}" + (", before the refit on all rows" if in_model >= usable else "")
    if in_model < usable:
        why = next((n for n in report.notes if "skipped" in n), "")
        text += f"; REFIT ON ALL ROWS SKIPPED ({usable - in_model} rows not in the model)" + (f": {why}" if why else "")
    return text


def _schema(schema_or_config: LabelSchema | str) -> LabelSchema:
    if isinstance(schema_or_config, LabelSchema):
        return schema_or_config
    return require_supported(parse_label_config(schema_or_config))


def _control_examples(
    control: ControlSpec, data: Sequence[Any] | Mapping[str, Sequence[Example]], media: MediaFetcher | None
) -> tuple[list[Example], list[str]]:
    """Examples for ``control``: given (``data`` maps control names to examples), or read from tasks with their
    media fetched (a task whose media cannot be fetched is skipped, with the reason)."""
    if isinstance(data, Mapping):
        return list(data.get(control.name) or ()), []
    examples, skipped = build_examples(data, control)
    errors = resolve_media(examples, control, media)
    skipped += [f"task {ex.id}: {err}" for ex, err in zip(examples, errors, strict=True) if err]
    return [ex for ex, err in zip(examples, errors, strict=True) if not err], skipped


def fit_bundle(
    schema_or_config: LabelSchema | str,
    data: Sequence[Any] | Mapping[str, Sequence[Example]],
    *,
    families: Mapping[str, str | None] | None = None,
    options: dict[str, Any] | None = None,
    val_size: float = 0.0,
    seed: int = 0,
    min_examples: int = 4,
    all_in_model: bool = False,
    strict: bool = False,
    count_notes: bool = False,
    progress: Progress | None = None,
    media: MediaFetcher | None = None,
) -> tuple[Bundle, FitReport]:
    """Fit one model per control of the schema (a :class:`LabelSchema`, or a label config that is parsed and
    checked) and return the bundle and one report.

    ``data`` is Label Studio tasks (export shape; media fetched through ``media``) or, already converted,
    examples by control name. ``families`` and ``options`` are extra_params' (per control or for all);
    ``val_size`` of each control's examples is held out for the model's metrics (:func:`holdout` with
    ``seed``). ``all_in_model``: when nothing is held out, every example must end up in the model
    (:func:`without_time_budget`). A control without a family, with fewer than ``min_examples`` examples or
    whose fit fails is left out with a note; ``strict`` raises that failure instead (one-control file
    training). ``count_notes``: a ``counts: ...`` note per control (:func:`fit_counts`) before the fit's notes.
    Without any model, :class:`TrainingError` ("nothing to train").
    """
    schema = _schema(schema_or_config)
    wanted = families or {}
    models: dict[str, Model] = {}
    total = FitReport()
    t0 = time.perf_counter()
    for control in schema.controls:
        try:
            family = family_for(control, wanted.get(control.name))
        except TrainingError as exc:
            if strict:
                raise
            total.notes.append(f"{control.name}: {exc.message}")
            continue
        if family is None:
            if strict:
                raise TrainingError(f"no model family for {control.kind} yet", field="family")
            total.notes.append(f"{control.name}: no model family for {control.kind} yet")
            continue
        examples, skipped = _control_examples(control, data, media)
        total.skipped.extend(f"{control.name}: {s}" for s in skipped)
        if len(examples) < min_examples:
            if strict:
                raise TrainingError(f"{control.name}: {len(examples)} examples, {min_examples} needed")
            total.notes.append(f"{control.name}: {len(examples)} annotated tasks, {min_examples} needed")
            continue
        train, val = holdout(examples, val_size, seed)
        opts = options_for(options, control.name, family.name)
        if all_in_model and val is None:
            opts = without_time_budget(family, control, opts)
        model = build_model(family, control, opts)
        try:
            report = model.fit(train, val=val, progress=progress) if val else model.fit(train, progress=progress)
        except TrainingError as exc:
            if strict:
                raise
            total.notes.append(f"{control.name}: {exc.message}")
            continue
        models[control.name] = model
        total.n_examples = max(total.n_examples, len(examples))
        total.n_train += report.n_train
        total.n_val += report.n_val
        total.labels.extend(report.labels)
        total.metrics.update({f"{control.name}.{k}" if len(schema.controls) > 1 else k: v
                              for k, v in report.metrics.items()})
        total.skipped.extend(f"{control.name}: {s}" for s in report.skipped)
        if count_notes:
            counts = fit_counts(report, n_given=len(train), n_val_split=len(val or ()))
            total.notes.append(f"counts: {control.name}: {counts}" if len(schema.controls) > 1 else f"counts: {counts}")
        total.notes.extend(report.notes)
    total.seconds = time.perf_counter() - t0
    if not models:
        raise TrainingError("nothing to train: " + "; ".join(total.notes or ["no annotated tasks"]))
    return Bundle(schema, models), total
