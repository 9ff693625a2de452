"""Detection dataset formats <-> core :class:`Example`s with relative boxes. Pure functions on strings and dicts
(plus small helpers that read/write files and read an image's size from its header).

Coordinates: the core's boxes are relative to the **upright** image (0..1, top-left corner, width/height),
the image as a browser and Label Studio display it, i.e. after EXIF orientation. Readers store the image's
pixel size in ``Example.meta["width"]``/``["height"]``; writers use it (or read it from the image).

- **Pascal VOC XML** (one file per image): absolute pixel ``xmin ymin xmax ymax``. Pixel corners are taken
  as given (no 1-based shift), as LabelImg and CVAT write them. Files whose ``<size>`` says width or
  height 0 (some exporters do this) get the real size from the image file. ``difficult`` / ``truncated``
  flags are kept in ``meta["voc_difficult"]`` / ``meta["voc_truncated"]`` (one per box, in order).
- **YOLO txt** (one file per image, ``class cx cy w h`` relative to the image, class = index into
  ``names``): a line with more than five numbers is a polygon (YOLO segmentation) and becomes its
  bounding box; a six-number line is a prediction with a confidence (kept as ``Box.score``).
- **COCO JSON** (one file per dataset): ``bbox = [x, y, w, h]`` in pixels, categories by id. Images with
  no annotation become examples with an empty box list (known negatives). ``iscrowd`` annotations are
  kept and flagged in ``meta["coco_iscrowd"]``.

Malformed entries raise :class:`labelpilot.errors.InputError` naming the file/line/field.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lxml import etree

from labelpilot.data.types import IMAGE_SUFFIXES, Box, Example, Target
from labelpilot.errors import InputError, MediaError

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, remove_comments=True)


# ----------------------------------------------------------------------------------- helpers


def image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(width, height) of the upright image, read from the header only (EXIF orientation 5-8 swaps them)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            width, height = img.size
            try:
                orientation = int(img.getexif().get(0x0112, 1))
            except Exception:
                orientation = 1
    except FileNotFoundError as exc:
        raise MediaError(f"image file not found: {os.fspath(path)}") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise MediaError(f"cannot read the size of {os.fspath(path)}: {exc}") from exc
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _clip01(v: float) -> float:
    return min(1.0, max(0.0, v))


def clip_box(box: Box) -> Box | None:
    """The part of ``box`` inside the image, or None when nothing (or a zero-area sliver) is left."""
    x1, y1 = _clip01(box.x), _clip01(box.y)
    x2, y2 = _clip01(box.x + box.width), _clip01(box.y + box.height)
    if x2 - x1 <= 1e-9 or y2 - y1 <= 1e-9:
        return None
    return Box(x1, y1, x2 - x1, y2 - y1, box.label, box.score)


def box_from_corners(x1: float, y1: float, x2: float, y2: float, width: float, height: float, label: str,
                     score: float | None = None) -> Box:
    """Absolute pixel corners -> relative :class:`Box` (corners may come in any order)."""
    if width <= 0 or height <= 0:
        raise InputError(f"image size must be positive, got {width}x{height}")
    xa, xb = sorted((float(x1), float(x2)))
    ya, yb = sorted((float(y1), float(y2)))
    return Box(xa / width, ya / height, (xb - xa) / width, (yb - ya) / height, label, score)


def box_corners(box: Box, width: int, height: int, *, integer: bool = True) -> tuple[float, float, float, float]:
    """Relative :class:`Box` -> absolute pixel corners (rounded to int when ``integer``)."""
    x1, y1 = box.x * width, box.y * height
    x2, y2 = (box.x + box.width) * width, (box.y + box.height) * height
    if integer:
        return (round(x1), round(y1), round(x2), round(y2))
    return (x1, y1, x2, y2)


def _size_of(example: Example, size: tuple[int, int] | None) -> tuple[int, int]:
    if size is not None:
        return size
    w, h = example.meta.get("width"), example.meta.get("height")
    if isinstance(w, int | float) and isinstance(h, int | float) and w > 0 and h > 0:
        return int(w), int(h)
    if example.image:
        return image_size(example.image)
    raise InputError(f"example {example.id!r}: image size unknown (no meta width/height and no image path)")


def _boxes(example: Example) -> tuple[Box, ...]:
    return example.target.boxes if example.target is not None else ()


# ---------------------------------------------------------------------------------------- VOC


def _text(el: etree._Element | None, tag: str, default: str | None = None) -> str | None:
    if el is None:
        return default
    found = el.find(tag)
    if found is None or found.text is None:
        return default
    return found.text.strip()


def _num(el: etree._Element | None, tag: str, where: str) -> float:
    value = _text(el, tag)
    if value is None or value == "":
        raise InputError(f"{where}: <{tag}> is missing")
    try:
        return float(value)
    except ValueError as exc:
        raise InputError(f"{where}: <{tag}> is not a number: {value!r}") from exc


def parse_voc(
    xml: str | bytes,
    *,
    image_path: str | os.PathLike[str] | None = None,
    image_dir: str | os.PathLike[str] | None = None,
    source: str = "<voc>",
) -> Example:
    """One Pascal VOC annotation -> :class:`Example` (``image`` = ``image_path``, else ``image_dir/<filename>``).

    When ``<size>`` is missing or says 0, the size is read from the image, which must then exist.
    """
    data = xml.encode() if isinstance(xml, str) else xml
    try:
        root = etree.fromstring(data, parser=_PARSER)
    except etree.XMLSyntaxError as exc:
        raise InputError(f"{source}: not valid XML: {exc}") from exc
    if root is None or root.tag != "annotation":
        raise InputError(f"{source}: root element is not <annotation>")
    filename = _text(root, "filename")
    if image_path is not None:
        path: str | None = os.fspath(image_path)
    elif image_dir is not None and filename:
        path = os.path.join(os.fspath(image_dir), filename)
    else:
        path = None
    size_el = root.find("size")
    try:
        width = int(float(_text(size_el, "width", "0") or 0))
        height = int(float(_text(size_el, "height", "0") or 0))
    except ValueError as exc:
        raise InputError(f"{source}: <size> is not numeric") from exc
    if width <= 0 or height <= 0:
        if path is None or not os.path.isfile(path):
            raise InputError(f"{source}: <size> is {width}x{height} and the image is not available to measure")
        width, height = image_size(path)
    boxes: list[Box] = []
    difficult: list[bool] = []
    truncated: list[bool] = []
    for i, obj in enumerate(root.findall("object")):
        where = f"{source}: object {i}"
        name = _text(obj, "name")
        if not name:
            raise InputError(f"{where}: <name> is missing")
        bnd = obj.find("bndbox")
        if bnd is None:
            raise InputError(f"{where}: <bndbox> is missing")
        x1, y1, x2, y2 = (_num(bnd, t, where) for t in ("xmin", "ymin", "xmax", "ymax"))
        boxes.append(box_from_corners(x1, y1, x2, y2, width, height, name))
        difficult.append((_text(obj, "difficult", "0") or "0") in ("1", "true", "True"))
        truncated.append((_text(obj, "truncated", "0") or "0") in ("1", "true", "True"))
    meta: dict[str, Any] = {"width": width, "height": height, "source": "voc"}
    if filename:
        meta["filename"] = filename
    if any(difficult):
        meta["voc_difficult"] = difficult
    if any(truncated):
        meta["voc_truncated"] = truncated
    ex_id = Path(filename).stem if filename else (Path(path).stem if path else None)
    return Example(image=path, target=Target(boxes=tuple(boxes)), id=ex_id, meta=meta)


def to_voc(example: Example, *, size: tuple[int, int] | None = None, integer: bool = True) -> str:
    """:class:`Example` -> Pascal VOC XML text (pixel corners rounded to int unless ``integer=False``)."""
    width, height = _size_of(example, size)
    filename = example.meta.get("filename") or (os.path.basename(example.image) if example.image else f"{example.id}")
    root = etree.Element("annotation")
    etree.SubElement(root, "folder").text = os.path.basename(os.path.dirname(example.image)) if example.image else ""
    etree.SubElement(root, "filename").text = str(filename)
    if example.image:
        etree.SubElement(root, "path").text = str(example.image)
    size_el = etree.SubElement(root, "size")
    etree.SubElement(size_el, "width").text = str(width)
    etree.SubElement(size_el, "height").text = str(height)
    etree.SubElement(size_el, "depth").text = "3"
    etree.SubElement(root, "segmented").text = "0"
    difficult = example.meta.get("voc_difficult") or []
    truncated = example.meta.get("voc_truncated") or []
    for i, box in enumerate(_boxes(example)):
        obj = etree.SubElement(root, "object")
        etree.SubElement(obj, "name").text = box.label
        etree.SubElement(obj, "pose").text = "Unspecified"
        etree.SubElement(obj, "truncated").text = "1" if i < len(truncated) and truncated[i] else "0"
        etree.SubElement(obj, "difficult").text = "1" if i < len(difficult) and difficult[i] else "0"
        bnd = etree.SubElement(obj, "bndbox")
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), box_corners(box, width, height, integer=integer),
                              strict=True):
            etree.SubElement(bnd, tag).text = str(value) if integer else f"{value:.4f}"
    return etree.tostring(root, pretty_print=True, encoding="unicode")


def read_voc_dir(
    annotations_dir: str | os.PathLike[str], images_dir: str | os.PathLike[str] | None = None
) -> list[Example]:
    """Every ``*.xml`` in ``annotations_dir`` (sorted), images looked up in ``images_dir`` by ``<filename>``."""
    out = []
    for xml_path in sorted(Path(annotations_dir).glob("*.xml")):
        out.append(parse_voc(xml_path.read_bytes(), image_dir=images_dir, source=str(xml_path)))
    return out


# --------------------------------------------------------------------------------------- YOLO


def parse_yolo(text: str, names: Sequence[str], *, source: str = "<yolo>") -> list[Box]:
    """YOLO label text -> relative boxes. ``names[i]`` is class ``i``."""
    boxes: list[Box] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        where = f"{source}:{lineno}"
        try:
            cls = int(float(parts[0]))
            values = [float(v) for v in parts[1:]]
        except ValueError as exc:
            raise InputError(f"{where}: not numbers: {line.strip()!r}") from exc
        if not 0 <= cls < len(names):
            raise InputError(f"{where}: class {cls} is not in names (0..{len(names) - 1})")
        score = None
        if len(values) in (4, 5):
            cx, cy, w, h = values[:4]
            if len(values) == 5:
                score = values[4]
            if w < 0 or h < 0:
                raise InputError(f"{where}: negative width/height")
            box = Box(cx - w / 2, cy - h / 2, w, h, names[cls], score)
        elif len(values) >= 6 and len(values) % 2 == 0:  # polygon (segmentation format)
            xs, ys = values[0::2], values[1::2]
            box = Box(min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys), names[cls])
        else:
            raise InputError(f"{where}: expected 'class cx cy w h' (or a polygon), got {len(values) + 1} fields")
        boxes.append(box)
    return boxes


def to_yolo(boxes: Iterable[Box], names: Sequence[str], *, scores: bool = False, digits: int = 6) -> str:
    """Relative boxes -> YOLO label text (one ``class cx cy w h`` line per box; ``scores`` appends confidence)."""
    index = {name: i for i, name in enumerate(names)}
    lines = []
    for box in boxes:
        if box.label not in index:
            raise InputError(f"label {box.label!r} is not in names", field="names")
        fields = [box.x + box.width / 2, box.y + box.height / 2, box.width, box.height]
        if scores and box.score is not None:
            fields.append(box.score)
        lines.append(" ".join([str(index[box.label]), *(f"{v:.{digits}f}" for v in fields)]))
    return "\n".join(lines) + ("\n" if lines else "")


def read_yolo_dir(
    images_dir: str | os.PathLike[str], labels_dir: str | os.PathLike[str], names: Sequence[str]
) -> list[Example]:
    """Every image in ``images_dir`` (sorted) with ``labels_dir/<stem>.txt``; no txt = no objects."""
    out = []
    for img in sorted(p for p in Path(images_dir).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        txt = Path(labels_dir) / f"{img.stem}.txt"
        boxes = parse_yolo(txt.read_text(encoding="utf-8"), names, source=str(txt)) if txt.is_file() else []
        out.append(Example(image=str(img), target=Target(boxes=tuple(boxes)), id=img.stem, meta={"source": "yolo"}))
    return out


def write_yolo_dir(examples: Iterable[Example], labels_dir: str | os.PathLike[str], names: Sequence[str]) -> None:
    """One ``<id or image stem>.txt`` per example in ``labels_dir``, plus ``classes.txt``."""
    d = Path(labels_dir)
    d.mkdir(parents=True, exist_ok=True)
    for ex in examples:
        stem = Path(ex.image).stem if ex.image else ex.id
        if not stem:
            raise InputError("an example has neither an image path nor an id")
        (d / f"{stem}.txt").write_text(to_yolo(_boxes(ex), names), encoding="utf-8")
    (d / "classes.txt").write_text("\n".join(names) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------------------- COCO


def parse_coco(
    data: Mapping[str, Any] | str | bytes, *, image_root: str | os.PathLike[str] | None = None
) -> list[Example]:
    """A COCO detection dict (or its JSON text) -> one :class:`Example` per image, in the file's order."""
    if isinstance(data, str | bytes):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as exc:
            raise InputError(f"COCO file is not valid JSON: {exc}") from exc
    if not isinstance(data, Mapping) or not isinstance(data.get("images"), list):
        raise InputError("COCO data needs an 'images' list")
    cats: dict[Any, str] = {}
    for c in data.get("categories") or []:
        try:
            cats[c["id"]] = str(c["name"])
        except (KeyError, TypeError) as exc:
            raise InputError(f"COCO category without id/name: {c!r}") from exc
    by_image: dict[Any, list[Mapping[str, Any]]] = {}
    for ann in data.get("annotations") or []:
        if not isinstance(ann, Mapping) or "image_id" not in ann:
            raise InputError(f"COCO annotation without image_id: {ann!r}")
        by_image.setdefault(ann["image_id"], []).append(ann)
    out = []
    for img in data["images"]:
        if not isinstance(img, Mapping) or "id" not in img:
            raise InputError(f"COCO image without id: {img!r}")
        file_name = str(img.get("file_name") or "")
        path = os.path.join(os.fspath(image_root), file_name) if image_root is not None and file_name else (
            file_name or None)
        width, height = int(img.get("width") or 0), int(img.get("height") or 0)
        if (width <= 0 or height <= 0) and path and os.path.isfile(path):
            width, height = image_size(path)
        boxes: list[Box] = []
        crowd: list[bool] = []
        for ann in by_image.get(img["id"], []):
            bbox = ann.get("bbox")
            if not isinstance(bbox, list | tuple) or len(bbox) != 4:
                raise InputError(f"COCO annotation {ann.get('id')!r}: bbox must be [x, y, w, h]")
            if width <= 0 or height <= 0:
                raise InputError(f"COCO image {img['id']!r}: width/height unknown and the file is not available")
            label = cats.get(ann.get("category_id"))
            if label is None:
                raise InputError(f"COCO annotation {ann.get('id')!r}: unknown category_id {ann.get('category_id')!r}")
            x, y, w, h = (float(v) for v in bbox)
            score = ann.get("score")
            boxes.append(Box(x / width, y / height, w / width, h / height, label,
                             float(score) if score is not None else None))
            crowd.append(bool(ann.get("iscrowd", 0)))
        meta: dict[str, Any] = {"source": "coco", "coco_id": img["id"], "file_name": file_name}
        if width > 0 and height > 0:
            meta["width"], meta["height"] = width, height
        if any(crowd):
            meta["coco_iscrowd"] = crowd
        ex_id = str(img["id"])
        out.append(Example(image=path, target=Target(boxes=tuple(boxes)), id=ex_id, meta=meta))
    return out


