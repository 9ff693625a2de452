"""The model repository: versions, metrics and the serving pointer, in SQLite plus one folder a version.

The index is on PostgreSQL instead when ``LABELPILOT_DATABASE_URL`` is set (:meth:`Registry.from_settings`;
the back ends differ only in :mod:`labelpilot.registry.store_sql`); the folders then live on a path every
replica and worker mounts (the data dir's ``registry/``), and rows name them relative to it.

Writes are atomic: a bundle is saved into a temporary folder, every file is fsynced, then the folder is
renamed to ``v<N>`` and only then is the version row committed. A crash at any point leaves either a
complete, registered version or debris that :meth:`Registry.cleanup` removes at start-up; a reader can
never see a half-written version.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labelpilot.data.types import FitReport
from labelpilot.dbseam import OnBackend
from labelpilot.errors import InputError, NotFoundError
from labelpilot.ids import parse_uint
from labelpilot.models.bundle import Bundle
from labelpilot.registry.store_sql import RegistryBackend, open_backend

if TYPE_CHECKING:
    from labelpilot.config import Settings

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")

#: Serving-pointer changes this process has committed (any Registry object): a cache of the pointers
#: (:class:`labelpilot.server.predictor.ServingPointers`) compares it on every read, so a change made in this
#: process is seen at once; changes of other processes are seen through :meth:`Registry.serving_stamp`.
_local_changes = itertools.count(1)
_local_seen = [0]


def local_changes() -> int:
    """How many serving-pointer changes this process has committed (a cheap, lock-free read)."""
    return _local_seen[0]


def _changed_here() -> None:
    _local_seen[0] = next(_local_changes)


def _dir_name(name: str) -> str:
    safe = _SAFE.sub("_", name).strip("._") or "model"
    if safe != name:
        safe = f"{safe[:60]}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"
    return safe


def _fsync_tree(root: Path) -> None:
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            fd = os.open(os.path.join(dirpath, f), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: int
    tag: str  # the model_version string shown to Label Studio
    created: float
    families: list[str]
    n_examples: int
    labels: list[str]
    metrics: dict[str, float]
    report: dict[str, Any]
    parent: str | None
    path: Path
    serving: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "tag": self.tag,
            "created": self.created,
            "families": self.families,
            "n_examples": self.n_examples,
            "labels": self.labels,
            "metrics": self.metrics,
            "parent": self.parent,
            "serving": self.serving,
            "path": str(self.path),
        }


class Registry(OnBackend):
    """Model versions under ``root``: ``root/registry.sqlite3`` (or PostgreSQL at ``database_url``) and
    ``root/models/<name>/v<N>/``."""

    def __init__(self, root: Path | str, *, database_url: str | None = None) -> None:
        self.root = Path(root).resolve()
        self.models_dir = self.root / "models"
        self.models_dir.mkdir(parents=True, exist_ok=True)
        self.db_path = self.root / "registry.sqlite3"  # unused on PostgreSQL
        self.backend: RegistryBackend = open_backend(self.root, database_url)

    @classmethod
    def from_settings(cls, settings: Settings) -> Registry:
        """The project models' registry of this deployment: ``<data dir>/registry``, indexed on PostgreSQL
        when ``database_url`` is set."""
        return cls(settings.data_dir / "registry", database_url=settings.database_url)

    # -- writing -----------------------------------------------------------------------------
    def register(
        self,
        name: str,
        bundle: Bundle,
        *,
        report: FitReport | None = None,
        parent: str | None = None,
        promote: bool = True,
    ) -> ModelVersion:
        """Store ``bundle`` as the next version of ``name`` (atomically) and, by default, serve it."""
        if not name or len(name) > 200:
            raise InputError("a model name must have 1 to 200 characters", field="name")
        model_dir = self.models_dir / _dir_name(name)
        model_dir.mkdir(parents=True, exist_ok=True)
        tmp = model_dir / f".tmp-{uuid.uuid4().hex}"
        try:
            bundle.save(tmp)
            _fsync_tree(tmp)
            report = report or FitReport()
            created = time.time()
            families = bundle.families
            with self._tx() as db:
                self.backend.lock_model(db, name)
                row = db.execute("SELECT MAX(version) FROM versions WHERE name=?", (name,)).fetchone()
                version = (row[0] or 0) + 1
                final = model_dir / f"v{version}"
                if final.exists():  # debris of a crash between rename and commit
                    shutil.rmtree(final)
                os.rename(tmp, final)
                _fsync_dir(model_dir)
                digest = hashlib.sha1(f"{name}|{version}|{created}".encode()).hexdigest()[:6]
                tag = f"{'+'.join(families) or 'model'}-v{version}-{digest}"
                db.execute(
                    "INSERT INTO models(name, created, serving) VALUES (?, ?, NULL) ON CONFLICT (name) DO NOTHING",
                    (name, created),
                )
                db.execute(
                    "INSERT INTO versions VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        name,
                        version,
                        tag,
                        created,
                        json.dumps(families),
                        report.n_examples or report.n_train + report.n_val,
                        json.dumps(report.labels, ensure_ascii=False),
                        json.dumps(report.metrics),
                        json.dumps(report.to_dict(), ensure_ascii=False),
                        parent,
                        str(final.relative_to(self.root)),
                    ),
                )
                if promote:
                    self._set_serving(db, name, version, "register")
            if promote:
                _changed_here()  # after the commit: a reader told of the change finds it
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return self.get(name, version)

    def _set_serving(self, db: Any, name: str, version: int, action: str) -> None:
        row = db.execute("SELECT serving FROM models WHERE name=?", (name,)).fetchone()
        db.execute("UPDATE models SET serving=? WHERE name=?", (version, name))
        db.execute(
            "INSERT INTO history VALUES (?,?,?,?,?)", (name, time.time(), action, row[0] if row else None, version)
        )

    def promote(self, name: str, version: int) -> ModelVersion:
        self.get(name, version)  # raises when unknown
        with self._tx() as db:
            self._set_serving(db, name, version, "promote")
        _changed_here()
        return self.get(name)

    def rollback(self, name: str) -> ModelVersion:
        """Serve the newest version older than the one served now."""
        current = self.get(name)
        with self._tx() as db:
            row = db.execute(
                "SELECT MAX(version) FROM versions WHERE name=? AND version<?", (name, current.version)
            ).fetchone()
            if row[0] is None:
                raise NotFoundError(f"model {name!r} has no version older than v{current.version}", field="version")
            self._set_serving(db, name, row[0], "rollback")
        _changed_here()
        return self.get(name)

    def cleanup(self) -> list[str]:
        """Remove debris of interrupted writes: temporary folders and folders with no version row (on a shared
        model store only those older than the back end's ``cleanup_grace``: others may be a write in flight)."""
        removed: list[str] = []
        young = time.time() - self.backend.cleanup_grace
        known = {r["path"] for r in self._db().execute("SELECT path FROM versions")}
        for model_dir in self.models_dir.iterdir() if self.models_dir.exists() else []:
            if not model_dir.is_dir():
                continue
            for child in model_dir.iterdir():
                rel = str(child.relative_to(self.root))
                if self.backend.cleanup_grace and child.stat().st_mtime > young:
                    continue
                if child.name.startswith(".tmp-") or (child.name.startswith("v") and rel not in known):
                    shutil.rmtree(child, ignore_errors=True)
                    removed.append(rel)
        return removed

    # -- reading -----------------------------------------------------------------------------
    def _row_to_version(self, row: Any, serving: int | None) -> ModelVersion:
        return ModelVersion(
            name=row["name"],
            version=row["version"],
            tag=row["tag"],
            created=row["created"],
            families=json.loads(row["families"]),
            n_examples=row["n_examples"],
            labels=json.loads(row["labels"]),
            metrics=json.loads(row["metrics"]),
            report=json.loads(row["report"]),
            parent=row["parent"],
            path=self.root / row["path"],
            serving=serving == row["version"],
        )

    def serving_version(self, name: str) -> int | None:
        row = self._db().execute("SELECT serving FROM models WHERE name=?", (name,)).fetchone()
        return row[0] if row else None

    def serving_stamp(self) -> tuple[int, float]:
        """A value that changes whenever any process moves any serving pointer (register with promotion,
        promote, rollback): the count and latest time of the ``history`` rows, one row read. Rows are never
        deleted, so the count alone already changes; the time is there for a reader's logs."""
        row = self._db().execute("SELECT COUNT(*), MAX(at) FROM history").fetchone()
        return int(row[0]), float(row[1] or 0.0)

    def serving_pointers(self) -> dict[str, int]:
        """Every model's serving version, in one query (models with none served are left out)."""
        rows = self._db().execute("SELECT name, serving FROM models WHERE serving IS NOT NULL")
        return {r[0]: int(r[1]) for r in rows}

    def get(self, name: str, version: int | None = None) -> ModelVersion:
        """A version of ``name``; None means the one being served."""
        serving = self.serving_version(name)
        if version is None:
            if serving is None:
                raise NotFoundError(f"model {name!r} has no version being served", field="model")
            version = serving
        row = self._db().execute("SELECT * FROM versions WHERE name=? AND version=?", (name, version)).fetchone()
        if row is None:
            known = [r[0] for r in self._db().execute("SELECT version FROM versions WHERE name=?", (name,))]
            what = f"model {name!r} has no version v{version}" if known else f"unknown model {name!r}"
            raise NotFoundError(what + (f" (versions: {known})" if known else ""), field="model")
        return self._row_to_version(row, serving)

    def find_tag(self, tag: str) -> ModelVersion | None:
        row = self._db().execute("SELECT * FROM versions WHERE tag=?", (tag,)).fetchone()
        return self._row_to_version(row, self.serving_version(row["name"])) if row else None

    def list_models(self) -> list[dict[str, Any]]:
        rows = self._db().execute(
            "SELECT m.name, m.serving, m.created, COUNT(v.version) AS n FROM models m "
            "LEFT JOIN versions v ON v.name=m.name GROUP BY m.name ORDER BY m.name"
        )
        return [{"name": r["name"], "serving": r["serving"], "versions": r["n"], "created": r["created"]} for r in rows]

    def list_versions(self, name: str) -> list[ModelVersion]:
        serving = self.serving_version(name)
        rows = self._db().execute("SELECT * FROM versions WHERE name=? ORDER BY version", (name,)).fetchall()
        if not rows:
            raise NotFoundError(f"unknown model {name!r}", field="model")
        return [self._row_to_version(r, serving) for r in rows]

    def load(self, name: str, version: int | None = None) -> tuple[ModelVersion, Bundle]:
        mv = self.get(name, version)
        return mv, Bundle.load(mv.path)

    def update_report(self, name: str, version: int, changes: dict[str, Any]) -> ModelVersion:
        """Merge ``changes`` into a registered version's report (metadata found after registration, such as
        the suspect annotations of the training data); the model files are never touched."""
        with self._tx() as db:
            row = db.execute("SELECT report FROM versions WHERE name=? AND version=?", (name, version)).fetchone()
            if row is None:
                raise NotFoundError(f"model {name} has no version {version}", field="version")
            report = {**json.loads(row["report"]), **changes}
            db.execute("UPDATE versions SET report=? WHERE name=? AND version=?",
                       (json.dumps(report, ensure_ascii=False, default=str), name, version))
        return self.get(name, version)

    def add_evaluation(self, name: str, version: int, data: str, result: dict[str, Any]) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO evaluations VALUES (?,?,?,?,?)",
                (name, version, time.time(), data, json.dumps(result, ensure_ascii=False, default=str)),
            )

    def evaluations(self, name: str, version: int | None = None) -> list[dict[str, Any]]:
        sql, args = "SELECT * FROM evaluations WHERE name=?", [name]
        if version is not None:
            sql, args = sql + " AND version=?", [*args, version]
        rows = self._db().execute(sql + " ORDER BY at", args)
        return [{**dict(r), "result": json.loads(r["result"])} for r in rows]

    def history(self, name: str) -> list[dict[str, Any]]:
        rows = self._db().execute("SELECT * FROM history WHERE name=? ORDER BY at", (name,))
        return [dict(r) for r in rows]


def parse_model_ref(ref: str) -> tuple[str, int | None]:
    """``name`` or ``name@3`` / ``name@v3`` → (name, version or None)."""
    name, sep, ver = ref.rpartition("@")
    if not sep:
        return ref, None
    ver = ver[1:] if ver.lower().startswith("v") else ver
    version = parse_uint(ver)
    if version is None:
        raise InputError(f"bad model reference {ref!r}: expected NAME or NAME@VERSION", field="model")
    return name, version
