"""Exporting a registry model into a self-contained folder (:func:`export_model`, optionally int8-quantized)
and reading or importing such a folder back (:func:`read_export`, :func:`import_export`)."""

from __future__ import annotations

import json
import platform
import shutil
from importlib import metadata
from pathlib import Path
from typing import Any

from labelpilot import __version__
from labelpilot.batch.inputs import (
    Columns,
    load_labelled,
    media_rows,
)
from labelpilot.data.types import Example, FitReport
from labelpilot.errors import InputError
from labelpilot.models.bundle import Bundle
from labelpilot.registry import ModelVersion, Registry, parse_model_ref
from labelpilot.schema import TaskKind

REQUIREMENTS = ("labelpilot", "scikit-learn", "numpy", "scipy", "jieba", "sklearn-crfsuite", "torch", "onnxruntime")


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in REQUIREMENTS:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return out


def export_model(
    registry: Registry, ref: str, directory: Path, *, quantize: str | None = None, method: str | None = None,
    calibration: Path | None = None, eval_data: Path | None = None, cols: Columns | None = None,
    keep_fp32: str | None = None, guard_data: Path | None = None, guard_tolerance: float = 1.0,
) -> Path:
    """A self-contained folder: ``model/`` (the bundle), ``manifest.json`` (version, metrics, labels,
    label config, library versions). Written to a temporary folder and renamed.

    ``quantize="int8"``: the vision models' backbone is quantized into the folder (:mod:`labelpilot.quantize`),
    calibrated on the images/videos of ``calibration`` (a folder or a labelled file); ``eval_data`` (labelled)
    measures the accuracy before and after; ``keep_fp32="auto"`` picks the fp32 nodes by the accuracy guard on
    ``guard_data`` (labelled validation data, never the test split) within ``guard_tolerance`` points. The
    manifest's ``quantization`` records sizes, latency, accuracy."""
    if quantize not in (None, "int8"):
        raise InputError(f"--quantize {quantize!r}: only int8 is supported", field="quantize")
    name, version = parse_model_ref(ref)
    mv = registry.get(name, version)
    bundle = Bundle.load(mv.path)
    if directory.exists() and any(directory.iterdir()):
        raise InputError(f"{directory} exists and is not empty", field="dir")
    tmp = directory.with_name(f".{directory.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(mv.path, tmp / "model")
    manifest = {
        "format": "labelpilot-export/1",
        "name": name,
        "version": mv.version,
        "tag": mv.tag,
        "created": mv.created,
        "families": mv.families,
        "labels": {c.name: c.label_keys for c in bundle.schema.controls},
        "metrics": mv.metrics,
        "n_examples": mv.n_examples,
        "label_config": bundle.schema.config,
        "requires": _versions(),
        "exported_by": f"labelpilot {__version__}",
    }
    if quantize:
        from labelpilot import quantize as q  # lazy: quantization loads onnx tooling only for export

        cols = cols or Columns()
        kind = "video" if any(c.kind is TaskKind.VIDEO_CHOICES for c in bundle.schema.controls) else "image"
        calib = [ex.image for ex in _media_examples(calibration, kind, cols) if ex.image] if calibration else []
        evals = [ex for ex in _media_examples(eval_data, kind, cols) if ex.target] if eval_data else []
        guard = [ex for ex in _media_examples(guard_data, kind, cols) if ex.target] if guard_data else []
        try:
            manifest["quantization"] = q.quantize_bundle(tmp / "model", method=method, calibration=calib,
                                                         eval_examples=evals, keep_fp32=keep_fp32,
                                                         guard_examples=guard, guard_tolerance=guard_tolerance)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    (tmp / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=1), encoding="utf-8")
    if directory.exists():
        directory.rmdir()
    tmp.rename(directory)
    return directory


def _media_examples(path: Path, kind: str, cols: Columns) -> list[Example]:
    """Examples of a media folder (labelled by class folders when it has them) or of a labelled file."""
    if path.is_dir() and not any(path.glob("*.xml")) and not any(p.is_dir() for p in path.iterdir()):
        return [Example(image=r.values[cols.image]) for r in media_rows(path, cols)]
    return load_labelled(path, kind, cols).examples


def read_export(directory: Path) -> tuple[dict[str, Any], Bundle]:
    manifest_path = directory / "manifest.json"
    if not manifest_path.is_file():
        raise InputError(f"{directory} is not a labelpilot export (no manifest.json)", field="dir")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    return manifest, Bundle.load(directory / "model")


def import_export(registry: Registry, directory: Path, name: str | None = None) -> ModelVersion:
    manifest, bundle = read_export(directory)
    report = FitReport(labels=sorted({lab for labs in manifest["labels"].values() for lab in labs}),
                       metrics=manifest.get("metrics", {}), notes=[f"imported from {directory}"])
    return registry.register(name or manifest["name"], bundle, report=report, parent=manifest.get("tag"))
