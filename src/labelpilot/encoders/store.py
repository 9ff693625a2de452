"""Vectors kept on disk between processes, so that a training run (a fresh child process per job) encodes
only the annotations it has not seen before.

SQLite (stdlib, WAL, safe with several processes), one row per text hash, the vector as float16 (1 KB;
cosine to the float32 vector > 0.9999). Only training writes (``encode(..., persist=True)``); /predict keeps
to the in-process cache and never waits for a disk write. At most ``MAX_ROWS`` rows: the oldest go first.
A store that cannot be opened or written is skipped (the vectors are then computed), never an error.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger("labelpilot.encoders")

MAX_ROWS = 300_000  # ~300 MB


class VectorStore:
    def __init__(self, path: Path, dim: int, max_rows: int = MAX_ROWS) -> None:
        self.path = Path(path)
        self.dim = dim
        self.max_rows = max_rows
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._broken = False

    def _db(self) -> sqlite3.Connection | None:
        if self._conn is None and not self._broken:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(self.path, timeout=5, check_same_thread=False)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("CREATE TABLE IF NOT EXISTS vectors (key BLOB PRIMARY KEY, vec BLOB NOT NULL)")
                self._conn = conn
            except (OSError, sqlite3.Error) as exc:
                log.warning("vector store %s unusable, vectors are recomputed: %s", self.path, exc)
                self._broken = True
        return self._conn

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, np.ndarray]:
        found: dict[bytes, np.ndarray] = {}
        with self._lock:
            db = self._db()
            if db is None:
                return found
            try:
                for start in range(0, len(keys), 500):
                    part = list(keys[start : start + 500])
                    marks = ",".join("?" * len(part))
                    for key, blob in db.execute(f"SELECT key, vec FROM vectors WHERE key IN ({marks})", part):
                        v = np.frombuffer(blob, dtype=np.float16)
                        if v.shape[0] == self.dim:
                            found[bytes(key)] = v.astype(np.float32)
            except sqlite3.Error as exc:
                log.warning("vector store read failed: %s", exc)
        return found

    def put_many(self, keys: Sequence[bytes], vectors: np.ndarray) -> None:
        rows = [(k, np.asarray(v, dtype=np.float16).tobytes()) for k, v in zip(keys, vectors, strict=True)]
        with self._lock:
            db = self._db()
            if db is None or not rows:
                return
            try:
                with db:
                    db.executemany("INSERT OR IGNORE INTO vectors (key, vec) VALUES (?, ?)", rows)
                    (n,) = db.execute("SELECT max(rowid) - min(rowid) FROM vectors").fetchone()
                    if n is not None and n > self.max_rows:
                        db.execute("DELETE FROM vectors WHERE rowid < (SELECT max(rowid) FROM vectors) - ?",
                                   (self.max_rows,))
            except sqlite3.Error as exc:
                log.warning("vector store write failed: %s", exc)
