"""The suite's own prediction validator must reject what Label Studio would silently store (G9).
(No Label Studio needed; it lives here because only the live suite uses the validator.)"""

from __future__ import annotations

from .corpus import NER_CONFIG, SENTIMENT_CONFIG, TAXONOMY_CONFIG
from .validation import LabelConfig, prediction_problems

SENT = LabelConfig.parse(SENTIMENT_CONFIG)


def region(**kw):
    base = {"from_name": "sentiment", "to_name": "text", "type": "choices", "value": {"choices": ["Positive"]}}
    return {**base, **kw}


def pred(*regions, **kw):
    return {"result": list(regions), "score": 0.5, "model_version": "v1", **kw}


def test_valid_choice_passes():
    assert prediction_problems(pred(region()), SENT) == []
    assert prediction_problems(pred(), SENT) == []
    assert prediction_problems(pred(), SENT, allow_empty=False) == ["result is empty"]


def test_invalid_choices_are_caught():
    assert prediction_problems(pred(region(from_name="nope")), SENT)
    assert prediction_problems(pred(region(to_name="image")), SENT)
    assert prediction_problems(pred(region(type="labels")), SENT)
    assert prediction_problems(pred(region(value={"choices": ["XXX"]})), SENT)
    assert prediction_problems(pred(region(value={"choices": []})), SENT)
    assert prediction_problems(pred(region(), model_version=None), SENT)
    assert prediction_problems(pred(region(), score="high"), SENT)


def test_spans_are_checked_against_the_text():
    cfg = LabelConfig.parse(NER_CONFIG)
    data = {"text": "Alice Martin works for Acme Corp in Paris."}

    def span(start, end, text, label="PER"):
        value = {"start": start, "end": end, "text": text, "labels": [label]}
        return {"from_name": "ner", "to_name": "text", "type": "labels", "value": value}

    assert prediction_problems(pred(span(0, 12, "Alice Martin")), cfg, data) == []
    assert prediction_problems(pred(span(0, 5, "Alice Martin")), cfg, data)
    assert prediction_problems(pred(span(40, 99, "x")), cfg, data)
    assert prediction_problems(pred(span(0, 12, "Alice Martin", "MISC")), cfg, data)


def test_taxonomy_paths():
    cfg = LabelConfig.parse(TAXONOMY_CONFIG)

    def tax(*paths):
        return {"from_name": "topic", "to_name": "text", "type": "taxonomy", "value": {"taxonomy": list(paths)}}

    assert prediction_problems(pred(tax(["Opinion", "Praise"]), tax(["Fact"])), cfg) == []
    assert prediction_problems(pred(tax(["Praise"])), cfg)  # not a path from the root
    assert prediction_problems(pred(tax("Fact")), cfg)  # not a list
    assert prediction_problems(pred({**tax(["Fact"]), "type": "choices"}), cfg)


def test_per_region_text_needs_its_box():
    cfg = LabelConfig.parse(
        '<View><Image name="image" value="$ocr"/><RectangleLabels name="label" toName="image"><Label value="日期"/>'
        '</RectangleLabels><TextArea name="transcription" toName="image" perRegion="true"/></View>'
    )
    geo = {"x": 10, "y": 20, "width": 30, "height": 4, "rotation": 0}
    box = {"id": "r1", "from_name": "label", "to_name": "image", "type": "rectanglelabels",
           "value": {**geo, "rectanglelabels": ["日期"]}}
    text = {"id": "r1", "from_name": "transcription", "to_name": "image", "type": "textarea",
            "value": {**geo, "text": ["2024-03-05"]}}
    assert prediction_problems(pred(box, text), cfg) == []
    assert prediction_problems(pred(box, {**text, "id": "other"}), cfg)  # text of a region that is not there
    assert prediction_problems(pred(box, {**text, "value": {**geo, "text": "not a list"}}), cfg)
    assert prediction_problems(pred(box, {**text, "value": {**geo, "x": 140, "text": ["x"]}}), cfg)
