"""Training jobs: one per project at a time, later requests coalesced; RQ on a real Redis."""

from __future__ import annotations

import subprocess
import time
import uuid

import pytest

from labelpilot.ids import project_uid
from labelpilot.jobs.state import ProjectStore
from tests.conftest import LABELPILOT, SENTIMENT_CONFIG, sentiment_tasks, wait_for


def test_project_uid_matches_what_setup_sends() -> None:
    project = {"id": 1, "created_at": "2026-11-21T19:39:08.538679Z"}
    assert project_uid(project) == "1.1795289948"  # the /setup "project" of the same capture
    assert project_uid("1.1795289948") == "1.1795289948"
    assert project_uid({"id": 4}) == "4" and project_uid({}) is None


def test_one_job_per_project_later_requests_coalesce(tmp_path) -> None:
    store = ProjectStore(tmp_path)
    first, deferred = store.claim_or_defer("p", "START_TRAINING", full_export=False)
    assert not deferred
    assert store.claim_or_defer("p", "10 annotations", full_export=False) == (first, True)
    assert store.claim_or_defer("p", "START_TRAINING", full_export=True) == (first, True)
    other, deferred = store.claim_or_defer("q", "START_TRAINING", full_export=True)
    assert other != first and not deferred
    nxt = store.finish_and_next(first, state="done")
    assert nxt is not None and nxt[1] is True  # the coalesced run keeps the strongest request (full export)
    assert store.finish_and_next(nxt[0], state="done") is None
    assert store.job(first)["state"] == "done"


def test_interrupted_jobs_are_marked_at_start(tmp_path) -> None:
    """Only a dead process's jobs (stale heartbeat) are marked; both back ends: tests/test_state_backends.py."""
    store = ProjectStore(tmp_path)
    job, _ = store.claim_or_defer("p", "x", full_export=False)
    assert store.claim(job) is not None
    assert ProjectStore(tmp_path).interrupt_unfinished(stale_after=60) == 0  # its process is alive
    store.update_job(job, heartbeat=time.time() - 120)  # as if its process had stopped two minutes ago
    assert ProjectStore(tmp_path).interrupt_unfinished(stale_after=60) == 1
    assert store.job(job)["state"] == "interrupted"


def _redis_up() -> bool:
    try:
        from redis import Redis

        return bool(Redis(host="127.0.0.1", port=6379, socket_connect_timeout=1).ping())
    except Exception:
        return False


@pytest.mark.redis
@pytest.mark.skipif(not _redis_up(), reason="no Redis on 127.0.0.1:6379")
def test_training_through_rq_on_real_redis(start_server, fake_ls) -> None:
    pytest.importorskip("labelpilot.models.text_linear", reason="the text-linear family is not built yet")
    from redis import Redis
    from rq import Queue

    from labelpilot.jobs.runner import RQRunner

    fake_ls.tokens.add("Token t")
    fake_ls.tasks[8] = sentiment_tasks()
    db = 9
    redis = Redis(host="127.0.0.1", port=6379, db=db)
    Queue(RQRunner.queue_name, connection=redis).empty()
    url = f"redis://127.0.0.1:6379/{db}"
    server = start_server(LABELPILOT_REDIS_URL=url, LABELPILOT_RETRAIN_EVERY="0")
    uid = "8.1700000000"
    project = {"id": 8, "created_at": "2023-11-14T22:13:20Z", "label_config": SENTIMENT_CONFIG}
    with server.client() as client:
        body = {"project": uid, "schema": SENTIMENT_CONFIG, "hostname": fake_ls.url, "access_token": "t"}
        assert client.post("/setup", json=body).json()["model_version"] in {"untrained", "zero-shot-text-linear"}
        marker = uuid.uuid4().hex
        resp = client.post("/webhook", json={"action": "START_TRAINING", "project": project, "x": marker})
        assert resp.status_code == 201
        assert Queue(RQRunner.queue_name, connection=redis).count == 1  # queued on Redis, not run in-process
        subprocess.run(
            [str(LABELPILOT), "worker", "--burst", "--data-dir", str(server.data_dir), "--redis-url", url],
            check=True, capture_output=True, timeout=120, env=server.env,
        )
        version = wait_for(lambda: (v := client.post("/setup", json=body).json()["model_version"])
                           .startswith("text-linear-v") and v, timeout=10, what="the version trained by the RQ worker")
    assert version.startswith("text-linear-v1-")
