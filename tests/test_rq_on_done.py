"""The RQ runner keeps the in-process runner's ``on_done`` contract: the server hears, once, of every job an
RQ worker finished 'done' (and of no failed one), through the job table they share. Real Redis, real SQLite."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from labelpilot.config import Settings
from labelpilot.jobs.state import ProjectStore
from tests.conftest import wait_for
from tests.test_jobs import _redis_up


@pytest.mark.redis
@pytest.mark.skipif(not _redis_up(), reason="no Redis on 127.0.0.1:6379")
def test_rq_runner_calls_on_done_once_per_finished_job(tmp_path: Path) -> None:
    from redis import Redis
    from rq import Queue

    from labelpilot.jobs.runner import RQRunner

    url = "redis://127.0.0.1:6379/10"
    Queue(RQRunner.queue_name, connection=Redis.from_url(url)).empty()
    settings = Settings(data_dir=tmp_path, redis_url=url)
    heard: list[str] = []
    runner = RQRunner(settings, ProjectStore(tmp_path), on_done=heard.append, poll=0.05)
    try:
        a, _ = runner.submit("a.1", "START_TRAINING", full_export=False)
        b, _ = runner.submit("b.1", "START_TRAINING", full_export=False)
        c, _ = runner.submit("c.1", "START_TRAINING", full_export=False)
        assert Queue(RQRunner.queue_name, connection=runner.redis).count == 3
        worker_side = ProjectStore(tmp_path)  # what a worker process writes into the shared data dir
        worker_side.finish_and_next(b, state="done", version="text-linear-v1")
        worker_side.finish_and_next(c, state="failed", error="boom")
        wait_for(lambda: heard == ["b.1"], timeout=10, what="on_done for the job finished first")
        worker_side.finish_and_next(a, state="done", version="text-linear-v1")
        wait_for(lambda: heard == ["b.1", "a.1"], timeout=10, what="on_done for the second finished job")
        time.sleep(0.3)  # several more polls: nothing is announced twice, the failed job never
        assert heard == ["b.1", "a.1"]
    finally:
        runner.shutdown()
        Queue(RQRunner.queue_name, connection=Redis.from_url(url)).empty()
    assert runner._watcher is not None and not runner._watcher.is_alive()
