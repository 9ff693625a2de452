"""A small client for the parts of Label Studio's API the backend needs: the export (whole, or of some tasks),
the Data Manager's task counts and changed tasks (the incremental sync's check), and auth headers.

Tokens: a legacy token is sent as ``Token <key>``; a personal access token (a JWT *refresh* token) is
exchanged at ``/api/token/refresh/`` for a short-lived access token sent as ``Bearer``; an access JWT
is sent as ``Bearer`` directly. Credentials are only ever sent to Label Studio's own origin
(scheme, host and port of ``base_url``); every request goes through :class:`labelpilot.netpolicy.FetchPolicy`,
which re-checks each redirect hop and drops the token on a hop that leaves the origin.
"""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar

import httpx

from labelpilot.errors import LabelStudioError
from labelpilot.netpolicy import FetchPolicy, origin

#: the largest answer of an API call other than the export (a page of the task list, an import's count)
API_MAX_BYTES = 64_000_000


def read_bounded(resp: httpx.Response, what: str, max_bytes: int, deadline: float) -> bytes:
    """A streamed answer's body, refused past ``max_bytes`` or past ``deadline`` (``time.monotonic()``):
    httpx's timeouts bound each read, not the whole answer, so a trickling origin is stopped here."""
    chunks: list[bytes] = []
    size = 0
    for chunk in resp.iter_bytes():
        size += len(chunk)
        if size > max_bytes:
            raise LabelStudioError(f"{what} is larger than {max_bytes} bytes")
        if time.monotonic() > deadline:
            raise LabelStudioError(f"{what} took longer than the time allowed")
        chunks.append(chunk)
    return b"".join(chunks)


def token_kind(token: str) -> str:
    """``"legacy"``, ``"refresh"`` (a PAT) or ``"access"``."""
    parts = token.split(".")
    if len(parts) != 3:
        return "legacy"
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, json.JSONDecodeError):
        return "legacy"
    return "refresh" if payload.get("token_type") == "refresh" else "access"


def _jwt_exp(token: str) -> float:
    try:
        part = token.split(".")[1]
        return float(json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))).get("exp", 0))
    except (IndexError, ValueError, json.JSONDecodeError):
        return 0.0


