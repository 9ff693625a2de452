"""What the backend remembers about Label Studio projects: connection, annotations, training jobs.

SQLite in the data dir (WAL, so the server, in-process trainers and RQ workers on one machine share it), or
PostgreSQL when ``LABELPILOT_DATABASE_URL`` is set (many replicas and workers): the back ends differ only in
:mod:`labelpilot.jobs.state_sql`. Projects are keyed by Label Studio's project string
``"<id>.<created timestamp>"``, never by the id alone: a fresh Label Studio numbers projects from 1 again.

Jobs: at most one queued or running job a project (a unique index backs it), later requests coalesce in
``pending``. A runner must :meth:`ProjectStore.claim` a queued job before it runs it: the claim is atomic, so
two processes handed the same job never both run it. Every store beats the heartbeat of the active jobs it
owns (a thread, every ``heartbeat`` seconds, while it owns any); :meth:`ProjectStore.interrupt_unfinished`
marks only the jobs whose heartbeat is stale, i.e. whose process is gone.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from labelpilot.dbseam import OnBackend
from labelpilot.ids import parse_uint
from labelpilot.jobs.owners import new_owner, owner_gone
from labelpilot.jobs.state_sql import StateBackend, open_backend
from labelpilot.netpolicy import origin

if TYPE_CHECKING:
    from labelpilot.config import Settings

log = logging.getLogger("labelpilot.jobs")

ACTIVE = ("queued", "running")


def _encoded(fields: dict[str, Any]) -> dict[str, Any]:
    """A job row's fields as stored: a ``report`` that is not text already becomes JSON."""
    if "report" in fields and not isinstance(fields["report"], str | None):
        return {**fields, "report": json.dumps(fields["report"], ensure_ascii=False)}
    return fields


def _annotation_row(uid: str, task: dict[str, Any], ann: dict[str, Any], now: float) -> tuple | None:
    task_id, ann_id = parse_uint(task.get("id")), parse_uint(ann.get("id"))
    if task_id is None or ann_id is None:
        return None
    return (uid, task_id, ann_id, orjson.dumps(task).decode(), orjson.dumps(ann).decode(), now)


def _task_only(task: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in task.items() if k not in ("annotations", "predictions", "drafts")}


def export_shape(rows: Iterable[tuple[int, dict[str, Any], dict[str, Any]]]) -> list[dict[str, Any]]:
    """``(task id, task, annotation)`` rows, grouped by task id in order of appearance, as Label Studio's
    export shape: each task once, with its annotations (in row order) under ``"annotations"``."""
    by_task: dict[int, dict[str, Any]] = {}
    for task_id, task, ann in rows:
        by_task.setdefault(task_id, {**task, "annotations": []})["annotations"].append(ann)
    return list(by_task.values())


_UPSERT_PROJECT = "INSERT INTO projects(uid, updated) VALUES (?, ?) ON CONFLICT (uid) DO NOTHING"
_PUT_ANNOTATION = (
    "INSERT INTO annotations VALUES (?,?,?,?,?,?) ON CONFLICT (uid, annotation_id) DO UPDATE SET "
    "task_id=excluded.task_id, task=excluded.task, annotation=excluded.annotation, updated=excluded.updated"
)
_QUEUE_JOB = (
    "INSERT INTO jobs(uid, reason, state, queued, full_export, owner, heartbeat) "
    "VALUES (?, ?, 'queued', ?, ?, ?, ?) RETURNING id"
)


