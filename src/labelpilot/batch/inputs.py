"""Reading the files batch commands take: labelled tables, image folders, Label Studio, COCO, VOC and CoNLL
exports (:func:`load_labelled`), media folders for prediction (:func:`media_rows`), and model folders
(:func:`model_folder`, :func:`load_folder`). Shared by training, evaluation, prediction and export."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from labelpilot.data import bio
from labelpilot.data.labelstudio import pick_annotation, task_training_example
from labelpilot.data.span_cells import parse_span_cell
from labelpilot.data.types import IMAGE_SUFFIXES, VIDEO_SUFFIXES, Example, Span, Target
from labelpilot.data.vision_formats import parse_coco, read_voc_dir
from labelpilot.errors import InputError, TrainingError
from labelpilot.files import Row, read_rows, split_labels
from labelpilot.loop.plugin import PluginModel  # the seed-003 plug-in adapter lives with the operator
from labelpilot.models.base import get_family
from labelpilot.models.bundle import MANIFEST, Bundle
from labelpilot.schema import LabelSchema, make_label_config, parse_label_config

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
        cell = v.get("spans") or v.get(cols.label) or []
        if isinstance(cell, str):  # a table's cell: Label Studio span JSON or BIO tags
            return Target(spans=tuple(parse_span_cell(cell, str(v.get(cols.text) or ""))[0]))
        spans = []
        for s in cell:
            if isinstance(s, dict):
                label = s.get("label") or (s.get("labels") or [None])[0]
                spans.append(Span(int(s["start"]), int(s["end"]), str(label)))
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
        cls = PluginModel if entry["family"] == "plugin" else get_family(entry["family"], allow_import=True)
        models[name] = cls.load(folder / entry["dir"], schema.control(name))
    return Bundle(schema, models)



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
