"""The FastAPI application: Label Studio routes, served at / and (optionally) under /s/<secret>/."""

from __future__ import annotations

import logging
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from labelpilot import __version__
from labelpilot.batch import read_export
from labelpilot.config import Settings
from labelpilot.encoders import encoder_problem
from labelpilot.errors import NotFoundError
from labelpilot.jobs.runner import make_runner
from labelpilot.jobs.state import ProjectStore
from labelpilot.jobs.training import media_fetcher
from labelpilot.models.bundle import Bundle
from labelpilot.registry import ModelVersion, Registry
from labelpilot.server import ls_backend, offload, retrieval_api, serving, ui
from labelpilot.server.errors import install_error_handlers
from labelpilot.server.limits import BodyLimit
from labelpilot.server.metrics import Metrics
from labelpilot.server.offload import Lanes, freeze_heap
from labelpilot.server.openapi import install_docs
from labelpilot.server.predictor import Predictor, warm_up

log = logging.getLogger("labelpilot.server")

_SECRET_PREFIX = "/s/{secret}"  # the secret webhook mount (create_app) and what route_label strips


def route_label(scope: dict) -> str:
    """The metrics label of a request: the template of the route it matched (``/v1/models/{name}/predict``;
    the secret webhook prefix dropped; the dashboard's pages and files as one ``/ui``), ``other`` when none
    matched, so the label set stays bounded by the app's own routes and a new route is labelled without a
    hand-kept list."""
    route = scope.get("route")
    template = getattr(route, "path", None)
    if not isinstance(template, str):
        return "other"
    if template.startswith(_SECRET_PREFIX):
        template = template[len(_SECRET_PREFIX):] or "/"
    return "/ui" if template == "/ui" or template.startswith("/ui/") else template


