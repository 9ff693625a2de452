"""``/v1/indexes`` (similarity search) and ``/v1/faq`` (FAQ answers), behind the same bearer tokens as /v1/models.

- ``GET /v1/indexes``, ``GET /v1/indexes/{name}``;
- ``POST /v1/indexes/{name}/items``: ``{"items": [{"id", "text" | "image" (base64) | "image_url" | "vector",
  "meta"?}], "remove": [ids], "kind"?, "dim"?}``. A missing index is created when ``kind`` is given (else 404).
  The request is checked whole first (a malformed item, a text for an image index, a vector of the wrong size:
  422 naming the field, nothing changes); an image that cannot be fetched or decoded fails alone (its error is
  in ``errors``), the other items are added. One change = one new version in the registry;
- ``POST /v1/indexes/{name}/search``: ``{"text" | "image" | "image_url" | "vector" | "id", "k"?}`` → top-k with
  cosine scores (by ``id``: the item itself is left out);
- ``POST /v1/faq/{name}/answer``: ``{"query"}`` or ``{"queries": [...]}``.

Encoding, image decoding, search and saving run in the prediction lane (``server/offload.py``), never on the
event loop. Image URLs go through the server's media fetcher (allowlist, local files root, netpolicy).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request

from labelpilot.errors import InputError, LabelpilotError, NotFoundError
from labelpilot.jobs.training import media_fetcher
from labelpilot.retrieval.faq import FaqStore
from labelpilot.retrieval.index import check_id
from labelpilot.retrieval.service import IndexStore, parse_item, payload, vectorise
from labelpilot.server.deps import Services, ServicesDep
from labelpilot.server.limits import check_task_count
from labelpilot.server.ls_backend import read_json
from labelpilot.server.openapi import json_body
from labelpilot.server.responses import JSON
from labelpilot.server.serving import require_token

router = APIRouter(prefix="/v1", dependencies=[Depends(require_token)])

_QUERY = {"text": {"type": "string"}, "image": {"type": "string", "description": "base64 (a data: URL too)"},
          "image_url": {"type": "string"}, "vector": {"type": "array", "items": {"type": "number"}}}
ITEMS_BODY = {"type": "object", "properties": {
    "kind": {"type": "string", "enum": ["text", "image", "vector"], "description": "creates a missing index"},
    "dim": {"type": "integer", "description": "vector size of a new 'vector' index"},
    "items": {"type": "array", "items": {"type": "object", "required": ["id"], "properties": {
        "id": {"type": "string"}, **_QUERY, "meta": {"type": "object"}}}},
    "remove": {"type": "array", "items": {"type": "string"}}}}
ITEMS_EXAMPLE = {"kind": "text", "items": [{"id": "t1", "text": "北京今天下大雨", "meta": {"task": 1}}]}
SEARCH_BODY = {"type": "object", "properties": {**_QUERY, "id": {"type": "string"},
                                                "k": {"type": "integer", "minimum": 1, "maximum": 1000}}}
SEARCH_EXAMPLE = {"text": "暴雨天气预报", "k": 5}
FAQ_BODY = {"type": "object", "properties": {"query": {"type": "string"},
                                             "queries": {"type": "array", "items": {"type": "string"}}}}
FAQ_EXAMPLE = {"query": "这车多少钱"}
_create_lock = threading.Lock()


class Retrieval:
    """The indexes and FAQ models of a server's data dir (opened on first use)."""

    def __init__(self, data_dir: Path, settings: Any) -> None:
        self.data_dir = Path(data_dir)
        self.settings = settings
        self._indexes: Any = None
        self._faq: Any = None
        self._lock = threading.Lock()

    @property
    def indexes(self) -> Any:
        with self._lock:
            if self._indexes is None:

                self._indexes = IndexStore(self.data_dir / "indexes")
            return self._indexes

    @property
    def faq(self) -> Any:
        with self._lock:
            if self._faq is None:

                self._faq = FaqStore(self.data_dir / "faq")
            return self._faq

    def fetch(self, url: str) -> Path:

        return media_fetcher(None, self.settings).fetch(url)


def _retrieval(state: Services) -> Retrieval:
    found = state.retrieval
    if found is None:
        found = state.retrieval = Retrieval(state.settings.data_dir, state.settings)
    return found


def _k(body: dict[str, Any]) -> int:
    k = body.get("k", 10)
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= 1000:
        raise InputError("'k' must be an integer from 1 to 1000", field="k")
    return k


