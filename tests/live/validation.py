"""Check predictions stored in Label Studio against the project's label config.

Label Studio stores whatever a backend returns without validating it (live doc G9), so the suite
does it itself, independently of labelpilot's own schema parser (stdlib XML only).
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

# control tag -> (result "type", child tag that holds a label, key inside "value")
CONTROL_TAGS = {
    "Choices": ("choices", "Choice", "choices"),
    "Labels": ("labels", "Label", "labels"),
    "RectangleLabels": ("rectanglelabels", "Label", "rectanglelabels"),
    "PolygonLabels": ("polygonlabels", "Label", "polygonlabels"),
    "KeyPointLabels": ("keypointlabels", "Label", "keypointlabels"),
    "Taxonomy": ("taxonomy", "Choice", "taxonomy"),
    "TextArea": ("textarea", "", "text"),  # free text: value.text is a list of strings
}


@dataclass
class Control:
    name: str
    tag: str
    to_names: list[str]
    labels: list[str]
    result_type: str
    value_key: str
    paths: set[tuple[str, ...]] = field(default_factory=set)  # Taxonomy: every valid path from the root


@dataclass
class LabelConfig:
    controls: dict[str, Control] = field(default_factory=dict)
    objects: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (tag, "$field")

    @classmethod
    def parse(cls, xml: str) -> LabelConfig:
        root = ET.fromstring(xml)
        cfg = cls()
        for el in root.iter():
            if el.tag in CONTROL_TAGS:
                result_type, child, key = CONTROL_TAGS[el.tag]
                labels = [c.get("value") or c.get("alias") or "" for c in el.iter(child)]
                cfg.controls[el.get("name", "")] = Control(
                    name=el.get("name", ""),
                    tag=el.tag,
                    to_names=(el.get("toName") or "").split(","),
                    labels=labels,
                    result_type=result_type,
                    value_key=key,
                    paths=_taxonomy_paths(el) if el.tag == "Taxonomy" else set(),
                )
            elif el.get("value", "").startswith("$") and el.get("name"):
                cfg.objects[el.get("name", "")] = (el.tag, el.get("value", ""))
        return cfg


def _taxonomy_paths(node: ET.Element, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    paths: set[tuple[str, ...]] = set()
    for child in node.findall("Choice"):
        path = (*prefix, child.get("value") or child.get("alias") or "")
        paths.add(path)
        paths |= _taxonomy_paths(child, path)
    return paths


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(float(x))


def region_problems(region: dict, cfg: LabelConfig, task_data: dict | None = None) -> list[str]:
    problems: list[str] = []
    ctl = cfg.controls.get(region.get("from_name", ""))
    if ctl is None:
        return [f"from_name {region.get('from_name')!r} is not a control of the config {sorted(cfg.controls)}"]
    if region.get("to_name") not in ctl.to_names:
        problems.append(f"to_name {region.get('to_name')!r} not in toName {ctl.to_names} of {ctl.name}")
    if region.get("type") != ctl.result_type:
        problems.append(f"type {region.get('type')!r} should be {ctl.result_type!r} for <{ctl.tag}>")
    value = region.get("value")
    if not isinstance(value, dict):
        return [*problems, f"value is not an object: {value!r}"]
    labels = value.get(ctl.value_key)
    if ctl.result_type == "textarea":
        if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
            problems.append(f"value.text must be a non-empty list of strings, got {labels!r}")
    elif not isinstance(labels, list) or not labels:
        problems.append(f"value.{ctl.value_key} must be a non-empty list, got {labels!r}")
    elif ctl.value_key == "taxonomy":
        for path in labels:
            if not (isinstance(path, list) and path and all(isinstance(x, str) for x in path)):
                problems.append(f"taxonomy item {path!r} is not a path (a list of names from the root)")
            elif tuple(path) not in ctl.paths:
                problems.append(f"taxonomy path {path!r} is not in the config")
    else:
        problems += [f"label {x!r} not in config {ctl.labels}" for x in labels if x not in ctl.labels]
    if "score" in region and region["score"] is not None and not _is_number(region["score"]):
        problems.append(f"region score not numeric: {region['score']!r}")
    if ctl.result_type == "labels":
        start, end = value.get("start"), value.get("end")
        if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < end):
            problems.append(f"span offsets invalid: start={start!r} end={end!r}")
        elif task_data is not None and region.get("to_name") in cfg.objects:
            text = task_data.get(cfg.objects[region["to_name"]][1].lstrip("$"))
            if isinstance(text, str):
                if end > len(text):
                    problems.append(f"span end {end} beyond text length {len(text)}")
                elif "text" in value and value["text"] != text[start:end]:
                    problems.append(f"span text {value['text']!r} != text[{start}:{end}] {text[start:end]!r}")
    if ctl.result_type in ("rectanglelabels",) or (ctl.result_type == "textarea" and "x" in value):
        for key in ("x", "y", "width", "height"):
            v = value.get(key)
            if not _is_number(v) or not (0 <= float(v) <= 100.0001):
                problems.append(f"{key}={v!r} is not a percentage in [0, 100]")
    return problems


def prediction_problems(
    pred: dict, cfg: LabelConfig, task_data: dict | None = None, *, allow_empty: bool = True
) -> list[str]:
    """Everything wrong with one stored prediction (empty list when it is valid)."""
    problems: list[str] = []
    if not isinstance(pred.get("model_version"), str) or not pred["model_version"]:
        problems.append(f"model_version must be a non-empty string, got {pred.get('model_version')!r}")
    if "score" in pred and pred["score"] is not None and not _is_number(pred["score"]):
        problems.append(f"score not numeric: {pred['score']!r}")
    result = pred.get("result")
    if not isinstance(result, list):
        return [*problems, f"result is not a list: {result!r}"]
    if not result and not allow_empty:
        problems.append("result is empty")
    for i, region in enumerate(result):
        problems += [f"result[{i}]: {p}" for p in region_problems(region, cfg, task_data)]
    # a per-region text (type textarea with geometry) belongs to a labelled region with the same id
    shaped = {r.get("id") for r in result if isinstance(r, dict) and r.get("type") != "textarea"}
    for i, region in enumerate(result):
        value = region.get("value") if isinstance(region, dict) else None
        per_region = isinstance(value, dict) and region.get("type") == "textarea" and "x" in value
        if per_region and region.get("id") not in shaped:
            problems.append(f"result[{i}]: per-region text with id {region.get('id')!r} has no region")
    return problems


def assert_valid_predictions(
    preds: list[dict], cfg: LabelConfig, tasks: dict[int, dict] | None = None, *, allow_empty: bool = True
) -> None:
    bad = {}
    for p in preds:
        data = (tasks or {}).get(p.get("task"))
        problems = prediction_problems(p, cfg, data, allow_empty=allow_empty)
        if problems:
            bad[p.get("id")] = problems
    assert not bad, f"{len(bad)} of {len(preds)} predictions are invalid for the label config: {bad}"
