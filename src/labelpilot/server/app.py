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
from labelpilot.config import Settings
from labelpilot.encoders import encoder_problem
from labelpilot.jobs.state import ProjectStore
from labelpilot.server import ls_backend, offload, retrieval_api, serving, ui
from labelpilot.server.deps import build_services
from labelpilot.server.errors import install_error_handlers
from labelpilot.server.limits import BodyLimit
from labelpilot.server.metrics import Metrics
from labelpilot.server.openapi import install_docs
from labelpilot.server.predictor import Predictor

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
        services = app.state.services = build_services(settings, metrics)
        # one thread: the text encoder first, then the serving models that may use it
        threading.Thread(target=_warm_start, args=(services.predictor, services.store, services.warm),
                         name="labelpilot-warm-up", daemon=True).start()
        if not settings.tokens:
            log.warning("the predict service /v1 is open: set LABELPILOT_API_TOKENS to require bearer tokens")
        log.info("labelpilot %s serving data dir %s", __version__, settings.data_dir.resolve())
        try:
            yield
        finally:
            services.shutdown()

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
    metrics = Metrics()
    services = build_services(settings, metrics, export_dir=Path(export_dir))
    name = services.models.list()[0]["name"]
    app = FastAPI(title=f"labelpilot model {name}", version=__version__, docs_url=None, redoc_url=None,
                  openapi_url=None)
    install_docs(app, f"labelpilot model {name}")
    app.state.services = services
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
