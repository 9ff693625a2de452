"""Request size limits: body bytes (checked while the body streams in), tasks per request, text per task.

The body limit is a pure ASGI middleware so it covers every route (/setup, /predict, /webhook, /v1/...) and
refuses a body by its ``Content-Length`` before reading it, or, for a chunked body, as soon as the bytes
read pass the limit; a 50 MB body is never held in memory. Starlette has no body limit of its own and
uvicorn's ``--limit-*`` options bound connections, not bodies, hence these few lines.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from labelpilot.config import Settings
from labelpilot.errors import LabelpilotError

_BODYLESS = {"GET", "HEAD", "OPTIONS", "DELETE"}


class TooLarge(LabelpilotError):
    """A request above one of the configured limits (body bytes, tasks, characters)."""

    status_code = 413


def _route(path: str) -> str:
    """``/s/<secret>/webhook`` → ``/webhook``."""
    if path.startswith("/s/") and path.count("/") >= 3:
        return "/" + path.split("/", 3)[3]
    return path


class BodyLimit:
    """Refuse request bodies above ``max_body_mb`` (``max_webhook_body_mb`` on /webhook) with a 413 JSON."""

    def __init__(self, app: Any, settings: Settings) -> None:
        self.app = app
        self.default = int(settings.max_body_mb * 1_000_000)
        self.webhook = int(settings.max_webhook_body_mb * 1_000_000)

    def limit_for(self, path: str) -> tuple[int, str]:
        if _route(path) == "/webhook":
            return self.webhook, "LABELPILOT_MAX_WEBHOOK_BODY_MB"
        return self.default, "LABELPILOT_MAX_BODY_MB"

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") in _BODYLESS:
            await self.app(scope, receive, send)
            return
        limit, env = self.limit_for(scope.get("path", ""))
        message = f"the request body is larger than {limit / 1e6:g} MB (set {env} to change the limit)"
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await _refuse(send, message)
            return
        seen = 0

        async def limited() -> dict:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > limit:  # a chunked body: stop reading; the route's error handler answers 413
                    raise TooLarge(message, field="body")
            return msg

        await self.app(scope, limited, send)


async def _refuse(send: Any, message: str) -> None:
    body = orjson.dumps({"status": 413, "error": "TooLarge", "detail": message, "field": "body"})
    await send({
        "type": "http.response.start",
        "status": 413,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close")],
    })
    await send({"type": "http.response.body", "body": body})


def check_task_count(n: int, settings: Settings, field: str = "tasks") -> None:
    if n > settings.max_tasks:
        raise TooLarge(
            f"{n} {field} in one request; at most {settings.max_tasks} (LABELPILOT_MAX_TASKS)", field=field
        )


def oversized_texts(tasks: Sequence[Any], max_chars: int) -> dict[int, tuple[str, int]]:
    """Tasks with a string in ``data`` longer than ``max_chars``: task index → (the field, its length)."""
    out: dict[int, tuple[str, int]] = {}
    for i, task in enumerate(tasks):
        data = task.get("data") if isinstance(task, Mapping) else None
        if not isinstance(data, Mapping):
            continue
        for key, value in data.items():
            if isinstance(value, str) and len(value) > max_chars:
                out[i] = (f"tasks.{i}.data.{key}", len(value))
                break
    return out


def text_too_long(field: str, n: int, max_chars: int) -> TooLarge:
    return TooLarge(
        f"{field} has {n} characters; at most {max_chars} (LABELPILOT_MAX_TEXT_CHARS)", field=field
    )
