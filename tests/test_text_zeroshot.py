"""text-linear with the text encoder: zero-shot from label names, meaningless labels, the few-shot mix, and
the server before any annotation (with and without an encoder)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from labelpilot import encoders
from labelpilot.data.types import Example, Target
from labelpilot.encoders import encoder_problem
from labelpilot.errors import NotFoundError
from labelpilot.models.text_linear import TextLinearModel
from labelpilot.models.text_zeroshot import clean_names, meaningful
from labelpilot.schema import parse_label_config
from tests.conftest import SHARED_DATA, needs_shared, wait_for

PROBLEM = encoder_problem()
needs_encoder = pytest.mark.skipif(PROBLEM is not None, reason=f"text encoder not available: {PROBLEM}")

TOPICS = """<View><Text name="text" value="$text"/>
<Choices name="topic" toName="text"{extra}>
  <Choice value="Sports"/><Choice value="Finance"/><Choice value="Technology"/><Choice value="Food"/>
</Choices></View>"""

HANDMADE = [
    ("The striker scored twice and the team won the championship", "Sports"),
    ("她在奥运会游泳比赛中获得金牌", "Sports"),
    ("国足昨晚主场二比零战胜对手", "Sports"),
    ("The central bank raised interest rates again", "Finance"),
    ("股市今天大跌，投资者纷纷抛售股票", "Finance"),
    ("Quarterly profits beat analysts' expectations and shares rose", "Finance"),
    ("The new smartphone chip is faster and uses less power", "Technology"),
    ("这款软件更新后支持人工智能语音助手", "Technology"),
    ("Engineers released an open-source programming framework", "Technology"),
    ("Slow-cooked beef noodle soup with fresh herbs", "Food"),
    ("这家餐厅的小笼包和红烧肉非常好吃", "Food"),
    ("A recipe for chocolate cake with strawberries", "Food"),
]


def control(config: str):
    return parse_label_config(config).controls[0]


def labelled(pairs) -> list[Example]:
    return [Example(text=t, target=Target(labels=(lab,))) for t, lab in pairs]


def test_meaningless_names_are_recognised() -> None:
    for bad in ["A", "b", "7", "label_1", "Label 2", "class-3", "c12", "A3", "xx", "XXX", "0x1f", "deadbeef42"]:
        assert not meaningful(bad), bad
    for good in ["Sports", "体育", "是", "ok", "negative review", "news story", "PER", "Other"]:
        assert meaningful(good), good
    assert clean_names(["news_sports", "news_finance"]) == ["sports", "finance"]
    assert clean_names(["NegativeReview", "PositiveReview"]) == ["Negative Review", "Positive Review"]


@needs_encoder
def test_zero_shot_predicts_topics_in_chinese_and_english() -> None:
    model = TextLinearModel(control(TOPICS.format(extra="")))
    assert not model.is_fitted and model.zero_shot_ready()
    preds = model.predict([Example(text=t) for t, _ in HANDMADE])
    right = sum(p.labels == (gold,) for p, (_, gold) in zip(preds, HANDMADE, strict=True))
    assert right >= 10, [(p.labels, g) for p, (_, g) in zip(preds, HANDMADE, strict=True)]
    for p in preds:
        assert abs(sum(p.probs.values()) - 1.0) < 1e-6 and 0.0 < p.score < 1.0


@needs_encoder
def test_multi_label_and_taxonomy_zero_shot() -> None:
    multi = TextLinearModel(control(TOPICS.format(extra=' choice="multiple"')))
    pred = multi.predict([Example(text="国足昨晚主场二比零战胜对手，球迷欢呼")])[0]
    assert "Sports" in pred.labels and "Food" not in pred.labels
    taxonomy = """<View><Text name="text" value="$text"/><Taxonomy name="tax" toName="text">
      <Choice value="Sports"><Choice value="Football"/><Choice value="Tennis"/></Choice>
      <Choice value="Economy"><Choice value="Stock market"/><Choice value="Real estate"/></Choice>
    </Taxonomy></View>"""
    tax = TextLinearModel(control(taxonomy))
    assert tax.zero_shot_ready()
    preds = tax.predict([Example(text="She won the Wimbledon final in straight sets"),
                         Example(text="房价连续三个月上涨，购房者观望")])
    assert [p.labels for p in preds] == [("Sports/Tennis",), ("Economy/Real estate",)]


@needs_encoder
def test_meaningless_labels_get_no_zero_shot_and_hints_make_them_usable() -> None:
    for names in (["A", "B"], ["label_1", "label_2", "label_3"], ["xx", "yy"], ["ABBR", "DESC", "NUM"]):
        choices = "".join(f'<Choice value="{n}"/>' for n in names)
        config = f'<View><Text name="t" value="$text"/><Choices name="c" toName="t">{choices}</Choices></View>'
        model = TextLinearModel(control(config))
        assert not model.zero_shot_ready(), names
        with pytest.raises(NotFoundError):
            model.predict([Example(text="国足昨晚主场二比零战胜对手")])
    hinted = ('<View><Text name="t" value="$text"/><Choices name="c" toName="t">'
              '<Choice value="L1" hint="sports"/><Choice value="L2" hint="cooking and food"/></Choices></View>')
    model = TextLinearModel(control(hinted))
    assert model.zero_shot_ready()
    assert model.predict([Example(text="这家餐厅的小笼包非常好吃")])[0].labels == ("L2",)


FEW_TRAIN = [
    ("what a wonderful film, I loved every minute", "Positive"), ("superb acting and a moving story", "Positive"),
    ("a delightful, charming comedy", "Positive"), ("brilliant and beautifully shot", "Positive"),
    ("boring and far too long", "Negative"), ("a dull, lifeless mess", "Negative"),
    ("terrible script and wooden performances", "Negative"), ("I want my money back", "Negative"),
]
FEW_TEST = [
    ("an absolute joy from start to finish", "Positive"), ("touching, funny and smart", "Positive"),
    ("one of the best movies of the year", "Positive"), ("gorgeous and heartfelt", "Positive"),
    ("tedious and predictable", "Negative"), ("the worst film I have seen in ages", "Negative"),
    ("awful, just awful", "Negative"), ("clumsy and painfully slow", "Negative"),
]
SENTIMENT = ('<View><Text name="t" value="$text"/><Choices name="s" toName="t">'
             '<Choice value="Positive"/><Choice value="Negative"/></Choices></View>')


def accuracy(model: TextLinearModel, pairs) -> float:
    preds = model.predict([Example(text=t) for t, _ in pairs])
    return float(np.mean([p.labels == (g,) for p, (_, g) in zip(preds, pairs, strict=True)]))


@needs_encoder
def test_few_shot_beats_tfidf_on_a_tiny_set_and_survives_save_load(tmp_path: Path) -> None:
    spec = control(SENTIMENT)
    plain = TextLinearModel(spec, encoder=False)
    plain.fit(labelled(FEW_TRAIN))
    mixed = TextLinearModel(spec)
    report = mixed.fit(labelled(FEW_TRAIN))
    assert mixed.fewshot_ is not None and report.metrics["encoder_mix"] > 0
    assert accuracy(mixed, FEW_TEST) >= 0.875 and accuracy(mixed, FEW_TEST) > accuracy(plain, FEW_TEST)
    mixed.save(tmp_path / "m")
    loaded = TextLinearModel.load(tmp_path / "m", spec)
    texts = [Example(text=t) for t, _ in FEW_TEST]
    assert np.allclose(loaded.predict_proba(texts), mixed.predict_proba(texts), atol=1e-5)


def test_without_an_encoder_text_linear_is_the_tfidf_model(monkeypatch, tmp_path: Path) -> None:
    encoders.reset()
    monkeypatch.setenv("LABELPILOT_ENCODER", "none")
    try:
        spec = control(SENTIMENT)
        model = TextLinearModel(spec)
        assert not model.zero_shot_ready()
        report = model.fit(labelled(FEW_TRAIN))
        assert model.fewshot_ is None and any("TF-IDF model only" in n for n in report.notes)
        plain = TextLinearModel(spec, encoder=False)
        plain.fit(labelled(FEW_TRAIN))
        texts = [Example(text=t) for t, _ in FEW_TEST]
        assert np.array_equal(model.predict_proba(texts), plain.predict_proba(texts))
    finally:
        encoders.reset()


# -- through the server ------------------------------------------------------------------------------

PROJECT = {"id": 41, "created_at": "2023-11-14T22:13:20Z"}
UID = "41.1700000000"


def ls_tasks(pairs, start: int = 1, annotated: bool = False) -> list[dict]:
    tasks = []
    for i, (text, label) in enumerate(pairs):
        task = {"id": start + i, "data": {"text": text}}
        if annotated:
            task["annotations"] = [{"id": 500 + start + i, "result": [
                {"from_name": "topic", "to_name": "text", "type": "choices", "value": {"choices": [label]}}]}]
        tasks.append(task)
    return tasks


@needs_encoder
def test_server_pre_labels_from_label_names_before_any_annotation(start_server) -> None:
    config = TOPICS.format(extra="")
    server = start_server()
    with server.client(timeout=60) as client:
        setup = client.post("/setup", json={"project": UID, "schema": config})
        assert setup.status_code == 200, setup.text
        version = setup.json()["model_version"]
        assert version == "zero-shot-text-linear" and "warnings" not in setup.json()
        resp = client.post("/predict", json={"tasks": ls_tasks(HANDMADE), "project": UID, "label_config": config})
    assert resp.status_code == 200, resp.text
    results = resp.json()["results"]
    assert {r["model_version"] for r in results} == {version}
    got = [r["result"][0]["value"]["choices"] for r in results]
    assert sum(g == [lab] for g, (_, lab) in zip(got, HANDMADE, strict=True)) >= 10, got
    assert all(0.0 < r["score"] < 1.0 for r in results)


def test_server_without_an_encoder_warns_and_the_linear_model_serves(start_server) -> None:
    config = TOPICS.format(extra="")
    server = start_server(LABELPILOT_ENCODER_PATH="/nonexistent/model.onnx", LABELPILOT_RETRAIN_EVERY="0")
    pairs = HANDMADE * 2
    with server.client(timeout=60) as client:
        setup = client.post("/setup", json={"project": UID, "schema": config})
        body = setup.json()
        assert body["model_version"] == "untrained"
        assert any("encoder" in w and "/nonexistent/model.onnx" in w for w in body.get("warnings", [])), body
        before = client.post("/predict", json={"tasks": ls_tasks(HANDMADE[:2]), "project": UID}).json()
        assert all(r["result"] == [] for r in before["results"])
        for task in ls_tasks(pairs, annotated=True):
            ann = {**task["annotations"][0], "task": {"id": task["id"], "data": task["data"]}}
            resp = client.post("/webhook", json={"action": "ANNOTATION_CREATED", "project": PROJECT,
                                                 "annotation": ann, "task": ann["task"]})
            assert resp.status_code == 201, resp.text
        client.post("/webhook", json={"action": "START_TRAINING", "project": PROJECT})
        trained = wait_for(lambda: (v := client.post("/setup", json={"project": UID, "schema": config})
                                    .json()["model_version"]).startswith("text-linear-v") and v,
                           timeout=90, what="a trained text-linear version")
        after = client.post("/predict", json={"tasks": ls_tasks(HANDMADE[:3]), "project": UID}).json()
    assert {r["model_version"] for r in after["results"]} == {trained}
    assert all(r["result"] and r["result"][0]["value"]["choices"] for r in after["results"])


@needs_encoder
@needs_shared
def test_tnews_zero_shot_from_label_names_beats_the_issue_bar() -> None:
    """Issue 17: TNEWS (15 classes) ≥ 0.30 with no annotation (chance 0.07); 400 dev texts, seed 0."""
    import json

    rows = [json.loads(line) for line in (SHARED_DATA / "tnews" / "dev.json").open(encoding="utf-8")]
    rows = [rows[i] for i in np.random.default_rng(0).permutation(len(rows))[:400]]
    labels = sorted({r["label_desc"] for r in rows} | {"news_stock"})
    choices = "".join(f'<Choice value="{lab}"/>' for lab in labels)
    model = TextLinearModel(control(
        f'<View><Text name="t" value="$text"/><Choices name="c" toName="t">{choices}</Choices></View>'))
    preds = model.predict([Example(text=r["sentence"]) for r in rows])
    acc = float(np.mean([p.labels == (r["label_desc"],) for p, r in zip(preds, rows, strict=True)]))
    assert acc >= 0.30, acc


def _coded(n: int, seed: int = 0, noise: float = 0.0) -> list[Example]:
    """Texts whose class is given away by one code word among random fillers (a ``noise`` share carry another
    class's code word): nothing in them means anything to the encoder."""
    rng = np.random.default_rng(seed)
    codes = {"Sports": "zorblat", "Finance": "quimvex", "Technology": "plendor", "Food": "trasque"}
    fillers = ["river", "window", "yellow", "market", "garden", "silent", "paper", "orange", "mountain", "coffee"]
    out = []
    for i in range(n):
        label = list(codes)[i % 4]
        code = codes[list(codes)[rng.integers(4)]] if rng.random() < noise else codes[label]
        words = [*rng.choice(fillers, size=5).tolist(), code]
        rng.shuffle(words)
        out.append(Example(text=" ".join(words), target=Target(labels=(label,))))
    return out


@needs_encoder
def test_a_head_that_adds_no_accuracy_is_dropped_and_the_model_serves_without_encoding() -> None:
    spec = control(TOPICS.format(extra=""))
    train = _coded(1200, noise=0.3)
    plain = TextLinearModel(spec, encoder=False)
    plain.fit(train)
    kept = TextLinearModel(spec, encoder_min_gain=0.0)
    kept_report = kept.fit(train)
    assert kept_report.metrics["encoder_mix"] > 0  # log-loss alone mixes some of the head in
    assert not any("encoder head dropped" in n for n in kept_report.notes)
    model = TextLinearModel(spec)
    report = model.fit(train)
    assert report.metrics["encoder_heldout_n"] >= 1000
    assert model.fewshot_ is not None and model.fewshot_.mix == 0.0 and report.metrics["encoder_mix"] == 0.0
    assert any("encoder head dropped" in n for n in report.notes)
    texts = [Example(text=ex.text) for ex in _coded(40, seed=1)]
    assert np.allclose(model.predict_proba(texts), plain.predict_proba(texts), atol=1e-6)
    small = TextLinearModel(spec)  # too few held-out predictions to judge: the head is never dropped
    assert not any("encoder head dropped" in n for n in small.fit(train[:200]).notes)
