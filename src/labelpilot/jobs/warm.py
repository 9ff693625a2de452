"""The warm trainer: one long-lived child process that runs the server's training jobs, one after another.

A fresh process per job (the cold path, ``LABELPILOT_WARM_TRAINER=0``) paid for a spawn, ~2–4 s of imports
(scikit-learn, scipy, the model families), jieba's dictionary (~1.3 s on first use) and a full parse of the
webhook copy on every retrain — more than the fit itself for the first few hundred annotations. The warm
trainer pays those once: it is spawned when the runner starts and, 15 s later (or at once when a job comes
first), loads the families and fits a throw-away model of each text family; it keeps its tokenisation
caches and a parsed copy of the annotations between jobs (only rows added or changed since the last job are
read again).

What stays as it was: training runs in another process, so the server keeps its GIL for ``/health`` and
``/predict``; the child gets SIGKILL when the server dies (``PR_SET_PDEATHSIG``, set relative to the
long-lived runner thread that spawns it); the registry's atomic write means a kill at any moment leaves the
previous version serving. A child that dies or hangs mid-job is killed, the job is marked failed with the
reason, and a new child is started for the next job.

Jobs go over a ``multiprocessing`` pipe (stdlib: nothing to install, and the messages are tiny: the job's
ids; the child reads annotations and writes the registry itself, as the cold path did).
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from labelpilot.config import Settings
from labelpilot.jobs.state import ProjectStore, export_shape

log = logging.getLogger("labelpilot.jobs")

#: seconds the trainer waits after its start before it preloads (unless a job comes first): on 2 cores the
#: preload would otherwise compete with the server's own start-up and first requests
PRELOAD_DELAY = 15.0

_CHOICES = """<View><Text name="text" value="$text"/><Choices name="c" toName="text">
<Choice value="A"/><Choice value="B"/></Choices></View>"""
_LABELS = """<View><Text name="text" value="$text"/><Labels name="l" toName="text">
<Label value="X"/></Labels></View>"""


def die_with_parent(parent_pid: int) -> None:
    """Linux: the child gets SIGKILL when the server dies, so a killed server leaves no trainer behind."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        return
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


