"""A batch that reads media and cannot finish within LABELPILOT_PREDICT_TIMEOUT answers the tasks it finished
and gives the rest ``[]`` (no prediction: Label Studio stores nothing and asks for them again), instead of a 503
for the whole batch. A real `labelpilot serve` reads `valueType="url"` texts from a slow loopback server."""

from __future__ import annotations

import time

import pytest

from tests.test_security import KW_URL_CONFIG, UID, _listener

listener = pytest.fixture(_listener)

TEXT = b"solar power plant quarterly revenue report solar panels revenue growth"


def test_a_slow_media_batch_answers_what_it_finished_and_leaves_the_rest_for_label_studio(
    start_server, listener
) -> None:
    for i in range(16):
        listener.routes[f"/data/upload/1/t{i}.txt"] = (200, {}, TEXT)
    listener.delay = 0.5  # 16 reads take 8 s; the budget is 4 s, new chunks stop after 3 s
    server = start_server(LABELPILOT_PREDICT_TIMEOUT="4")
    tasks = [{"id": i + 1, "data": {"text": f"/data/upload/1/t{i}.txt"}} for i in range(16)]
    with server.client() as client:
        assert client.post("/setup", json={"project": UID, "schema": KW_URL_CONFIG, "hostname": listener.url,
                                            "access_token": "t"}).status_code == 200
        started = time.monotonic()
        resp = client.post("/predict", json={"tasks": tasks, "project": UID}, timeout=30)
        took = time.monotonic() - started
        assert resp.status_code == 200, resp.text
        results = resp.json()["results"]
        assert len(results) == 16 and took < 4.0
        done = [r for r in results if isinstance(r, dict)]
        assert 4 <= len(done) < 16 and all(r["result"] for r in done)  # every finished task has its keywords
        assert results[len(done):] == [[]] * (16 - len(done))  # the rest, in order, have no prediction
        assert "left unpredicted" in server.tail(200)
        # Label Studio asks again for the tasks without a prediction: they are served then
        listener.delay = 0.0
        again = client.post("/predict", json={"tasks": tasks[len(done):], "project": UID}).json()["results"]
        assert all(isinstance(r, dict) and r["result"] for r in again)
