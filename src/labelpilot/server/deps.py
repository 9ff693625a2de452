"""The services a server's routes use: built by one function for both apps, handed to routes by a dependency.

:func:`build_services` makes the :class:`Services` of the full server (``create_app``: registry, project
store, the one bundle cache, Label Studio predictor, training runner) or of the one-model app
(``create_model_app``: an exported model, no registry or store). The app keeps it as ``app.state.services``
and nothing else on ``app.state``; a route declares ``state: ServicesDep`` (FastAPI's ``Depends``) and never
reads ``app.state`` itself. The dependency is ``async`` so FastAPI calls it on the event loop (a plain
``def`` dependency would be sent to a worker thread on every request).

The ``/v1`` predict service reaches models through :attr:`Services.models`, a :class:`ModelSource`:
:class:`RegistryModels` (the registry's versions, through the same bundle cache the Label Studio ``/predict``
path uses, so each version is loaded once per process whichever door asks first) or :class:`ExportedModel`.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Protocol

from fastapi import Depends, Request

from labelpilot.batch import read_export
from labelpilot.config import Settings
from labelpilot.errors import NotFoundError
from labelpilot.jobs.runner import InProcessRunner, RQRunner, make_runner
from labelpilot.jobs.state import ProjectStore
from labelpilot.jobs.training import media_fetcher
from labelpilot.models.bundle import Bundle
from labelpilot.registry import ModelVersion, Registry
from labelpilot.registry.cache import VersionCache
from labelpilot.server.metrics import Metrics
from labelpilot.server.offload import Lanes, freeze_heap
from labelpilot.server.predictor import LoadedBundle, Predictor, ServingPointers, bundle_cache, warm_up

log = logging.getLogger("labelpilot.server")


class ModelSource(Protocol):
    """What ``/v1`` needs: a loaded (version info, bundle) by name and version (None = the serving one)."""

    def resolve(self, name: str, version: int | None) -> tuple[ModelVersion, Bundle]: ...

    def list(self) -> list[dict[str, Any]]: ...


class RegistryModels:
    """The registry's models for the predict service, loaded through the server's one bundle cache."""

    def __init__(self, registry: Registry, bundles: VersionCache[LoadedBundle],
                 pointers: ServingPointers | None = None) -> None:
        self.registry = registry
        self.bundles = bundles
        self.pointers = pointers or ServingPointers(registry)  # the Label Studio predictor's, in the server

    def resolve(self, name: str, version: int | None) -> tuple[ModelVersion, Bundle]:
        if version is None:
            version = self.pointers.version(name)
            if version is None:
                raise NotFoundError(f"unknown model {name!r}", field="model")
        return self.bundles.get(name, version)  # called from the prediction lane's threads: loads once

    def list(self) -> list[dict[str, Any]]:
        return self.registry.list_models()


class ExportedModel:
    """The one model of an export folder (``labelpilot export``), loaded and warmed when made."""

    def __init__(self, export_dir: Path) -> None:
        manifest, bundle = read_export(export_dir)
        self.info = ModelVersion(
            name=manifest["name"], version=int(manifest["version"]), tag=manifest["tag"],
            created=manifest["created"], families=manifest["families"], n_examples=manifest.get("n_examples", 0),
            labels=sorted({lab for labs in manifest["labels"].values() for lab in labs}),
            metrics=manifest["metrics"], report={}, parent=None, path=export_dir / "model", serving=True,
        )
        self.bundle = bundle
        warm_up(bundle)
        freeze_heap()

    def resolve(self, name: str, version: int | None) -> tuple[ModelVersion, Bundle]:
        mv = self.info
        if name != mv.name:
            raise NotFoundError(f"unknown model {name!r}; this server serves {mv.name!r}", field="model")
        if version is not None and version != mv.version:
            raise NotFoundError(f"model {name!r} has no version v{version} here (serving v{mv.version})",
                                field="version")
        return mv, self.bundle

    def list(self) -> list[dict[str, Any]]:
        return [{"name": self.info.name, "serving": self.info.version, "versions": 1}]


@dataclass
class Services:
    """Everything a route may use. The Label Studio parts (registry … runner) are None in the one-model app,
    whose routers do not use them."""

    settings: Settings
    metrics: Metrics
    lanes: Lanes
    models: ModelSource
    registry: Registry | None = None
    store: ProjectStore | None = None
    predictor: Predictor | None = None
    runner: InProcessRunner | RQRunner | None = None
    warm: threading.Event | None = None  # set when the start-up warm-up is over (/health says warming_up)
    retrieval: Any = None  # labelpilot.server.retrieval_api.Retrieval, made on first use

    @property
    def warming_up(self) -> bool:
        return self.warm is not None and not self.warm.is_set()

    def shutdown(self) -> None:
        if self.runner is not None:
            self.runner.shutdown()
        self.lanes.shutdown()
        if self.store is not None:
            self.store.close()


def build_services(settings: Settings, metrics: Metrics, export_dir: Path | None = None) -> Services:
    """The services of the full server over ``settings.data_dir``, or (``export_dir``) of one exported model.

    The full server's registry and store are opened here: debris of interrupted model writes is removed and
    training jobs the last shutdown interrupted are marked so (both logged). The runner warms a project's
    new version when its training ends, through the predictor and so the shared bundle cache."""
    if export_dir is not None:
        return Services(settings=settings, metrics=metrics, lanes=Lanes(settings),
                        models=ExportedModel(Path(export_dir)))
    registry = Registry.from_settings(settings)
    removed = registry.cleanup()
    if removed:
        log.warning("removed debris of interrupted model writes: %s", removed)
    store = ProjectStore.from_settings(settings)  # PostgreSQL when LABELPILOT_DATABASE_URL is set
    bundles = bundle_cache(registry)
    predictor = Predictor(registry, bundles=bundles,
                          media_for=lambda uid: media_fetcher(store.project(uid) if uid else None, settings))
    runner = make_runner(settings, store, on_done=predictor.warm)
    # RQ: running jobs of dead workers are queued again or failed (jobs/recovery.py) before the rest is
    # marked interrupted; in-process, a dead server's trainers died with it
    recover = runner.recover if isinstance(runner, RQRunner) else None
    if recover is not None:
        recover()
    interrupted = store.interrupt_unfinished(settings.job_stale_after)
    if interrupted:
        log.warning("%d training job(s) were interrupted by the last shutdown", interrupted)
    store.start_sweeper(settings.job_stale_after, recover)  # jobs of processes that stop later (other replicas)

    return Services(settings=settings, metrics=metrics, lanes=Lanes(settings),
                    models=RegistryModels(registry, bundles, predictor.pointers), registry=registry, store=store,
                    predictor=predictor, runner=runner, warm=threading.Event())


async def get_services(request: Request) -> Services:
    """The app's :class:`Services` (a FastAPI dependency)."""
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]
