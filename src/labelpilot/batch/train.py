"""Training a file into the registry (:func:`train_file`) and evaluating a model on a labelled file
(:func:`evaluate_file`), the core of ``labelpilot train`` and ``labelpilot evaluate``."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from labelpilot import evaluate as ev
from labelpilot.batch.inputs import (
    Columns,
    load_folder,
    load_labelled,
    model_folder,
    schema_for,
)
from labelpilot.data.types import FitReport, Prediction
from labelpilot.errors import InputError
from labelpilot.models.bundle import Bundle
from labelpilot.registry import ModelVersion, Registry, parse_model_ref
from labelpilot.schema import ControlSpec, TaskKind
from labelpilot.training import fit_bundle


def train_file(
    registry: Registry,
    name: str,
    path: Path,
    *,
    kind: str = "choices",
    cols: Columns | None = None,
    labels: Sequence[str] | None = None,
    family: str | None = None,
    options: dict[str, Any] | None = None,
    val_size: float = 0.1,
    seed: int = 0,
    fmt: str | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> tuple[ModelVersion, FitReport, list[str]]:
    cols = cols or Columns()
    loaded = load_labelled(path, kind, cols, fmt)
    schema = schema_for(loaded.examples, kind, labels, pair=bool(cols.pair))
    control = schema.controls[0]
    known = set(control.label_keys)
    examples = []
    for ex in loaded.examples:
        unknown = [lab for lab in ex.target.labels if lab not in known] if ex.target else []
        if unknown:
            loaded.bad_rows.append(f"{ex.id or '?'}: label(s) {unknown} not in --labels")
            continue
        examples.append(ex)
    # one control, one family: its failure is the command's error (strict), not a note
    bundle, report = fit_bundle(schema, {control.name: examples}, families={control.name: family},
                                options={control.name: dict(options or {})}, val_size=val_size, seed=seed,
                                min_examples=1, all_in_model=True, strict=True, count_notes=True,
                                progress=progress)
    report.skipped = loaded.bad_rows + report.skipped
    report.n_examples = len(examples)
    mv = registry.register(name, bundle, report=report)
    return mv, report, loaded.bad_rows


def _control(bundle: Bundle) -> tuple[ControlSpec, Any]:
    name, model = next(iter(bundle.models.items()))
    return bundle.schema.control(name), model



def evaluate_file(
    registry: Registry | None, ref: str, path: Path, *, cols: Columns | None = None, fmt: str | None = None,
    out_dir: Path | None = None,
) -> dict[str, Any]:
    """Evaluate a registry model (``NAME[@VERSION]``) or a model folder (see :func:`model_folder`; its
    result is written to ``<folder>/evaluations/`` instead of the registry)."""
    folder = model_folder(ref)
    if folder is not None:
        bundle = load_folder(folder)
        name, mv = str(ref), None
        where = folder
    else:
        if registry is None:
            raise InputError(f"{ref!r} is not a model folder and no registry was given", field="model")
        name, version = parse_model_ref(ref)
        mv, bundle = registry.load(name, version)
        where = mv.path
    control, model = _control(bundle)
    kind = {TaskKind.TEXT_SPANS: "spans", TaskKind.IMAGE_CHOICES: "image", TaskKind.IMAGE_BOXES: "boxes",
            TaskKind.VIDEO_CHOICES: "video"}.get(control.kind, "choices")
    loaded = load_labelled(path, kind, cols or Columns(), fmt)
    if not loaded.examples:
        raise InputError(f"{path}: no labelled examples", field="data")
    preds: list[Prediction] = []
    for i in range(0, len(loaded.examples), 4096):
        preds.extend(model.predict(loaded.examples[i : i + 4096]))
    result: dict[str, Any] = {"model": name, "version": mv.version if mv else None, "tag": mv.tag if mv else None,
                              "data": str(path),
                              "bad_rows": loaded.bad_rows[:50], "n_bad_rows": len(loaded.bad_rows)}
    if control.kind is TaskKind.TEXT_SPANS:
        result["metrics"] = ev.span_report(loaded.examples, preds)
    elif control.kind is TaskKind.IMAGE_BOXES:
        from labelpilot.models.vision.detector import average_precision  # lazy: Pillow (the vision extra)

        truths = [ex.target.boxes if ex.target else () for ex in loaded.examples]
        boxes = [p.boxes for p in preds]
        ap50, ap75 = average_precision(boxes, truths, 0.5), average_precision(boxes, truths, 0.75)
        result["metrics"] = {"n": len(truths), "map50": ap50.get("mAP", 0.0), "map75": ap75.get("mAP", 0.0),
                             "per_class_ap50": {k: v for k, v in ap50.items() if k != "mAP"}}
    else:
        gold = [ex.target.labels for ex in loaded.examples]
        pred = [p.labels for p in preds]
        result["metrics"] = ev.classification_report(gold, pred, control.label_keys)
        if not control.multiple and all(len(g) == 1 for g in gold):
            matrix = ev.confusion([g[0] for g in gold], [p[0] if p else "" for p in pred], control.label_keys)
            out_dir = out_dir or (where / "evaluations")
            title = f"{name} v{mv.version}" if mv else Path(name).name
            png = ev.plot_confusion(matrix, control.label_keys, out_dir / f"confusion-{path.stem}.png",
                                    title=f"{title} on {path.name}")
            result["confusion_matrix"] = matrix.tolist()
            result["confusion_png"] = str(png)
    if mv is not None and registry is not None:
        registry.add_evaluation(name, mv.version, str(path), result)
    else:
        (where / "evaluations").mkdir(exist_ok=True)
        (where / "evaluations" / f"{path.stem}.json").write_text(
            json.dumps(result, ensure_ascii=False, indent=1), encoding="utf-8")
    return result
