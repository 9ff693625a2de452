"""Suspect annotations after a Start Training job (jobs/audit_step.py), through the real server and a stand-in
for Label Studio: planted label errors come out on top of the version's report and reach Label Studio as
predictions under their own model version, scored by suspicion."""

from __future__ import annotations

import random

import httpx

from labelpilot.registry import Registry
from tests.conftest import SENTIMENT_CONFIG, wait_for

CREATED = "2023-11-14T22:13:20Z"  # int(timestamp) == 1700000000
PROJECT = {"id": 3, "created_at": CREATED, "label_config": SENTIMENT_CONFIG}
UID = "3.1700000000"
FLIPPED = {7, 18, 33, 52}


def planted_tasks(n: int = 60, seed: int = 1) -> list[dict]:
    """Clearly separable sentiment tasks; the tasks in FLIPPED carry the wrong label."""
    rng = random.Random(seed)
    good = ["great", "love", "excellent", "perfect", "happy", "wonderful"]
    bad = ["awful", "hate", "broken", "poor", "refund", "terrible"]
    filler = [f"w{i}" for i in range(200)]
    tasks = []
    for i in range(1, n + 1):
        positive = i % 2 == 0
        words = rng.sample(filler, 6) + rng.sample(good if positive else bad, 3)
        rng.shuffle(words)
        label = "Positive" if positive != (i in FLIPPED) else "Negative"
        tasks.append({"id": i, "data": {"text": " ".join(words)}, "annotations": [
            {"id": 5000 + i, "result": [{"from_name": "sentiment", "to_name": "text", "type": "choices",
                                         "value": {"choices": [label]}}]}]})
    return tasks


def train(client: httpx.Client, fake_ls) -> dict:
    resp = client.post("/setup", json={"project": UID, "schema": SENTIMENT_CONFIG, "hostname": fake_ls.url,
                                       "access_token": "setup-token"})
    assert resp.status_code == 200, resp.text
    assert client.post("/webhook", json={"action": "START_TRAINING", "project": PROJECT}).status_code == 201
    return wait_for(lambda: (jobs := client.get("/training", params={"project": UID}).json().get("jobs"))
                    and jobs[0]["state"] in ("done", "failed") and jobs[0], timeout=180, what="the job to end")


def test_start_training_audits_labels_and_sends_suspects_to_label_studio(start_server, fake_ls) -> None:
    fake_ls.tokens.add("Token setup-token")
    fake_ls.tasks[3] = planted_tasks()
    server = start_server(LABELPILOT_RETRAIN_EVERY="0", LABELPILOT_ENCODER="none")
    with server.client() as client:
        job = train(client, fake_ls)
    assert job["state"] == "done", job
    mv = Registry(server.data_dir / "registry").get(f"ls-project-{UID}")
    rows = mv.report["suspects"]
    top = {int(r["task"]) for r in rows[: len(FLIPPED) + 2]}
    assert len(top & FLIPPED) >= 3, rows[:8]  # planted errors lead the report
    assert rows == sorted(rows, key=lambda r: r["score"], reverse=True)
    audit = mv.report["audit"]
    assert audit["controls"][0]["examples"] == 60 and audit["label_studio"]["created"] == 60
    sent = fake_ls.predictions[3]
    assert {p["model_version"] for p in sent} == {f"{mv.tag}-suspects"}
    assert len(sent) == 60 and {p["task"] for p in sent} == set(range(1, 61))
    ranked = sorted(sent, key=lambda p: p["score"], reverse=True)
    assert len({p["task"] for p in ranked[:6]} & FLIPPED) >= 3
    flipped = next(p for p in sent if p["task"] == 7)  # task 7 is odd (negative words), annotated Positive
    assert flipped["result"][0]["value"]["choices"] == ["Negative"]
    assert ("POST", "/api/projects/3/import/predictions", "Token setup-token") in fake_ls.requests


def test_audit_off_sends_nothing(start_server, fake_ls) -> None:
    fake_ls.tokens.add("Token setup-token")
    fake_ls.tasks[3] = planted_tasks()
    server = start_server(LABELPILOT_RETRAIN_EVERY="0", LABELPILOT_ENCODER="none", LABELPILOT_AUDIT="off")
    with server.client() as client:
        assert train(client, fake_ls)["state"] == "done"
    mv = Registry(server.data_dir / "registry").get(f"ls-project-{UID}")
    assert "suspects" not in mv.report and 3 not in fake_ls.predictions