class RegistryModels:
    """Bundles for the predict service, loaded once per (name, version) and kept while served."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._cache: dict[tuple[str, int], tuple[ModelVersion, Bundle]] = {}
        self._lock = threading.Lock()

    def resolve(self, name: str, version: int | None) -> tuple[ModelVersion, Bundle]:
        if version is None:
            version = self.registry.serving_version(name)
            if version is None:
                raise NotFoundError(f"unknown model {name!r}", field="model")
        key = (name, version)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        with self._lock:  # called from the prediction lane's threads: load each bundle once
            if key not in self._cache:
                if len(self._cache) > 16:
                    self._cache.pop(next(iter(self._cache)))
                self._cache[key] = self.registry.load(name, version)
                freeze_heap()
            return self._cache[key]

    def list(self) -> list[dict[str, Any]]:
        return self.registry.list_models()


class MetricsMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware): counts and times requests with ~µs overhead."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = {"code": 500}

        async def _send(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, _send)
        finally:
            self.metrics.observe_http(route_label(scope), scope.get("method", ""), status["code"],
                                      time.perf_counter() - t0)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        registry = Registry.from_settings(settings)
        removed = registry.cleanup()
        if removed:
            log.warning("removed debris of interrupted model writes: %s", removed)
        store = ProjectStore.from_settings(settings)  # PostgreSQL when LABELPILOT_DATABASE_URL is set
        interrupted = store.interrupt_unfinished(settings.job_stale_after)
        if interrupted:
            log.warning("%d training job(s) were interrupted by the last shutdown", interrupted)
        store.start_sweeper(settings.job_stale_after)  # jobs of processes that stop later (other replicas)
        predictor = Predictor(registry, media_for=lambda uid: media_fetcher(store.project(uid) if uid else None,
                                                                            settings))

        def warm(uid: str) -> None:
            predictor.serving(uid)

        runner = make_runner(settings, store, on_done=warm)
        app.state.lanes = Lanes(settings)
        # one thread: the text encoder first, then the serving models that may use it
        app.state.warm = threading.Event()  # set when the start-up warm-up is over (/health says warming_up)
        threading.Thread(target=_warm_start, args=(predictor, store, app.state.warm), name="labelpilot-warm-up",
                         daemon=True).start()
        app.state.settings = settings
        app.state.registry = registry
        app.state.store = store
        app.state.predictor = predictor
        app.state.runner = runner
        app.state.metrics = metrics
        models = RegistryModels(registry)
        app.state.resolve_model = models.resolve
        app.state.list_models = models.list
        if not settings.tokens:
            log.warning("the predict service /v1 is open: set LABELPILOT_API_TOKENS to require bearer tokens")
        log.info("labelpilot %s serving data dir %s", __version__, settings.data_dir.resolve())
        try:
            yield
        finally:
            runner.shutdown()
            app.state.lanes.shutdown()
            store.close()

    app = FastAPI(title="labelpilot", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    install_error_handlers(app)
    install_docs(app, "labelpilot")
    offload.install(app)
    app.include_router(ls_backend.public)
    app.include_router(ls_backend.router)
    app.include_router(ls_backend.hooks)
    app.include_router(serving.router)
    app.include_router(ui.router)  # the dashboard, behind the same basic auth as the Label Studio routes
    app.include_router(retrieval_api.router)  # /v1/indexes, /v1/faq (issue 15)
    for r in (ls_backend.public, ls_backend.router, ls_backend.hooks):
        app.include_router(r, prefix=_SECRET_PREFIX, include_in_schema=False)
    app.add_middleware(BodyLimit, settings=settings)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def _load_encoder() -> None:
    """Load the text encoder in the background at start-up, so the first /setup or /predict need not wait
    for it (a failure is remembered and reported at /setup)."""
    problem = encoder_problem()
    if problem:
        log.warning("text encoder: %s", problem)


def _warm_start(predictor: Predictor, store: ProjectStore, done: threading.Event, limit: int = 16) -> None:
    """At start-up, in the background: the text encoder, then the serving model of the most recently used
    projects, so the first /predict of each server process (one per uvicorn worker) does not pay for them.
    ``done`` is set at the end: until then /health answers ``"warming_up": true`` (still 200: the server
    serves meanwhile, and /setup may answer ``untrained`` before the encoder is there)."""
    try:
        _load_encoder()
        for uid in store.project_uids()[:limit]:
            try:
                predictor.serving(uid)
            except Exception as exc:  # a broken version must not stop the server; /predict will say what is wrong
                log.warning("could not preload the model of %s: %s", uid, exc)
    finally:
        done.set()


def create_model_app(export_dir: Path | str, settings: Settings | None = None) -> FastAPI:
    """An app that serves one exported model (``labelpilot export``) on /v1, with /health and /metrics."""
    settings = settings or Settings()
    manifest, bundle = read_export(Path(export_dir))
    mv = ModelVersion(
        name=manifest["name"], version=int(manifest["version"]), tag=manifest["tag"], created=manifest["created"],
        families=manifest["families"], n_examples=manifest.get("n_examples", 0),
        labels=sorted({lab for labs in manifest["labels"].values() for lab in labs}), metrics=manifest["metrics"],
        report={}, parent=None, path=Path(export_dir) / "model", serving=True,
    )
    metrics = Metrics()
    warm_up(bundle)
    freeze_heap()

    def resolve(name: str, version: int | None) -> tuple[ModelVersion, Bundle]:
        if name != mv.name:
            raise NotFoundError(f"unknown model {name!r}; this server serves {mv.name!r}", field="model")
        if version is not None and version != mv.version:
            raise NotFoundError(f"model {name!r} has no version v{version} here (serving v{mv.version})",
                                field="version")
        return mv, bundle

    app = FastAPI(title=f"labelpilot model {mv.name}", version=__version__, docs_url=None, redoc_url=None,
                  openapi_url=None)
    install_docs(app, f"labelpilot model {mv.name}")
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.resolve_model = resolve
    app.state.list_models = lambda: [{"name": mv.name, "serving": mv.version, "versions": 1}]
    app.state.lanes = Lanes(settings)
    install_error_handlers(app)
    offload.install(app)
    app.include_router(ls_backend.public)
    app.include_router(serving.router)

    @app.get("/metrics")
    async def _metrics() -> Any:
        from starlette.responses import Response

        data, content_type = metrics.exposition()
        return Response(data, media_type=content_type)

    app.add_middleware(BodyLimit, settings=settings)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def create_model_app_from_env() -> FastAPI:
    """uvicorn factory for ``labelpilot serve-model`` with several workers."""
    import os

    return create_model_app(os.environ["LABELPILOT_EXPORT_DIR"])