class ProjectStore(OnBackend):
    def __init__(self, data_dir: Path | str, *, database_url: str | None = None, heartbeat: float = 5.0) -> None:
        self.path = Path(data_dir) / "state.sqlite3"  # unused on PostgreSQL
        self.backend: StateBackend = open_backend(Path(data_dir), database_url)
        self.heartbeat = heartbeat
        self.owner = new_owner()
        self._beat_lock = threading.Lock()
        self._beat_thread: threading.Thread | None = None
        self._closed = threading.Event()

    @classmethod
    def from_settings(cls, settings: Settings) -> ProjectStore:
        """The store a process of this deployment uses: PostgreSQL when ``database_url`` is set."""
        return cls(settings.data_dir, database_url=settings.database_url, heartbeat=settings.job_heartbeat)

    # -- projects ---------------------------------------------------------------------------------
    def upsert_project(
        self,
        uid: str,
        *,
        label_config: str | None = None,
        hostname: str | None = None,
        access_token: str | None = None,
        extra_params: Any = None,
        authed: bool | None = None,
    ) -> bool:
        """Create or update a project; ``None``/empty values leave a column as it is.

        The stored token is bound to the origin of the stored hostname: a new ``hostname`` on another
        origin without a new ``access_token`` clears the token (so it is never sent to the new host).
        Returns whether a token was cleared that way."""
        now = time.time()
        dropped = False
        with self._tx() as db:
            db.execute(_UPSERT_PROJECT, (uid, now))
            sets, args = ["updated=?"], [now]
            if hostname and not access_token:
                old = db.execute("SELECT hostname, access_token FROM projects WHERE uid=?", (uid,)).fetchone()
                if old["access_token"] and origin(old["hostname"] or "") != origin(hostname):
                    sets.append("access_token=NULL")
                    dropped = True
            for col, val in (("label_config", label_config), ("hostname", hostname), ("access_token", access_token)):
                if val:
                    sets.append(f"{col}=?")
                    args.append(val)
            if extra_params is not None:
                sets.append("extra_params=?")
                args.append(json.dumps(extra_params))
            if authed:
                sets.append("authed=1")
            db.execute(f"UPDATE projects SET {', '.join(sets)} WHERE uid=?", (*args, uid))
        return dropped

    def project(self, uid: str) -> dict[str, Any] | None:
        row = self._db().execute("SELECT * FROM projects WHERE uid=?", (uid,)).fetchone()
        if row is None:
            return None
        out = dict(row)
        out["extra_params"] = json.loads(out["extra_params"]) if out["extra_params"] else None
        return out

    def project_uids(self) -> list[str]:
        return [r["uid"] for r in self._db().execute("SELECT uid FROM projects ORDER BY updated DESC")]

    def count_annotation_event(self, uid: str, n: int = 1) -> int:
        with self._tx() as db:
            db.execute(_UPSERT_PROJECT, (uid, time.time()))
            db.execute("UPDATE projects SET since_train=since_train+? WHERE uid=?", (n, uid))
            return db.execute("SELECT since_train FROM projects WHERE uid=?", (uid,)).fetchone()[0]

    def record_annotation_event(
        self,
        uid: str,
        *,
        put: Sequence[tuple[dict[str, Any], dict[str, Any]]] = (),
        delete: Sequence[int] = (),
        count: int = 1,
    ) -> int:
        """Store an annotation event's (task, annotation) pairs, delete ``delete`` annotation ids, and add
        ``count`` to the project's counter, in ONE transaction; returns the new counter. A kill loses either
        the whole (unacknowledged) event or nothing: never a stored event without its count. Pairs whose ids
        are not integers are skipped. Runs off the event loop (a bulk event holds 100,000 pairs)."""
        now = time.time()
        # a generator: each row is made, written and freed in turn (and other threads run in between)
        rows = (row for task, ann in put if (row := _annotation_row(uid, task, ann, now)) is not None)
        with self._tx() as db:
            if put:
                db.executemany(_PUT_ANNOTATION, rows)
            if delete:
                db.executemany("DELETE FROM annotations WHERE uid=? AND annotation_id=?", [(uid, i) for i in delete])
            db.execute(_UPSERT_PROJECT, (uid, now))
            db.execute("UPDATE projects SET since_train=since_train+? WHERE uid=?", (count, uid))
            return db.execute("SELECT since_train FROM projects WHERE uid=?", (uid,)).fetchone()[0]

    def reset_counter(self, uid: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE projects SET since_train=0 WHERE uid=?", (uid,))

    # -- annotations (the incremental copy kept from webhooks) ------------------------------------
    def put_annotation(self, uid: str, task: dict[str, Any], annotation: dict[str, Any]) -> None:
        if annotation.get("id") is None or task.get("id") is None:
            return
        with self._tx() as db:
            db.execute(
                _PUT_ANNOTATION,
                (
                    uid,
                    int(task["id"]),
                    int(annotation["id"]),
                    json.dumps(task, ensure_ascii=False),
                    json.dumps(annotation, ensure_ascii=False),
                    time.time(),
                ),
            )

    def count_annotations(self, uid: str) -> int:
        """Annotations kept for a project (the webhook copy)."""
        return self._db().execute("SELECT COUNT(*) FROM annotations WHERE uid=?", (uid,)).fetchone()[0]

    def delete_annotations(self, uid: str, ids: list[int]) -> int:
        with self._tx() as db:
            cur = db.executemany("DELETE FROM annotations WHERE uid=? AND annotation_id=?", [(uid, i) for i in ids])
            return cur.rowcount

    def replace_tasks(self, uid: str, tasks: list[dict[str, Any]], *, since: float | None = None,
                      synced_at: float | None = None) -> int:
        """Replace the copy of a project's annotations by a full export (a list of tasks).

        Annotations that webhooks delivered after ``since`` (when the export started) are kept: the export
        may have been taken before they were made. ``synced_at``: Label Studio's clock before the export
        started, from which the next incremental sync asks for changed tasks (None: the next sync is full).
        """
        n = 0
        now = time.time()
        since = now if since is None else since
        with self._tx() as db:
            db.execute("DELETE FROM annotations WHERE uid=? AND updated<?", (uid, since))
            for task in tasks:
                task_only = {k: v for k, v in task.items() if k not in ("annotations", "predictions", "drafts")}
                for ann in task.get("annotations") or []:
                    if ann.get("id") is None or task.get("id") is None:
                        continue
                    db.execute(
                        "INSERT INTO annotations VALUES (?,?,?,?,?,?) ON CONFLICT (uid, annotation_id) DO NOTHING",
                        (uid, int(task["id"]), int(ann["id"]), json.dumps(task_only, ensure_ascii=False),
                         json.dumps(ann, ensure_ascii=False), now),
                    )
                    n += 1
            db.execute("UPDATE projects SET synced=1, synced_at=? WHERE uid=?", (synced_at, uid))
        return n

    def refresh_tasks(self, uid: str, tasks: list[dict[str, Any]], task_ids: Iterable[int], *, since: float) -> int:
        """Replace the copy's annotations of the tasks ``task_ids`` by their export ``tasks`` (the incremental
        sync: a task missing from ``tasks`` or without annotations keeps none). Rows webhooks wrote after
        ``since`` (when the export started) win over the export, as in :meth:`replace_tasks`. Returns the
        number of annotations written."""
        n = 0
        now = time.time()
        wanted = {int(i) for i in task_ids}
        ids = sorted(wanted)
        with self._tx() as db:
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                marks = ",".join("?" * len(chunk))
                db.execute(f"DELETE FROM annotations WHERE uid=? AND updated<? AND task_id IN ({marks})",
                           (uid, since, *chunk))
            rows = [row for task in tasks if parse_uint(task.get("id")) in wanted
                    for ann in task.get("annotations") or []
                    if (row := _annotation_row(uid, _task_only(task), ann, now)) is not None]
            db.executemany(_PUT_ANNOTATION + " WHERE annotations.updated<?", [(*r, since) for r in rows])
            n = len(rows)
        return n

    def mark_synced(self, uid: str, synced_at: float) -> None:
        """Record that the copy matched Label Studio as of ``synced_at`` (Label Studio's clock, epoch s)."""
        with self._tx() as db:
            db.execute("UPDATE projects SET synced=1, synced_at=? WHERE uid=?", (synced_at, uid))

    def tasks(self, uid: str) -> list[dict[str, Any]]:
        """Annotated tasks of a project in export shape: ``{"id", "data", "annotations": [...]}``."""
        rows = self._db().execute(
            "SELECT task_id, task, annotation FROM annotations WHERE uid=? ORDER BY task_id", (uid,)
        )
        return export_shape((int(r["task_id"]), json.loads(r["task"]), json.loads(r["annotation"])) for r in rows)

    # -- jobs ---------------------------------------------------------------------------------------
    def claim_or_defer(self, uid: str, reason: str, full_export: bool) -> tuple[int, bool]:
        """Queue a training job for ``uid``, or, when one is already queued or running, remember that
        another run is wanted after it (later requests coalesce into one). Returns (job id, deferred).
        The queued job is this store's (it beats its heartbeat) until a runner claims it."""
        now = time.time()
        with self._tx() as db:
            self.backend.lock_project(db, uid)
            row = db.execute(
                "SELECT id FROM jobs WHERE uid=? AND state IN ('queued','running') ORDER BY id DESC LIMIT 1", (uid,)
            ).fetchone()
            if row is not None:
                prev = db.execute("SELECT full_export FROM pending WHERE uid=?", (uid,)).fetchone()
                full = bool(full_export or (prev and prev[0]))
                db.execute(
                    "INSERT INTO pending VALUES (?, ?, ?) ON CONFLICT (uid) DO UPDATE SET "
                    "reason=excluded.reason, full_export=excluded.full_export",
                    (uid, reason, int(full)),
                )
                return int(row[0]), True
            job_id = int(db.execute(_QUEUE_JOB, (uid, reason, now, int(full_export), self.owner, now)).fetchone()[0])
        self._ensure_beat()
        return job_id, False

    def claim(self, job_id: int | None = None) -> dict[str, Any] | None:
        """Take a queued job (``job_id``, else the oldest queued one) for this process: 'running', owned and
        beaten by this store. Atomic on both back ends (``claim`` in :mod:`labelpilot.jobs.state_sql`), so of
        two claimers of one job exactly one gets it. Returns the job, or
        None when there is no such queued job (another process claimed it, or it was interrupted)."""
        with self._tx() as db:
            row = self.backend.claim(db, job_id, self.owner, time.time())
            out = self._job_dict(row) if row is not None else None
        if out is not None:
            self._ensure_beat()
        return out

    def finish_and_next(self, job_id: int, *, fence: bool = False, **fields: Any) -> tuple[int, bool] | None:
        """Record the end of a job; when another run was requested meanwhile, queue it (owned by this store)
        and return (its id, full_export). ``fence``: only while the job is still this store's running job
        (one taken for dead and queued again meanwhile belongs to its next runner): else nothing changes."""
        return self.end_job(job_id, self.owner if fence else None, **fields)[1]

    def end_job(self, job_id: int, owner: str | None, **fields: Any) -> tuple[bool, tuple[int, bool] | None]:
        """:meth:`finish_and_next`, fenced on ``owner`` when given (the job must still be ``owner``'s running
        job): (whether the job's row changed, the queued follow-up or None)."""
        fields.setdefault("finished", time.time())
        cols = ", ".join(f"{k}=?" for k in fields)
        where, args = ("id=? AND owner=? AND state='running'", (job_id, owner)) if owner else ("id=?", (job_id,))
        with self._tx() as db:
            uid = db.execute("SELECT uid FROM jobs WHERE id=?", (job_id,)).fetchone()[0]
            self.backend.lock_project(db, uid)
            if db.execute(f"UPDATE jobs SET {cols} WHERE {where}", (*_encoded(fields).values(), *args)).rowcount == 0:
                log.warning("job %s is not %s's any more: its end is not recorded", job_id, owner)
                return False, None
            row = db.execute("SELECT reason, full_export FROM pending WHERE uid=?", (uid,)).fetchone()
            if row is None:
                return True, None
            db.execute("DELETE FROM pending WHERE uid=?", (uid,))
            now = time.time()
            nxt = int(db.execute(_QUEUE_JOB, (uid, row[0], now, int(row[1]), self.owner, now)).fetchone()[0])
        self._ensure_beat()
        return True, (nxt, bool(row[1]))

    def running_jobs(self) -> list[dict[str, Any]]:
        """(id, uid, owner, heartbeat, attempts, full_export) of every running job, for the dead-job sweep."""
        rows = self._db().execute(
            "SELECT id, uid, owner, heartbeat, attempts, full_export FROM jobs WHERE state='running'"
        ).fetchall()
        return [dict(r) for r in rows]

    def requeue(self, job_id: int, owner: str, *, queue_owner: str, progress: str, error: str) -> bool:
        """Queue ``owner``'s running job again, now owned by ``queue_owner``, in one conditional UPDATE (of
        two sweepers exactly one moves it; a job claimed anew meanwhile is untouched). False: not moved."""
        with self._tx() as db:
            return db.execute(
                "UPDATE jobs SET state='queued', owner=?, heartbeat=?, started=NULL, progress=?, error=? "
                "WHERE id=? AND owner=? AND state='running'",
                (queue_owner, time.time(), progress, error, job_id, owner),
            ).rowcount == 1

    def next_queued(self, uid: str, *, after: int) -> tuple[int, bool] | None:
        row = self._db().execute(
            "SELECT id, full_export FROM jobs WHERE uid=? AND id>? AND state='queued' ORDER BY id LIMIT 1", (uid, after)
        ).fetchone()
        return (int(row[0]), bool(row[1])) if row else None

    def progress(self, job_id: int, text: str) -> bool:
        """Set a running job's progress, if it is still this store's; False when it is not (taken for dead
        and queued again, or ended): its runner should stop, someone else runs it now."""
        with self._tx() as db:
            cur = db.execute("UPDATE jobs SET progress=? WHERE id=? AND owner=? AND state='running'",
                             (text, job_id, self.owner))
            return int(cur.rowcount) == 1

    def update_job(self, job_id: int, **fields: Any) -> None:
        if not fields:
            return
        cols = ", ".join(f"{k}=?" for k in fields)
        with self._tx() as db:
            db.execute(f"UPDATE jobs SET {cols} WHERE id=?", (*_encoded(fields).values(), job_id))

    def job(self, job_id: int) -> dict[str, Any] | None:
        row = self._db().execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        return self._job_dict(row) if row else None

    def jobs(self, uid: str, limit: int = 20) -> list[dict[str, Any]]:
        rows = self._db().execute("SELECT * FROM jobs WHERE uid=? ORDER BY id DESC LIMIT ?", (uid, limit))
        return [self._job_dict(r) for r in rows]

    def done_since(self, since: float) -> list[tuple[int, str, float]]:
        """(id, uid, finished) of the jobs that ended 'done' at or after ``since`` (a ``time.time()``), oldest
        first: how a server learns of the jobs its RQ workers finished."""
        rows = self._db().execute(
            "SELECT id, uid, finished FROM jobs WHERE state='done' AND finished>=? ORDER BY finished, id", (since,)
        )
        return [(int(r[0]), str(r[1]), float(r[2])) for r in rows]

    @staticmethod
    def _job_dict(row: Any) -> dict[str, Any]:
        out = dict(row)
        out["report"] = json.loads(out["report"]) if out["report"] else None
        return out

    # -- heartbeats ---------------------------------------------------------------------------------
    def beat(self, owner: str | None = None) -> int:
        """Refresh the heartbeat of the queued/running jobs this store (or ``owner``) owns; returns how many."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE jobs SET heartbeat=? WHERE owner=? AND state IN ('queued','running')",
                (time.time(), owner or self.owner),
            )
            return int(cur.rowcount)

    def hand_over(self, job_id: int, owner: str) -> bool:
        """Give a queued job to ``owner`` (e.g. a durable queue: ``"rq:<queue>"``, which no process-liveness
        check applies to; whoever keeps it alive beats it with ``beat(owner)``). False: it is not queued."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE jobs SET owner=?, heartbeat=? WHERE id=? AND state='queued'", (owner, time.time(), job_id)
            )
            return int(cur.rowcount) == 1

    def _ensure_beat(self) -> None:
        with self._beat_lock:
            if self._closed.is_set():
                return
            if self._beat_thread is None or not self._beat_thread.is_alive():  # (threads do not survive a fork)
                self._beat_thread = threading.Thread(target=self._beat_loop, name="labelpilot-job-heartbeat",
                                                     daemon=True)
                self._beat_thread.start()

    def _beat_loop(self) -> None:
        """Beat every ``heartbeat`` seconds while this store owns an active job, then end (the next claim
        starts a new thread; the lock makes "owns none, so end" and a new claim's start exclusive)."""
        failing = False
        while not self._closed.wait(self.heartbeat):
            with self._beat_lock:
                try:
                    owned = self.beat()
                except Exception:  # a database restart: a later beat may pass (staleness is a minute)
                    if not failing:
                        log.exception("job heartbeat failed (retrying quietly)")
                    failing = True
                    continue
                failing = False
                if owned == 0:
                    self._beat_thread = None
                    return

    def close(self) -> None:
        """Stop beating (the jobs this store owns then go stale, as if its process had stopped)."""
        self._closed.set()
        with self._beat_lock:
            thread = self._beat_thread
        if thread is not None:
            thread.join(5)

    def interrupt_unfinished(self, stale_after: float = 60.0) -> int:
        """At start-up (and safe at any time): queued/running jobs whose process stopped are marked
        interrupted: those whose heartbeat is older than ``stale_after`` seconds, and at once those whose
        owner is a process of this machine that is gone (:mod:`labelpilot.jobs.owners`). Follow-up requests
        left without an active job are dropped. Jobs of live processes are left alone."""
        now = time.time()
        active = self._db().execute("SELECT DISTINCT owner FROM jobs WHERE state IN ('queued','running')").fetchall()
        gone = {r[0]: pid for r in active if (pid := owner_gone(r[0])) is not None}
        with self._tx() as db:
            rows = db.execute(
                "UPDATE jobs SET state='interrupted', finished=?, error=? WHERE state IN ('queued', 'running') "
                "AND (heartbeat IS NULL OR heartbeat<?) RETURNING id",
                (now, f"the process that ran the job stopped (no heartbeat for {stale_after:g} s)", now - stale_after),
            ).fetchall()
            for owner, pid in gone.items():  # owner=?: a job claimed anew meanwhile is not touched
                rows += db.execute(
                    "UPDATE jobs SET state='interrupted', finished=?, error=? WHERE state IN ('queued', 'running') "
                    "AND owner=? RETURNING id",
                    (now, f"the process that ran the job (pid {pid}) stopped", owner),
                ).fetchall()
            db.execute(
                "DELETE FROM pending WHERE uid NOT IN (SELECT uid FROM jobs WHERE state IN ('queued','running'))"
            )
            return len(rows)

    def start_sweeper(self, stale_after: float, recover: Callable[[], Any] | None = None) -> threading.Thread:
        """While the process runs (until :meth:`close`), :meth:`interrupt_unfinished` every
        ``stale_after / 4`` seconds (at least ``heartbeat``): a job whose worker was killed is marked within
        about 1.25 x ``stale_after``, not only when some process next starts. ``recover`` runs first each
        time (the RQ runner's: dead running jobs are queued again or failed, :mod:`labelpilot.jobs.recovery`)."""
        every = max(self.heartbeat, stale_after / 4)

        def sweep() -> None:
            while not self._closed.wait(every):
                try:
                    if recover is not None:
                        recover()
                    if n := self.interrupt_unfinished(stale_after):
                        log.warning("%d job(s) of stopped processes marked interrupted", n)
                except Exception:  # the database restarting: sweep again later
                    log.exception("sweeping stale jobs failed")

        thread = threading.Thread(target=sweep, name="labelpilot-job-sweeper", daemon=True)
        thread.start()
        return thread
