"""The store side of the database seam: a store (project state, model registry) holds one back end of either
dialect (``sqlitedb.ThreadLocalSQLite`` or ``pgdb.ThreadLocalPG`` subclasses) as ``self.backend`` and reaches
its connection and write transactions through these two methods, so its queries never name the dialect."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class OnBackend:
    """Mixin: ``_db()`` and ``_tx()`` of a store delegate to ``self.backend``."""

    backend: Any

    def _db(self) -> Any:
        return self.backend._db()

    @contextmanager
    def _tx(self) -> Iterator[Any]:
        with self.backend._tx() as db:
            yield db
