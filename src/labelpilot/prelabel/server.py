"""A real ``labelpilot serve`` on loopback with a fresh data dir, and the calls Label Studio makes to it.

The benchmarks drive the server exactly as Label Studio does (HTTP only: /setup, /predict, /webhook), so
what they measure includes request parsing, the webhook copy, the training jobs and model loading.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from labelpilot.jobs.state import ProjectStore

CREATED = "2023-11-14T22:13:20Z"  # a project's created_at: its uid is "<id>.1700000000"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def labelpilot_exe() -> list[str]:
    exe = Path(sys.executable).parent / "labelpilot"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "labelpilot.cli"]


class ServedBackend:
    """Start with ``with ServedBackend(env) as b:``; stops the server (and its trainer) on exit."""

    def __init__(self, env: dict[str, str] | None = None, data_dir: Path | None = None, log: Path | None = None):
        self._own_dir = data_dir is None
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix="labelpilot-bench-"))
        self.log_path = log or self.data_dir / "server.log"
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("LABELPILOT_", "BASIC_AUTH", "LABEL_STUDIO"))}
        self.env.update(env or {})
        self.url = ""
        self.proc: subprocess.Popen | None = None
        self.client: httpx.Client | None = None

    def __enter__(self) -> ServedBackend:
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [*labelpilot_exe(), "serve", "--host", "127.0.0.1", "--port", str(port),
             "--data-dir", str(self.data_dir / "data")],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.client = httpx.Client(base_url=self.url, timeout=120)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"labelpilot serve exited {self.proc.returncode}: {self.tail()}")
            try:
                resp = self.client.get("/health", timeout=1)
                # past the start-up warm-up (the text encoder), so /setup announces the version task 1 gets
                if resp.status_code == 200 and not resp.json().get("warming_up"):
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError(f"labelpilot serve not healthy in 60 s: {self.tail()}")
            time.sleep(0.1)

    def __exit__(self, *exc: Any) -> None:
        if self.client is not None:
            self.client.close()
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    # -- what Label Studio sends ------------------------------------------------------------------
    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        assert self.client is not None
        resp = self.client.post(path, json=body)
        if resp.status_code >= 400:
            raise RuntimeError(f"POST {path} answered {resp.status_code}: {resp.text[:500]}")
        return resp.json()

    def setup(self, uid: str, config: str) -> str:
        return str(self.post("/setup", {"project": uid, "schema": config, "hostname": "", "access_token": ""})
                   ["model_version"])

    def predict(self, uid: str, config: str, task: dict[str, Any]) -> dict[str, Any]:
        body = {"tasks": [task], "label_config": config, "project": uid,
                "params": {"login": None, "password": None, "context": None}}
        return self.post("/predict", body)["results"][0]

    def annotate(self, project: dict[str, Any], task: dict[str, Any], annotation_id: int,
                 result: list[dict[str, Any]]) -> dict[str, Any]:
        """ANNOTATION_CREATED in the webhook engine's shape (ls-protocol §7.2)."""
        now = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
        ann = {"id": annotation_id, "result": result, "was_cancelled": False, "ground_truth": False,
               "task": task["id"], "project": project["id"], "completed_by": 1, "created_at": now,
               "updated_at": now, "lead_time": 5.0}
        body = {"action": "ANNOTATION_CREATED", "annotation": ann,
                "task": {**task, "project": project["id"], "is_labeled": True}, "project": project}
        return self.post("/webhook", body)

    def start_training(self, project: dict[str, Any]) -> dict[str, Any]:
        return self.post("/webhook", {"action": "START_TRAINING", "project": project})

    def training(self, uid: str) -> dict[str, Any]:
        assert self.client is not None
        return self.client.get("/training", params={"project": uid}).json()

    def jobs(self, uid: str) -> list[dict[str, Any]]:
        """Every training job of the project (read from the data dir: /training shows only the last 10)."""
        return ProjectStore(self.data_dir / "data").jobs(uid, limit=100_000)

    def pending(self, uid: str) -> bool:
        return any(j["state"] in ("queued", "running") for j in self.training(uid).get("jobs", []))


def project_object(project_id: int, config: str, title: str) -> dict[str, Any]:
    """The ``project`` of a webhook body (the fields the backend reads, plus a few LS always sends)."""
    return {"id": project_id, "title": title, "label_config": config, "created_at": CREATED,
            "task_number": 0, "total_annotations_number": 0}
