"""Jobs whose worker died mid-job (issue 14), on both back ends: queued again ``job_retries`` times, then failed
with the reason; a silent worker that lost its job can neither report progress nor record an end. And what an
RQ job carries through the real Redis: no secret. The dying workers are real processes (spawned)."""

from __future__ import annotations

import time
import uuid
import zlib
from typing import Any

import pytest

from labelpilot.config import SECRET_FIELDS, Settings
from labelpilot.jobs.recovery import recover_dead_jobs
from labelpilot.jobs.state import ProjectStore
from tests.test_jobs import _redis_up
from tests.test_state_backends import Factory, _claim_then_die, _run_processes, backend, open_store  # noqa: F401

QUEUE_OWNER = "rq:test-queue"


def _recover(store: ProjectStore, retries: int = 1, stale_after: float = 60) -> tuple[tuple[int, int], list]:
    handed: list[tuple[int, str, bool, int]] = []
    counts = recover_dead_jobs(store, stale_after=stale_after, retries=retries, queue_owner=QUEUE_OWNER,
                               requeue=lambda *job: handed.append(job))
    return counts, handed


def test_a_job_whose_worker_died_is_retried_once_then_failed_with_the_reason(
    backend: dict[str, Any], open_store: Factory  # noqa: F811
) -> None:
    store = open_store()
    job_id, _ = store.claim_or_defer("p", "START_TRAINING", full_export=True)
    assert _run_processes(_claim_then_die, [(backend, job_id)]) == [True]  # claimed, beaten, then gone
    first_owner = store.job(job_id)["owner"]
    assert _recover(store) == ((1, 0), [(job_id, "p", True, 2)])
    job = store.job(job_id)
    assert (job["state"], job["owner"], job["attempts"]) == ("queued", QUEUE_OWNER, 1)
    assert job["error"].startswith("attempt 1: worker died mid-job") and first_owner in job["error"]
    assert _recover(store) == ((0, 0), [])  # a queued job is the queue's: nothing to do twice

    store.claim_or_defer("p", "10 annotations", full_export=False)  # a follow-up waits behind the retry
    assert _run_processes(_claim_then_die, [(backend, job_id)]) == [True]  # the retry's worker dies too
    (requeued, failed), handed = _recover(store)
    assert (requeued, failed) == (0, 1)
    job = store.job(job_id)
    assert job["state"] == "failed" and job["finished"] is not None and job["attempts"] == 2
    assert "worker died mid-job" in job["error"] and "last heartbeat 20" in job["error"]
    assert "tried 2 time(s), job_retries=1" in job["error"] and job["owner"] in job["error"]
    follow_up = store.jobs("p")[0]
    assert handed == [(follow_up["id"], "p", False, 1)] and follow_up["state"] == "queued"  # not lost either


def test_no_retries_fails_at_once_and_live_workers_are_left_alone(open_store: Factory) -> None:  # noqa: F811
    store = open_store(heartbeat=0.2)
    live, _ = store.claim_or_defer("live", "x", full_export=False)
    assert store.claim(live) is not None
    silent, _ = store.claim_or_defer("silent", "x", full_export=False)
    store.update_job(silent, state="running", owner="elsewhere:0123456789:4242:cafe0000", attempts=1,
                     heartbeat=time.time() - 120)  # another machine's worker, silent for two minutes
    assert _recover(store, retries=0) == ((0, 1), [])
    assert "no heartbeat for 60 s" in store.job(silent)["error"] and store.job(silent)["state"] == "failed"
    assert store.job(live)["state"] == "running"


def test_a_silent_worker_that_lost_its_job_cannot_report_or_finish_it(open_store: Factory) -> None:  # noqa: F811
    slow = open_store()
    job_id, _ = slow.claim_or_defer("p", "x", full_export=False)
    assert slow.claim(job_id) is not None and slow.progress(job_id, "training (1/3)")
    slow.update_job(job_id, heartbeat=time.time() - 120)  # as if its beats had stopped reaching the database
    sweeper = open_store()
    assert _recover(sweeper)[0] == (1, 0)
    assert slow.progress(job_id, "training (2/3)") is False  # so run_job's training stops at its next step
    assert slow.finish_and_next(job_id, fence=True, state="done", version="v-stale") is None
    retry = sweeper.claim(job_id)
    assert retry is not None and retry["attempts"] == 2 and retry["version"] is None
    assert sweeper.finish_and_next(job_id, fence=True, state="done", version="v1") is None
    assert sweeper.job(job_id)["state"] == "done" and sweeper.job(job_id)["version"] == "v1"


SECRETS = {
    "BASIC_AUTH_USER": "admin-user-5b1e", "BASIC_AUTH_PASS": "basic-pass-91f3",
    "LABELPILOT_WEBHOOK_SECRET": "hook-secret-77aa", "LABELPILOT_API_TOKENS": "api-token-c0ffee,api-token-2",
    "LABEL_STUDIO_API_KEY": "ls-key-d00d", "LABELPILOT_DATABASE_URL": "postgresql://u:db-pass-4242@127.0.0.1/x",
}


@pytest.mark.redis
@pytest.mark.skipif(not _redis_up(), reason="no Redis on 127.0.0.1:6379")
def test_queued_jobs_carry_no_secret_into_redis(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from redis import Redis

    from labelpilot.jobs.runner import RQRunner

    queue = f"labelpilot-test-{uuid.uuid4().hex[:8]}"
    url = "redis://:redis-pass-0b0e@127.0.0.1:6379/12"  # Redis without a password accepts (and ignores) one
    for name, value in {**SECRETS, "LABELPILOT_REDIS_URL": url, "LABELPILOT_RQ_QUEUE": queue}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("LABELPILOT_DATA_DIR", str(tmp_path))
    settings = Settings()
    assert (settings.basic_auth_pass, settings.label_studio_api_key) == ("basic-pass-91f3", "ls-key-d00d")
    store = ProjectStore(tmp_path)  # SQLite: the database URL above is only a value to leak, never opened
    runner = RQRunner(settings, store)
    redis = Redis.from_url(url)
    try:
        job_id, _ = runner.submit("p.1", "START_TRAINING", full_export=True)
        key = f"rq:job:{runner.rq_job_id(job_id)}"
        stored = redis.hgetall(key)
        assert stored, f"no {key} on Redis"
        raw = b"".join(k + v for k, v in stored.items())
        payload = zlib.decompress(stored[b"data"])  # RQ's job data: a zlib-compressed pickle
        for secret in [*SECRETS.values(), "api-token-2", "redis-pass-0b0e", "db-pass-4242"]:
            assert secret.encode() not in raw and secret.encode() not in payload, secret
        assert b"data_dir" in payload and b"sqlite" in payload  # the job does carry the non-secret settings
        values = runner.queue.fetch_job(runner.rq_job_id(job_id)).args[0]
        assert not set(values) & SECRET_FIELDS
        # the worker side fills them from its own environment
        assert Settings(**{k: v for k, v in values.items() if k != "state_backend"}).label_studio_api_key == (
            "ls-key-d00d")
    finally:
        runner.queue.empty()
        for k in redis.scan_iter(f"rq:*{queue}*"):
            redis.delete(k)
        runner.shutdown()
        store.close()
