"""One SQLite connection per thread, in WAL mode, and write transactions that take the lock up front.

Shared by the registry and the project store: both are read by the server while training processes and RQ
workers write to them.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class ThreadLocalSQLite:
    """Mixin: call :meth:`_open_sqlite` in ``__init__``, then use ``_db()`` to read and ``_tx()`` to write."""

    _sqlite_path: Path
    _sqlite_pragmas: tuple[str, ...]
    _local: threading.local

    def _open_sqlite(self, path: Path, schema: str, pragmas: tuple[str, ...] = ()) -> None:
        self._sqlite_path = path
        self._sqlite_pragmas = ("journal_mode=WAL", *pragmas)
        self._local = threading.local()
        self._db().executescript(schema)  # executescript commits on its own: not inside _tx

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self._sqlite_path, timeout=30, isolation_level=None, check_same_thread=False)
            db.row_factory = sqlite3.Row
            for pragma in self._sqlite_pragmas:
                db.execute(f"PRAGMA {pragma}")
            self._local.db = db
        return db

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        else:
            db.execute("COMMIT")
