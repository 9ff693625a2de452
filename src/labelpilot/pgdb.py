"""PostgreSQL plumbing for shared state (issue 14): connect, numbered migrations, and per-thread connections.

Used by :class:`labelpilot.jobs.state.ProjectStore` and :class:`labelpilot.registry.Registry` when
``LABELPILOT_DATABASE_URL`` is set (SQLite, :mod:`labelpilot.sqlitedb`, otherwise). Plain SQL through
psycopg 3, not an ORM: the stores' queries are few and written once, in the SQL both SQLite and PostgreSQL
accept; :class:`ThreadLocalPG` mirrors
:class:`labelpilot.sqlitedb.ThreadLocalSQLite` (``_db()`` to read, ``_tx()`` to write) and translates the
``?`` placeholders to psycopg's ``%s``, with rows readable by position and by column name like ``sqlite3.Row``.

:func:`migrate` applies numbered migrations once each, recorded in ``schema_version``, while holding a
transaction-level advisory lock, so two replicas starting together never apply the same migration twice.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

#: pg_advisory_xact_lock key for schema migrations (any fixed 64-bit number; "lbplmig" in ASCII).
MIGRATION_LOCK_KEY = 0x6C62706C6D6967


def connect(url: str) -> Any:
    """An autocommit psycopg connection to ``url`` (``postgresql://...``); psycopg is the ``postgres`` extra."""
    import psycopg  # optional dependency (the postgres extra): only shared-state deployments need it

    return psycopg.connect(url, autocommit=True)


def migrate(conn: Any, migrations: Sequence[str], component: str) -> list[int]:
    """Apply ``migrations[i]`` (version ``i + 1``) for ``component`` unless already recorded; return those applied.

    Each migration's SQL and its ``schema_version`` row commit together; the whole run holds the advisory lock.
    """
    applied: list[int] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (component TEXT NOT NULL, version INTEGER NOT NULL,"
            " applied_at TIMESTAMPTZ NOT NULL DEFAULT now(), PRIMARY KEY (component, version))"
        )
        row = conn.execute(
            "SELECT COALESCE(MAX(version), 0) FROM schema_version WHERE component = %s", (component,)
        ).fetchone()
        current = int(row[0])
        for version, sql in enumerate(migrations, start=1):
            if version <= current:
                continue
            conn.execute(sql)
            conn.execute("INSERT INTO schema_version (component, version) VALUES (%s, %s)", (component, version))
            applied.append(version)
    return applied


class Row(tuple):
    """A result row read by position (``row[0]``) or by column name (``row["uid"]``); ``dict(row)`` works."""

    _index: dict[str, int]

    def __new__(cls, values: Sequence[Any], index: dict[str, int]) -> Row:
        row = super().__new__(cls, values)
        row._index = index
        return row

    def __getitem__(self, key: Any) -> Any:  # type: ignore[override]
        if isinstance(key, str):
            return tuple.__getitem__(self, self._index[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._index)


def _row_factory(cursor: Any) -> Any:
    index = {col.name: i for i, col in enumerate(cursor.description or ())}
    return lambda values: Row(values, index)


@lru_cache(maxsize=512)
def pg_sql(sql: str) -> str:
    """``?`` placeholders as psycopg's ``%s`` (the stores' SQL has no ``?`` or ``%`` in literals)."""
    return sql.replace("?", "%s")


class PGConnection:
    """The part of ``sqlite3.Connection`` the stores use (``execute``, ``executemany``), on a psycopg connection."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def execute(self, sql: str, args: Sequence[Any] | None = None) -> Any:
        return self.conn.execute(pg_sql(sql), args if args else None)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> Any:
        cur = self.conn.cursor()
        cur.executemany(pg_sql(sql), rows)
        return cur  # rowcount: the rows the statements touched, summed


class ThreadLocalPG:
    """Mixin: call :meth:`_open_pg` in ``__init__``, then ``_db()`` to read (autocommit) and ``_tx()`` to write.

    One connection per thread and process (a forked RQ work-horse opens its own); a broken one is replaced."""

    _pg_url: str
    _pg_local: threading.local

    def _open_pg(self, url: str, migrations: Sequence[str], component: str) -> None:
        self._pg_url = url
        self._pg_local = threading.local()
        migrate(self._db().conn, migrations, component)

    def _db(self) -> PGConnection:
        held = getattr(self._pg_local, "db", None)
        if held is None or held[0] != os.getpid() or held[1].conn.closed or held[1].conn.broken:
            conn = connect(self._pg_url)
            conn.row_factory = _row_factory
            held = self._pg_local.db = (os.getpid(), PGConnection(conn))
        return held[1]

    @contextmanager
    def _tx(self) -> Iterator[PGConnection]:
        db = self._db()
        with db.conn.transaction():
            yield db
