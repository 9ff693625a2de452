"""The predict service: ``POST /v1/models/{name}/predict`` and ``.../versions/{v}/predict``.

Accepts one input or a batch, in labelpilot's shape (``{"text", "text_pair"}``) or seed 004's
(``{"id", "first_sequence", "second_sequence"}``; ``{"image": "<base64>"}``), and answers with the class,
its name and per-class probabilities. Bearer tokens come from configuration (``LABELPILOT_API_TOKENS``);
the payload of a refused request is never logged.

Every control of a bundle is served. The answer's top-level fields are the first control's (the shape a
single-control model has always had); a model with several controls also carries ``controls``: one answer
per control name, each in the shape of its kind. Text controls read ``text``/``first_sequence``; only when
the controls label different text objects does each read the key its object names (``value="$key"``),
when the instance has it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import tempfile
import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request

from labelpilot.data.labelstudio import IMAGE_KINDS
from labelpilot.data.types import Example, Prediction
from labelpilot.errors import InputError, LabelpilotError, NotFoundError
from labelpilot.ids import parse_uint
from labelpilot.models.bundle import Bundle
from labelpilot.schema import ControlSpec, TaskKind
from labelpilot.server.deps import Services, ServicesDep
from labelpilot.server.limits import check_task_count, text_too_long
from labelpilot.server.ls_backend import read_json
from labelpilot.server.openapi import V1_BODY, V1_EXAMPLE, json_body
from labelpilot.server.responses import JSON

MAX_IMAGE_BYTES = 20_000_000


class Unauthorized(LabelpilotError):
    status_code = 401


async def require_token(request: Request, state: ServicesDep) -> None:
    tokens: set[str] = state.settings.tokens
    if not tokens:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not any(hmac.compare_digest(token, t) for t in tokens):
        raise Unauthorized("a valid 'Authorization: Bearer <token>' header is required", field="authorization")


router = APIRouter(prefix="/v1", dependencies=[Depends(require_token)])

def _instances(body: Any) -> tuple[list[dict[str, Any]], bool]:
    if isinstance(body, list):
        return body, True
    if isinstance(body, dict) and isinstance(body.get("instances"), list):
        return body["instances"], True
    if isinstance(body, dict):
        return [body], False
    raise InputError("the body must be an object, a list, or {\"instances\": [...]}", field="body")


def _example(item: Any, i: int, control: ControlSpec, tmp: Path, max_chars: int, own_key: bool) -> Example:
    if not isinstance(item, dict):
        raise InputError(f"instance {i} is not an object", field=f"instances.{i}")
    ident = item.get("id")
    if control.kind in IMAGE_KINDS:
        key = "video" if control.kind is TaskKind.VIDEO_CHOICES else "image"  # a video: base64 of the file, + "text"
        data = item.get(key)
        if not isinstance(data, str):
            raise InputError(f"instance {i}: '{key}' (base64) is required", field=f"instances.{i}.{key}")
        try:
            raw = base64.b64decode(data.split(",", 1)[-1], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InputError(f"instance {i}: '{key}' is not base64", field=f"instances.{i}.{key}") from exc
        if len(raw) > MAX_IMAGE_BYTES:
            raise InputError(f"instance {i}: {key} larger than {MAX_IMAGE_BYTES} bytes", field=f"instances.{i}.{key}")
        path = tmp / hashlib.sha256(raw).hexdigest()[:20]
        path.write_bytes(raw)
        text = item.get("text")
        return Example(image=str(path), text_pair=text if isinstance(text, str) else None,
                       id=None if ident is None else str(ident))
    key = control.value_key if own_key and control.value_key and control.value_key in item else "text"
    text = item.get(key, item.get("first_sequence"))
    if not isinstance(text, str):
        raise InputError(f"instance {i}: {key!r} (or 'first_sequence') must be a string", field=f"instances.{i}.{key}")
    pair = item.get("text_pair", item.get("second_sequence"))
    if pair is not None and not isinstance(pair, str):
        raise InputError(f"instance {i}: 'second_sequence' must be a string", field=f"instances.{i}.second_sequence")
    for name, value in ((key, text), ("text_pair", pair)):
        if value is not None and len(value) > max_chars:
            raise text_too_long(f"instances.{i}.{name}", len(value), max_chars)
    return Example(text=text, text_pair=pair, id=None if ident is None else str(ident))


def _answer(pred: Prediction, ex: Example, labels: list[str], kind: TaskKind) -> dict[str, Any]:
    out: dict[str, Any] = {"id": ex.id} if ex.id is not None else {}
    if pred.error:
        return out | {"error": pred.error}
    if kind is TaskKind.TEXT_SPANS:
        return out | {"spans": [{"start": s.start, "end": s.end, "label": s.label, "text": s.text,
                                 "score": s.score} for s in pred.spans], "score": pred.score}
    if kind is TaskKind.IMAGE_BOXES:
        return out | {"boxes": [{"x": b.x, "y": b.y, "width": b.width, "height": b.height, "label": b.label,
                                 "score": b.score} for b in pred.boxes], "score": pred.score}
    top = pred.labels[0] if pred.labels else None
    out |= {
        "class": labels.index(top) if top in labels else None,
        "class_name": top,
        "class_probs": {k: round(float(v), 6) for k, v in (pred.probs or {}).items()},
        "score": round(float(pred.score), 6),
    }
    if len(pred.labels) > 1:
        out["labels"] = list(pred.labels)
    return out


async def _predict(request: Request, state: Services, name: str, version: int | None) -> JSON:
    t0 = time.perf_counter()
    status = "ok"
    labels = ("unknown", "unknown")  # a name from the URL becomes a label only once it names a model
    try:
        # loading a bundle (the first time) and predicting run in the prediction lane, never on the event loop
        mv, bundle = await state.lanes.model.run(state.models.resolve, name, version)
        labels = (name, str(mv.version))
        items, batched = _instances(await read_json(request))
        if not items:
            raise InputError("give at least one instance", field="instances")
        check_task_count(len(items), state.settings, field="instances")
        answers = await state.lanes.model.run(
            _predict_items, bundle, items, state.settings.max_text_chars, timeout=state.settings.predict_timeout
        )
        body: dict[str, Any] = {"model": name, "version": mv.version}
        body |= {"predictions": answers} if batched else answers[0]
        return JSON(body)
    except LabelpilotError as exc:
        status = str(exc.status_code)
        raise
    except Exception:
        status = "500"
        raise
    finally:
        state.metrics.observe_model(*labels, status, time.perf_counter() - t0)


def _predict_items(bundle: Bundle, items: list[Any], max_chars: int) -> list[dict[str, Any]]:
    """Answers for ``items``, one per item: the first control's fields, plus ``controls`` (every control's
    answer by name) when the bundle has more than one."""
    controls = [(bundle.schema.control(name), model) for name, model in bundle.models.items()]
    with contextlib.ExitStack() as stack:
        tmp = Path()  # text needs no temporary folder; images are written to one for the request
        if any(control.kind in IMAGE_KINDS for control, _ in controls):
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="lp-img-")))
        # every instance is checked for every control before any model runs: a bad one is a 4xx, not half a batch
        own_key = len({c.to_name for c, _ in controls if c.kind not in IMAGE_KINDS}) > 1
        per_control = [[_example(item, i, control, tmp, max_chars, own_key) for i, item in enumerate(items)]
                       for control, _ in controls]
        answers = [
            [_answer(p, ex, control.label_keys, control.kind) for p, ex in zip(model.predict(exs), exs, strict=True)]
            for (control, model), exs in zip(controls, per_control, strict=True)
        ]
    if len(controls) == 1:
        return answers[0]
    names = [control.name for control, _ in controls]
    return [first | {"controls": {name: {k: v for k, v in a[i].items() if k != "id"}
                                  for name, a in zip(names, answers, strict=True)}}
            for i, first in enumerate(answers[0])]


@router.post("/models/{name}/predict", openapi_extra=json_body(V1_BODY, V1_EXAMPLE))
async def predict_serving(request: Request, state: ServicesDep, name: str) -> JSON:
    return await _predict(request, state, name, None)


@router.post("/models/{name}/versions/{version}/predict", openapi_extra=json_body(V1_BODY, V1_EXAMPLE))
async def predict_version(request: Request, state: ServicesDep, name: str, version: str) -> JSON:
    v = parse_uint(version[1:] if version[:1] in ("v", "V") else version)
    if v is None:
        raise NotFoundError(f"no version {version!r} of model {name!r}: a version is a number like 3 or v3",
                            field="version")
    return await _predict(request, state, name, v)


@router.get("/models")
async def list_models(state: ServicesDep) -> JSON:
    return JSON({"models": state.models.list()})
