"""Every error becomes a JSON body with the status in one place; nothing leaks an HTML page or a traceback.

An unexpected exception is answered by :class:`CatchAll` (a pure ASGI middleware inside Starlette's own
error middleware) with a JSON 500 and logged with its traceback. Starlette's ``Exception`` handler would
re-raise after answering, and uvicorn then closes the keep-alive connection; CatchAll does not re-raise.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

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

    app.add_middleware(CatchAll)


def internal_error_body(ref: str) -> dict[str, Any]:
    return {"status": 500, "error": "InternalError",
            "detail": f"an unexpected error; the server log has the details under reference {ref}"}


class CatchAll:
    """Answer any exception a route raises with a JSON 500 (no traceback) and keep the connection."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def _send(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, _send)
        except Exception:
            ref = uuid.uuid4().hex[:12]
            log.exception("unhandled error on %s %s (reference %s)", scope.get("method"), scope.get("path"), ref)
            if started:  # half a response went out: nothing sane can follow
                raise
            await JSON(internal_error_body(ref), status_code=500)(scope, receive, send)
