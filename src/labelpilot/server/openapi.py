"""The OpenAPI description and the docs pages.

Routes read their JSON bodies by hand (so the 4xx messages name Label Studio's fields the way the tests
and Label Studio expect), which leaves FastAPI unaware of the bodies; :func:`json_body` declares them through
``openapi_extra`` from pydantic models, so clients and fuzzers see the real request shapes.

``/openapi.json``, ``/docs`` and ``/redoc`` are served behind the same basic auth as the Label Studio routes
(open when basic auth is off, like everything else then).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from pydantic import BaseModel, ConfigDict, Field

from labelpilot.server.auth import require_basic
from labelpilot.server.responses import JSON

EXAMPLE_CONFIG = (
    '<View><Text name="text" value="$text"/><Choices name="sentiment" toName="text">'
    '<Choice value="Positive"/><Choice value="Negative"/></Choices></View>'
)

TASK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"id": {"type": "integer", "minimum": 0}, "data": {"type": "object"}},
    "additionalProperties": True,
}
TASKS_SCHEMA: dict[str, Any] = {"anyOf": [{"type": "array", "items": TASK_SCHEMA}, TASK_SCHEMA]}


class WebhookEvent(BaseModel):
    """A Label Studio webhook event (only the fields labelpilot reads)."""

    model_config = ConfigDict(extra="allow")
    action: str = Field(description="START_TRAINING, ANNOTATION_CREATED/UPDATED, ANNOTATIONS_CREATED/DELETED; "
                                    "other actions get 200 'Unknown event'")
    project: dict[str, Any] | str | int = Field(description="the project object (id, created_at) or its id.ts")
    annotation: dict[str, Any] | None = None
    annotations: list[dict[str, Any]] | None = None
    task: dict[str, Any] | None = None


V1_INSTANCE: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": ["string", "integer"]},
        "text": {"type": "string"},
        "text_pair": {"type": "string"},
        "first_sequence": {"type": "string"},
        "second_sequence": {"type": "string"},
        "image": {"type": "string", "description": "base64 (image models)"},
    },
    "additionalProperties": True,
}
V1_BODY: dict[str, Any] = {
    "anyOf": [
        V1_INSTANCE,
        {"type": "array", "items": V1_INSTANCE, "minItems": 1, "maxItems": 1000},
        {"type": "object", "properties": {"instances": {"type": "array", "items": V1_INSTANCE, "minItems": 1,
                                                         "maxItems": 1000}},
         "required": ["instances"]},
    ]
}
V1_EXAMPLE = {"id": "1", "first_sequence": "great quality and fast delivery", "second_sequence": "delivery"}


def json_body(schema: dict[str, Any] | type[BaseModel], example: Any = None) -> dict[str, Any]:
    """``openapi_extra`` declaring a required JSON body of ``schema`` (a JSON schema or a pydantic model)."""
    if isinstance(schema, type):
        schema = schema.model_json_schema(by_alias=True)
    media: dict[str, Any] = {"schema": schema}
    if example is not None:
        media["example"] = example
    return {"requestBody": {"required": True, "content": {"application/json": media}}}


def install_docs(app: FastAPI, title: str) -> None:
    """``/openapi.json``, ``/docs`` and ``/redoc`` behind basic auth (create the app with the three URLs None)."""
    docs = APIRouter(dependencies=[Depends(require_basic)], include_in_schema=False)

    @docs.get("/openapi.json")
    async def _openapi(request: Request) -> JSON:
        return JSON(request.app.openapi())

    @docs.get("/docs")
    async def _swagger(request: Request) -> Any:
        return get_swagger_ui_html(openapi_url="openapi.json", title=f"{title} docs")

    @docs.get("/redoc")
    async def _redoc(request: Request) -> Any:
        return get_redoc_html(openapi_url="openapi.json", title=f"{title} docs")

    app.include_router(docs)
