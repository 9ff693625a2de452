"""Label Studio tasks/annotations -> examples, predictions -> Label Studio regions."""

from __future__ import annotations

from labelpilot.data.labelstudio import pick_annotation, prediction_regions, result_target, task_example
from labelpilot.data.types import Box, Prediction, Span
from labelpilot.schema import parse_label_config

CFG = """<View><Text name="text" value="$text"/><Text name="kw" value="$keywords"/><Image name="img" value="$image"/>
<Choices name="c" toName="text" choice="multiple" model_score_threshold="0.5">
<Choice value="A"/><Choice value="B"/></Choices>
<Taxonomy name="tax" toName="text"><Choice value="P"><Choice value="C"/></Choice></Taxonomy>
<Labels name="ner" toName="text" model_score_threshold="0.4"><Label value="PER"/></Labels>
<RectangleLabels name="box" toName="img"><Label value="raccoon"/></RectangleLabels></View>"""
S = parse_label_config(CFG)


def test_task_example_reads_text_pair_and_image() -> None:
    task = {"id": 3, "data": {"text": "张三在北京", "keywords": "北京", "image": "/data/upload/1/a.png"}}
    ex = task_example(task, S.control("c"))
    assert (ex.text, ex.text_pair, ex.id) == ("张三在北京", "北京", "3")
    assert task_example(task, S.control("box")).image == "/data/upload/1/a.png"


def test_result_target_per_kind_and_bad_parts_reported() -> None:
    result = [
        {"from_name": "c", "type": "choices", "value": {"choices": ["A", "Z"]}},
        {"from_name": "tax", "type": "taxonomy", "value": {"taxonomy": [["P", "C"]]}},
        {"from_name": "ner", "type": "labels", "value": {"start": 0, "end": 2, "text": "张三", "labels": ["PER"]}},
        {"from_name": "ner", "type": "labels", "value": {"start": "x", "labels": ["PER"]}},
        {"from_name": "box", "type": "rectanglelabels",
         "value": {"x": 10, "y": 20, "width": 30, "height": 40, "rotation": 0, "rectanglelabels": ["raccoon"]}},
    ]
    t, problems = result_target(result, S.control("c"))
    assert t.labels == ("A",) and any("'Z'" in p for p in problems)
    assert result_target(result, S.control("tax"))[0].labels == ("P/C",)
    t, problems = result_target(result, S.control("ner"))
    assert t.spans == (Span(0, 2, "PER", text="张三"),) and problems == ["span without integer start/end"]
    (box,) = result_target(result, S.control("box"))[0].boxes
    assert (box.x, box.y, box.width, box.height) == (0.1, 0.2, 0.3, 0.4)
    assert result_target([], S.control("c")) == (None, [])


def test_result_target_reports_every_left_out_region_label_in_order() -> None:
    box = {"x": 10, "y": 20, "width": 30, "height": 40}
    result = [
        {"from_name": "ner", "value": {"start": 0, "end": 2, "labels": ["LOC", "PER"]}},  # one unknown, one kept
        {"from_name": "ner", "value": {"start": 3, "labels": ["PER", "LOC"]}},  # no end: both labels reported so
        {"from_name": "box", "value": {**box, "x": None, "rectanglelabels": ["raccoon", "cat"]}},
        {"from_name": "box", "value": {**box, "rectanglelabels": ["cat", "raccoon"]}},
        {"from_name": "box", "value": {**box, "rotation": 90, "rectanglelabels": ["cat", "raccoon"]}},
    ]
    t, problems = result_target(result, S.control("ner"))
    assert t.spans == (Span(0, 2, "PER"),)
    assert problems == ["unknown label 'LOC'"] + ["span without integer start/end"] * 2
    t, problems = result_target(result, S.control("box"))
    assert [(b.x, b.y, b.width, b.height, b.label) for b in t.boxes] == [(0.1, 0.2, 0.3, 0.4, "raccoon")]
    assert problems == ["box without numeric x/y/width/height"] * 2 + ["unknown label 'cat'"] * 2 + [
        "rotated box (rotation != 0) left out"
    ]


def test_pick_annotation_prefers_ground_truth_then_latest_and_skips_cancelled() -> None:
    anns = [
        {"id": 1, "updated_at": "2026-01-02", "result": []},
        {"id": 2, "updated_at": "2026-01-03", "result": [], "was_cancelled": True},
        {"id": 3, "updated_at": "2026-01-01", "result": []},
    ]
    assert pick_annotation(anns)["id"] == 1
    assert pick_annotation([*anns, {"id": 4, "ground_truth": True, "updated_at": "2020"}])["id"] == 4
    assert pick_annotation([anns[1]]) is None


def test_prediction_regions_filter_labels_and_threshold() -> None:
    regions = prediction_regions(Prediction(labels=("A", "gone"), score=0.8), S.control("c"))
    assert regions[0]["value"] == {"choices": ["A"]} and regions[0]["type"] == "choices"
    assert regions[0]["from_name"] == "c" and regions[0]["to_name"] == "text" and regions[0]["score"] == 0.8
    assert prediction_regions(Prediction(labels=("P/C",)), S.control("tax"))[0]["value"] == {"taxonomy": [["P", "C"]]}
    spans = prediction_regions(
        Prediction(spans=(Span(0, 2, "PER", 0.9, "张三"), Span(3, 5, "PER", 0.2, "北京"))), S.control("ner")
    )
    assert [r["value"] for r in spans] == [{"start": 0, "end": 2, "labels": ["PER"], "text": "张三"}]
    (rect,) = prediction_regions(Prediction(boxes=(Box(0.1, 0.2, 0.3, 0.4, "raccoon", 0.9),)), S.control("box"),
                                 image_size=(640, 480))
    assert rect["value"]["x"] == 10.0 and rect["value"]["rectanglelabels"] == ["raccoon"]
    assert (rect["original_width"], rect["original_height"]) == (640, 480)
