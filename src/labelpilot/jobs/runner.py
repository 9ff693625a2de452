"""Where training jobs run: a child process of the server (default) or RQ workers on Redis.

Both share the job table of :class:`ProjectStore`: at most one job a project is queued or running;
requests that arrive meanwhile coalesce into one follow-up run.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from labelpilot.config import Settings
from labelpilot.jobs.recovery import recover_dead_jobs
from labelpilot.jobs.state import ACTIVE, ProjectStore
from labelpilot.jobs.warm import WarmTrainer
from labelpilot.jobs.warm import die_with_parent as _die_with_parent

log = logging.getLogger("labelpilot.jobs")

OnDone = Callable[[str], None]


def _child_main(settings_values: dict[str, Any], uid: str, job_id: int, full_export: bool, parent_pid: int) -> None:
    _die_with_parent(parent_pid)
    # lazy: after PR_SET_PDEATHSIG, so a server killed while this child imports takes it along
    from labelpilot.jobs.training import run_job  # imported here: the server process never needs it

    logging.basicConfig(level=settings_values.get("log_level", "INFO"))
    settings = Settings(**settings_values)
    run_job(settings, uid, job_id, full_export)


class InProcessRunner:
    """Runs jobs in child processes, one at a time by default (2 cores: keep one for serving).

    By default each worker thread owns a warm trainer (:mod:`labelpilot.jobs.warm`), started with the
    runner; ``LABELPILOT_WARM_TRAINER=0`` spawns a fresh process per job instead.
    """

    def __init__(self, settings: Settings, store: ProjectStore, on_done: OnDone | None = None, workers: int = 1):
        self.settings = settings
        self.store = store
        self.on_done = on_done
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="labelpilot-train")
        self._ctx = mp.get_context("spawn")
        self._procs: set[Any] = set()
        self._lock = threading.Lock()
        self._local = threading.local()
        self._trainers: list[WarmTrainer] = []
        if settings.warm_trainer:
            for _ in range(workers):  # threads of the pool live as long as it: they own the trainers
                self._pool.submit(self._warm)

    def _warm(self) -> WarmTrainer:
        trainer = getattr(self._local, "trainer", None)
        if trainer is None:
            trainer = self._local.trainer = WarmTrainer(self._ctx, self.settings)
            with self._lock:
                self._trainers.append(trainer)
            trainer.start()
        return trainer

    def submit(self, uid: str, reason: str, *, full_export: bool) -> tuple[int, bool]:
        job_id, deferred = self.store.claim_or_defer(uid, reason, full_export)
        if not deferred:
            self._pool.submit(self._run, uid, job_id, full_export)
        return job_id, deferred

    def _run_cold(self, uid: str, job_id: int, full_export: bool) -> str:
        values = self.settings.model_dump(mode="json")
        proc = self._ctx.Process(target=_child_main, args=(values, uid, job_id, full_export, os.getpid()), daemon=True)
        with self._lock:
            self._procs.add(proc)
        try:
            proc.start()
            proc.join(self.settings.train_timeout)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
        finally:
            with self._lock:
                self._procs.discard(proc)
        why = "timed out" if proc.exitcode in (None, -signal.SIGKILL) else f"died (exit {proc.exitcode})"
        return f"the training process {why}"

    def _run(self, uid: str, job_id: int, full_export: bool) -> None:
        nxt: tuple[int, bool] | None = (job_id, full_export)
        while nxt is not None:
            job_id, full_export = nxt
            if self.settings.warm_trainer:
                why = self._warm().run(uid, job_id, full_export, self.settings.train_timeout)
            else:
                why = self._run_cold(uid, job_id, full_export)
            job = self.store.job(job_id) or {}
            if job.get("state") in ACTIVE:
                nxt = self.store.finish_and_next(job_id, state="failed", error=why or "the trainer did not finish")
            else:
                nxt = self.store.next_queued(uid, after=job_id)
            if job.get("state") == "done" and self.on_done:
                try:
                    self.on_done(uid)
                except Exception:  # never let a cache warm-up kill the runner
                    log.exception("on_done hook failed for %s", uid)

    def trainer_pids(self) -> list[int]:
        with self._lock:
            return [t.pid for t in self._trainers if t.pid is not None]

    def shutdown(self) -> None:
        with self._lock:
            for proc in list(self._procs):
                if proc.is_alive():
                    proc.kill()
            trainers = list(self._trainers)
        for trainer in trainers:
            trainer.stop()
        self._pool.shutdown(wait=False, cancel_futures=True)


def rq_train(settings_values: dict[str, Any], uid: str, job_id: int, full_export: bool) -> str | None:
    """The RQ job function: runs the training and queues the coalesced follow-up, if any.

    ``settings_values`` are :meth:`Settings.public_values` (no secrets travel through Redis): the database
    URL, tokens and passwords come from this worker's environment. ``state_backend`` says which back end the
    queuing server used, so a worker without its ``LABELPILOT_DATABASE_URL`` fails the job loudly instead of
    looking for it in an empty SQLite file."""
    # lazy: jobs.runner stays light for the spawned training children (see _child_main)
    from labelpilot.jobs.training import run_job

    values = dict(settings_values)
    wanted = values.pop("state_backend", None)
    settings = Settings(**values)
    have = "postgresql" if settings.database_url else "sqlite"
    if wanted and wanted != have:
        raise RuntimeError(f"job {job_id}: the server keeps jobs on {wanted}, this worker on {have}: set the same "
                           "LABELPILOT_DATABASE_URL for the worker")
    store = ProjectStore.from_settings(settings)
    nxt = run_job(settings, uid, job_id, full_export, store=store)
    if nxt is not None:
        RQRunner(settings, store, connection=_current_connection()).enqueue(uid, *nxt)
    job = store.job(job_id) or {}
    return job.get("version")


def _current_connection() -> Any:
    """The Redis connection of the RQ job running in this process (None outside one)."""
    from rq import get_current_job

    job = get_current_job()
    return job.connection if job is not None else None


class RQRunner:
    """Queues jobs on Redis (``LABELPILOT_REDIS_URL``) for ``labelpilot worker`` processes.

    Workers must see the same data dir as the server (same machine or a shared volume). ``on_done`` keeps
    the in-process runner's contract, ``on_done(uid)`` in this process once per job that ended 'done': a
    thread watches the shared job table (every ``poll`` seconds) for jobs the workers finished.
    """

    queue_name = "labelpilot-train"  # the default of ``Settings.rq_queue``

    def __init__(self, settings: Settings, store: ProjectStore, on_done: OnDone | None = None, *,
                 poll: float = 1.0, connection: Any = None) -> None:
        from redis import Redis
        from rq import Queue

        self.settings = settings
        self.store = store
        self.on_done = on_done
        self.redis = connection or Redis.from_url(settings.redis_url or "redis://127.0.0.1:6379/0")
        self.queue_name = settings.rq_queue
        #: owner of the queued jobs handed to Redis: the servers' watcher threads beat them (a follow-up queued
        #: by an RQ work-horse, which exits after its job, would otherwise look like a dead process's job)
        self.owner = f"rq:{self.queue_name}"
        self.queue = Queue(self.queue_name, connection=self.redis)
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        if on_done is not None:
            self._watcher = threading.Thread(target=self._watch, args=(on_done, poll, time.time()),
                                             name="labelpilot-rq-done", daemon=True)
            self._watcher.start()

    def _watch(self, on_done: OnDone, poll: float, since: float) -> None:
        seen: set[int] = set()  # jobs finished at the watermark itself, already announced
        while not self._stop.wait(poll):
            try:
                self.store.beat(self.owner)
                done = self.store.done_since(since)
            except Exception:  # a locked or vanished database: try again at the next poll
                log.exception("watching finished RQ jobs failed")
                continue
            for job_id, uid, _ in done:
                if job_id in seen:
                    continue
                try:
                    on_done(uid)
                except Exception:  # never let a cache warm-up stop the watcher
                    log.exception("on_done hook failed for %s", uid)
            if done:
                since = max(finished for _, _, finished in done)
                seen = {job_id for job_id, _, finished in done if finished >= since}

    def submit(self, uid: str, reason: str, *, full_export: bool) -> tuple[int, bool]:
        job_id, deferred = self.store.claim_or_defer(uid, reason, full_export)
        if not deferred:
            self.enqueue(uid, job_id, full_export)
        return job_id, deferred

    def enqueue(self, uid: str, job_id: int, full_export: bool, *, attempt: int = 1) -> None:
        """Hand queued job ``job_id`` to Redis; ``attempt`` > 1 is a retry (its own RQ job id)."""
        self.store.hand_over(job_id, self.owner)
        values = {**self.settings.public_values(), "state_backend": self.store.backend.name}
        self.queue.enqueue(
            rq_train,
            values,
            uid,
            job_id,
            full_export,
            job_id=self.rq_job_id(job_id, attempt),
            job_timeout=int(self.settings.train_timeout),
            result_ttl=86400,
            failure_ttl=86400,
        )

    def rq_job_id(self, job_id: int, attempt: int = 1) -> str:
        """``<queue>-<job id>`` (``labelpilot-train-7``), ``-attempt<n>`` for a retry: RQ job ids are global
        on a Redis, so two deployments' job 7 must not meet there."""
        return f"{self.queue_name}-{job_id}" + (f"-attempt{attempt}" if attempt > 1 else "")

    def recover(self) -> tuple[int, int]:
        """Running jobs whose worker died: queued again on Redis (``job_retries`` times), then failed with the
        reason (:func:`labelpilot.jobs.recovery.recover_dead_jobs`). Returns (requeued, failed)."""
        return recover_dead_jobs(
            self.store, stale_after=self.settings.job_stale_after, retries=self.settings.job_retries,
            queue_owner=self.owner,
            requeue=lambda job_id, uid, full, attempt: self.enqueue(uid, job_id, full, attempt=attempt),
        )

    def shutdown(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(5)
        self.redis.close()


def make_runner(settings: Settings, store: ProjectStore, on_done: OnDone | None = None):
    if settings.redis_url:
        return RQRunner(settings, store, on_done)
    return InProcessRunner(settings, store, on_done)
