"""The Label Studio ML backend protocol: /health, /setup, /predict, /webhook, /versions, /metrics.

Thin: parse and validate, call the core, format. See ../shared/ls-protocol.md §17 for the contract.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from typing import Annotated, Any

import anyio.to_thread
import ijson
import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema, field_validator

from labelpilot import __version__
from labelpilot.encoders import encoder_problem
from labelpilot.errors import InputError, LabelpilotError, NotFoundError, SchemaError
from labelpilot.ids import project_uid
from labelpilot.jobs.schedule import retrain_due
from labelpilot.jobs.state import ProjectStore
from labelpilot.jobs.training import check_model_options, model_name
from labelpilot.models.base import family_for, get_family
from labelpilot.netpolicy import origin
from labelpilot.schema import LabelSchema, TaskKind, parse_label_config, require_supported
from labelpilot.server.auth import CHALLENGE, basic_ok, require_basic, require_secret_path, secret_ok
from labelpilot.server.deps import Services, ServicesDep
from labelpilot.server.limits import check_task_count, oversized_texts, text_too_long
from labelpilot.server.offload import gc_paused
from labelpilot.server.openapi import EXAMPLE_CONFIG, TASKS_SCHEMA, WebhookEvent, json_body
from labelpilot.server.predictor import UNTRAINED
from labelpilot.server.responses import JSON
from labelpilot.server.webhook_events import MAX_SKIPPED_NAMED, AnnotationEvent, parse_annotation_event

log = logging.getLogger("labelpilot.server")

#: a batch that reads media stops starting new chunks past this share of LABELPILOT_PREDICT_TIMEOUT
PARTIAL_AFTER = 0.75
TRAIN_EVENTS = {"START_TRAINING"}
ANNOTATION_EVENTS = {"ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_CREATED", "ANNOTATIONS_DELETED"}


class SetupRequest(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)
    project: str | int
    label_config: str = Field(alias="schema")
    hostname: str | None = None
    access_token: str | None = None
    extra_params: Any = None

    @field_validator("extra_params", mode="before")
    @classmethod
    def _decode(cls, v: Any) -> Any:
        if isinstance(v, str) and v.strip():
            try:
                return json.loads(v)
            except json.JSONDecodeError as exc:
                raise ValueError("extra_params is a string but not JSON") from exc
        return v if isinstance(v, dict) else None


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    tasks: Annotated[list[Any], WithJsonSchema(TASKS_SCHEMA)]  # one task object is accepted too
    label_config: str | None = None
    project: str | int | None = None
    params: dict[str, Any] | None = None

    @field_validator("tasks", mode="before")
    @classmethod
    def _one_task(cls, v: Any) -> Any:
        return [v] if isinstance(v, dict) else v


#: bodies above this are parsed in a worker thread, not on the event loop
_PARSE_INLINE_BYTES = 256_000
#: ... and above this incrementally (ijson): one orjson call on 27 MB holds the interpreter lock for 0.3-1.3 s
_PARSE_STREAMING_BYTES = 4_000_000


async def read_json(request: Request) -> Any:
    """The JSON body (its size bounded by :class:`~labelpilot.server.limits.BodyLimit` while it streams)."""
    raw = await request.body()
    if not raw:
        raise InputError("the request body is empty; a JSON object is expected", field="body")
    try:
        if len(raw) > _PARSE_INLINE_BYTES:
            return await anyio.to_thread.run_sync(_parse_big, raw)
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"the request body is not valid JSON: {exc}", field="body") from exc


class _Chunks:
    """A file whose ``read`` is Python code, so the interpreter can switch threads between 64 kB chunks while
    ijson's C parser builds one big value (a C-only read would hold the lock for the whole body)."""

    def __init__(self, raw: bytes) -> None:
        self._buf = io.BytesIO(raw)

    def read(self, n: int = -1) -> bytes:
        return self._buf.read(n)


def _parse_big(raw: bytes) -> Any:
    with gc_paused():
        if len(raw) <= _PARSE_STREAMING_BYTES:
            return orjson.loads(raw)
        try:
            (value,) = ijson.items(_Chunks(raw), "", use_float=True)
        except (ijson.JSONError, ValueError):  # not JSON, or what yajl cannot hold (an integer > 64 bits)
            return orjson.loads(raw)  # the read_json caller turns a JSONDecodeError into a 422
        return value


def validate(model: type[BaseModel], body: Any) -> Any:
    if not isinstance(body, dict):
        raise InputError("the request body must be a JSON object", field="body")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "body"
        raise InputError(f"{field}: {err['msg']}", field=field) from exc


