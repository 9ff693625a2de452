"""Issue 11, items 4, 5 and 11: heavy work off the event loop, request limits, store-and-count atomicity.

Against a real `labelpilot serve` on loopback; the atomicity check also runs on the store with real SQLite.
"""

from __future__ import annotations

import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from labelpilot.jobs.state import ProjectStore
from tests.conftest import SENTIMENT_CONFIG, Server, launch_server, stop_server

UID = "1.1700000000"
KEYWORD_CONFIG = (
    '<View><Text name="text" value="$text"/><Labels name="kw" toName="text">'
    '<Label value="Keyword" predicted_values="keyword"/></Labels></View>'
)
SENTENCE = "The quick brown fox jumps over the lazy dog near the solar power station. 今天天气很好，我们去公园散步。"


def bulk_event(n: int, start: int = 1) -> dict[str, Any]:
    """An ANNOTATIONS_CREATED webhook with ``n`` annotations, each with its task (as Label Studio nests it)."""
    anns = [
        {
            "id": start + i,
            "task": {"id": start + i, "data": {"text": f"{SENTENCE} #{i}"}, "project": 1},
            "result": [{"from_name": "sentiment", "to_name": "text", "type": "choices",
                        "value": {"choices": ["Positive" if i % 2 else "Negative"]}}],
            "was_cancelled": False,
        }
        for i in range(n)
    ]
    return {"action": "ANNOTATIONS_CREATED", "annotations": anns,
            "project": {"id": 1, "created_at": "2023-11-14T22:13:20Z"}}


