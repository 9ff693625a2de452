"""The one trainer (``labelpilot.training.fit_bundle``) and the one split (``labelpilot.split``), on real families:
the hold-out is deterministic, stratified and order-independent; Label Studio tasks and examples by control
train the same way; an unknown option is refused by name; a control that cannot train is a note (or, strict,
the error); file training's ``counts:`` note says what the model holds."""

from __future__ import annotations

import random

import pytest

from labelpilot.data.types import Example, Target
from labelpilot.errors import ModelOptionsError, TrainingError
from labelpilot.schema import make_label_config, parse_label_config
from labelpilot.split import holdout, label_key
from labelpilot.training import build_examples, fit_bundle, without_time_budget

pytest.importorskip("labelpilot.models.text_linear", reason="the text-linear family is not built yet")

CONFIG = """<View>
  <Text name="text" value="$text"/>
  <Choices name="sentiment" toName="text" choice="single">
    <Choice value="Positive"/><Choice value="Negative"/>
  </Choices>
  <Labels name="ner" toName="text">
    <Label value="City"/>
  </Labels>
</View>"""

GOOD = ["loved the trip to", "had a wonderful time in", "was very happy in"]
BAD = ["hated the trip to", "had an awful time in", "was very unhappy in"]
CITIES = ["Paris", "Berlin", "London", "Madrid", "Rome"]
NO_ENCODER = {"encoder": False}  # the TF-IDF model alone keeps the test fast


def text(i: int) -> str:
    return f"Ann {(GOOD if i % 2 == 0 else BAD)[i % 3]} {CITIES[i % len(CITIES)]}"


def examples(n: int) -> list[Example]:
    return [Example(text=text(i), id=f"s{i:03d}", target=Target(labels=("Positive" if i % 2 == 0 else "Negative",)))
            for i in range(n)]


def tasks(n: int) -> list[dict]:
    out = []
    for i in range(n):
        t = text(i)
        city = CITIES[i % len(CITIES)]
        result = [{"from_name": "sentiment", "to_name": "text", "type": "choices",
                   "value": {"choices": ["Positive" if i % 2 == 0 else "Negative"]}}]
        if i < 2:  # the span control gets too few annotations to train
            start = t.index(city)
            result.append({"from_name": "ner", "to_name": "text", "type": "labels",
                           "value": {"start": start, "end": start + len(city), "text": city, "labels": ["City"]}})
        out.append({"id": i + 1, "data": {"text": t}, "annotations": [{"id": 100 + i, "result": result}]})
    return out


def test_holdout_is_deterministic_stratified_and_order_independent() -> None:
    data = examples(40)
    train, val = holdout(data, 0.25, seed=3)
    assert val is not None and len(val) == 10 and len(train) == 30
    assert {ex.id for ex in train} | {ex.id for ex in val} == {ex.id for ex in data}
    assert sorted(label_key(ex) for ex in val).count("Positive") == 5  # stratified: half of each label
    shuffled = data[:]
    random.Random(0).shuffle(shuffled)
    _, val2 = holdout(shuffled, 0.25, seed=3)
    assert {ex.id for ex in val2 or ()} == {ex.id for ex in val}  # the seed, ids and labels decide, not the order
    _, val3 = holdout(data, 0.25, seed=4)
    assert {ex.id for ex in val3 or ()} != {ex.id for ex in val}


def test_holdout_edges() -> None:
    assert holdout(examples(9), 0.5) == (examples(9), None)  # too few to hold any out
    assert holdout(examples(30), 0.0)[1] is None
    train, val = holdout(examples(10), 0.01)  # asked for a split: at least one example
    assert val is not None and len(val) == 1 and len(train) == 9
    # label sets seen once share a stratum, so they can still be held out
    rare = [Example(text=f"t{i}", id=str(i), target=Target(labels=(f"L{i}",))) for i in range(20)]
    assert len(holdout(rare, 0.2)[1] or ()) == 4


def test_fit_bundle_from_tasks_notes_the_control_it_cannot_train() -> None:
    bundle, report = fit_bundle(CONFIG, tasks(24), options={"sentiment": NO_ENCODER})
    assert list(bundle.models) == ["sentiment"] and bundle.models["sentiment"].is_fitted
    assert report.n_examples == 24 and report.labels
    assert any(n.startswith("ner: 2 annotated tasks, 4 needed") for n in report.notes)
    preds = bundle.models["sentiment"].predict([Example(text="Bob loved the trip to Rome")])
    assert preds[0].labels == ("Positive",)
    # the same tasks, converted first, train the same model
    control = bundle.schema.controls[0]
    given, _ = build_examples(tasks(24), control)
    bundle2, _ = fit_bundle(CONFIG, {"sentiment": given}, options={"sentiment": NO_ENCODER})
    again = bundle2.models["sentiment"].predict([Example(text="Bob loved the trip to Rome")])
    assert again[0].labels == preds[0].labels and again[0].score == pytest.approx(preds[0].score)


def test_fit_bundle_split_counts_and_errors() -> None:
    schema = parse_label_config(make_label_config(["Negative", "Positive"]))
    name = schema.controls[0].name
    _, report = fit_bundle(schema, {name: examples(40)}, options=NO_ENCODER, val_size=0.25, seed=1,
                           min_examples=1, count_notes=True, strict=True)
    assert report.notes[0].startswith("counts: ") and "/ 10 val (held out by --val-size" in report.notes[0]
    _, report = fit_bundle(schema, {name: examples(40)}, options=NO_ENCODER, min_examples=1, all_in_model=True,
                           count_notes=True)
    assert report.notes[0].startswith("counts: 40 of 40 rows in the model (no validation split)")
    with pytest.raises(ModelOptionsError) as err:
        fit_bundle(schema, {name: examples(20)}, options={"Cee": 2})
    assert err.value.option == "Cee" and "did you mean 'C'" in err.value.message
    with pytest.raises(TrainingError, match=r"nothing to train: .*3 annotated tasks, 4 needed"):
        fit_bundle(schema, {name: examples(3)})
    with pytest.raises(TrainingError, match="3 examples, 5 needed"):
        fit_bundle(schema, {name: examples(3)}, min_examples=5, strict=True)


def test_without_time_budget() -> None:
    from labelpilot.models.base import get_family

    control = parse_label_config(make_label_config(["a", "b"])).controls[0]
    cls = get_family("text-linear")
    assert without_time_budget(cls, control, {})["time_budget"] == float("inf")
    assert without_time_budget(cls, control, {"time_budget": 5.0})["time_budget"] == 5.0
