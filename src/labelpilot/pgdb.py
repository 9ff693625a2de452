"""PostgreSQL plumbing for shared state (issue 14, step 1 groundwork): connect, and numbered migrations.

Only the migration runner exists so far; ProjectStore and Registry still use SQLite (:mod:`labelpilot.sqlitedb`).
Plain SQL through psycopg 3, not an ORM: the stores' queries are few and already written as SQL for SQLite.

:func:`migrate` applies numbered migrations once each, recorded in ``schema_version``, while holding a
transaction-level advisory lock, so two replicas starting together never apply the same migration twice.
"""

from __future__ import annotations

from collections.abc import Sequence
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
