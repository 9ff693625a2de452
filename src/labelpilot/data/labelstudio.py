"""Label Studio JSON <-> core examples and predictions. Pure functions: no HTTP, no files.

Coordinates: Label Studio spans are character offsets (end exclusive), the same as the core's; Label
Studio boxes are percent of the original image (0..100), the core's are relative (0..1).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from labelpilot.data.types import Box, Example, Prediction, Span, Target
from labelpilot.geometry import corners, iou
from labelpilot.schema.types import TAXONOMY_SEP, ControlSpec, TaskKind

#: Kinds whose object is a media file: ``Example.image`` holds its URL, then (after ``media.resolve_media``) a
#: local path. Videos are media files too (the video model reads ``Example.image``).
IMAGE_KINDS = frozenset({TaskKind.IMAGE_CHOICES, TaskKind.IMAGE_BOXES, TaskKind.VIDEO_CHOICES})
CHOICE_KINDS = frozenset({TaskKind.TEXT_CHOICES, TaskKind.IMAGE_CHOICES, TaskKind.VIDEO_CHOICES})


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # Paragraphs: a list of {"author", "text"} dicts
        parts = [v.get("text", "") if isinstance(v, Mapping) else str(v) for v in value]
        return "\n".join(str(p) for p in parts)
    return str(value)


def task_example(task: Mapping[str, Any], control: ControlSpec) -> Example:
    """The example a control looks at in a task. Raises KeyError/TypeError for a malformed task."""
    data = task["data"]
    if not isinstance(data, Mapping):
        raise TypeError("task.data is not an object")
    task_id = task.get("id")
    ex_id = None if task_id is None else str(task_id)
    if control.kind in IMAGE_KINDS:
        value = data.get(control.value_key)
        if not isinstance(value, str) or not value:
            raise KeyError(f"task data has no image URL under {control.value_key!r}")
        pair = _as_text(data.get(control.pair_key)) if control.pair_key else None  # a video's text
        return Example(image=value, text_pair=pair, id=ex_id)
    if control.value_key not in data:
        raise KeyError(f"task data has no {control.value_key!r} field")
    pair = _as_text(data.get(control.pair_key)) if control.pair_key else None
    return Example(text=_as_text(data[control.value_key]), text_pair=pair, id=ex_id)


_W = TypeVar("_W")


def _numbers(value: Mapping[str, Any], keys: Sequence[str], kind: type) -> tuple[Any, ...] | None:
    """``value[k]`` as ``kind`` (int or float) for every key, or None when one is missing or not a number."""
    try:
        return tuple(kind(value[k]) for k in keys)
    except (KeyError, TypeError, ValueError):
        return None


def _usable_labels(
    labels: Iterable[str] | None, known: set[str], problems: list[str], where: _W | None, unreadable: str
) -> Iterator[tuple[str, _W]]:
    """(label, ``where``) for each label of one region that makes a target. For each other label the reason
    goes to ``problems``: ``unreadable`` when the region's position (``where``) could not be read, else that
    the label is unknown."""
    for lab in labels or []:
        if where is None:
            problems.append(unreadable)
        elif lab not in known:
            problems.append(f"unknown label {lab!r}")
        else:
            yield lab, where


def result_target(result: Iterable[Mapping[str, Any]], control: ControlSpec) -> tuple[Target | None, list[str]]:
    """The gold target of ``control`` in an annotation result, and reasons for parts left out.

    Returns ``(None, reasons)`` when the annotation says nothing about this control.
    """
    labels: list[str] = []
    spans: list[Span] = []
    boxes: list[Box] = []
    problems: list[str] = []
    known = set(control.label_keys)
    seen = False
    for region in result:
        if not isinstance(region, Mapping) or region.get("from_name") != control.name:
            continue
        value = region.get("value") or {}
        if control.kind in CHOICE_KINDS:
            seen = True
            for choice in value.get("choices") or []:
                (labels.append(choice) if choice in known else problems.append(f"unknown label {choice!r}"))
        elif control.kind is TaskKind.TEXT_TAXONOMY:
            seen = True
            for path in value.get("taxonomy") or []:
                key = TAXONOMY_SEP.join(str(p) for p in path)
                (labels.append(key) if key in known else problems.append(f"unknown taxonomy path {key!r}"))
        elif control.kind is TaskKind.TEXT_SPANS:
            seen = True
            where = _numbers(value, ("start", "end"), int)
            for lab, (start, end) in _usable_labels(value.get("labels"), known, problems, where,
                                                    "span without integer start/end"):
                spans.append(Span(start, end, lab, text=value.get("text")))
        elif control.kind is TaskKind.IMAGE_BOXES:
            seen = True
            where = _numbers(value, ("x", "y", "width", "height"), float)
            for lab, (x, y, w, h) in _usable_labels(value.get("rectanglelabels"), known, problems, where,
                                                    "box without numeric x/y/width/height"):
                if float(value.get("rotation") or 0) != 0:
                    problems.append("rotated box (rotation != 0) left out")
                    continue
                boxes.append(Box(x / 100, y / 100, w / 100, h / 100, lab))
    if not seen:
        return None, problems
    return Target(labels=tuple(dict.fromkeys(labels)), spans=tuple(spans), boxes=tuple(boxes)), problems


def pick_annotation(annotations: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The annotation to learn from: a ground truth if any, else the most recently updated one.

    Cancelled (skipped) annotations never count.
    """
    usable = [a for a in annotations if isinstance(a, Mapping) and not a.get("was_cancelled")]
    if not usable:
        return None
    truth = [a for a in usable if a.get("ground_truth")]
    pool = truth or usable
    return max(pool, key=lambda a: (str(a.get("updated_at") or a.get("created_at") or ""), a.get("id") or 0))


