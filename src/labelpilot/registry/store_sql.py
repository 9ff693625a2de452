"""The two back ends of the :class:`labelpilot.registry.Registry` index: ``registry.sqlite3``, or PostgreSQL.

The same seam as :mod:`labelpilot.jobs.state_sql`: the registry's queries are written once in the SQL both
engines accept; what differs is here, one class per back end: the schema (migrations on PostgreSQL), how
``register`` serialises the writers of one model's version numbers (SQLite's ``BEGIN IMMEDIATE`` already
does; PostgreSQL takes an advisory lock keyed by the model name), and how old unregistered folders must be
before :meth:`Registry.cleanup` removes them (on a model store shared by replicas a folder without a row may
be another replica's write in flight).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Protocol

from labelpilot.pgdb import ThreadLocalPG
from labelpilot.sqlitedb import ThreadLocalSQLite

_TABLES = """
CREATE TABLE IF NOT EXISTS models (
    name TEXT PRIMARY KEY,
    created {real} NOT NULL,
    serving INTEGER,
    meta TEXT NOT NULL DEFAULT '{{}}'
);
CREATE TABLE IF NOT EXISTS versions (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    tag TEXT NOT NULL,
    created {real} NOT NULL,
    families TEXT NOT NULL,
    n_examples INTEGER NOT NULL,
    labels TEXT NOT NULL,
    metrics TEXT NOT NULL,
    report TEXT NOT NULL,
    parent TEXT,
    path TEXT NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS evaluations (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    at {real} NOT NULL,
    data TEXT NOT NULL,
    result TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS history (
    name TEXT NOT NULL,
    at {real} NOT NULL,
    action TEXT NOT NULL,
    from_version INTEGER,
    to_version INTEGER
);
"""

SQLITE_SCHEMA = _TABLES.format(real="REAL")
#: PostgreSQL's REAL is 4 bytes: timestamps need DOUBLE PRECISION
PG_MIGRATIONS = (
    _TABLES.format(real="DOUBLE PRECISION") + "CREATE INDEX IF NOT EXISTS versions_tag ON versions(tag);",
)


class RegistryBackend(Protocol):
    name: str
    #: seconds an unregistered folder must be left alone by cleanup (another process may be writing it)
    cleanup_grace: float

    def _db(self) -> Any: ...

    def _tx(self) -> contextlib.AbstractContextManager[Any]: ...

    def lock_model(self, db: Any, name: str) -> None:
        """Inside a write transaction: wait until no other writer of ``name``'s versions holds it."""
        ...


class SQLiteRegistry(ThreadLocalSQLite):
    name = "sqlite"
    cleanup_grace = 0.0  # one data dir: the server's start-up cleanup runs before its trainers write

    def __init__(self, path: Path) -> None:
        self._open_sqlite(path, SQLITE_SCHEMA, ("synchronous=FULL",))

    def lock_model(self, db: Any, name: str) -> None:
        return None  # BEGIN IMMEDIATE: one writer at a time already


class PostgresRegistry(ThreadLocalPG):
    name = "postgresql"
    cleanup_grace = 3600.0  # replicas share the model store: a folder younger than this may be in flight

    def __init__(self, url: str) -> None:
        self._open_pg(url, PG_MIGRATIONS, "registry")

    def lock_model(self, db: Any, name: str) -> None:
        db.execute("SELECT pg_advisory_xact_lock(hashtextextended(?, 7))", (f"labelpilot-registry:{name}",))


def open_backend(root: Path, database_url: str | None) -> SQLiteRegistry | PostgresRegistry:
    return PostgresRegistry(database_url) if database_url else SQLiteRegistry(root / "registry.sqlite3")
