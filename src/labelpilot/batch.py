"""Files in, models out: train into the registry, evaluate, batch-predict and export.

The functions here are the core of ``labelpilot train / evaluate / predict / export``; the CLI only parses
arguments and draws progress bars.

Batch prediction serves every control of a bundle: the unprefixed output columns (``predictions``,
``confidence``, ...) are the first control's, as for a single-control model, and a multi-control model adds
``<control>.predictions``, ``<control>.confidence``, ... for each of its controls.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any

from labelpilot import __version__
from labelpilot import evaluate as ev
from labelpilot.data import bio
from labelpilot.data.labelstudio import IMAGE_KINDS, pick_annotation, task_training_example
from labelpilot.data.types import IMAGE_SUFFIXES, VIDEO_SUFFIXES, Example, FitReport, Prediction, Span, Target
from labelpilot.data.vision_formats import parse_coco, read_voc_dir
from labelpilot.errors import InputError, TrainingError
from labelpilot.files import LABEL_SEP, Row, RowWriter, read_rows, split_labels
from labelpilot.loop.plugin import PluginModel  # the seed-003 plug-in adapter lives with the operator
from labelpilot.models.base import get_family
from labelpilot.models.bundle import MANIFEST, Bundle
from labelpilot.registry import ModelVersion, Registry, parse_model_ref
from labelpilot.schema import ControlSpec, LabelSchema, TaskKind, make_label_config, parse_label_config
from labelpilot.training import fit_bundle

KINDS = {
    "choices": "choices", "multilabel": "choices", "taxonomy": "taxonomy", "spans": "labels", "image": "image-choices",
    "boxes": "rectangles", "video": "video-choices", "video-multilabel": "video-choices",
}
MEDIA_KINDS = {"image", "video", "video-multilabel"}  # file kinds whose rows name a media file in --image-col


@dataclass
class Columns:
    text: str = "text"
    pair: str | None = None
    label: str = "label"
    id: str | None = None
    image: str = "image"


@dataclass
class Loaded:
    examples: list[Example]
    bad_rows: list[str] = field(default_factory=list)


def _row_example(row: Row, cols: Columns, kind: str) -> Example:
    v = row.values
    if kind in MEDIA_KINDS:
        path = v.get(cols.image)
        if not path:
            raise ValueError(f"no {cols.image!r} column")
        text = v.get(cols.pair) if cols.pair else None  # a video's text (title, transcript), fused by the model
        return Example(image=str(path), text_pair=None if text is None else str(text),
                       id=str(v.get(cols.id)) if cols.id else None)
    if cols.text not in v:
        raise ValueError(f"no {cols.text!r} column")
    text = v[cols.text]
    pair = v.get(cols.pair) if cols.pair else None
    return Example(
        text="" if text is None else str(text),
        text_pair=None if pair is None else str(pair),
        id=str(v.get(cols.id)) if cols.id and v.get(cols.id) is not None else None,
    )


def _row_target(row: Row, cols: Columns, kind: str) -> Target:
    v = row.values
    if kind == "spans":
        spans = []
        for s in v.get("spans") or v.get(cols.label) or []:
            if isinstance(s, dict):
                spans.append(Span(int(s["start"]), int(s["end"]), str(s["label"])))
            else:
                spans.append(Span(int(s[0]), int(s[1]), str(s[2])))
        return Target(spans=tuple(spans))
    labels = split_labels(v.get(cols.label))
    if not labels:
        raise ValueError(f"empty {cols.label!r}")
    return Target(labels=labels)


def image_folder(root: Path, suffixes: frozenset[str] = IMAGE_SUFFIXES) -> Loaded:
    """``root/<class>/<image>`` (ImageFolder layout; ``VIDEO_SUFFIXES``: the same for videos)."""
    examples = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for img in sorted(class_dir.rglob("*")):
            if img.suffix.lower() in suffixes:
                examples.append(Example(image=str(img), id=str(img.relative_to(root)),
                                        target=Target(labels=(class_dir.name,))))
    if not examples:
        raise InputError(f"{root}: no images in class sub-folders", field="input")
    return Loaded(examples)


def ls_export(path: Path, cols: Columns) -> Loaded:
    """Labelled examples from a Label Studio JSON export (a list of tasks with annotations). The control is
    inferred from the annotations: the most used ``from_name`` and its result type."""
    tasks = json.loads(path.read_text(encoding="utf-8"))
    seen: dict[tuple[str, str], set[str]] = {}
    multi = False
    for task in tasks:
        ann = pick_annotation(task.get("annotations") or []) if isinstance(task, dict) else None
        for region in (ann or {}).get("result") or []:
            value = region.get("value") or {}
            rtype = region.get("type", "")
            labels = value.get("choices") or value.get("labels") or [
                "/".join(p) for p in value.get("taxonomy") or []]
            multi = multi or (rtype == "choices" and len(labels) > 1)
            seen.setdefault((region.get("from_name", ""), rtype), set()).update(labels)
    if not seen:
        raise InputError(f"{path}: a Label Studio export without annotations", field="input")
    (from_name, rtype), labels = max(seen.items(), key=lambda kv: len(kv[1]))
    kind = {"choices": "choices", "labels": "labels", "taxonomy": "taxonomy"}.get(rtype)
    if kind is None:
        raise InputError(f"{path}: results of type {rtype!r} cannot be trained from files yet", field="input")
    first = next(t for t in tasks if isinstance(t, dict) and isinstance(t.get("data"), dict))
    text_key = cols.text if cols.text in first["data"] else next(
        (k for k, v in first["data"].items() if isinstance(v, str)), cols.text)
    config = make_label_config(sorted(labels), kind=kind, multiple=multi, text_key=text_key, control_name=from_name)
    control = parse_label_config(config).controls[0]
    loaded = Loaded([])
    for i, task in enumerate(tasks, 1):
        ann = pick_annotation(task.get("annotations") or []) if isinstance(task, dict) else None
        if ann is None:
            continue
        example, reasons = task_training_example(task, ann.get("result") or [], control)
        loaded.bad_rows.extend(f"{path.name}: task #{i}: {r}" for r in reasons)
        if example is not None:
            loaded.examples.append(example)
    return loaded


def load_labelled(path: Path, kind: str, cols: Columns, fmt: str | None = None) -> Loaded:
    """Labelled examples from a file (or an image folder). Bad rows are collected with their line."""
    if path.is_dir() and any(path.glob("*.xml")):  # Pascal VOC annotations (images beside or in ../images)
        images = path.parent / "images" if (path.parent / "images").is_dir() else path
        return Loaded(read_voc_dir(path, images))
    if path.is_dir():
        return image_folder(path, VIDEO_SUFFIXES if kind.startswith("video") else IMAGE_SUFFIXES)
    if (fmt or "").lower() == "coco" or (path.suffix.lower() == ".json" and '"categories"' in path.read_text(
            encoding="utf-8", errors="replace")[:200000]):
        return Loaded(parse_coco(path.read_text(encoding="utf-8"), image_root=path.parent))
    if (fmt or "").lower() in ("ls", "label-studio") or (
        path.suffix.lower() == ".json" and path.read_text(encoding="utf-8", errors="replace")[:4096].find(
            '"annotations"') >= 0
    ):
        return ls_export(path, cols)
    if (fmt or "").lower() in ("conll", "bio", "iob1", "bmes") or path.suffix.lower() in (".conll", ".bio"):
        return Loaded(list(bio.read_conll(path)))
    loaded = Loaded([])
    for row in read_rows(path, fmt):
        if row.error:
            loaded.bad_rows.append(f"{path.name}:{row.line}: {row.error}")
            continue
        try:
            ex = _row_example(row, cols, kind)
            ex.target = _row_target(row, cols, kind)
        except (ValueError, KeyError, TypeError) as exc:
            loaded.bad_rows.append(f"{path.name}:{row.line}: {exc}")
            continue
        loaded.examples.append(ex)
    return loaded


def schema_for(examples: Sequence[Example], kind: str, labels: Sequence[str] | None, pair: bool) -> LabelSchema:
    if kind not in KINDS:
        raise InputError(f"unknown kind {kind!r}; one of {sorted(KINDS)}", field="kind")
    if not labels:
        found: set[str] = set()
        for ex in examples:
            if ex.target:
                found.update(ex.target.labels)
                found.update(s.label for s in ex.target.spans)
                found.update(b.label for b in ex.target.boxes)
        labels = sorted(found)
    if not labels:
        raise TrainingError("no labels: give --labels or a label column")
    multiple = kind in ("multilabel", "video-multilabel") or any(
        ex.target and len(ex.target.labels) > 1 for ex in examples)
    single_kind = kind in ("spans", "boxes")
    config = make_label_config(list(labels), kind=KINDS[kind], multiple=multiple and not single_kind, pair=pair,
                               text_key="text_pair" if kind.startswith("video") else "text")
    return parse_label_config(config)


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


def model_folder(ref: str | Path) -> Path | None:
    """The bundle folder behind ``ref`` when it names a model folder, else None (a registry name).

    A model folder is what ``labelpilot loop`` writes (``OUTPUT_DIR/model``), a registry version folder (both
    hold ``bundle.json``) or a ``labelpilot export`` folder (``manifest.json`` + ``model/``)."""
    folder = Path(ref)
    if not folder.is_dir():
        return None
    if (folder / "manifest.json").is_file() and (folder / "model" / MANIFEST).is_file():
        return folder / "model"
    if (folder / MANIFEST).is_file():
        return folder
    raise InputError(f"{folder} is a folder but holds no model ({MANIFEST} or manifest.json + model/ missing)",
                     field="model")


def load_folder(folder: Path) -> Bundle:
    """:meth:`Bundle.load`, plus bundles of seed-003 plug-ins (saved by ``labelpilot loop --model``)."""
    manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    if not any(e.get("family") == "plugin" for e in manifest.get("controls", {}).values()):
        return Bundle.load(folder)
    schema = parse_label_config(manifest["label_config"])
    models = {}
    for name, entry in manifest["controls"].items():
        cls = PluginModel if entry["family"] == "plugin" else get_family(entry["family"])
        models[name] = cls.load(folder / entry["dir"], schema.control(name))
    return Bundle(schema, models)


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


# -- batch prediction ------------------------------------------------------------------------------


def is_media_input(path: Path) -> bool:
    """A folder of media files, or one image/video file, rather than a table of rows."""
    return path.is_dir() or path.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES


def media_rows(path: Path, cols: Columns) -> Iterator[Row]:
    """Rows ``{image: <file>, id: <relative path>}`` for every image or video under a folder (or one file)."""
    files = [path] if path.is_file() else sorted(
        p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES)
    for i, f in enumerate(files, 1):
        rel = str(f.relative_to(path)) if path.is_dir() else f.name
        yield Row(line=i, values={cols.image: str(f), cols.id or "id": rel})


_WORKER_BUNDLE: Bundle | None = None


def _init_worker(bundle_dir: str) -> None:
    global _WORKER_BUNDLE
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _WORKER_BUNDLE = load_folder(Path(bundle_dir))


def _predict_controls(bundle: Bundle, examples: dict[str, list[Example]]) -> dict[str, list[Prediction]]:
    """Every control's predictions for its examples (control name -> examples of one chunk)."""
    return {name: bundle.models[name].predict(exs) for name, exs in examples.items()}


