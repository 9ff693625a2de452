"""Training through the real server: annotations fetched over HTTP from a stand-in for Label Studio's
export API, background jobs, new versions, health while training, and a SIGKILL in the middle."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import LABELPILOT, SENTIMENT_CONFIG, launch_server, sentiment_tasks, stop_server, wait_for

pytest.importorskip("labelpilot.models.text_linear", reason="the text-linear family is not built yet")

CREATED = "2023-11-14T22:13:20Z"  # int(timestamp) == 1700000000
PROJECT = {"id": 3, "created_at": CREATED, "label_config": SENTIMENT_CONFIG}
UID = "3.1700000000"


def setup(client: httpx.Client, fake_ls_url: str, token: str = "setup-token") -> str:
    resp = client.post(
        "/setup", json={"project": UID, "schema": SENTIMENT_CONFIG, "hostname": fake_ls_url, "access_token": token}
    )
    assert resp.status_code == 200, resp.text
    return resp.json()["model_version"]


def training_state(client: httpx.Client) -> dict:
    return client.get("/training", params={"project": UID}).json()


def big_tasks(n: int, seed: int = 0) -> list[dict]:
    """Many annotated tasks so that a training run lasts seconds (for the timing and crash tests)."""
    rng = random.Random(seed)
    good = ["great", "love", "excellent", "perfect", "happy", "好", "满意", "喜欢"]
    bad = ["awful", "hate", "broken", "poor", "refund", "差", "失望", "糟糕"]
    filler = [f"w{i}" for i in range(3000)]
    tasks = []
    for i in range(n):
        label = "Positive" if i % 2 else "Negative"
        words = rng.sample(filler, 12) + rng.sample(good if i % 2 else bad, 2)
        rng.shuffle(words)
        tasks.append({
            "id": i + 1, "data": {"text": " ".join(words)},
            "annotations": [{"id": 100000 + i, "result": [{"from_name": "sentiment", "to_name": "text",
                             "type": "choices", "value": {"choices": [label]}}]}],
        })
    return tasks


def test_start_training_fetches_export_and_serves_new_version(start_server, fake_ls) -> None:
    fake_ls.tokens.add("Token setup-token")
    fake_ls.tasks[3] = sentiment_tasks()
    server = start_server(LABELPILOT_RETRAIN_EVERY="0")
    with server.client() as client:
        v0 = setup(client, fake_ls.url)
        assert v0 in {"untrained", "zero-shot-text-linear"}  # zero-shot from the label names when the encoder loads
        resp = client.post("/webhook", json={"action": "START_TRAINING", "project": PROJECT})
        assert resp.status_code == 201
        v1 = wait_for(lambda: (v := setup(client, fake_ls.url)) != v0 and v, what="a new model version")
        assert ("GET", "/api/projects/3/export?exportType=JSON&download_all_tasks=false", "Token setup-token") in (
            fake_ls.requests
        )
        tasks = [
            {"id": 1, "data": {"text": "excellent quality, I love it"}},
            {"id": 2, "data": {"no_text_here": 1}},  # a bad task: empty prediction, the rest still served
            "not a task",
            {"id": 4, "data": {"text": "质量太差了，很失望"}},
        ]
        results = client.post("/predict", json={"tasks": tasks, "label_config": SENTIMENT_CONFIG, "project": UID})
        out = results.json()["results"]
        assert client.get("/versions", params={"project": UID}).json() == {"versions": [v1], "current_version": v1}
        assert client.get("/versions").status_code == 404  # LS does not say which project asks
    assert len(out) == 4 and all(r["model_version"] == v1 for r in out)
    assert out[1]["result"] == [] and out[2]["result"] == []
    for r, label in ((out[0], "Positive"), (out[3], "Negative")):
        (region,) = r["result"]
        assert region["value"]["choices"] == [label]
        assert region["from_name"] == "sentiment" and region["to_name"] == "text" and region["type"] == "choices"
        assert 0.5 <= r["score"] <= 1.0
    # the registry knows the version, with metrics from a held-out slice
    listing = subprocess.run(
        [str(LABELPILOT), "models", "show", f"ls-project-{UID}", "--data-dir", str(server.data_dir), "--json"],
        capture_output=True, text=True, check=True,
    ).stdout
    assert v1 in listing and '"n_examples": 20' in listing


def test_annotation_webhooks_retrain_every_n(start_server, fake_ls) -> None:
    fake_ls.tokens.add("Token setup-token")
    tasks = sentiment_tasks()
    random.Random(0).shuffle(tasks)
    fake_ls.tasks[3] = []  # Label Studio saves an annotation before it sends the webhook: the export grows
    server = start_server(LABELPILOT_RETRAIN_EVERY="5")
    with server.client() as client:
        v0 = setup(client, fake_ls.url)
        for task in tasks:
            fake_ls.tasks[3].append(task)
            ann = task["annotations"][0]
            task_only = {"id": task["id"], "data": task["data"]}
            body = {"action": "ANNOTATION_CREATED", "project": PROJECT, "task": task_only, "annotation": ann}
            t0 = time.perf_counter()
            resp = client.post("/webhook", json=body)
            assert resp.status_code == 201 and time.perf_counter() - t0 < 1.0  # LS waits 1 s for webhooks
        wait_for(lambda: setup(client, fake_ls.url) != v0, what="retraining from annotation events")
        jobs = wait_for(
            lambda: [j for j in training_state(client)["jobs"] if j["state"] == "done" and j["report"]["n_train"] >= 16]
            or None,
            what="a job trained on the webhook copy",
        )
        assert jobs


def test_health_answers_fast_while_training(start_server, fake_ls) -> None:
    fake_ls.tokens.add("Token setup-token")
    fake_ls.tasks[3] = big_tasks(20000)
    server = start_server(LABELPILOT_RETRAIN_EVERY="0")
    with server.client() as client:
        setup(client, fake_ls.url)
        client.post("/webhook", json={"action": "START_TRAINING", "project": PROJECT})
        wait_for(lambda: training_state(client)["jobs"][0]["state"] == "running", what="the job to start")
        latencies = []
        while training_state(client)["jobs"][0]["state"] == "running":
            with httpx.Client(timeout=2) as fresh:  # LS opens a new connection per call
                t0 = time.perf_counter()
                assert fresh.get(server.url + "/health").status_code == 200
                latencies.append(time.perf_counter() - t0)
            time.sleep(0.05)
        assert training_state(client)["jobs"][0]["state"] == "done"
    assert len(latencies) >= 5, "training ended before it could be observed"
    latencies.sort()
    p95 = latencies[int(0.95 * (len(latencies) - 1))]
    # < 200 ms is the bar; on a machine other processes load, one call may be descheduled, so the bar is on
    # the 95th percentile and every call must stay well inside Label Studio's 1 s health timeout
    assert p95 < 0.2, f"p95 /health latency {p95:.3f}s over {len(latencies)} calls: {latencies[-5:]}"
    assert latencies[-1] < 1.0, f"max /health latency {latencies[-1]:.3f}s"


def _fitting(job: dict, after: int) -> bool:
    """Past fetching the annotations: "training on N annotated tasks", then the model's own steps ("featurizing
    …", "fitting …"), which a warm trainer reaches within milliseconds."""
    progress = job.get("progress") or ""
    return job["id"] > after and job.get("state") == "running" and progress not in ("", "fetching annotations")


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        out.extend(int(t) for t in text)
    return out