def health_body(state: Services) -> dict[str, Any]:
    return {"status": "UP", "model_class": "labelpilot", "version": __version__, "warming_up": state.warming_up}


def family_problems(schema: LabelSchema) -> list[str]:
    """A control attribute ``model_family="..."`` that names no family, or one that cannot serve the control:
    said at /setup rather than found when training fails."""
    out = []
    for control in schema.controls:
        wanted = control.attrs.get("model_family")
        if not wanted:
            continue
        try:
            cls = get_family(wanted)
        except LabelpilotError as exc:
            out.append(f'control <{control.type} name="{control.name}"> model_family="{wanted}": {exc.message}')
            continue
        if control.kind not in cls.kinds:
            fallback = family_for(control, "")
            out.append(
                f'control <{control.type} name="{control.name}"> model_family="{wanted}" cannot serve '
                f"{control.kind.value}; {fallback.name if fallback else 'no family'} is used instead"
            )
    return out


def encoder_problems(schema: LabelSchema) -> list[str]:
    """The text encoder cannot load for a config whose text classification would use it: say so at /setup
    (those controls get no zero-shot pre-labels, and the TF-IDF model alone after training)."""
    users = [c.name for c in schema.controls if c.kind in ENCODER_KINDS]
    problem = encoder_problem() if users else None
    if not problem:
        return []
    return [f"controls {users}: no zero-shot pre-labels and TF-IDF only after training: {problem}"]


ENCODER_KINDS = frozenset({TaskKind.TEXT_CHOICES, TaskKind.TEXT_TAXONOMY})


async def _version_and_encoder(predictor, uid: str, schema: LabelSchema, wait: float) -> tuple[str, list[str]]:
    """The version string for /setup and the encoder's problems, computed off the event loop.

    Before the first training the version depends on whether zero-shot models can run, which loads the text
    encoder (0.6 s on an idle machine, several seconds on a busy one, and the start-up warm-up may hold its
    lock). Label Studio gives /setup 3 s, so this waits at most ``wait`` seconds: after that /setup answers
    ``untrained`` with a warning and the loading goes on in its thread; the next /setup (Label Studio sends
    one with every prediction round and training) reports the real version."""

    def compute() -> tuple[str, list[str]]:
        return predictor.version_tag(uid, schema), encoder_problems(schema)

    work = asyncio.ensure_future(anyio.to_thread.run_sync(compute))
    try:
        return await asyncio.wait_for(asyncio.shield(work), timeout=wait)
    except TimeoutError:
        work.add_done_callback(lambda f: f.cancelled() or f.exception())  # collect the late result quietly
        return UNTRAINED, [f"models are still loading (more than {wait:g} s): the version stays "
                           f"'{UNTRAINED}' until the next /setup"]


public = APIRouter()
router = APIRouter(dependencies=[Depends(require_basic)])
hooks = APIRouter(dependencies=[Depends(require_secret_path)])


@public.get("/health")
@public.get("/")
async def health(state: ServicesDep) -> JSON:
    return JSON(health_body(state))


@router.post("/setup", openapi_extra=json_body(SetupRequest, {"project": "1.1700000000", "schema": EXAMPLE_CONFIG}))
async def setup(request: Request, state: ServicesDep) -> JSON:
    req: SetupRequest = validate(SetupRequest, await read_json(request))
    uid = str(req.project)
    schema = require_supported(parse_label_config(req.label_config))  # a refused config is never stored
    if isinstance(req.extra_params, dict):  # options a family does not take: a 422 now, not a failed job later
        check_model_options(schema, req.extra_params.get("model_options"), req.extra_params.get("families"))
    dropped = state.store.upsert_project(
        uid,
        label_config=req.label_config,
        hostname=req.hostname,
        access_token=req.access_token,
        extra_params=req.extra_params,
        authed=True,
    )
    problems = schema.problems() + family_problems(schema)
    tag, late = await _version_and_encoder(state.predictor, uid, schema, state.settings.setup_wait)
    problems += late
    if dropped:
        problems.append(f"hostname changed to {origin(req.hostname or '')} without an access_token: the token "
                        "stored for the previous Label Studio was dropped and is never sent to the new one")
    if problems:
        log.warning("project %s: %s", uid, "; ".join(problems))
    body: dict[str, Any] = {"model_version": tag}
    if problems:
        body["warnings"] = problems
    return JSON(body)


@router.post("/predict", openapi_extra=json_body(PredictRequest, {
    "tasks": [{"id": 1, "data": {"text": "great quality"}}], "label_config": EXAMPLE_CONFIG,
    "project": "1.1700000000"}))
