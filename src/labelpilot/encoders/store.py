"""Vectors kept on disk between processes, so that a training run (a fresh child process per job) encodes
only the annotations it has not seen before, and a ``labelpilot loop`` round only the pool texts it has not
seen before.

:class:`KeyedStore` is the file (hash of a text → bytes); :class:`VectorStore` keeps vectors in it, and
text-linear keeps jieba's words of a text in another (``models/text_linear/features.py``).

SQLite (stdlib, WAL, safe with several processes; a write is one transaction, so a crash leaves the rows of
the last committed write), one row per text hash, the vector as float16 (1 KB; cosine to the float32 vector
> 0.9999). Only training and the seed-003 operator write (``encode(..., persist=True)`` or inside
``encoders.persisting()``); /predict keeps to the in-process cache and never waits for a disk write. At most
``MAX_ROWS`` rows: the oldest go first. A store that cannot be opened or written is skipped (the vectors are
then computed), never an error; a file that is not a database or is damaged (SQLite's ``NOTADB`` /
``CORRUPT``, not a busy or locked one) is deleted and started afresh, once per process.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger("labelpilot.encoders")

MAX_ROWS = 300_000  # ~300 MB of vectors


def stores_enabled() -> bool:
    """Whether the on-disk per-text stores (vectors, text-linear's jieba words) are on:
    ``LABELPILOT_ENCODER_STORE`` is not ``0``/``false``/``off``."""
    return os.environ.get("LABELPILOT_ENCODER_STORE", "1") not in {"0", "false", "off"}


class KeyedStore:
    """An SQLite file of ``key BLOB PRIMARY KEY, vec BLOB`` rows in ``table``, bounded to the newest
    ``max_rows`` rows (see the module doc for what happens when it cannot be used)."""

    def __init__(self, path: Path, max_rows: int = MAX_ROWS, table: str = "vectors") -> None:
        if not table.isidentifier():
            raise ValueError(f"not a table name: {table!r}")
        self.path = Path(path)
        self.max_rows = max_rows
        self.table = table
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._broken = False
        self._restarted = False  # a damaged file was replaced (once per process)

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=5, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(f"CREATE TABLE IF NOT EXISTS {self.table} (key BLOB PRIMARY KEY, vec BLOB NOT NULL)")
        except BaseException:
            conn.close()
            raise
        return conn

    def _db(self) -> sqlite3.Connection | None:
        if self._conn is None and not self._broken:
            try:
                self._conn = self._open()
            except sqlite3.DatabaseError as exc:
                if not self._damaged(exc):
                    log.warning("store %s unusable, its values are recomputed: %s", self.path, exc)
                    self._broken = True
            except (OSError, sqlite3.Error) as exc:
                log.warning("store %s unusable, its values are recomputed: %s", self.path, exc)
                self._broken = True
        return self._conn

    def _damaged(self, exc: sqlite3.DatabaseError) -> bool:
        """A damaged or foreign file (not a busy or locked one): delete it and open a fresh store, once per
        process. Returns whether the store is usable again."""
        name = getattr(exc, "sqlite_errorname", "")
        if self._restarted or not (name in {"SQLITE_NOTADB", "SQLITE_CORRUPT"} or type(exc) is sqlite3.DatabaseError):
            return False
        self._restarted = True
        log.warning("store %s is damaged (%s): starting a new one", self.path, exc)
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        try:
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            self._conn = self._open()
        except (OSError, sqlite3.Error) as again:
            log.warning("store %s unusable, its values are recomputed: %s", self.path, again)
            self._broken = True
            return False
        return True

    def get_blobs(self, keys: Sequence[bytes]) -> dict[bytes, bytes]:
        found: dict[bytes, bytes] = {}
        with self._lock:
            db = self._db()
            if db is None or not keys:
                return found
            try:
                for start in range(0, len(keys), 500):
                    part = list(keys[start : start + 500])
                    marks = ",".join("?" * len(part))
                    found.update(db.execute(f"SELECT key, vec FROM {self.table} WHERE key IN ({marks})", part))
            except sqlite3.DatabaseError as exc:
                if not self._damaged(exc):
                    log.warning("store read failed: %s", exc)
                return {}
        return found

    def put_blobs(self, rows: Sequence[tuple[bytes, bytes]]) -> None:
        with self._lock:
            db = self._db()
            if db is None or not rows:
                return
            try:
                self._insert(db, rows)
            except sqlite3.DatabaseError as exc:
                if not self._damaged(exc) or self._conn is None:
                    log.warning("store write failed: %s", exc)
                    return
                try:  # into the fresh store
                    self._insert(self._conn, rows)
                except sqlite3.Error as again:
                    log.warning("store write failed: %s", again)

    def _insert(self, db: sqlite3.Connection, rows: Sequence[tuple[bytes, bytes]]) -> None:
        with db:
            db.executemany(f"INSERT OR IGNORE INTO {self.table} (key, vec) VALUES (?, ?)", rows)
            (n,) = db.execute(f"SELECT max(rowid) - min(rowid) FROM {self.table}").fetchone()
            if n is not None and n >= self.max_rows:  # keep the newest max_rows rows
                db.execute(f"DELETE FROM {self.table} WHERE rowid <= (SELECT max(rowid) FROM {self.table}) - ?",
                           (self.max_rows,))


class VectorStore(KeyedStore):
    """float16 vectors of ``dim`` values by text hash."""

    def __init__(self, path: Path, dim: int, max_rows: int = MAX_ROWS) -> None:
        super().__init__(path, max_rows, table="vectors")
        self.dim = dim

    def get_matrix(self, keys: Sequence[bytes]) -> tuple[list[bytes], np.ndarray]:
        """(the keys found, their vectors as one float32 matrix in that order): one conversion for the whole
        batch (a 50k pool: ~0.1 s instead of ~0.5 s row by row)."""
        size = 2 * self.dim
        found = [(bytes(k), b) for k, b in self.get_blobs(keys).items() if len(b) == size]
        if not found:
            return [], np.zeros((0, self.dim), dtype=np.float32)
        matrix = np.frombuffer(b"".join(b for _, b in found), dtype=np.float16).reshape(len(found), self.dim)
        return [k for k, _ in found], matrix.astype(np.float32)

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, np.ndarray]:
        found, matrix = self.get_matrix(keys)
        return dict(zip(found, matrix, strict=True))

    def put_many(self, keys: Sequence[bytes], vectors: np.ndarray) -> None:
        self.put_blobs([(k, np.asarray(v, dtype=np.float16).tobytes()) for k, v in zip(keys, vectors, strict=True)])
