"""From labelled data to a served model: train from a CSV -> evaluate -> predict a file -> export ->
serve the export -> predict over HTTP with a token -> /metrics shows the requests."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import LABELPILOT, NEGATIVE, POSITIVE, free_port, stop_server

pytest.importorskip("labelpilot.models.text_linear", reason="the text-linear family is not built yet")


def run(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([str(LABELPILOT), *args], cwd=cwd, capture_output=True, text=True, check=check,
                          env={**os.environ, "COLUMNS": "200"}, timeout=120)


def write_csv(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.fixture
def data(tmp_path: Path) -> Path:
    rows = [{"id": f"p{i}", "text": t, "label": "pos"} for i, t in enumerate(POSITIVE * 3)]
    rows += [{"id": f"n{i}", "text": t, "label": "neg"} for i, t in enumerate(NEGATIVE * 3)]
    return write_csv(tmp_path / "train.csv", rows)


def test_train_evaluate_predict_export_serve(tmp_path: Path, data: Path) -> None:
    out = run("train", str(data), "--name", "sentiment", "--data-dir", "dd", cwd=tmp_path)
    assert "sentiment: v1" in out.stdout
    ev = run("evaluate", "sentiment@1", str(data), "--data-dir", "dd", "--out", "ev.json", cwd=tmp_path)
    report = json.loads((tmp_path / "ev.json").read_text())
    assert report["metrics"]["accuracy"] >= 0.9 and Path(report["confusion_png"]).stat().st_size > 1000
    assert "macro_f1" in ev.stdout
    # a malformed row is reported with its line number; the rest is predicted
    inp = tmp_path / "in.csv"
    inp.write_text('id,text\n1,"I love it"\n2,"太差了"\n3,too,many,fields\n', encoding="utf-8")
    pred = run("predict", "sentiment", str(inp), "-o", "out.jsonl", "--outputs", "predictions,probabilities,logits",
               "--append-cols", "text", "--id-col", "id", "--data-dir", "dd", cwd=tmp_path)
    assert "in.csv:4" in pred.stdout
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["1", "2"] and rows[0]["text"] == "I love it"
    assert rows[0]["predictions"] == "pos" and rows[1]["predictions"] == "neg"
    assert set(rows[0]["probabilities"]) == {"pos", "neg"} and set(rows[0]["logits"]) == {"pos", "neg"}
    strict = run("predict", "sentiment", str(inp), "-o", "strict.csv", "--strict", "--data-dir", "dd",
                 cwd=tmp_path, check=False)
    assert strict.returncode != 0 and not (tmp_path / "strict.csv").exists()
    run("export", "sentiment", "exported", "--data-dir", "dd", cwd=tmp_path)
    manifest = json.loads((tmp_path / "exported" / "manifest.json").read_text())
    assert manifest["labels"] == {"label": ["neg", "pos"]} and "scikit-learn" in manifest["requires"]

    port = free_port()
    env = {**os.environ, "LABELPILOT_API_TOKENS": "tok-1,tok-2"}
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen([str(LABELPILOT), "serve-model", "exported", "--port", str(port)], cwd=tmp_path, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        secret_text = "my card number is 4111"
        bad = httpx.post(f"{url}/v1/models/sentiment/predict", json={"text": secret_text},
                         headers={"Authorization": "Bearer wrong"})
        assert bad.status_code == 401
        auth = {"Authorization": "Bearer tok-2"}
        one = httpx.post(f"{url}/v1/models/sentiment/predict", headers=auth,
                         json={"id": "7", "first_sequence": "excellent, I love it"}).json()
        assert one["class_name"] == "pos" and one["id"] == "7" and one["class"] == 1
        assert abs(sum(one["class_probs"].values()) - 1) < 1e-6
        many = httpx.post(f"{url}/v1/models/sentiment/versions/1/predict", headers=auth,
                          json={"instances": [{"text": "awful"}, {"text": "great"}]}).json()
        assert [p["class_name"] for p in many["predictions"]] == ["neg", "pos"]
        missing = httpx.post(f"{url}/v1/models/other/predict", headers=auth, json={"text": "x"})
        assert missing.status_code == 404 and "'other'" in missing.json()["detail"]
        v9 = httpx.post(f"{url}/v1/models/sentiment/versions/9/predict", headers=auth, json={"text": "x"})
        assert v9.status_code == 404 and "v9" in v9.json()["detail"]
        bad_body = httpx.post(f"{url}/v1/models/sentiment/predict", headers=auth, json={"txt": 1})
        assert bad_body.status_code == 422 and bad_body.json()["field"] == "instances.0.text"
        metrics = httpx.get(url + "/metrics").text
        assert 'labelpilot_model_requests_total{model="sentiment",status="ok",version="1"} 2.0' in metrics
        assert 'status="401"' in metrics or "401" in metrics
    finally:
        stop_server(proc)
        log.close()
    assert secret_text not in (tmp_path / "serve.log").read_text()


def test_registry_import_of_an_export(tmp_path: Path, data: Path) -> None:
    run("train", str(data), "--name", "s", "--data-dir", "a", cwd=tmp_path)
    run("export", "s@1", "exp", "--data-dir", "a", cwd=tmp_path)
    out = run("models", "import", "exp", "--name", "copied", "--data-dir", "b", cwd=tmp_path)
    assert "copied: v1" in out.stdout
    again = run("export", "s@1", "exp", "--data-dir", "a", cwd=tmp_path, check=False)
    assert again.returncode != 0 and "not empty" in (again.stdout + again.stderr)


def test_train_from_a_label_studio_export(tmp_path: Path) -> None:
    from tests.conftest import sentiment_tasks

    export = tmp_path / "project-1-export.json"
    tasks = sentiment_tasks()
    tasks[0]["annotations"][0]["was_cancelled"] = True  # skipped annotations never count
    export.write_text(json.dumps(tasks, ensure_ascii=False), encoding="utf-8")
    out = run("train", str(export), "--name", "from-ls", "--data-dir", "dd", cwd=tmp_path)
    assert "from-ls: v1" in out.stdout
    shown = json.loads(run("models", "show", "from-ls", "--data-dir", "dd", "--json", cwd=tmp_path).stdout)
    assert shown[0]["labels"] == ["Negative", "Positive"] and shown[0]["n_examples"] == 19
