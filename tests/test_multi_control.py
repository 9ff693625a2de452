"""A two-control model (sentiment ``<Choices>`` + NER ``<Labels>`` on one text) is served whole: the
``/v1`` predict service of a real server on loopback and batch predict (CSV and JSONL, in one process and
in a worker pool) answer for both controls, and the first control keeps the single-control shape."""

from __future__ import annotations

import csv
import json
import os
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.conftest import LABELPILOT, _wait_healthy, free_port, stop_server

pytest.importorskip("labelpilot.models.text_linear", reason="the text-linear family is not built yet")
pytest.importorskip("labelpilot.models.ner_crf", reason="the ner-crf family is not built yet")

CONFIG = """<View>
  <Text name="text" value="$text"/>
  <Choices name="sentiment" toName="text" choice="single">
    <Choice value="Positive"/><Choice value="Negative"/>
  </Choices>
  <Labels name="ner" toName="text">
    <Label value="Traveller"/><Label value="Destination"/>
  </Labels>
</View>"""

PEOPLE = ["Alice", "Bob", "Carol", "David", "Emma", "Frank"]
CITIES = ["Paris", "Berlin", "London", "Madrid", "Rome"]
GOOD = ["loved the trip to", "had a wonderful time in", "was very happy in"]
BAD = ["hated the trip to", "had an awful time in", "was very unhappy in"]


def tasks(n: int = 48) -> list[dict]:
    out = []
    for i in range(n):
        per, loc = PEOPLE[i % len(PEOPLE)], CITIES[(i * 2) % len(CITIES)]
        positive = i % 2 == 0
        phrase = (GOOD if positive else BAD)[i % 3]
        text = f"{per} {phrase} {loc}"
        result = [{"from_name": "sentiment", "to_name": "text", "type": "choices",
                   "value": {"choices": ["Positive" if positive else "Negative"]}}]
        for word, label in ((per, "Traveller"), (loc, "Destination")):
            start = text.index(word)
            result.append({"from_name": "ner", "to_name": "text", "type": "labels",
                           "value": {"start": start, "end": start + len(word), "text": word, "labels": [label]}})
        out.append({"id": i + 1, "data": {"text": text}, "annotations": [{"id": 900 + i, "result": result}]})
    return out


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from labelpilot.jobs.training import train_bundle
    from labelpilot.registry import Registry

    root = tmp_path_factory.mktemp("multi")
    # no text encoder: the TF-IDF model alone keeps the test fast and its answers plain
    bundle, report = train_bundle(CONFIG, tasks(), options={"sentiment": {"encoder": False}})
    assert set(bundle.models) == {"sentiment", "ner"}
    Registry(root / "dd" / "registry").register("trip", bundle, report=report)
    return root


def spans_of(spans: list[dict]) -> set[tuple[str, str]]:
    return {(s["text"], s["label"]) for s in spans}


def test_v1_answers_every_control(data_dir: Path) -> None:
    from labelpilot.batch import export_model
    from labelpilot.registry import Registry

    export_model(Registry(data_dir / "dd" / "registry"), "trip", data_dir / "exported")
    port = free_port()
    log = (data_dir / "serve.log").open("w")
    proc = subprocess.Popen([str(LABELPILOT), "serve-model", "exported", "--port", str(port)], cwd=data_dir,
                            env={**os.environ, "LABELPILOT_API_TOKENS": ""}, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc, data_dir / "serve.log", timeout=60)
        one = httpx.post(f"{url}/v1/models/trip/predict", json={"id": "a", "text": "Carol loved the trip to Rome"},
                         timeout=30).json()
        # the first control keeps the single-control shape at the top level
        assert one["id"] == "a" and one["class_name"] == "Positive" and one["class"] == 0
        assert set(one["class_probs"]) == {"Positive", "Negative"}
        controls = one["controls"]
        assert set(controls) == {"sentiment", "ner"}
        assert controls["sentiment"]["class_name"] == "Positive" and "id" not in controls["sentiment"]
        assert {("Carol", "Traveller"), ("Rome", "Destination")} <= spans_of(controls["ner"]["spans"])
        for s in controls["ner"]["spans"]:
            assert "Carol loved the trip to Rome"[s["start"]:s["end"]] == s["text"] and 0 < s["score"] <= 1

        many = httpx.post(f"{url}/v1/models/trip/versions/1/predict", timeout=30, json={"instances": [
            {"first_sequence": "Bob had an awful time in Berlin"}, {"text": "Emma was very happy in Paris"}]}).json()
        sentiments = [p["controls"]["sentiment"]["class_name"] for p in many["predictions"]]
        assert sentiments == ["Negative", "Positive"] == [p["class_name"] for p in many["predictions"]]
        first, second = (spans_of(p["controls"]["ner"]["spans"]) for p in many["predictions"])
        assert {("Bob", "Traveller"), ("Berlin", "Destination")} <= first
        assert {("Emma", "Traveller"), ("Paris", "Destination")} <= second

        bad = httpx.post(f"{url}/v1/models/trip/predict", json={"instances": [{"text": "ok"}, {"txt": 1}]})
        assert bad.status_code == 422 and bad.json()["field"] == "instances.1.text"
    finally:
        stop_server(proc)
        log.close()


@pytest.mark.parametrize("out_name", ["out.csv", "out.jsonl"])
def test_batch_predict_writes_every_control(data_dir: Path, out_name: str) -> None:
    inp = data_dir / "in.csv"
    inp.write_text('id,text\n1,"Alice loved the trip to Madrid"\n2,"Frank hated the trip to London"\n'
                   "3,too,many,fields\n", encoding="utf-8")
    if out_name.endswith(".csv"):  # in this process, one worker
        from labelpilot.batch import Columns, predict_file
        from labelpilot.registry import Registry

        stats = predict_file(Registry(data_dir / "dd" / "registry"), "trip", inp, data_dir / out_name,
                             cols=Columns(id="id"), workers=1)
        assert stats.predicted == 2 and stats.bad_rows[0].startswith("in.csv:4")
    else:  # the command, with a pool of two worker processes
        out = subprocess.run([str(LABELPILOT), "predict", "trip", str(inp), "-o", out_name, "--id-col", "id",
                              "--workers", "2", "--data-dir", "dd"], cwd=data_dir, capture_output=True, text=True,
                             timeout=120, env={**os.environ, "COLUMNS": "200"}, check=True)
        assert "in.csv:4" in out.stdout
    path = data_dir / out_name
    if out_name.endswith(".csv"):
        with path.open(encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            rows = list(reader)
        assert header == ["id", "predictions", "confidence", "probabilities", "error",
                          "sentiment.predictions", "sentiment.confidence", "sentiment.probabilities", "sentiment.error",
                          "ner.predictions", "ner.confidence", "ner.probabilities", "ner.error"]
        for row in rows:
            row["ner.predictions"] = json.loads(row["ner.predictions"])
    else:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in rows] == ["1", "2"]
    assert [r["predictions"] for r in rows] == ["Positive", "Negative"]
    assert [r["sentiment.predictions"] for r in rows] == ["Positive", "Negative"]
    assert {("Alice", "Traveller"), ("Madrid", "Destination")} <= spans_of(rows[0]["ner.predictions"])
    assert {("Frank", "Traveller"), ("London", "Destination")} <= spans_of(rows[1]["ner.predictions"])
    assert all(float(r["ner.confidence"]) > 0 for r in rows)