def _predict_chunk(examples: dict[str, list[Example]]) -> dict[str, list[Prediction]]:
    assert _WORKER_BUNDLE is not None, "the worker initializer loads the bundle"
    return _predict_controls(_WORKER_BUNDLE, examples)


@dataclass
class PredictStats:
    rows: int = 0
    predicted: int = 0
    bad_rows: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _format(pred: Prediction, control: ControlSpec, outputs: set[str], threshold: float | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    probs = pred.probs or {}
    labels = list(pred.labels)
    if threshold is not None and probs:
        labels = [lab for lab in labels if probs.get(lab, 0.0) >= threshold]
        if control.multiple:
            labels = sorted((lab for lab, p in probs.items() if p >= threshold), key=lambda k: -probs[k])
    if "predictions" in outputs:
        if control.kind is TaskKind.TEXT_SPANS:
            out["predictions"] = [{"start": s.start, "end": s.end, "label": s.label, "score": s.score,
                                   "text": s.text} for s in pred.spans]
        else:
            out["predictions"] = LABEL_SEP.join(labels)
        out["confidence"] = round(float(pred.score), 6)
    if "probabilities" in outputs and probs:
        out["probabilities"] = {k: round(float(v), 6) for k, v in probs.items()}
    if "logits" in outputs:
        logits = pred.logits or {k: round(math.log(max(v, 1e-12)), 6) for k, v in probs.items()}
        out["logits"] = {k: round(float(v), 6) for k, v in logits.items()}
    if pred.error:
        out["error"] = pred.error
    return out


def predict_file(
    registry: Registry | None,
    ref: str | Path,
    path: Path,
    output: Path,
    *,
    cols: Columns | None = None,
    outputs: Sequence[str] = ("predictions", "probabilities"),
    append_cols: Sequence[str] = (),
    threshold: float | None = None,
    fmt: str | None = None,
    out_fmt: str | None = None,
    strict: bool = False,
    workers: int = 2,
    chunk: int = 4096,
    on_progress: Callable[[int], None] | None = None,
) -> PredictStats:
    """Stream ``path`` through a model into ``output`` (constant memory: a bounded number of chunks in
    flight). Malformed rows are reported with their line number and skipped, or stop everything with
    ``strict`` (then no output file is left behind)."""
    cols = cols or Columns()
    folder = model_folder(ref)
    if folder is not None:
        bundle_dir = folder
    else:
        name, version = parse_model_ref(str(ref))
        if registry is None:
            raise InputError(f"{ref!r} is not a model folder and no registry was given", field="model")
        bundle_dir = registry.get(name, version).path
    bundle = load_folder(bundle_dir)
    controls = [bundle.schema.control(name) for name in bundle.models]
    # text controls read --text-col; only when they label different objects does each read its own column
    own_col = len({c.to_name for c in controls if c.kind not in IMAGE_KINDS}) > 1
    media_input = any(c.kind in IMAGE_KINDS for c in controls) and is_media_input(path)
    if media_input and not cols.id:
        cols = Columns(**{**cols.__dict__, "id": "id"})  # a folder of files: say which file each row is
    out_set = set(outputs)
    unknown = out_set - {"predictions", "probabilities", "logits"}
    if unknown:
        raise InputError(f"unknown --outputs {sorted(unknown)}; use predictions, probabilities, logits",
                         field="outputs")
    fields = [c for c in ("predictions", "confidence") if "predictions" in out_set]
    fields += [c for c in ("probabilities", "logits") if c in out_set] + ["error"]
    columns = [c for c in ("id",) if cols.id] + list(append_cols) + fields
    if len(controls) > 1:  # the unprefixed columns stay the first control's; every control also has its own
        columns += [f"{c.name}.{f}" for c in controls for f in fields]
    writer = RowWriter(output, columns, out_fmt)
    stats = PredictStats()
    t0 = time.perf_counter()

    def row_examples(row: Row) -> dict[str, Example]:
        out = {}
        for control in controls:
            kind = "image" if control.kind in IMAGE_KINDS else "text"
            own = own_col and kind == "text" and control.value_key in row.values
            out[control.name] = _row_example(row, replace(cols, text=control.value_key) if own else cols, kind)
        return out

    def batches() -> Iterator[tuple[dict[str, list[Example]], list[dict[str, Any]]]]:
        exs: dict[str, list[Example]] = {c.name: [] for c in controls}
        meta: list[dict[str, Any]] = []
        for row in media_rows(path, cols) if media_input else read_rows(path, fmt):
            stats.rows += 1
            if row.error:
                msg = f"{path.name}:{row.line}: {row.error}"
            else:
                try:
                    for name, ex in row_examples(row).items():
                        exs[name].append(ex)
                    meta.append({c: row.values.get(c) for c in append_cols} | (
                        {"id": row.values.get(cols.id)} if cols.id else {}))
                    msg = None
                except ValueError as exc:
                    msg = f"{path.name}:{row.line}: {exc}"
            if msg:
                stats.bad_rows.append(msg)
                if strict:
                    raise InputError(f"malformed row {msg} (--strict)", field="input")
            if len(meta) >= chunk:
                yield exs, meta
                exs, meta = {c.name: [] for c in controls}, []
        if meta:
            yield exs, meta

    def emit(preds: dict[str, list[Prediction]], meta: list[dict[str, Any]]) -> None:
        rows = []
        for i, m in enumerate(meta):
            formatted = {c.name: _format(preds[c.name][i], c, out_set, threshold) for c in controls}
            row = m | formatted[controls[0].name]
            if len(controls) > 1:
                row |= {f"{name}.{k}": v for name, f in formatted.items() for k, v in f.items()}
            rows.append(row)
        writer.write(rows)
        stats.predicted += len(meta)
        if on_progress:
            on_progress(stats.predicted)

    try:
        if workers <= 1:
            for exs, meta in batches():
                emit(_predict_controls(bundle, exs), meta)
        else:
            with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker,
                                     initargs=(str(bundle_dir),)) as pool:
                pending: list[tuple[Future, list[dict[str, Any]]]] = []
                for exs, meta in batches():
                    pending.append((pool.submit(_predict_chunk, exs), meta))
                    if len(pending) > 2 * workers:  # bounded: constant memory whatever the input size
                        fut, m = pending.pop(0)
                        emit(fut.result(), m)
                for fut, m in pending:
                    emit(fut.result(), m)
    except BaseException:
        writer.abort()
        raise
    writer.close()
    stats.seconds = time.perf_counter() - t0
    return stats


# -- export ---------------------------------------------------------------------------------------------

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
    keep_fp32: str | None = None,
) -> Path:
    """A self-contained folder: ``model/`` (the bundle), ``manifest.json`` (version, metrics, labels,
    label config, library versions). Written to a temporary folder and renamed.

    ``quantize="int8"``: the vision models' backbone is quantized into the folder (:mod:`labelpilot.quantize`),
    calibrated on the images/videos of ``calibration`` (a folder or a labelled file); ``eval_data`` (labelled)
    measures the accuracy before and after. The manifest's ``quantization`` records sizes, latency, accuracy."""
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
        try:
            manifest["quantization"] = q.quantize_bundle(tmp / "model", method=method, calibration=calib,
                                                         eval_examples=evals, keep_fp32=keep_fp32)
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
