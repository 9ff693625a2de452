"""labelpilot.pgdb on the real PostgreSQL at 127.0.0.1:5432: migrations apply once, even with two racing starts."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Iterator

import pytest

from labelpilot import pgdb

psycopg = pytest.importorskip("psycopg", reason="psycopg not installed (pip install -e '.[postgres]')")

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"


def _pg_answers() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 5432), timeout=1).close()
    except OSError:
        return False
    return True


@contextlib.contextmanager
def throwaway_database(name: str) -> Iterator[str]:
    """A new empty database ``name`` on the local server (its URL), dropped afterwards; skips when PostgreSQL
    does not answer."""
    if not _pg_answers():
        pytest.skip("PostgreSQL does not answer on 127.0.0.1:5432")
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with throwaway_database(f"labelpilot_test_{os.getpid()}") as url:
        yield url


MIGRATIONS = (
    "CREATE TABLE things (id SERIAL PRIMARY KEY, name TEXT NOT NULL)",
    "INSERT INTO things (name) VALUES ('seeded')",
)


def test_migrations_apply_once_and_resume(pg_url: str) -> None:
    with pgdb.connect(pg_url) as conn:
        assert pgdb.migrate(conn, MIGRATIONS[:1], "t1") == [1]
        assert pgdb.migrate(conn, MIGRATIONS[:1], "t1") == []
        assert pgdb.migrate(conn, MIGRATIONS, "t1") == [2]
        assert conn.execute("SELECT count(*) FROM things").fetchone()[0] == 1
        rows = conn.execute("SELECT version FROM schema_version WHERE component = 't1' ORDER BY version").fetchall()
        assert [r[0] for r in rows] == [1, 2]


def test_two_racing_starts_apply_each_migration_once(pg_url: str) -> None:
    migrations = ("CREATE TABLE race (n INTEGER)", "INSERT INTO race VALUES (1)", "INSERT INTO race VALUES (2)")
    results: list[list[int]] = []
    barrier = threading.Barrier(2)

    def start() -> None:
        with pgdb.connect(pg_url) as conn:
            barrier.wait()
            results.append(pgdb.migrate(conn, migrations, "race"))

    threads = [threading.Thread(target=start) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == [[], [1, 2, 3]]
    with pgdb.connect(pg_url) as conn:
        assert [r[0] for r in conn.execute("SELECT n FROM race ORDER BY n").fetchall()] == [1, 2]


def test_failed_migration_leaves_nothing_recorded(pg_url: str) -> None:
    with pgdb.connect(pg_url) as conn:
        with pytest.raises(psycopg.errors.SyntaxError):
            pgdb.migrate(conn, ("CREATE TABLE ok_one (n INTEGER)", "CREATE TABLE broken ("), "bad")
        assert conn.execute("SELECT count(*) FROM schema_version WHERE component = 'bad'").fetchone()[0] == 0
        assert conn.execute("SELECT to_regclass('ok_one')").fetchone()[0] is None
