"""Every error becomes a JSON body with the status in one place; nothing leaks an HTML page."""

from __future__ import annotations

import logging
import traceback

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from labelpilot.errors import LabelpilotError
from labelpilot.server.responses import JSON

log = logging.getLogger("labelpilot.server")


def _loc(loc: tuple) -> str:
    return ".".join(str(p) for p in loc if p not in ("body", "query", "path"))


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(LabelpilotError)
    async def _labelpilot(request: Request, exc: LabelpilotError) -> JSON:
        body = {"status": exc.status_code, **exc.to_dict()}
        return JSON(body, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSON:
        errors = exc.errors()
        first = errors[0] if errors else {}
        field = _loc(tuple(first.get("loc", ()))) or None
        detail = "; ".join(f"{_loc(tuple(e.get('loc', ()))) or 'body'}: {e.get('msg')}" for e in errors[:5])
        return JSON(
            {"status": 422, "error": "InputError", "detail": detail, "field": field}, status_code=422
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSON:
        headers = getattr(exc, "headers", None)
        return JSON(
            {"status": exc.status_code, "error": "HTTPError", "detail": exc.detail}, status_code=exc.status_code,
            headers=headers,
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSON:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSON(
            {
                "status": 500,
                "detail": f"{type(exc).__name__}: {exc}",
                "request": dict(request.query_params),
                "result": {"traceback": traceback.format_exc(limit=5)},
            },
            status_code=500,
        )