def task_training_example(
    task: Mapping[str, Any], annotation_result: list[Mapping[str, Any]], control: ControlSpec
) -> tuple[Example | None, list[str]]:
    """A labelled example for ``control`` from a task and the result of the annotation chosen for it."""
    try:
        example = task_example(task, control)
    except (KeyError, TypeError) as exc:
        return None, [f"task {task.get('id')}: {exc}"]
    target, problems = result_target(annotation_result, control)
    reasons = [f"task {task.get('id')}: {p}" for p in problems]
    if target is None:
        return None, reasons
    example.target = target
    return example, reasons


def _region(control: ControlSpec, rtype: str, value: dict[str, Any], score: float | None) -> dict[str, Any]:
    region: dict[str, Any] = {
        "id": uuid.uuid4().hex[:10],
        "from_name": control.name,
        "to_name": control.to_name,
        "type": rtype,
        "value": value,
    }
    if score is not None:
        region["score"] = round(float(score), 6)
    return region


def prediction_regions(
    pred: Prediction,
    control: ControlSpec,
    *,
    image_size: tuple[int, int] | None = None,
) -> list[dict[str, Any]]:
    """Label Studio result regions for a prediction, keeping only labels the control has now.

    ``model_score_threshold`` on the control drops regions (spans, boxes) below it.
    """
    known = set(control.label_keys)
    threshold = control.score_threshold
    if control.kind in CHOICE_KINDS:
        chosen = [lab for lab in pred.labels if lab in known]
        if not chosen:
            return []
        values = [control.label(k).value for k in chosen]  # type: ignore[union-attr]
        return [_region(control, "choices", {"choices": values}, pred.score)]
    if control.kind is TaskKind.TEXT_TAXONOMY:
        paths = [list(control.label(k).path) for k in pred.labels if k in known]  # type: ignore[union-attr]
        if not paths:
            return []
        return [_region(control, "taxonomy", {"taxonomy": paths}, pred.score)]
    if control.kind is TaskKind.TEXT_SPANS:
        out = []
        for span in pred.spans:
            if span.label not in known or (threshold is not None and (span.score or 0) < threshold):
                continue
            value: dict[str, Any] = {"start": span.start, "end": span.end, "labels": [span.label]}
            if span.text is not None:
                value["text"] = span.text
            out.append(_region(control, "labels", value, span.score))
        return out
    if control.kind is TaskKind.IMAGE_BOXES:
        out = []
        for box in pred.boxes:
            if box.label not in known or (threshold is not None and (box.score or 0) < threshold):
                continue
            value = {
                "x": round(box.x * 100, 4),
                "y": round(box.y * 100, 4),
                "width": round(box.width * 100, 4),
                "height": round(box.height * 100, 4),
                "rotation": 0,
                "rectanglelabels": [box.label],
            }
            region = _region(control, "rectanglelabels", value, box.score)
            if image_size:
                region["original_width"], region["original_height"] = image_size
                region["image_rotation"] = 0
            out.append(region)
            if control.transcription and box.text:
                # the same region id: Label Studio shows the text in the box's own TextArea
                geometry = {k: v for k, v in value.items() if k != "rectanglelabels"}
                text_region = {**region, "from_name": control.transcription, "type": "textarea",
                               "value": {**geometry, "text": [box.text]}}
                out.append(text_region)
        return out
    return []


def _iou(a: Mapping[str, Any], b: Mapping[str, Any]) -> float:
    """IoU of two Label Studio rectangle values (``x, y, width, height``)."""
    return iou(corners(a["x"], a["y"], a["width"], a["height"]), corners(b["x"], b["y"], b["width"], b["height"]))


def refine_drawn_boxes(
    drawn: Iterable[Mapping[str, Any]], predicted: list[dict[str, Any]], *, min_iou: float = 0.3
) -> list[dict[str, Any]]:
    """Interactive pre-annotation for boxes: each rectangle the annotator drew (Label Studio ``context``)
    snaps to the predicted box that overlaps it most (IoU >= ``min_iou``), keeping the annotator's region id
    and label when given (the detector's label otherwise); a drawn box with no match comes back as drawn."""
    out: list[dict[str, Any]] = []
    for region in drawn:
        if not isinstance(region, Mapping) or region.get("type") != "rectanglelabels":
            continue
        value = region.get("value") or {}
        try:
            box = {k: float(value[k]) for k in ("x", "y", "width", "height")}
        except (KeyError, TypeError, ValueError):
            continue
        same = [p for p in predicted if p.get("from_name") == region.get("from_name")]
        best = max(same, key=lambda p: _iou(box, p["value"]), default=None)
        refined = dict(region)
        if best is not None and _iou(box, best["value"]) >= min_iou:
            labels = value.get("rectanglelabels") or best["value"]["rectanglelabels"]
            refined["value"] = {**best["value"], "rectanglelabels": labels}
            refined["score"] = best.get("score")
            for key in ("original_width", "original_height", "image_rotation"):
                if key in best:
                    refined[key] = best[key]
        refined["origin"] = "prediction"
        out.append(refined)
    return out