def to_coco(
    examples: Sequence[Example],
    *,
    categories: Sequence[str] | None = None,
    sizes: Mapping[int, tuple[int, int]] | None = None,
    image_root: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """:class:`Example`s -> a COCO detection dict. Category ids are 1-based in ``categories`` order (default:
    labels sorted). ``sizes[i]`` overrides example ``i``'s size; file names are made relative to ``image_root``."""
    if categories is None:
        categories = sorted({b.label for ex in examples for b in _boxes(ex)})
    cat_id = {name: i + 1 for i, name in enumerate(categories)}
    images, annotations = [], []
    ann_id = 1
    for i, ex in enumerate(examples):
        width, height = _size_of(ex, (sizes or {}).get(i))
        if ex.meta.get("file_name"):
            file_name = str(ex.meta["file_name"])
        elif ex.image and image_root is not None:
            file_name = os.path.relpath(ex.image, os.fspath(image_root))
        else:
            file_name = ex.image or f"{ex.id}"
        image_id = ex.meta.get("coco_id", i + 1)
        images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        crowd = ex.meta.get("coco_iscrowd") or []
        for j, box in enumerate(_boxes(ex)):
            if box.label not in cat_id:
                raise InputError(f"label {box.label!r} is not in categories", field="categories")
            w, h = box.width * width, box.height * height
            ann = {
                "id": ann_id,
                "image_id": image_id,
                "category_id": cat_id[box.label],
                "bbox": [round(box.x * width, 3), round(box.y * height, 3), round(w, 3), round(h, 3)],
                "area": round(w * h, 3),
                "iscrowd": 1 if j < len(crowd) and crowd[j] else 0,
            }
            if box.score is not None:
                ann["score"] = box.score
            annotations.append(ann)
            ann_id += 1
    return {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": cat_id[n], "name": n, "supercategory": ""} for n in categories],
    }