class CachedProjectStore(ProjectStore):
    """A :class:`ProjectStore` whose :meth:`tasks` parses only annotation rows new or changed since its last
    call (by ``updated`` and stored length); rows deleted meanwhile are dropped. The warm trainer keeps one
    for its lifetime."""

    def __init__(self, data_dir: Any, **backend: Any) -> None:
        super().__init__(data_dir, **backend)
        # annotation id -> ((updated, stored length), task id, task, annotation)
        self._copies: dict[str, dict[int, tuple[tuple[float, int], int, dict[str, Any], dict[str, Any]]]] = {}

    def tasks(self, uid: str) -> list[dict[str, Any]]:
        db = self._db()
        rows = db.execute(
            "SELECT annotation_id, updated, length(task) + length(annotation) FROM annotations WHERE uid=?", (uid,)
        ).fetchall()
        copy = self._copies.setdefault(uid, {})
        current = {int(r[0]): (float(r[1]), int(r[2])) for r in rows}
        for gone in set(copy) - set(current):
            del copy[gone]
        stale = [aid for aid, upd in current.items() if aid not in copy or copy[aid][0] != upd]
        for i in range(0, len(stale), 500):
            chunk = stale[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for r in db.execute(
                f"SELECT annotation_id, task_id, task, annotation, updated FROM annotations "
                f"WHERE uid=? AND annotation_id IN ({marks})",
                (uid, *chunk),
            ):
                copy[int(r[0])] = ((float(r[4]), len(r[2]) + len(r[3])), int(r[1]), json.loads(r[2]), json.loads(r[3]))
        return export_shape(copy[aid][1:] for aid in sorted(copy, key=lambda a: (copy[a][1], a)))


def preload(interrupted: Callable[[], bool] = lambda: False) -> None:
    """Import the training code and the text families, and fit a throw-away model of each, so that lazy
    imports and jieba's dictionary are loaded before the first real job. Best effort; stops early when
    ``interrupted()`` says a job is waiting (the job then loads what it needs itself)."""
    # lazy: only in the trainer child, after PR_SET_PDEATHSIG (see child_main)
    from labelpilot.jobs.training import train_bundle

    texts = ["很好 good", "太差 bad", "不错 nice", "失望 awful"]
    tasks = [
        {"id": i, "data": {"text": t}, "annotations": [{"id": i, "result": [
            {"from_name": "c", "to_name": "text", "type": "choices", "value": {"choices": ["AB"[i % 2]]}},
            {"from_name": "l", "to_name": "text", "type": "labels",
             "value": {"start": 0, "end": 2, "text": t[:2], "labels": ["X"]}},
        ]}]}
        for i, t in enumerate(texts)
    ]
    for config in (_CHOICES, _LABELS):
        if interrupted():
            return
        try:
            train_bundle(config, tasks)
        except Exception as exc:  # a family that cannot load is reported by the job that needs it
            log.info("warm trainer: preloading failed for one family: %s", exc)


def child_main(conn: Connection, settings_values: dict[str, Any], parent_pid: int) -> None:
    """The trainer process: preload, then run ``("job", uid, job_id, full_export)`` messages until the pipe
    closes. Answers ``("ready", seconds)`` once and ``("done", job_id, seconds)`` after each job."""
    die_with_parent(parent_pid)
    logging.basicConfig(level=settings_values.get("log_level", "INFO"))
    # lazy: after PR_SET_PDEATHSIG, so a server killed while this child imports takes it along
    from labelpilot.jobs.training import run_job

    t0 = time.perf_counter()
    if not conn.poll(PRELOAD_DELAY):  # let the server start and answer its first requests undisturbed
        preload(conn.poll)
    settings = Settings(**settings_values)
    store = CachedProjectStore.from_settings(settings)
    conn.send(("ready", time.perf_counter() - t0))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if not isinstance(msg, tuple) or msg[0] != "job":
            return
        _, uid, job_id, full_export = msg
        t0 = time.perf_counter()
        run_job(settings, uid, job_id, full_export, store=store)
        conn.send(("done", job_id, time.perf_counter() - t0))


class WarmTrainer:
    """The server side of one warm trainer process: starts it, sends it jobs, notices when it dies."""

    def __init__(self, ctx: Any, settings: Settings) -> None:
        self._ctx = ctx
        self._values = settings.model_dump(mode="json")
        self._proc: Any = None
        self._conn: Connection | None = None
        self.restarts = -1  # starts after the first

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.is_alive()

    def start(self) -> None:
        """Start the trainer process (call from the long-lived thread that will send it jobs)."""
        self.stop()
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(target=child_main, args=(child, self._values, os.getpid()), daemon=True,
                                 name="labelpilot-trainer")
        proc.start()
        child.close()
        self._proc, self._conn = proc, parent
        self.restarts += 1

    def run(self, uid: str, job_id: int, full_export: bool, timeout: float) -> str | None:
        """Run one job; None when the trainer answered, else why it did not (it is then restarted)."""
        if not self.alive():
            self.start()
        proc, conn = self._proc, self._conn
        assert proc is not None and conn is not None
        try:
            conn.send(("job", uid, job_id, full_export))
        except OSError:
            self.start()
            proc, conn = self._proc, self._conn
            conn.send(("job", uid, job_id, full_export))
        deadline = time.monotonic() + timeout
        while True:
            try:
                msg = conn.recv() if conn.poll(0.1) else None
            except (EOFError, OSError):  # the pipe closed: the process is gone or going (or we are stopping)
                msg = None
                proc.join(2)
            if msg is not None and msg[0] == "done" and msg[1] == job_id:
                return None
            if msg is not None:
                continue  # "ready", sent after the preload
            if self._proc is not proc:
                return "the trainer was stopped (the server is shutting down)"
            if not proc.is_alive():
                proc.join(1)
                why = f"the warm training process died (exit {proc.exitcode}); a new one was started"
                self.start()
                return why
            if time.monotonic() > deadline:
                self.start()  # stop() kills the hung one
                return f"the training process timed out after {timeout:.0f} s; a new one was started"

    def stop(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            self._proc.kill()
            self._proc.join(5)
        if self._conn is not None:
            self._conn.close()
        self._proc = self._conn = None