def change_items(r: Retrieval, name: str, body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InputError("the body must be an object with 'items' and/or 'remove'", field="body")
    items, remove = body.get("items", []), body.get("remove", [])
    if not isinstance(items, list):
        raise InputError("'items' must be a list", field="items")
    if not isinstance(remove, list):
        raise InputError("'remove' must be a list of ids", field="remove")
    if not items and not remove:
        raise InputError("give 'items' to add and/or 'remove' (ids)", field="items")
    check_task_count(len(items) + len(remove), r.settings, field="items")
    store = r.indexes
    if store.exists(name):
        return _change(r, name, store.get(name)[1], items, remove)
    if body.get("kind") is None:
        raise NotFoundError(f"unknown index {name!r} (give 'kind' to create it)", field="index")
    with _create_lock:  # two requests creating one index: the second adds to the first's
        if store.exists(name):
            return _change(r, name, store.get(name)[1], items, remove)
        return _change(r, name, store.create(name, body["kind"], body.get("dim")), items, remove)


def _change(r: Retrieval, name: str, index: Any, items: list[Any], remove: list[Any]) -> dict[str, Any]:

    store = r.indexes
    removed_ids = [check_id(v, f"remove.{i}") for i, v in enumerate(remove)]
    parsed = [parse_item(raw, f"items.{i}", index, need_id=True) for i, raw in enumerate(items)]
    first: dict[str, int] = {}
    for i, it in enumerate(parsed):
        if first.setdefault(str(it.id), i) != i:
            raise InputError(f"items.{i}.id: {it.id!r} is also item {first[str(it.id)]}", field=f"items.{i}.id")
    vectors, errors = vectorise(parsed, index.dim, r.fetch)
    good = [i for i, e in enumerate(errors) if e is None]
    failed = [{"id": parsed[i].id, **e} for i, e in enumerate(errors) if e is not None]
    if items and not good and not removed_ids:
        first = failed[0]
        raise _ItemErrors(first["detail"], field=first.get("field"), errors=failed)
    with index.lock:
        try:
            not_found = index.remove(removed_ids)
            index.add([parsed[i].id for i in good], vectors[good], [payload(parsed[i]) for i in good])
        except BaseException:
            store.forget(name)  # the next request reloads the stored version
            raise
        version = store.save(name, index, note=f"+{len(good)} -{len(removed_ids) - len(not_found)}")
    return {"index": name, "version": version, "added": len(good), "removed": len(removed_ids) - len(not_found),
            "not_found": not_found, "errors": failed, "count": len(index)}


class _ItemErrors(InputError):
    """Every item of a request failed (e.g. all images broken): 422 with each item's error."""

    def __init__(self, message: str, *, field: str | None, errors: list[dict[str, Any]]) -> None:
        super().__init__(message, field=field)
        self.errors = errors

    def to_dict(self) -> dict[str, object]:
        return {**super().to_dict(), "errors": self.errors}


def search(r: Retrieval, name: str, body: Any) -> dict[str, Any]:

    if not isinstance(body, dict):
        raise InputError("the body must be an object", field="body")
    k = _k(body)
    version, index = r.indexes.get(name)
    exclude: list[str] = []
    if body.get("id") is not None:
        if any(body.get(key) is not None for key in ("text", "image", "image_url", "vector")):
            raise InputError("give one of 'id', 'text', 'image', 'image_url' or 'vector'", field="id")
        item_id = check_id(body["id"], "id")
        query = index.vector(item_id)
        exclude = [item_id]
    else:
        item = parse_item(body, "query", index, need_id=False)
        vectors, errors = vectorise([item], index.dim, r.fetch)
        if errors[0] is not None:
            err = errors[0]
            exc = LabelpilotError(err["detail"], field=str(err.get("field", "").removeprefix("query.")))
            exc.status_code = int(err["status"])
            raise exc
        query = vectors[:1]
    hits = index.search(query, k, exclude=exclude)[0]
    return {"index": name, "version": version, "k": k, "results": r.indexes.hits(hits)}


@router.get("/indexes")
async def list_indexes(state: ServicesDep) -> JSON:
    r = _retrieval(state)

    def run() -> list[dict[str, Any]]:
        return [r.indexes.describe(n) for n in r.indexes.names() if r.indexes.exists(n)]

    return JSON({"indexes": await state.lanes.model.run(run)})


@router.get("/indexes/{name}")
async def show_index(state: ServicesDep, name: str) -> JSON:
    r = _retrieval(state)
    return JSON(await state.lanes.model.run(r.indexes.describe, name))


@router.post("/indexes/{name}/items", openapi_extra=json_body(ITEMS_BODY, ITEMS_EXAMPLE))
async def index_items(request: Request, state: ServicesDep, name: str) -> JSON:
    body = await read_json(request)
    out = await state.lanes.model.run(change_items, _retrieval(state), name, body,
                                      timeout=state.settings.predict_timeout)
    return JSON(out)


@router.post("/indexes/{name}/search", openapi_extra=json_body(SEARCH_BODY, SEARCH_EXAMPLE))
async def index_search(request: Request, state: ServicesDep, name: str) -> JSON:
    body = await read_json(request)
    return JSON(await state.lanes.model.run(search, _retrieval(state), name, body,
                                            timeout=state.settings.predict_timeout))


@router.post("/faq/{name}/answer", openapi_extra=json_body(FAQ_BODY, FAQ_EXAMPLE))
async def faq_answer(request: Request, state: ServicesDep, name: str) -> JSON:
    body = await read_json(request)
    r = _retrieval(state)
    if not isinstance(body, dict):
        raise InputError("the body must be an object with 'query' or 'queries'", field="body")
    batched = "queries" in body
    queries = body.get("queries") if batched else [body.get("query")]
    if not isinstance(queries, list) or not queries or not all(isinstance(q, str) for q in queries):
        raise InputError("'query' must be a string ('queries': a non-empty list of strings)",
                         field="queries" if batched else "query")
    check_task_count(len(queries), state.settings, field="queries")
    for i, q in enumerate(queries):
        if len(q) > state.settings.max_text_chars:
            raise InputError(f"query of {len(q)} characters; at most {state.settings.max_text_chars}",
                             field=f"queries.{i}" if batched else "query")

    def run() -> dict[str, Any]:
        version, model = r.faq.get(name)
        answers = model.answer(queries)
        return {"faq": name, "version": version, **({"answers": answers} if batched else answers[0])}

    return JSON(await state.lanes.model.run(run, timeout=state.settings.predict_timeout))
