"""Fast early learning: the retrain schedule (1, 2, 5, then every N), the warm trainer (faster than a fresh
process per job, restarted after a crash), and /health while it trains — through the real server."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from labelpilot.config import Settings
from labelpilot.jobs.schedule import retrain_due
from tests.conftest import SENTIMENT_CONFIG, sentiment_tasks, wait_for
from tests.test_training_server import big_tasks

CREATED = "2023-11-14T22:13:20Z"
NER_CONFIG = """<View><Labels name="ner" toName="text"><Label value="PER"/><Label value="LOC"/></Labels>
<Text name="text" value="$text"/></View>"""
NAMES = ["Alice", "Bruno", "Chen", "Dmitri", "Emma", "Farid", "Grace", "Hiro", "Ines", "Jonas"]
CITIES = ["Paris", "Lima", "Oslo", "Cairo", "Kyoto"]


def ner_task(i: int) -> tuple[dict, dict]:
    name, city = NAMES[i % len(NAMES)], CITIES[i % len(CITIES)]
    text = f"{name} flew to {city} on Monday."
    at = len(name) + len(" flew to ")
    result = [
        {"from_name": "ner", "to_name": "text", "type": "labels",
         "value": {"start": 0, "end": len(name), "text": name, "labels": ["PER"]}},
        {"from_name": "ner", "to_name": "text", "type": "labels",
         "value": {"start": at, "end": at + len(city), "text": city, "labels": ["LOC"]}},
    ]
    task = {"id": i + 1, "data": {"text": text}}
    return task, {"id": 5000 + i, "result": result, "was_cancelled": False, "ground_truth": False}


def test_schedule_retrains_at_1_2_5_then_every_10() -> None:
    due, since = [], 0
    for total in range(1, 46):
        since += 1
        if retrain_due((1, 2, 5), 10, total_before=total - 1, total_after=total, since_train=since):
            due.append(total)
            since = 0
    assert due == [1, 2, 5, 15, 25, 35, 45]
    assert retrain_due((1, 2, 5), 0, total_before=0, total_after=1, since_train=1) is None  # 0 = Start Training only
    assert retrain_due((), 10, total_before=0, total_after=1, since_train=1) is None  # "" = every N only
    assert Settings(retrain_schedule=" 5,1 ,2").schedule == (1, 2, 5)
    with pytest.raises(ValidationError, match="retrain_schedule"):
        Settings(retrain_schedule="1,two")


def _jobs(client: httpx.Client, uid: str) -> list[dict]:
    return client.get("/training", params={"project": uid}).json()["jobs"]


def test_first_model_after_the_first_annotation_then_on_schedule(start_server) -> None:
    server = start_server()  # defaults: schedule 1,2,5 and every 10
    uid, project = "4.1700000000", {"id": 4, "created_at": CREATED, "label_config": NER_CONFIG}
    with server.client() as client:
        v0 = client.post("/setup", json={"project": uid, "schema": NER_CONFIG}).json()["model_version"]
        trained_at = []
        for i in range(20):
            task, ann = ner_task(i)
            body = {"action": "ANNOTATION_CREATED", "project": project, "task": task, "annotation": ann}
            resp = client.post("/webhook", json=body)
            assert resp.status_code == 201, resp.text
            if "training" in resp.json():
                trained_at.append(i + 1)
                # let it finish, so that the next scheduled retrain is not coalesced into this one
                wait_for(lambda: _jobs(client, uid)[0]["state"] not in ("queued", "running"), timeout=90,
                         what=f"the retrain after annotation {i + 1}")
            if i == 0:
                job = _jobs(client, uid)[0]
                assert job["state"] == "done", job
                v1 = client.post("/setup", json={"project": uid, "schema": NER_CONFIG}).json()["model_version"]
                assert v1 != v0 and v1.startswith("ner-crf-v1"), (v0, v1)
                pred = client.post("/predict", json={"tasks": [{"id": 99, "data": {"text": "Alice flew to Oslo."}}],
                                                     "project": uid, "label_config": NER_CONFIG}).json()
                assert pred["results"][0]["model_version"] == v1
        jobs = _jobs(client, uid)
    assert trained_at == [1, 2, 5, 15]
    assert all(j["state"] == "done" for j in jobs), jobs
    assert [j["report"]["n_examples"] for j in reversed(jobs)] == [1, 2, 5, 15]


def _train_once(client: httpx.Client, uid: str, project: dict) -> float:
    before = {j["id"] for j in _jobs(client, uid)}
    t0 = time.perf_counter()
    assert client.post("/webhook", json={"action": "START_TRAINING", "project": project}).status_code == 201
    wait_for(lambda: [j for j in _jobs(client, uid) if j["id"] not in before and j["state"] == "done"] or None,
             timeout=120, what="the retrain")
    return time.perf_counter() - t0


def _bulk_annotate(client: httpx.Client, project: dict) -> None:
    anns = [{**t["annotations"][0], "task": {"id": t["id"], "data": t["data"]}} for t in sentiment_tasks()]
    resp = client.post("/webhook", json={"action": "ANNOTATIONS_CREATED", "project": project, "annotations": anns})
    assert resp.status_code == 201, resp.text


def test_warm_retrain_is_faster_than_a_cold_one(start_server) -> None:
    uid, project = "5.1700000000", {"id": 5, "created_at": CREATED, "label_config": SENTIMENT_CONFIG}
    seconds = {}
    for mode in ("1", "0"):
        server = start_server(LABELPILOT_RETRAIN_EVERY="0", LABELPILOT_WARM_TRAINER=mode)
        with server.client() as client:
            client.post("/setup", json={"project": uid, "schema": SENTIMENT_CONFIG})
            _bulk_annotate(client, project)
            _train_once(client, uid, project)  # the first may wait for the warm trainer's start-up
            seconds[mode] = min(_train_once(client, uid, project) for _ in range(2))
    assert seconds["1"] < seconds["0"], seconds
    assert seconds["1"] < 0.7 * seconds["0"], f"warm {seconds['1']:.2f}s vs cold {seconds['0']:.2f}s"


def _trainer_pids(server_pid: int) -> list[int]:
    """The server's multiprocessing children other than the resource tracker."""
    out = []
    for task in Path(f"/proc/{server_pid}/task").iterdir():
        for pid in (task / "children").read_text().split():
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            if b"spawn_main" in cmd and b"resource_tracker" not in cmd:
                out.append(int(pid))
    return out