async def predict(request: Request, state: ServicesDep) -> JSON:
    req: PredictRequest = validate(PredictRequest, await read_json(request))
    check_task_count(len(req.tasks), state.settings)
    uid = None if req.project is None else str(req.project)
    config = req.label_config
    if not config and uid:
        project = state.store.project(uid)
        config = project.get("label_config") if project else None
    if not config:
        raise InputError("label_config is missing and the project was never set up", field="label_config")
    schema = require_supported(parse_label_config(config))
    t0 = time.perf_counter()
    context = (req.params or {}).get("context")
    refused = oversized_texts(req.tasks, state.settings.max_text_chars)
    tasks = [t for i, t in enumerate(req.tasks) if i not in refused] if refused else req.tasks
    if refused and not tasks:  # every task refused: say so (a batch with some good tasks is still served)
        raise text_too_long(*refused[0], state.settings.max_text_chars)
    # media batches stop at 3/4 of the budget and leave the rest for Label Studio to ask again (predict_tasks)
    deadline = time.monotonic() + PARTIAL_AFTER * state.settings.predict_timeout
    results, problems = await state.lanes.model.run(
        state.predictor.predict_tasks, tasks, schema, uid, context, deadline, timeout=state.settings.predict_timeout
    )
    if refused:
        results = _splice_refused(results, refused, len(req.tasks), state.settings.max_text_chars, problems)
    for p in problems[:20]:
        log.warning("predict %s: %s", uid, p)
    state.metrics.observe_predict(len(req.tasks), time.perf_counter() - t0, len(problems))
    return JSON({"results": results})


def _splice_refused(
    results: list[dict[str, Any]], refused: dict[int, tuple[str, int]], n: int, max_chars: int, problems: list[str]
) -> list[dict[str, Any]]:
    """Empty predictions, in place, for the tasks refused as too long (one bad task never spoils a batch)."""
    served = iter(results)
    tag = next((r["model_version"] for r in results if isinstance(r, dict)), "")
    out = []
    for i in range(n):
        if i in refused:
            problems.append(f"{refused[i][0]}: longer than {max_chars} characters (LABELPILOT_MAX_TEXT_CHARS)")
            out.append({"result": [], "score": 0.0, "model_version": tag})
        else:
            out.append(next(served))
    return out


@hooks.post("/webhook", openapi_extra=json_body(WebhookEvent, {
    "action": "ANNOTATION_CREATED", "project": {"id": 1, "created_at": "2023-11-14T22:13:20Z"},
    "task": {"id": 1, "data": {"text": "great"}}, "annotation": {"id": 1, "result": []}}))
async def webhook(request: Request, state: ServicesDep) -> JSON:
    settings = state.settings
    body = await read_json(request)
    if not isinstance(body, dict):
        raise InputError("the webhook body must be a JSON object", field="body")
    action = body.get("action")
    if not isinstance(action, str) or not action:
        raise InputError("the webhook has no 'action'", field="action")
    if action not in TRAIN_EVENTS and action not in ANNOTATION_EVENTS:
        return JSON({"status": "Unknown event"}, status_code=200)
    project = body.get("project")
    uid = project_uid(project)
    if uid is None:
        raise InputError(f"{action} without project.id", field="project")
    trusted = basic_ok(request, settings) or secret_ok(request, settings)
    if not trusted:
        known = state.store.project(uid)
        if action in TRAIN_EVENTS or not (known and known.get("authed")):
            return JSON(
                {"status": 401, "error": "Unauthorized", "detail": "webhook needs basic auth or the secret path"},
                status_code=401,
                headers=CHALLENGE,
            )
    bulk_action = action in ("ANNOTATIONS_CREATED", "ANNOTATIONS_DELETED")
    if bulk_action and not isinstance(body.get("annotations"), list | None):
        raise InputError("annotations must be a list", field="annotations")
    # a single event's ids are checked here (a 422 before anything changes); a bulk event's in the lane
    event = parse_annotation_event(action, body) if action in ANNOTATION_EVENTS and not bulk_action else None
    out: dict[str, Any] = {"status": "ok", "project": uid}
    config_note = _take_config(state.store, uid, project, trusted)
    if config_note:
        out["warnings"] = [config_note]
    if action in TRAIN_EVENTS:
        job_id, deferred = state.runner.submit(uid, action, full_export=True)
        out["training"] = {"job_id": job_id, "state": "coalesced" if deferred else "queued"}
        return JSON(out, status_code=201)
    # parsed (bulk), stored and counted in one transaction in the webhook lane; the bulk list is handed over so
    # its last reference (100,000 dicts to free) dies in the worker thread, not on the event loop
    handed = [body.pop("annotations", None)]
    rest = body
    since, skipped, before, after = await state.lanes.events.run(
        _store_annotation_event, state.store, uid, action, rest, handed, event
    )
    if skipped:
        out["skipped"] = skipped[:MAX_SKIPPED_NAMED]
        log.warning("webhook %s %s: skipped %d entries: %s", action, uid, len(skipped), skipped[:3])
    out["annotations_since_training"] = since
    due = retrain_due(settings.schedule, settings.retrain_every, total_before=before, total_after=after,
                      since_train=since)
    if due:
        state.store.reset_counter(uid)
        job_id, deferred = state.runner.submit(uid, due, full_export=False)
        out["training"] = {"job_id": job_id, "state": "coalesced" if deferred else "queued"}
    return JSON(out, status_code=201)


