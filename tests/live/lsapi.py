"""A thin client for the parts of Label Studio's REST API that the live scenarios drive.

Every scenario talks to the backend only *through* Label Studio: these helpers are the only way the
tests touch the system under test (besides starting and stopping the backend process).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import httpx


class LSError(AssertionError):
    """A Label Studio API call did not answer as the scenario expected."""


def _describe(resp: httpx.Response) -> str:
    body = resp.text
    if len(body) > 1500:
        body = body[:1500] + "…"
    return f"{resp.request.method} {resp.request.url} -> {resp.status_code}: {body}"


class PersonalAccessTokenAuth(httpx.Auth):
    """``Authorization: Bearer <access>`` from a PAT, re-exchanged at /api/token/refresh/ before the
    5-minute access token runs out (live doc §3)."""

    def __init__(self, base_url: str, pat: str, max_age: float = 240.0):
        self.base_url, self.pat, self.max_age = base_url, pat, max_age
        self._access: str | None = None
        self._minted = 0.0

    def access_token(self) -> str:
        if self._access is None or time.monotonic() - self._minted > self.max_age:
            resp = httpx.post(self.base_url + "/api/token/refresh/", json={"refresh": self.pat}, timeout=30)
            if resp.status_code != 200:
                raise LSError(_describe(resp))
            self._access, self._minted = resp.json()["access"], time.monotonic()
        return self._access

    def auth_flow(self, request: httpx.Request):
        request.headers["Authorization"] = f"Bearer {self.access_token()}"
        yield request


class LabelStudioAPI:
    def __init__(self, base_url: str, token: str | None = None, *, pat: str | None = None, timeout: float = 120.0):
        """Authenticate with the legacy ``token`` (``Token <key>``) or with a ``pat`` (Bearer)."""
        self.base_url = base_url
        if pat is not None:
            self.http = httpx.Client(base_url=base_url, timeout=timeout, auth=PersonalAccessTokenAuth(base_url, pat))
        else:
            self.http = httpx.Client(base_url=base_url, timeout=timeout, headers={"Authorization": f"Token {token}"})

    def close(self) -> None:
        self.http.close()

    # -- plumbing ------------------------------------------------------------------------------------
    def call(self, method: str, path: str, *, expect: int | Sequence[int] = (200, 201), **kwargs: Any) -> Any:
        resp = self.http.request(method, path, **kwargs)
        allowed = (expect,) if isinstance(expect, int) else tuple(expect)
        if resp.status_code not in allowed:
            raise LSError(_describe(resp))
        if not resp.content:
            return None
        try:
            return resp.json()
        except ValueError:
            return resp.text

    def get(self, path: str, **kw: Any) -> Any:
        return self.call("GET", path, **kw)

    def post(self, path: str, json: Any = None, **kw: Any) -> Any:
        return self.call("POST", path, json=json, **kw)

    def patch(self, path: str, json: Any = None, **kw: Any) -> Any:
        return self.call("PATCH", path, json=json, **kw)

    # -- auth / organisation -------------------------------------------------------------------------
    def whoami(self) -> dict:
        return self.get("/api/current-user/whoami")

    def jwt_settings(self) -> dict:
        return self.get("/api/jwt/settings")

    def set_jwt_settings(self, *, legacy: bool, api_tokens: bool = True) -> dict:
        return self.post("/api/jwt/settings", {"api_tokens_enabled": api_tokens, "legacy_api_tokens_enabled": legacy})

    def create_pat(self) -> str:
        """Mint the user's Personal Access Token (only one live PAT per user: 409 on a second call)."""
        return self.post("/api/token/", expect=201)["token"]

    # -- projects and tasks --------------------------------------------------------------------------
    def create_project(self, title: str, label_config: str, **extra: Any) -> dict:
        return self.post("/api/projects", {"title": title, "label_config": label_config, **extra}, expect=201)

    def project(self, project_id: int) -> dict:
        return self.get(f"/api/projects/{project_id}")

    def project_uid(self, project_id: int) -> str:
        """The project string LS sends to the backend: ``<id>.<int(created_at.timestamp())>``."""
        created = datetime.fromisoformat(self.project(project_id)["created_at"].replace("Z", "+00:00"))
        return f"{project_id}.{int(created.timestamp())}"

    def import_tasks(self, project_id: int, tasks: Iterable[dict]) -> list[int]:
        body = list(tasks)
        out = self.post(f"/api/projects/{project_id}/import?return_task_ids=true", body, expect=201)
        ids = out["task_ids"]
        if len(ids) != len(body):
            raise LSError(f"imported {len(body)} tasks, LS returned {len(ids)} ids: {out}")
        return ids

    def import_files(self, project_id: int, files: dict[str, bytes], content_type: str) -> list[int]:
        """Multipart upload: one task per file, ``data`` holding ``/data/upload/<project>/<hex>-<name>``."""
        multipart = {f"file{i}": (name, blob, content_type) for i, (name, blob) in enumerate(files.items())}
        out = self.call(
            "POST",
            f"/api/projects/{project_id}/import",
            params={"return_task_ids": "true"},
            files=multipart,
            expect=201,
        )
        return out["task_ids"]

    def tasks(self, project_id: int) -> list[dict]:
        out = self.get("/api/tasks", params={"project": project_id, "page_size": 1000, "fields": "all"})
        return out["tasks"]

    def task_ids(self, project_id: int) -> list[int]:
        out = self.get("/api/tasks", params={"project": project_id, "page_size": 1000, "fields": "all"})
        return sorted(t["id"] for t in out["tasks"])

    # -- ML backend connection -----------------------------------------------------------------------
    def connect_backend(
        self,
        project_id: int,
        url: str,
        *,
        title: str = "labelpilot",
        is_interactive: bool = False,
        basic_auth: tuple[str, str] | None = None,
        expect: int | Sequence[int] = 201,
    ) -> dict:
        body: dict[str, Any] = {"url": url, "project": project_id, "title": title, "is_interactive": is_interactive}
        if basic_auth:
            body.update(auth_method="BASIC_AUTH", basic_auth_user=basic_auth[0], basic_auth_pass=basic_auth[1])
        return self.post("/api/ml", body, expect=expect)

    def ml_backend(self, ml_id: int) -> dict:
        """``GET /api/ml/{id}``: LS re-runs the backend's /health and /setup and stores model_version."""
        return self.get(f"/api/ml/{ml_id}")

    def ml_backends(self, project_id: int) -> list[dict]:
        return self.get("/api/ml", params={"project": project_id})

    def webhooks(self, project_id: int) -> list[dict]:
        return self.get("/api/webhooks", params={"project": project_id})

    def train(self, ml_id: int) -> None:
        """The "Start Training" button: LS posts START_TRAINING to the backend's /webhook."""
        self.post(f"/api/ml/{ml_id}/train", expect=200)

    def interactive(self, ml_id: int, task_id: int, context: dict) -> dict:
        return self.post(f"/api/ml/{ml_id}/interactive-annotating", {"task": task_id, "context": context}, expect=200)

    # -- predictions and annotations -----------------------------------------------------------------
    def retrieve_predictions(self, project_id: int, task_ids: Sequence[int] | None = None) -> dict:
        """The Data Manager action "Retrieve predictions" (synchronous in OSS)."""
        selected = {"all": True, "excluded": []} if task_ids is None else {"all": False, "included": list(task_ids)}
        return self.post(
            "/api/dm/actions",
            {"selectedItems": selected},
            params={"id": "retrieve_tasks_predictions", "project": project_id},
            expect=200,
        )

    def predictions(self, *, project: int | None = None, task: int | None = None) -> list[dict]:
        params = {k: v for k, v in (("project", project), ("task", task)) if v is not None}
        return self.get("/api/predictions", params=params)

    def annotate(self, task_id: int, result: list[dict], lead_time: float = 1.0) -> dict:
        return self.post(f"/api/tasks/{task_id}/annotations", {"result": result, "lead_time": lead_time}, expect=201)

    def update_annotation(self, annotation_id: int, result: list[dict]) -> dict:
        return self.patch(f"/api/annotations/{annotation_id}", {"result": result}, expect=200)

    def delete_annotation(self, annotation_id: int) -> None:
        self.call("DELETE", f"/api/annotations/{annotation_id}", expect=204)


def count_by_task_and_version(predictions: Iterable[dict]) -> Counter:
    return Counter((p["task"], p["model_version"]) for p in predictions)