def test_warm_trainer_crash_fails_the_job_and_a_new_trainer_serves_the_next(start_server, fake_ls) -> None:
    fake_ls.tokens.add("Token t")
    fake_ls.tasks[6] = big_tasks(20000, seed=2)
    uid, project = "6.1700000000", {"id": 6, "created_at": CREATED, "label_config": SENTIMENT_CONFIG}
    server = start_server(LABELPILOT_RETRAIN_EVERY="0")
    with server.client() as client:
        setup = {"project": uid, "schema": SENTIMENT_CONFIG, "hostname": fake_ls.url, "access_token": "t"}
        v0 = client.post("/setup", json=setup).json()["model_version"]
        first = wait_for(lambda: _trainer_pids(server.proc.pid) or None, what="the warm trainer")
        client.post("/webhook", json={"action": "START_TRAINING", "project": project})
        wait_for(lambda: (j := _jobs(client, uid)[0])["state"] == "running"
                 and (j["progress"] or "") not in ("", "fetching annotations"), timeout=60,
                 what="the job to be fitting")  # past fetching: "training on N …", then the model's own steps
        latencies = []
        for _ in range(5):  # the server answers while its trainer works
            with httpx.Client(timeout=2) as fresh:
                t0 = time.perf_counter()
                assert fresh.get(server.url + "/health").status_code == 200
                latencies.append(time.perf_counter() - t0)
        assert max(latencies) < 1.0, latencies
        os.kill(first[0], signal.SIGKILL)
        job = wait_for(lambda: (j := _jobs(client, uid)[0])["state"] == "failed" and j, timeout=30,
                       what="the job to be marked failed")
        assert "died" in job["error"] and "exit -9" in job["error"], job
        second = wait_for(lambda: [p for p in _trainer_pids(server.proc.pid) if p not in first] or None,
                          what="a new trainer")
        assert second and first[0] not in _trainer_pids(server.proc.pid)
        fake_ls.tasks[6] = sentiment_tasks()
        client.post("/webhook", json={"action": "START_TRAINING", "project": project})
        v1 = wait_for(lambda: (v := client.post("/setup", json=setup).json()["model_version"]) != v0 and v,
                      timeout=90, what="a version from the new trainer")
        assert v1.startswith("text-linear-v1")
        # the version is served as soon as the registry has it; the job row says "done" a moment later
        wait_for(lambda: _jobs(client, uid)[0]["state"] == "done", timeout=30, what="the job to be marked done")
        assert _trainer_pids(server.proc.pid) == second  # the same warm trainer served it


def test_the_warm_trainers_copy_reads_only_new_rows_and_matches_a_full_read(tmp_path) -> None:
    from labelpilot.jobs.state import ProjectStore
    from labelpilot.jobs.warm import CachedProjectStore

    store, cached = ProjectStore(tmp_path), CachedProjectStore(tmp_path)
    tasks = sentiment_tasks()
    for t in tasks[:10]:
        store.put_annotation("p", {"id": t["id"], "data": t["data"]}, t["annotations"][0])
    assert cached.tasks("p") == store.tasks("p") and len(cached.tasks("p")) == 10
    first = tasks[0]
    store.put_annotation("p", {"id": first["id"], "data": first["data"]},
                         {**first["annotations"][0], "result": []})  # an update of the same annotation
    store.delete_annotations("p", [tasks[1]["annotations"][0]["id"]])
    store.put_annotation("p", {"id": tasks[12]["id"], "data": tasks[12]["data"]}, tasks[12]["annotations"][0])
    assert cached.tasks("p") == store.tasks("p")
    assert cached.tasks("p")[0]["annotations"][0]["result"] == [] and len(cached.tasks("p")) == 10