def _take_config(store, uid: str, project: Any, trusted: bool) -> str | None:
    """A webhook's ``project.label_config`` replaces the stored config only when the event is authenticated
    (basic auth or the secret path) and the config is one labelpilot can serve; otherwise it is ignored
    (the stored config comes from /setup). Returns a note when a config was ignored."""
    config = project.get("label_config") if isinstance(project, dict) else None
    if not config or not isinstance(config, str):
        return None
    if not trusted:
        known = store.project(uid)
        if known and known.get("label_config") != config:
            log.warning("project %s: ignored the label_config of an unauthenticated webhook", uid)
        return None
    try:
        require_supported(parse_label_config(config))
    except SchemaError as exc:
        log.warning("project %s: ignored the webhook's label_config: %s", uid, exc.message)
        return f"project.label_config was not stored: {exc.message}"
    store.upsert_project(uid, label_config=config)
    return None


def _store_annotation_event(
    store: ProjectStore, uid: str, action: str, rest: dict[str, Any], handed: list[Any],
    event: AnnotationEvent | None,
) -> tuple[int, list[str], int, int]:
    """Check the ids of a bulk event (a single event's ``event`` was checked on the loop), store the
    annotations and add the count in ONE transaction. Returns the new counter, the skipped entries and the
    project's stored annotations before and after. ``handed`` holds the event's ``annotations`` list, taken
    out of the body."""
    with gc_paused():
        bulk = handed.pop()
        if event is None:
            event = parse_annotation_event(action, {**rest, "annotations": bulk})
        before = store.count_annotations(uid)
        since = store.record_annotation_event(uid, put=event.items, delete=event.deleted, count=event.count)
        after = store.count_annotations(uid)
        while event.items:  # freed one by one: one free of 100,000 dicts would hold the interpreter lock
            event.items.pop()
        while isinstance(bulk, list) and bulk:
            bulk.pop()
        return since, event.skipped, before, after


@router.get("/versions")
async def versions(state: ServicesDep, project: str | None = None) -> JSON:
    """Label Studio calls this without naming the project, so the backend cannot know whose versions are
    asked for: it answers 404 and Label Studio lists the project's own current version (ls-protocol §4.6),
    never another project's. With ``?project=<id.ts>`` it lists that project's versions."""
    if not project:
        raise NotFoundError(
            "GET /versions needs ?project=<id.timestamp>: Label Studio does not say which project asks, so "
            "it falls back to the project's current model version",
            field="project",
        )
    mvs = state.registry.list_versions(model_name(project))
    serving = [m.tag for m in mvs if m.serving]
    return JSON({"versions": [m.tag for m in reversed(mvs)], "current_version": serving[0] if serving else None})


@router.get("/training")
async def training(state: ServicesDep, project: str) -> JSON:
    """Diagnostics: the serving version and recent training jobs of a project."""
    info = state.store.project(project)
    if info is None:
        raise NotFoundError(f"unknown project {project!r}", field="project")
    return JSON(
        {
            "project": project,
            "model_version": state.predictor.version_tag(project),
            "annotations_since_training": info["since_train"],
            "retrain_every": state.settings.retrain_every,
            "retrain_schedule": list(state.settings.schedule),
            "jobs": state.store.jobs(project, limit=10),
        }
    )


@router.get("/metrics")
async def metrics(request: Request, state: ServicesDep) -> Response:
    accept = request.headers.get("accept", "")
    if "application/json" in accept and "text/plain" not in accept:
        return JSON(state.metrics.summary())
    data, content_type = state.metrics.exposition()
    return Response(data, media_type=content_type)
