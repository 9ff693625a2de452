"""Scenario building blocks shared by the live test modules (project set-up, connection checks)."""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass, field

import httpx
import pytest

from .lsapi import LabelStudioAPI
from .lsenv import BackendProcess

# Scenarios that need a trained text classifier wait for the family that trains it (looked up without
# importing it, so the test process stays light).
needs_text_model = pytest.mark.skipif(
    importlib.util.find_spec("labelpilot.models.text_linear") is None,
    reason="the text-linear family (labelpilot.models.text_linear) is not built yet",
)

# ----------------------------------------------------------------------------------------------------
# shared project set-up


@dataclass
class Project:
    id: int
    uid: str
    label_config: str
    task_ids: list[int]
    tasks: dict[int, dict]  # task id -> data
    gold: dict[int, object] = field(default_factory=dict)  # task id -> the label the scenario annotates with
    annotated_ids: list[int] = field(default_factory=list)
    ml: dict | None = None  # the ML backend connection, once made


def make_project(ls: LabelStudioAPI, title: str, label_config: str, task_data: list[dict]) -> Project:
    """Create a project with LS's own training trigger off (so only the backend decides when to
    train on annotation events) and import ``task_data``."""
    created = ls.create_project(
        f"{title} {time.strftime('%H:%M:%S')}", label_config, min_annotations_to_start_training=0
    )
    pid = created["id"]
    ids = ls.import_tasks(pid, task_data) if task_data else []
    return Project(
        id=pid,
        uid=ls.project_uid(pid),
        label_config=label_config,
        task_ids=ids,
        tasks=dict(zip(ids, task_data, strict=True)),
    )


def connect(ls: LabelStudioAPI, project: Project, backend: BackendProcess, **kw) -> dict:
    """``POST /api/ml`` and check what LS made of it: connected, and the annotation webhook exists."""
    url = kw.pop("url", backend.url)
    ml = ls.connect_backend(project.id, url, **kw)
    assert ml["state"] == "CO", f"LS did not mark the backend connected: {ml}"
    hooks = [h for h in ls.webhooks(project.id) if h["url"].rstrip("/") == url.rstrip("/") + "/webhook"]
    assert hooks, f"no webhook {url}/webhook auto-created; project webhooks: {ls.webhooks(project.id)}"
    assert hooks[0]["is_active"] and hooks[0]["send_for_all_actions"], hooks[0]
    return ml


def training_status(backend: BackendProcess, project_uid: str, auth: tuple[str, str] | None = None) -> dict | None:
    """The backend's own ``GET /training`` JSON, or None (diagnostics only: assertions are on LS state)."""
    try:
        resp = httpx.get(f"{backend.url}/training", params={"project": project_uid}, auth=auth, timeout=5)
        return resp.json() if resp.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


def backend_diagnostics(backend: BackendProcess, project_uid: str, auth: tuple[str, str] | None = None) -> str:
    try:
        resp = httpx.get(f"{backend.url}/training", params={"project": project_uid}, auth=auth, timeout=5)
        return f"backend GET /training?project={project_uid} -> {resp.status_code} {resp.text[:2000]}"
    except httpx.HTTPError as exc:
        return f"backend GET /training failed: {exc!r}"


class NewVersionWaiter:
    """Create it *before* triggering training; ``wait()`` then polls Label Studio's ``GET /api/ml/{id}``
    (LS re-runs /setup and stores the backend's model_version) until the version changes.

    To fail fast rather than time out, it also peeks at the backend's /training diagnostics: when a job
    newer than the ones that existed at creation has failed and nothing is queued or running any more,
    waiting longer is pointless and the job's error is reported.
    """

    def __init__(
        self,
        ls: LabelStudioAPI,
        ml_id: int,
        backend: BackendProcess,
        project_uid: str,
        auth: tuple[str, str] | None = None,
    ):
        self.ls, self.ml_id, self.backend, self.uid, self.auth = ls, ml_id, backend, project_uid, auth
        self.before = ls.ml_backend(ml_id)["model_version"]
        status = training_status(backend, project_uid, auth) or {}
        self.last_job = max((j["id"] for j in status.get("jobs") or []), default=0)

    def _hopeless(self) -> dict | None:
        status = training_status(self.backend, self.uid, self.auth) or {}
        new = [j for j in status.get("jobs") or [] if j["id"] > self.last_job]
        if new and all(j["state"] not in ("queued", "running") for j in new) and all(j["state"] != "done" for j in new):
            return status
        return None

    def settle(self, timeout: float = 180.0) -> dict:
        """Wait until the backend has no queued or running training job any more, then return LS's view
        (several triggers in a row, e.g. every N annotations, may retrain more than once)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = training_status(self.backend, self.uid, self.auth) or {}
            if all(j["state"] not in ("queued", "running") for j in status.get("jobs") or []):
                break
            time.sleep(0.5)
        return self.ls.ml_backend(self.ml_id)

    def wait(self, timeout: float = 180.0, interval: float = 1.0) -> dict:
        deadline = time.monotonic() + timeout
        hopeless_since: float | None = None
        while True:
            ml = self.ls.ml_backend(self.ml_id)
            if ml.get("model_version") != self.before:
                return ml
            status = self._hopeless()
            if status is None:
                hopeless_since = None
            elif hopeless_since is None:
                hopeless_since = time.monotonic()
            elif time.monotonic() - hopeless_since > 3:  # LS reads the version live; a short grace
                raise AssertionError(
                    f"model_version of ML backend {self.ml_id} stays {self.before!r}: the backend's training "
                    f"failed (state {ml.get('state')!r}).\n"
                    f"{backend_diagnostics(self.backend, self.uid, self.auth)}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"model_version of ML backend {self.ml_id} still {self.before!r} after {timeout:.0f} s "
                    f"(state {ml.get('state')!r}, error {ml.get('error_message')!r}).\n"
                    f"{backend_diagnostics(self.backend, self.uid, self.auth)}"
                )
            time.sleep(interval)
