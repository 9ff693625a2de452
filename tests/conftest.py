"""Shared fixtures: a real `labelpilot serve` process on loopback, and a stand-in for Label Studio's API."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
#: the project's ../shared/data, or $LABELPILOT_SHARED_DATA (a git worktree sits elsewhere)
SHARED_DATA = Path(os.environ.get("LABELPILOT_SHARED_DATA") or ROOT.parent / "shared" / "data")
FIXTURES = Path(__file__).parent / "fixtures"
LABELPILOT = Path(sys.executable).parent / "labelpilot"

needs_shared = pytest.mark.skipif(
    not SHARED_DATA.exists(), reason=f"shared data not present ({SHARED_DATA}; set LABELPILOT_SHARED_DATA)"
)

SENTIMENT_CONFIG = """<View>
  <Text name="text" value="$text"/>
  <Choices name="sentiment" toName="text" choice="single">
    <Choice value="Positive"/><Choice value="Negative"/>
  </Choices>
</View>"""

POSITIVE = [
    "I love this product, it is wonderful", "great quality and fast delivery", "excellent, works perfectly",
    "very happy with it, highly recommend", "amazing value, love it", "这个手机非常好用，很满意",
    "服务很好，下次还来", "质量很好，物流也快", "太棒了，非常喜欢", "好评，推荐购买",
]
NEGATIVE = [
    "terrible, it broke after a day", "awful quality, waste of money", "very bad, do not buy",
    "I hate it, it stopped working", "poor service and slow delivery", "质量太差了，很失望",
    "服务态度很差，不会再来", "坏了，退货", "太糟糕了，浪费钱", "差评，不推荐",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sentiment_tasks(start_id: int = 1, annotated: bool = True) -> list[dict[str, Any]]:
    """Label Studio export-shaped tasks (with annotations)."""
    tasks = []
    for i, (text, label) in enumerate([(t, "Positive") for t in POSITIVE] + [(t, "Negative") for t in NEGATIVE]):
        task: dict[str, Any] = {"id": start_id + i, "data": {"text": text}, "annotations": []}
        if annotated:
            task["annotations"] = [
                {
                    "id": 1000 + start_id + i,
                    "result": [
                        {"from_name": "sentiment", "to_name": "text", "type": "choices", "value": {"choices": [label]}}
                    ],
                    "was_cancelled": False,
                    "ground_truth": False,
                    "created_at": "2026-11-21T10:00:00Z",
                    "updated_at": "2026-11-21T10:00:00Z",
                }
            ]
        tasks.append(task)
    return tasks


@dataclass
class Server:
    url: str
    proc: subprocess.Popen
    data_dir: Path
    log: Path
    env: dict[str, str]

    def client(self, **kw: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, **{"timeout": 10, **kw})

    def tail(self, n: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"labelpilot serve exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            resp = httpx.get(url + "/health", timeout=1)
            # past the start-up warm-up (the text encoder loaded), so the first /setup's version is the one
            # that stays until a training
            if resp.status_code == 200 and not resp.json().get("warming_up"):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"labelpilot serve not healthy in {timeout}s:\n{log.read_text()[-3000:]}")


def launch_server(data_dir: Path, log: Path, **env_extra: str) -> Server:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABELPILOT_", "BASIC_AUTH", "LABEL_STUDIO"))}
    # The stand-in Label Studio listens on loopback, which the fetch policy refuses unless named (netpolicy);
    # tests/test_security.py starts servers with this set to "" to show the refusal.
    env["LABELPILOT_ALLOW_PRIVATE_HOSTS"] = "127.0.0.1"
    env.update(env_extra)
    proc = subprocess.Popen(
        [str(LABELPILOT), "serve", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir)],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc, log)
    except RuntimeError:
        stop_server(proc)
        raise
    return Server(url, proc, data_dir, log, env)


def stop_server(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Factory: start a real `labelpilot serve` on a free loopback port (optionally on a given data dir)."""
    started: list[Server] = []

    def _start(data_dir: Path | None = None, **env_extra: str) -> Server:
        n = len(started)
        server = launch_server(data_dir or (tmp_path / f"data-{n}"), tmp_path / f"server-{n}.log", **env_extra)
        started.append(server)
        return server

    yield _start
    for s in started:
        stop_server(s.proc)


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One default server for a whole test module (for tests that don't care about state)."""
    root = tmp_path_factory.mktemp("shared-server")
    server = launch_server(root / "data", root / "server.log")
    yield server
    stop_server(server.proc)


@dataclass
class FakeLabelStudio:
    """A stand-in for the Label Studio endpoints the backend calls: the export, the token refresh and the
    import of predictions (the suspect annotations after a training)."""

    url: str
    tasks: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    tokens: set[str] = field(default_factory=set)  # accepted 'Token x' / 'Bearer y' header values
    refresh: dict[str, str] = field(default_factory=dict)  # PAT -> access token
    requests: list[tuple[str, str, str]] = field(default_factory=list)  # (method, path, authorization)
    export_delay: float = 0.0
    files: dict[str, bytes] = field(default_factory=dict)  # path (with query) -> content, e.g. /data/upload/1/a.txt
    predictions: dict[int, list[dict[str, Any]]] = field(default_factory=dict)  # project -> imported predictions


@pytest.fixture
def fake_ls() -> Iterator[FakeLabelStudio]:
    state = FakeLabelStudio(url="")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, code: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            auth = self.headers.get("Authorization", "")
            state.requests.append(("GET", self.path, auth))
            if auth not in state.tokens:
                self._send(401, {"detail": "Authentication credentials were not provided."})
                return
            if self.path in state.files:
                data = state.files[self.path]
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            parts = self.path.split("?")[0].strip("/").split("/")
            if len(parts) == 4 and parts[:2] == ["api", "projects"] and parts[3] == "export":
                time.sleep(state.export_delay)
                self._send(200, state.tasks.get(int(parts[2]), []))
                return
            self._send(404, {"detail": "not found"})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            body = json.loads(self.rfile.read(length) or b"{}")
            state.requests.append(("POST", self.path, self.headers.get("Authorization", "")))
            if self.path == "/api/token/refresh/" and body.get("refresh") in state.refresh:
                self._send(200, {"access": state.refresh[body["refresh"]]})
                return
            parts = self.path.split("?")[0].strip("/").split("/")
            if parts[:2] == ["api", "projects"] and parts[3:] == ["import", "predictions"]:
                if self.headers.get("Authorization", "") not in state.tokens:
                    self._send(401, {"detail": "Authentication credentials were not provided."})
                    return
                state.predictions.setdefault(int(parts[2]), []).extend(body)
                self._send(201, {"created": len(body)})
                return
            self._send(401, {"detail": "Token is invalid or expired"})

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


def cache_folder(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """A folder in pytest's cache directory (kept between runs: exported ONNX graphs, OCR results), or a
    temporary one when pytest runs without its cache plugin."""
    cache = getattr(request.config, "cache", None)
    return cache.mkdir(name) if cache is not None else tmp_path_factory.mktemp(name)


def wait_for(predicate: Callable[[], Any], timeout: float = 60, interval: float = 0.2, what: str = "condition") -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