def test_sigkill_mid_training_keeps_previous_version(tmp_path, fake_ls) -> None:
    fake_ls.tokens.add("Token setup-token")
    fake_ls.tasks[3] = sentiment_tasks()
    data = tmp_path / "data"
    server = launch_server(data, tmp_path / "a.log", LABELPILOT_RETRAIN_EVERY="0")
    try:
        with server.client() as client:
            v0 = setup(client, fake_ls.url)
            client.post("/webhook", json={"action": "START_TRAINING", "project": PROJECT})
            v1 = wait_for(lambda: (v := setup(client, fake_ls.url)) != v0 and v, what="version 1")
            first_job = training_state(client)["jobs"][0]["id"]
            fake_ls.tasks[3] = big_tasks(20000, seed=1)
            client.post("/webhook", json={"action": "START_TRAINING", "project": PROJECT})
            wait_for(lambda: _fitting(training_state(client)["jobs"][0], after=first_job),
                     what="the second job to be fitting")
            time.sleep(0.5)
            trainers = _children(server.proc.pid)
            assert trainers, "training should run in a child process"
            os.kill(server.proc.pid, signal.SIGKILL)  # the server only: its trainer must die with it
            server.proc.wait(5)
        wait_for(lambda: not any(Path(f"/proc/{p}").exists() for p in trainers), timeout=10,
                 what="the orphaned trainer to die")
    finally:
        stop_server(server.proc)
    model_dir = next((data / "registry" / "models").iterdir())
    server2 = launch_server(data, tmp_path / "b.log", LABELPILOT_RETRAIN_EVERY="0")
    try:
        with server2.client() as client:
            assert setup(client, fake_ls.url) == v1
            jobs = training_state(client)["jobs"]
            assert jobs[0]["state"] == "interrupted"
            resp = client.post("/predict", json={"tasks": [{"id": 1, "data": {"text": "love it"}}],
                                                 "label_config": SENTIMENT_CONFIG, "project": UID})
            assert resp.json()["results"][0]["model_version"] == v1
        assert sorted(p.name for p in model_dir.iterdir()) == ["v1"]
    finally:
        stop_server(server2.proc)
