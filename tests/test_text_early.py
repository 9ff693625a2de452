"""The first annotations of a text-classification project: a model trained on a few labels still proposes the
labels nobody has annotated yet, one annotated label trains (over HTTP too), and multi-label pre-labels are
only proposed when more likely right than wrong."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from labelpilot.data.types import Example, Target
from labelpilot.encoders import encoder_problem
from labelpilot.models.text_linear import TextLinearModel, _gain_threshold
from labelpilot.models.text_zeroshot import MULTI_MIN_PROB
from labelpilot.schema import parse_label_config
from tests.conftest import wait_for

PROBLEM = encoder_problem()
needs_encoder = pytest.mark.skipif(PROBLEM is not None, reason=f"text encoder not available: {PROBLEM}")

SIX = """<View><Text name="text" value="$text"/>
<Choices name="topic" toName="text"{extra}>
  <Choice value="Sports"/><Choice value="Finance"/><Choice value="Technology"/><Choice value="Food"/>
  <Choice value="Weather"/><Choice value="Music"/>
</Choices></View>"""

TWO_SEEN = [
    ("The striker scored twice and the team won the championship", "Sports"),
    ("The central bank raised interest rates again", "Finance"),
]
THIRD = [
    "这家餐厅的小笼包和红烧肉非常好吃",
    "A recipe for chocolate cake with strawberries",
    "Slow-cooked beef noodle soup with fresh herbs and garlic",
]


def control(config: str):
    return parse_label_config(config).controls[0]


def labelled(pairs) -> list[Example]:
    return [Example(text=t, target=Target(labels=(lab,))) for t, lab in pairs]


@needs_encoder
def test_two_annotated_labels_of_six_still_propose_a_third(tmp_path: Path) -> None:
    spec = control(SIX.format(extra=""))
    model = TextLinearModel(spec)
    report = model.fit(labelled(TWO_SEEN))
    assert model.classes_ == list(spec.label_keys)  # every label of the control, not only the two annotated
    assert report.labels == list(spec.label_keys)
    preds = model.predict([Example(text=t) for t in THIRD])
    assert [p.labels for p in preds] == [("Food",)] * len(THIRD)
    for p in preds:
        assert p.probs is not None and set(p.probs) == set(spec.label_keys)
        assert sum(p.probs.values()) == pytest.approx(1.0, abs=1e-6)
    # the annotated labels are still predicted for their own kind of text
    seen = model.predict([Example(text="国足昨晚主场二比零战胜对手"), Example(text="股市今天大跌，投资者纷纷抛售股票")])
    assert [p.labels for p in seen] == [("Sports",), ("Finance",)]
    model.save(tmp_path / "m")
    loaded = TextLinearModel.load(tmp_path / "m", spec)
    batch = [Example(text=t) for t in THIRD]
    assert np.allclose(loaded.predict_proba(batch), model.predict_proba(batch), atol=1e-5)


@needs_encoder
def test_one_annotated_label_trains_the_encoder_head(tmp_path: Path) -> None:
    spec = control(SIX.format(extra=""))
    model = TextLinearModel(spec)
    report = model.fit(labelled([TWO_SEEN[0], ("国足昨晚主场二比零战胜对手", "Sports")]))
    assert model.is_fitted and model.weights_ is None and model.fewshot_ is not None
    assert any("only 'Sports' annotated" in n for n in report.notes)
    preds = model.predict([Example(text=THIRD[0]), Example(text="The goalkeeper saved a penalty in the final")])
    assert [p.labels for p in preds] == [("Food",), ("Sports",)]
    assert model.embed([Example(text="x")]) is None  # no TF-IDF embedding yet, and no crash
    model.save(tmp_path / "m")
    loaded = TextLinearModel.load(tmp_path / "m", spec)
    assert [p.labels for p in loaded.predict([Example(text=THIRD[0])])] == [("Food",)]
    # and a second label later trains the TF-IDF side again
    model.fit(labelled(TWO_SEEN))
    assert model.weights_ is not None


@needs_encoder
def test_multi_label_zero_shot_proposes_no_label_below_one_half() -> None:
    spec = control(SIX.format(extra=' choice="multiple"'))
    model = TextLinearModel(spec)
    texts = [*THIRD, "The band played new songs at the stadium while it rained",
             "Tech shares rose after the chip maker's earnings", "hello there"]
    preds = model.predict([Example(text=t) for t in texts])
    for p in preds:
        assert p.probs is not None
        assert all(p.probs[lab] > MULTI_MIN_PROB for lab in p.labels), (p.labels, p.probs)
        unproposed = [v for lab, v in p.probs.items() if lab not in p.labels]
        assert all(v <= MULTI_MIN_PROB for v in unproposed)
        assert 0.0 <= p.score <= 1.0
    assert preds[0].labels == ("Food",)
    assert preds[-1].labels == ()  # nothing clear: nothing proposed, not a guess
    # an explicit model_score_threshold on the control still wins
    low = control(SIX.format(extra=' choice="multiple" model_score_threshold="0.01"'))
    assert low.score_threshold == pytest.approx(0.01)
    wide = TextLinearModel(low).predict([Example(text=texts[3])])[0]
    assert len(wide.labels) >= 2 and all(wide.probs[lab] >= 0.01 for lab in wide.labels)


def test_gain_thresholds_pay_off_and_f1_thresholds_stay_available() -> None:
    rng = np.random.default_rng(0)
    p = rng.random(400)
    t = (rng.random(400) < p * 0.8).astype(np.int8)  # over-confident scores: right only 80 % as often as said
    thr = _gain_threshold(p, t)
    assert thr >= 0.5
    picked = p >= thr
    gain = int(t[picked].sum() - (1 - t[picked]).sum())
    for other in np.linspace(0.5, 1.0, 51):
        sel = p >= other
        assert gain >= int(t[sel].sum() - (1 - t[sel]).sum())
    # scores that are never right enough: propose nothing
    assert _gain_threshold(np.array([0.9, 0.8, 0.7]), np.array([0, 0, 1])) > 0.9
    # the F1 rule is still there as an option (its thresholds may go below 0.5)
    data = [Example(text=f"{w} {i}", target=Target(labels=labs)) for i in range(12)
            for w, labs in (("goal match team", ("Sports",)), ("shares bank rates", ("Finance",)),
                            ("goal shares", ("Sports", "Finance")))]
    spec = control(SIX.format(extra=' choice="multiple"'))
    for rule in ("gain", "f1"):
        model = TextLinearModel(spec, threshold_rule=rule, encoder=False)
        model.fit(data)
        assert model.thresholds_ is not None
        if rule == "gain":
            assert (model.thresholds_ >= 0.5).all()


PROJECT = {"id": 43, "created_at": "2023-11-14T22:13:20Z"}
UID = "43.1700000000"


@needs_encoder
def test_server_trains_on_one_annotated_label_without_a_failed_job(start_server) -> None:
    config = SIX.format(extra="")
    server = start_server()
    with server.client(timeout=60) as client:
        assert client.post("/setup", json={"project": UID, "schema": config}).status_code == 200
        task = {"id": 1, "data": {"text": TWO_SEEN[0][0]}}
        ann = {"id": 501, "task": task, "result": [
            {"from_name": "topic", "to_name": "text", "type": "choices", "value": {"choices": ["Sports"]}}]}
        resp = client.post("/webhook", json={"action": "ANNOTATION_CREATED", "project": PROJECT,
                                             "annotation": ann, "task": task})
        assert resp.status_code == 201, resp.text
        client.post("/webhook", json={"action": "START_TRAINING", "project": PROJECT})
        jobs = wait_for(lambda: (j := client.get("/training", params={"project": UID}).json().get("jobs"))
                        and all(x["state"] not in ("queued", "running") for x in j) and j,
                        timeout=90, what="the training job(s) to finish")
        assert all(j["state"] == "done" for j in jobs), jobs
        version = client.post("/setup", json={"project": UID, "schema": config}).json()["model_version"]
        assert version.startswith("text-linear-v"), version
        pred = client.post("/predict", json={"tasks": [{"id": 2, "data": {"text": THIRD[1]}}], "project": UID})
    assert pred.status_code == 200, pred.text
    result = pred.json()["results"][0]
    assert result["model_version"] == version
    assert result["result"][0]["value"]["choices"] == ["Food"]
