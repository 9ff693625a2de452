"""What the backend remembers about Label Studio projects: connection, annotations, training jobs.

SQLite in the data dir (WAL, so the server, in-process trainers and RQ workers share it). Projects are
keyed by Label Studio's project string ``"<id>.<created timestamp>"``, never by the id alone: a fresh
Label Studio numbers projects from 1 again.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from labelpilot.ids import parse_uint
from labelpilot.netpolicy import origin
from labelpilot.sqlitedb import ThreadLocalSQLite

_SCHEMA = """
CREATE TABLE IF NOT EXISTS projects (
    uid TEXT PRIMARY KEY,
    label_config TEXT,
    hostname TEXT,
    access_token TEXT,
    extra_params TEXT,
    authed INTEGER NOT NULL DEFAULT 0,
    since_train INTEGER NOT NULL DEFAULT 0,
    synced INTEGER NOT NULL DEFAULT 0,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS annotations (
    uid TEXT NOT NULL,
    task_id INTEGER NOT NULL,
    annotation_id INTEGER NOT NULL,
    task TEXT NOT NULL,
    annotation TEXT NOT NULL,
    updated REAL NOT NULL,
    PRIMARY KEY (uid, annotation_id)
);
CREATE INDEX IF NOT EXISTS annotations_task ON annotations(uid, task_id);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    uid TEXT NOT NULL,
    reason TEXT NOT NULL,
    state TEXT NOT NULL,
    queued REAL NOT NULL,
    started REAL,
    finished REAL,
    error TEXT,
    version TEXT,
    progress TEXT,
    report TEXT,
    full_export INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_uid ON jobs(uid, id);
CREATE TABLE IF NOT EXISTS pending (
    uid TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    full_export INTEGER NOT NULL
);
"""

ACTIVE = ("queued", "running")


def project_uid(project: Any) -> str | None:
    """Label Studio's ``"<id>.<int(created_at timestamp)>"`` from a webhook's project object or a string."""
    if isinstance(project, str):
        return project or None
    if isinstance(project, int):
        return str(project)
    if not isinstance(project, dict) or parse_uint(project.get("id")) is None:
        return None  # Label Studio's project ids are integers
    created = project.get("created_at")
    if isinstance(created, str) and created:
        try:
            ts = datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp()
            return f"{project['id']}.{int(ts)}"
        except ValueError:
            pass
    return str(project["id"])


def ls_project_id(uid: str) -> int | None:
    return parse_uint(uid.split(".", 1)[0])


def _annotation_row(uid: str, task: dict[str, Any], ann: dict[str, Any], now: float) -> tuple | None:
    task_id, ann_id = parse_uint(task.get("id")), parse_uint(ann.get("id"))
    if task_id is None or ann_id is None:
        return None
    return (uid, task_id, ann_id, orjson.dumps(task).decode(), orjson.dumps(ann).decode(), now)


def export_shape(rows: Iterable[tuple[int, dict[str, Any], dict[str, Any]]]) -> list[dict[str, Any]]:
    """``(task id, task, annotation)`` rows, grouped by task id in order of appearance, as Label Studio's
    export shape: each task once, with its annotations (in row order) under ``"annotations"``."""
    by_task: dict[int, dict[str, Any]] = {}
    for task_id, task, ann in rows:
        by_task.setdefault(task_id, {**task, "annotations": []})["annotations"].append(ann)
    return list(by_task.values())


class ProjectStore(ThreadLocalSQLite):
    def __init__(self, data_dir: Path | str) -> None:
        self.path = Path(data_dir) / "state.sqlite3"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._open_sqlite(self.path, _SCHEMA)
        with contextlib.suppress(OSError):
            os.chmod(self.path, 0o600)  # holds Label Studio tokens

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
            db.execute("INSERT OR IGNORE INTO projects(uid, updated) VALUES (?, ?)", (uid, now))
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
            db.execute("INSERT OR IGNORE INTO projects(uid, updated) VALUES (?, ?)", (uid, time.time()))
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
                db.executemany("INSERT OR REPLACE INTO annotations VALUES (?,?,?,?,?,?)", rows)
            if delete:
                db.executemany("DELETE FROM annotations WHERE uid=? AND annotation_id=?", [(uid, i) for i in delete])
            db.execute("INSERT OR IGNORE INTO projects(uid, updated) VALUES (?, ?)", (uid, now))
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
                "INSERT OR REPLACE INTO annotations VALUES (?,?,?,?,?,?)",
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

    def replace_tasks(self, uid: str, tasks: list[dict[str, Any]], *, since: float | None = None) -> int:
        """Replace the copy of a project's annotations by a full export (a list of tasks).

        Annotations that webhooks delivered after ``since`` (when the export started) are kept: the export
        may have been taken before they were made.
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
                        "INSERT OR IGNORE INTO annotations VALUES (?,?,?,?,?,?)",
                        (uid, int(task["id"]), int(ann["id"]), json.dumps(task_only, ensure_ascii=False),
                         json.dumps(ann, ensure_ascii=False), now),
                    )
                    n += 1
            db.execute("UPDATE projects SET synced=1 WHERE uid=?", (uid,))
        return n

    def tasks(self, uid: str) -> list[dict[str, Any]]:
        """Annotated tasks of a project in export shape: ``{"id", "data", "annotations": [...]}``."""
        rows = self._db().execute(
            "SELECT task_id, task, annotation FROM annotations WHERE uid=? ORDER BY task_id", (uid,)
        )
        return export_shape((int(r["task_id"]), json.loads(r["task"]), json.loads(r["annotation"])) for r in rows)

    # -- jobs ---------------------------------------------------------------------------------------
    def claim_or_defer(self, uid: str, reason: str, full_export: bool) -> tuple[int, bool]:
        """Queue a training job for ``uid``, or, when one is already queued or running, remember that
        another run is wanted after it (later requests coalesce into one). Returns (job id, deferred)."""
        with self._tx() as db:
            row = db.execute(
                "SELECT id FROM jobs WHERE uid=? AND state IN ('queued','running') ORDER BY id DESC LIMIT 1", (uid,)
            ).fetchone()
            if row is not None:
                prev = db.execute("SELECT full_export FROM pending WHERE uid=?", (uid,)).fetchone()
                full = bool(full_export or (prev and prev[0]))
                db.execute("INSERT OR REPLACE INTO pending VALUES (?, ?, ?)", (uid, reason, int(full)))
                return int(row[0]), True
            cur = db.execute(
                "INSERT INTO jobs(uid, reason, state, queued, full_export) VALUES (?, ?, 'queued', ?, ?)",
                (uid, reason, time.time(), int(full_export)),
            )
            return int(cur.lastrowid), False

    def finish_and_next(self, job_id: int, **fields: Any) -> tuple[int, bool] | None:
        """Record the end of a job; when another run was requested meanwhile, queue it and return
        (its id, full_export)."""
        fields.setdefault("finished", time.time())
        if "report" in fields and not isinstance(fields["report"], str | None):
            fields["report"] = json.dumps(fields["report"], ensure_ascii=False)
        cols = ", ".join(f"{k}=?" for k in fields)
        with self._tx() as db:
            db.execute(f"UPDATE jobs SET {cols} WHERE id=?", (*fields.values(), job_id))
            uid = db.execute("SELECT uid FROM jobs WHERE id=?", (job_id,)).fetchone()[0]
            row = db.execute("SELECT reason, full_export FROM pending WHERE uid=?", (uid,)).fetchone()
            if row is None:
                return None
            db.execute("DELETE FROM pending WHERE uid=?", (uid,))
            cur = db.execute(
                "INSERT INTO jobs(uid, reason, state, queued, full_export) VALUES (?, ?, 'queued', ?, ?)",
                (uid, row[0], time.time(), int(row[1])),
            )
            return int(cur.lastrowid), bool(row[1])

    def next_queued(self, uid: str, *, after: int) -> tuple[int, bool] | None:
        row = self._db().execute(
            "SELECT id, full_export FROM jobs WHERE uid=? AND id>? AND state='queued' ORDER BY id LIMIT 1", (uid, after)
        ).fetchone()
        return (int(row[0]), bool(row[1])) if row else None

    def update_job(self, job_id: int, **fields: Any) -> None:
        if not fields:
            return
        if "report" in fields and not isinstance(fields["report"], str | None):
            fields["report"] = json.dumps(fields["report"], ensure_ascii=False)
        cols = ", ".join(f"{k}=?" for k in fields)
        with self._tx() as db:
            db.execute(f"UPDATE jobs SET {cols} WHERE id=?", (*fields.values(), job_id))

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
    def _job_dict(row: sqlite3.Row) -> dict[str, Any]:
        out = dict(row)
        out["report"] = json.loads(out["report"]) if out["report"] else None
        return out

    def interrupt_unfinished(self) -> int:
        """At start-up: jobs a dead process left queued/running are marked interrupted."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE jobs SET state='interrupted', finished=?, error='the server stopped before the job ended' "
                "WHERE state IN ('queued', 'running')",
                (time.time(),),
            )
            db.execute("DELETE FROM pending")
            return cur.rowcount