class HealthPoller:
    """Polls /health on its own connection every 50 ms and records each answer's latency (or failure)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=5) as client:
            while not self._stop.is_set():
                t0 = time.perf_counter()
                try:
                    ok = client.get("/health").status_code == 200
                    if not ok:
                        self.failures.append("status")
                except httpx.HTTPError as exc:
                    self.failures.append(type(exc).__name__)
                self.latencies.append(time.perf_counter() - t0)
                time.sleep(0.05)

    def __enter__(self) -> HealthPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def stored_annotations(data_dir: Path, uid: str = UID) -> int:
    with sqlite3.connect(data_dir / "state.sqlite3") as db:
        return db.execute("SELECT COUNT(*) FROM annotations WHERE uid=?", (uid,)).fetchone()[0]


@pytest.fixture
def server(start_server: Callable[..., Server]) -> Server:
    return start_server(LABELPILOT_RETRAIN_EVERY="0")


# -- item 4: heavy work off the event loop ------------------------------------------------------------------


def test_bulk_webhook_is_stored_off_the_loop_while_health_answers(server: Server) -> None:
    n = 30_000  # bench/health_under_load.py runs the full 100,000
    body = orjson.dumps(bulk_event(n))
    with HealthPoller(server.url) as poller, server.client(timeout=120) as client:
        t0 = time.perf_counter()
        resp = client.post("/webhook", content=body, headers={"content-type": "application/json"})
        took = time.perf_counter() - t0
        time.sleep(0.2)
    assert resp.status_code == 201, resp.text
    assert resp.json()["annotations_since_training"] == n
    assert stored_annotations(server.data_dir) == n
    assert took < 60, f"{n} annotations took {took:.1f} s"
    assert not poller.failures
    assert len(poller.latencies) >= 5
    assert max(poller.latencies) < 1.0, f"slowest /health {max(poller.latencies):.2f} s"


def test_large_predict_runs_off_the_loop_while_health_answers(start_server: Callable[..., Server]) -> None:
    server = start_server(LABELPILOT_MAX_TEXT_CHARS="2000000")
    text = (SENTENCE * 20_000)[:1_000_000]  # keywords over 1M characters: seconds of CPU
    with HealthPoller(server.url) as poller, server.client(timeout=120) as client:
        resp = client.post("/predict", json={"tasks": [{"id": 1, "data": {"text": text}}],
                                             "label_config": KEYWORD_CONFIG})
        time.sleep(0.2)
    assert resp.status_code == 200, resp.text
    (result,) = resp.json()["results"]
    assert result["result"], "keywords were expected for the long text"
    assert not poller.failures
    assert len(poller.latencies) >= 5, "the prediction was too quick to show anything"
    assert max(poller.latencies) < 1.0, f"slowest /health {max(poller.latencies):.2f} s"


def test_a_full_prediction_lane_answers_503_with_retry_after(start_server: Callable[..., Server]) -> None:
    server = start_server(LABELPILOT_MODEL_THREADS="1", LABELPILOT_MAX_QUEUED="1")
    body = {"tasks": [{"id": 1, "data": {"text": (SENTENCE * 3000)[:150_000]}}], "label_config": KEYWORD_CONFIG}

    def call(_: int) -> httpx.Response:
        with server.client(timeout=120) as client:
            return client.post("/predict", json=body)

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(call, range(6)))
    codes = sorted(r.status_code for r in answers)
    assert 200 in codes and 503 in codes, codes
    busy = next(r for r in answers if r.status_code == 503)
    assert busy.headers["retry-after"].isdigit()
    assert busy.json()["error"] == "Busy" and "LABELPILOT_MAX_QUEUED" in busy.json()["detail"]
    with server.client() as client:  # and the server is fine afterwards
        assert client.post("/predict", json=body).status_code == 200


# -- item 5: limits -----------------------------------------------------------------------------------------


@pytest.fixture
def small_limits(start_server: Callable[..., Server]) -> Server:
    return start_server(
        LABELPILOT_RETRAIN_EVERY="0", LABELPILOT_MAX_BODY_MB="1", LABELPILOT_MAX_WEBHOOK_BODY_MB="2",
        LABELPILOT_MAX_TASKS="10", LABELPILOT_MAX_TEXT_CHARS="1000",
    )


def _chunks(total: int, size: int = 64_000) -> Iterator[bytes]:
    yield b'{"tasks": [{"data": {"text": "'
    for _ in range(total // size):
        yield b"x" * size
    yield b'"}}]}'


@pytest.mark.parametrize("path", ["/setup", "/predict", "/webhook", "/v1/models/news/predict"])
def test_a_body_over_the_limit_is_refused_with_413_json(small_limits: Server, path: str) -> None:
    big = b'{"tasks": "' + b"x" * 3_000_000 + b'"}'
    with small_limits.client() as client:
        resp = client.post(path, content=big, headers={"content-type": "application/json"})
        assert resp.status_code == 413, resp.text
        body = resp.json()
        assert body["status"] == 413 and body["field"] == "body"
        assert "MB" in body["detail"] and "LABELPILOT_MAX_" in body["detail"]
    if path.startswith("/v1/"):
        return  # an unknown model is a 404 before its body is read
    with small_limits.client() as client:  # no Content-Length: counted while it streams
        resp = client.post(path, content=_chunks(3_000_000), headers={"content-type": "application/json"})
        assert resp.status_code == 413, resp.text
        assert resp.json()["field"] == "body"
        assert client.get("/health").status_code == 200


def test_webhook_has_its_own_larger_body_limit(small_limits: Server) -> None:
    body = orjson.dumps(bulk_event(4000))  # ~1.5 MB: over /predict's limit, under the webhook's
    assert 1_000_000 < len(body) < 2_000_000
    with small_limits.client() as client:
        resp = client.post("/webhook", content=body, headers={"content-type": "application/json"})
    assert resp.status_code == 201, resp.text
    assert resp.json()["annotations_since_training"] == 4000


def test_a_big_body_that_is_not_json_is_a_422_naming_body(server: Server) -> None:
    good = orjson.dumps(bulk_event(20_000))  # > 4 MB: parsed incrementally
    assert len(good) > 4_000_000
    with server.client(timeout=60) as client:
        for bad in (good[:-1], good + b" {}", good.replace(b'"id":2,', b'"id":NaN,', 1)):
            resp = client.post("/webhook", content=bad, headers={"content-type": "application/json"})
            assert resp.status_code == 422, resp.text
            assert resp.json()["field"] == "body" and "not valid JSON" in resp.json()["detail"]
        assert stored_annotations(server.data_dir) == 0


def test_too_many_tasks_are_refused_naming_tasks(small_limits: Server) -> None:
    tasks = [{"id": i, "data": {"text": "good"}} for i in range(11)]
    with small_limits.client() as client:
        resp = client.post("/predict", json={"tasks": tasks, "label_config": SENTIMENT_CONFIG})
        assert resp.status_code == 413
        assert resp.json()["field"] == "tasks" and "LABELPILOT_MAX_TASKS" in resp.json()["detail"]
        ok = client.post("/predict", json={"tasks": tasks[:10], "label_config": SENTIMENT_CONFIG})
        assert ok.status_code == 200 and len(ok.json()["results"]) == 10


def test_a_too_long_text_is_named_and_does_not_spoil_the_batch(small_limits: Server) -> None:
    long_task = {"id": 2, "data": {"text": "y" * 1001}}
    with small_limits.client() as client:
        resp = client.post("/predict", json={"tasks": [long_task], "label_config": KEYWORD_CONFIG})
        assert resp.status_code == 413
        assert resp.json()["field"] == "tasks.0.data.text" and "LABELPILOT_MAX_TEXT_CHARS" in resp.json()["detail"]
        tasks = [{"id": 1, "data": {"text": SENTENCE}}, long_task, {"id": 3, "data": {"text": SENTENCE}}]
        resp = client.post("/predict", json={"tasks": tasks, "label_config": KEYWORD_CONFIG})
        assert resp.status_code == 200
        results = resp.json()["results"]
        assert len(results) == 3
        assert results[0]["result"] and results[2]["result"] and results[1]["result"] == []
        assert len({r["model_version"] for r in results}) == 1


# -- item 11: an event is stored and counted in one transaction ---------------------------------------------


def test_store_and_count_are_one_transaction(tmp_path: Path) -> None:
    store = ProjectStore(tmp_path)
    pairs = [({"id": i, "data": {"text": "t"}}, {"id": 100 + i, "result": []}) for i in range(50)]
    assert store.record_annotation_event(UID, put=pairs, count=50) == 50
    # make the counting step fail, as a kill between the two steps would: the stored rows must go with it
    with sqlite3.connect(tmp_path / "state.sqlite3") as db:
        db.execute("CREATE TRIGGER no_count BEFORE UPDATE OF since_train ON projects "
                   "BEGIN SELECT RAISE(ABORT, 'count failed'); END")
    more = [({"id": i, "data": {"text": "t"}}, {"id": 100 + i, "result": []}) for i in range(50, 80)]
    with pytest.raises(sqlite3.DatabaseError, match="count failed"):
        store.record_annotation_event(UID, put=more, count=30)
    assert len(store.tasks(UID)) == 50
    assert store.project(UID)["since_train"] == 50


def test_sigkill_after_acks_loses_no_count(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = launch_server(data, tmp_path / "a.log", LABELPILOT_RETRAIN_EVERY="0")
    acked = 0
    lock = threading.Lock()

    def send(worker: int) -> None:  # one kept-alive client per thread, 50 events each
        nonlocal acked
        with httpx.Client(base_url=server.url, timeout=10) as client:
            for i in range(worker * 50, worker * 50 + 50):
                event = {"action": "ANNOTATION_CREATED", "project": {"id": 1, "created_at": "2023-11-14T22:13:20Z"},
                         "annotation": {"id": 5000 + i, "result": []}, "task": {"id": i, "data": {"text": "t"}}}
                try:
                    if client.post("/webhook", json=event).status_code == 201:
                        with lock:
                            acked += 1
                except httpx.HTTPError:
                    return  # in flight when the server was killed: not acknowledged

    try:
        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(send, w) for w in range(8)]
            while acked < 150 and not all(f.done() for f in futures):
                time.sleep(0.005)
            stop_server(server.proc, signal.SIGKILL)  # mid-stream, right after an ack
            for f in futures:
                f.result()
    finally:
        stop_server(server.proc)
    assert 150 <= acked < 400, "the kill should land while events are still being sent"
    restarted = launch_server(data, tmp_path / "b.log", LABELPILOT_RETRAIN_EVERY="0")
    try:
        with restarted.client() as client:
            since = client.get("/training", params={"project": UID}).json()["annotations_since_training"]
    finally:
        stop_server(restarted.proc)
    assert since == stored_annotations(data) >= acked