class LabelStudioClient:
    """Talks to one Label Studio at ``base_url`` with one token."""

    _access_cache: ClassVar[dict[tuple[str, str], tuple[str, float]]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self, base_url: str, token: str, *, timeout: float = 30.0, token_source: str = "",
        policy: FetchPolicy | None = None,
    ) -> None:
        if not base_url or not base_url.startswith(("http://", "https://")):
            raise LabelStudioError(
                f"Label Studio URL {base_url!r} must start with http:// or https:// "
                "(set LABEL_STUDIO_URL, or LABEL_STUDIO_HOST on the Label Studio side)"
            )
        if not token:
            raise LabelStudioError(
                "no Label Studio token: /setup sent none and LABEL_STUDIO_API_KEY is not set"
            )
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.token_source = token_source
        self.policy = policy or FetchPolicy.open()
        self.origin = origin(self.base_url)

    def _permit(self, url: str, hop: int) -> None:
        """Label Studio API calls stay on Label Studio's origin, redirects included."""
        if origin(url) != self.origin:
            raise LabelStudioError(f"Label Studio redirected to {url}, off its origin {self.origin}; not followed")

    def auth_header(self) -> dict[str, str]:
        kind = token_kind(self.token)
        if kind == "legacy":
            return {"Authorization": f"Token {self.token}"}
        if kind == "access":
            return {"Authorization": f"Bearer {self.token}"}
        key = (self.base_url, self.token)
        with self._lock:
            cached = self._access_cache.get(key)
            if cached and cached[1] - 30 > time.time():
                return {"Authorization": f"Bearer {cached[0]}"}
            try:
                with self.policy.stream(
                    "POST", f"{self.base_url}/api/token/refresh/", permit=self._permit,
                    json={"refresh": self.token}, timeout=self.timeout,
                ) as resp:
                    resp.read()
            except httpx.HTTPError as exc:
                raise LabelStudioError(self._unreachable(exc)) from exc
            if resp.status_code != 200:
                raise LabelStudioError(
                    f"Label Studio refused the personal access token at /api/token/refresh/ "
                    f"(HTTP {resp.status_code}); create a new one in Account & Settings"
                )
            try:
                access = str(resp.json().get("access", ""))
            except (ValueError, AttributeError) as exc:
                raise LabelStudioError("Label Studio's /api/token/refresh/ answer is not JSON") from exc
            self._access_cache[key] = (access, _jwt_exp(access) or time.time() + 240)
            return {"Authorization": f"Bearer {access}"}

    def _unreachable(self, exc: Exception) -> str:
        msg = f"could not reach Label Studio at {self.base_url}: {exc}"
        if "localhost" in self.base_url and self.token_source == "setup":
            msg += (
                " (Label Studio reports http://localhost:8080 unless it runs with LABEL_STUDIO_HOST set to its real "
                "address; set that, or LABEL_STUDIO_URL on this backend)"
            )
        return msg

    def _explain(self, status: int) -> str:
        if status == 401 and token_kind(self.token) == "legacy" and self.token_source == "setup":
            return (
                "Label Studio refused the legacy token it sent at /setup (HTTP 401). Legacy tokens are probably "
                "disabled in the organisation: set LABEL_STUDIO_API_KEY to a personal access token and "
                "LABEL_STUDIO_URL to Label Studio's address on the backend, or enable legacy tokens"
            )
        if status in (401, 403):
            return f"Label Studio refused the token (HTTP {status}); check LABEL_STUDIO_API_KEY"
        return f"Label Studio answered HTTP {status}"

    def _get_json(self, path: str, params: dict[str, str], what: str) -> tuple[Any, float | None]:
        """GET an API path: its JSON body and Label Studio's clock from the ``Date`` header (epoch s, or None)."""
        try:
            with self.policy.stream(
                "GET", f"{self.base_url}{path}", permit=self._permit, params=params, headers=self.auth_header(),
                credential_origin=self.origin, timeout=self.timeout,
            ) as resp:
                body = read_bounded(resp, what, API_MAX_BYTES, time.monotonic() + self.timeout)
        except httpx.HTTPError as exc:
            raise LabelStudioError(self._unreachable(exc)) from exc
        if resp.status_code != 200:
            raise LabelStudioError(f"{what} failed: {self._explain(resp.status_code)} {body[:300]!r}")
        try:
            out = json.loads(body)
        except json.JSONDecodeError as exc:
            raise LabelStudioError(f"{what}: the answer is not JSON") from exc
        clock = None
        with contextlib.suppress(TypeError, ValueError, IndexError):
            clock = parsedate_to_datetime(resp.headers.get("date", "")).timestamp()
        return out, clock

    def task_page(self, project_id: int, *, updated_since: float | None = None, page: int = 1,
                  page_size: int = 1) -> tuple[dict[str, Any], float | None]:
        """One page of the Data Manager's task list (``GET /api/tasks``; tasks without annotations): its
        ``total`` (tasks), ``total_annotations`` (not cancelled) and ``tasks``, optionally only the tasks whose
        ``updated_at`` is after ``updated_since`` (epoch s; Label Studio bumps a task's ``updated_at`` when one
        of its annotations is created, changed or deleted). Also returns Label Studio's clock."""
        query: dict[str, Any] = {}
        if updated_since is not None:
            when = datetime.fromtimestamp(updated_since, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            query["filters"] = {"conjunction": "and", "items": [
                {"filter": "filter:tasks:updated_at", "operator": "greater", "type": "Datetime", "value": when}]}
        params = {"project": str(project_id), "page": str(page), "page_size": str(page_size),
                  "query": json.dumps(query), "resolve_uri": "false",
                  # review: Label Studio then neither asks the ML backends for predictions of the page's tasks
                  # (evaluate_predictions_automatically) nor computes the heavy per-task columns
                  "review": "true"}
        out, clock = self._get_json("/api/tasks", params, f"the task list of project {project_id}")
        if not isinstance(out, dict) or not isinstance(out.get("total"), int) or not isinstance(out.get("tasks"), list):
            raise LabelStudioError(f"the task list of project {project_id} has no total and tasks")
        return out, clock

    def changed_task_ids(self, project_id: int, since: float, *, limit: int, page_size: int = 500) -> list[int] | None:
        """Ids of the tasks whose ``updated_at`` is after ``since``; None when there are more than ``limit``."""
        ids: list[int] = []
        page = 1
        while True:
            out, _ = self.task_page(project_id, updated_since=since, page=page, page_size=page_size)
            if out["total"] > limit:
                return None
            ids += [int(t["id"]) for t in out["tasks"] if isinstance(t, dict) and isinstance(t.get("id"), int)]
            if len(ids) >= out["total"] or not out["tasks"]:
                return ids
            page += 1

    def export_tasks(self, project_id: int, *, max_bytes: int = 2_000_000_000, timeout: float = 600.0,
                     all_tasks: bool = False, ids: Sequence[int] = ()) -> list[Any]:
        """All annotated tasks of a project (``all_tasks``: every task; ``ids``: only these tasks) as Label
        Studio's JSON export, with a size and time limit."""
        url = f"{self.base_url}/api/projects/{project_id}/export"
        params: dict[str, Any] = {"exportType": "JSON", "download_all_tasks": "true" if all_tasks else "false"}
        if ids:
            params["ids[]"] = [str(i) for i in ids]
        deadline = time.monotonic() + timeout
        try:
            with self.policy.stream(
                "GET",
                url,
                permit=self._permit,
                params=params,
                headers=self.auth_header(),
                credential_origin=self.origin,
                timeout=httpx.Timeout(self.timeout, read=timeout),
            ) as resp:
                if resp.status_code != 200:
                    raise LabelStudioError(f"export of project {project_id} failed: {self._explain(resp.status_code)}")
                body = read_bounded(resp, f"the export of project {project_id}", max_bytes, deadline)
        except httpx.HTTPError as exc:
            raise LabelStudioError(self._unreachable(exc)) from exc
        try:
            tasks = json.loads(body)
        except json.JSONDecodeError as exc:
            raise LabelStudioError(f"the export of project {project_id} is not JSON: {exc}") from exc
        if not isinstance(tasks, list):
            raise LabelStudioError(f"the export of project {project_id} is not a list of tasks")
        return tasks

    def import_predictions(self, project_id: int, predictions: list[dict[str, Any]], *, batch: int = 500) -> int:
        """Add predictions to a project's tasks (``POST /api/projects/{id}/import/predictions``, each
        ``{"task", "result", "score", "model_version"}``), ``batch`` at a time; returns how many were created."""
        url = f"{self.base_url}/api/projects/{project_id}/import/predictions"
        created = 0
        for start in range(0, len(predictions), batch):
            try:
                with self.policy.stream(
                    "POST", url, permit=self._permit, json=predictions[start:start + batch],
                    headers=self.auth_header(), credential_origin=self.origin, timeout=self.timeout,
                ) as resp:
                    body = read_bounded(resp, "the answer to an import of predictions", API_MAX_BYTES,
                                        time.monotonic() + self.timeout)
            except httpx.HTTPError as exc:
                raise LabelStudioError(self._unreachable(exc)) from exc
            if resp.status_code not in (200, 201):
                raise LabelStudioError(f"import of predictions into project {project_id} failed: "
                                       f"{self._explain(resp.status_code)} {body[:300]!r}")
            with contextlib.suppress(ValueError, AttributeError, TypeError):  # an answer without a count
                created += int(json.loads(body).get("created", 0))
        return created
