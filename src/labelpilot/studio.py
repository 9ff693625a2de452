"""``labelpilot studio``: one command that brings up a local Label Studio with labelpilot already connected to a
new project (issue 14; seed 000 ran Label Studio, the backend and the API from one script).

What it does, in order: checks the label config (labelpilot's own parser, so a config no family can pre-label
fails before anything starts); starts Label Studio headless on 127.0.0.1 from its own virtualenv, with the
settings of ``shared/label-studio-live.md`` §2 (no outbound traffic, legacy API token on, the backend allowed on
loopback); starts ``labelpilot serve`` beside it with ``LABEL_STUDIO_URL``/``LABEL_STUDIO_API_KEY`` pointing
at that Label Studio; creates the project (and imports tasks if given); connects the backend with ``POST
/api/ml``; prints the project URL and the login; then waits until Ctrl-C (or SIGTERM) and stops both.

Nothing is installed or fetched: Label Studio must already be in a virtualenv (``--ls-venv``; by default the
one the live suite caches, ``${LABELPILOT_LS_CACHE:-~/.cache/labelpilot}/label-studio-1.23.2/venv``). Both
servers keep their data under ``--root``; the admin's generated password and token are kept in
``<root>/studio.json`` (mode 0600), so a second run logs in to the same Label Studio and adds a new project.
The HTTP calls go only to the Label Studio this command started on loopback (no outside URL), so they use
httpx directly rather than the fetch policy of :mod:`labelpilot.netpolicy`.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from labelpilot.errors import InputError, LabelpilotError, LabelStudioError
from labelpilot.schema import parse_label_config, require_supported

LS_VERSION = "1.23.2"
DEFAULT_ADMIN = "admin@example.com"
DEFAULT_LABEL_CONFIG = """<View>
  <Text name="text" value="$text"/>
  <Choices name="sentiment" toName="text" choice="single" showInLine="true">
    <Choice value="Positive"/>
    <Choice value="Negative"/>
    <Choice value="Neutral"/>
  </Choices>
</View>"""
# Plain names Label Studio's get_env() falls back to (LABEL_STUDIO_X -> HEARTEX_X -> X): never passed on.
LS_SCRUBBED = ("HOST", "PORT", "USERNAME", "PASSWORD", "USER_TOKEN", "DEBUG", "LOG_LEVEL")
LS_INHERITED = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "SSL_CERT_FILE", "SSL_CERT_DIR")


def default_ls_venv() -> Path:
    """Where the live suite caches Label Studio's virtualenv (tests/live/lsenv.py builds it)."""
    configured = os.environ.get("LABELPILOT_LS_CACHE")
    root = Path(configured).expanduser() if configured else Path.home() / ".cache" / "labelpilot"
    return root / f"label-studio-{LS_VERSION}" / "venv"


@dataclass
class StudioOptions:
    root: Path
    label_config: str = DEFAULT_LABEL_CONFIG
    title: str = "labelpilot studio"
    tasks: list[dict[str, Any]] = field(default_factory=list)
    ls_port: int = 8080
    port: int = 9090
    ls_venv: Path | None = None
    username: str = DEFAULT_ADMIN
    password: str | None = None  # generated on the first run and kept in <root>/studio.json
    timeout: float = 600.0  # a first start of Label Studio migrates its database (~45-140 s on 2 idle cores)


@dataclass
class Studio:
    """The running pair and the project that connects them."""

    ls_url: str
    backend_url: str
    project_id: int
    ml_backend_id: int
    username: str
    password: str
    token: str
    processes: list[subprocess.Popen]

    @property
    def project_url(self) -> str:
        return f"{self.ls_url}/projects/{self.project_id}/"

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.processes)

    def stop(self) -> None:
        for proc in reversed(self.processes):
            stop_group(proc)


def stop_group(proc: subprocess.Popen, grace: float = 15.0) -> None:
    """SIGINT the process group (started with start_new_session=True), then SIGKILL what is left."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


def check_label_config(config: str) -> None:
    """A config labelpilot cannot read, or cannot pre-label any control of, fails before anything starts."""
    try:
        require_supported(parse_label_config(config))
    except LabelpilotError as exc:
        raise InputError(f"label_config: {exc.message}", field="label_config") from exc


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _credentials(opts: StudioOptions) -> dict[str, str]:
    """The admin login of this root: read from studio.json, or made (and saved) on the first run."""
    path = opts.root / "studio.json"
    if path.exists():
        saved = json.loads(path.read_text())
        if opts.password and opts.password != saved["password"]:
            raise InputError(f"password: {path} holds another password for this Label Studio", field="password")
        return saved
    creds = {
        "username": opts.username,
        "password": opts.password or secrets.token_urlsafe(12),
        "token": secrets.token_hex(20),  # the admin's legacy API token (set when the user is first created)
    }
    opts.root.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(creds, fh)
    return creds


def ls_environment(root: Path, port: int, creds: dict[str, str], *, data_dir: Path | None = None,
                   files_root: Path | None = None) -> dict[str, str]:
    """Label Studio's environment: only PATH/locale/TLS inherited, everything else set here (the live suite
    uses it too). ``data_dir`` / ``files_root`` default to ``root/label-studio`` and ``root/files``."""
    env = {k: os.environ[k] for k in LS_INHERITED if k in os.environ}
    env.update({
        "HOME": str(root),  # else ~/.local/share/label-studio is created even with --data-dir
        "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir or root / "label-studio"),
        "LABEL_STUDIO_USERNAME": creds["username"],
        "LABEL_STUDIO_PASSWORD": creds["password"],
        "LABEL_STUDIO_USER_TOKEN": creds["token"],
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
        "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(files_root or root / "files"),
        "LABEL_STUDIO_ML_BLOCK_LOCAL_IP": "false",  # the backend is on 127.0.0.1
        "LABEL_STUDIO_SSRF_PROTECTION_ENABLED": "false",  # else the auto-created /webhook is refused
        "SENTRY_DSN": "",
        "FRONTEND_SENTRY_DSN": "",
        "LABEL_STUDIO_LATEST_VERSION_CHECK": "false",
        "LABEL_STUDIO_COLLECT_ANALYTICS": "false",
        "LABEL_STUDIO_HOST": f"http://127.0.0.1:{port}",
    })
    for name in LS_SCRUBBED:
        env.pop(name, None)
    return env


def _spawn(cmd: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    with open(log_path, "ab") as log:
        return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=log_path.parent)


def _tail(path: Path, lines: int = 30) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def wait_healthy(url: str, proc: subprocess.Popen, log_path: Path, timeout: float, what: str) -> None:
    """Poll ``url`` until 200 (and, for labelpilot, past its warm-up); fail at once if the process died."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2.0) as client:
        while True:
            if proc.poll() is not None:
                raise LabelpilotError(f"{what} exited with code {proc.returncode}; {log_path}:\n{_tail(log_path)}")
            with contextlib.suppress(httpx.HTTPError, ValueError):
                resp = client.get(url)
                if resp.status_code == 200 and not resp.json().get("warming_up"):
                    return
            if time.monotonic() > deadline:
                raise LabelpilotError(f"{what} not healthy at {url} after {timeout:.0f} s; {log_path}")
            time.sleep(0.5)


def _ls_call(client: httpx.Client, method: str, path: str, what: str, **kw: Any) -> Any:
    try:
        resp = client.request(method, path, **kw)
    except httpx.HTTPError as exc:
        raise LabelStudioError(f"{what}: Label Studio did not answer ({exc})") from exc
    if resp.status_code >= 400:
        raise LabelStudioError(f"{what}: Label Studio answered {resp.status_code}: {resp.text[:500]}")
    return resp.json() if resp.content else None


def create_connected_project(ls_url: str, token: str, backend_url: str, opts: StudioOptions) -> tuple[int, int]:
    """Create the project (with its tasks) and connect the backend; returns (project id, ML backend id)."""
    with httpx.Client(base_url=ls_url, headers={"Authorization": f"Token {token}"}, timeout=60.0) as client:
        project = _ls_call(client, "POST", "/api/projects", "creating the project",
                           json={"title": opts.title, "label_config": opts.label_config})
        pid = int(project["id"])
        if opts.tasks:
            _ls_call(client, "POST", f"/api/projects/{pid}/import", "importing the tasks", json=opts.tasks)
        ml = _ls_call(client, "POST", "/api/ml", "connecting the backend",
                      json={"url": backend_url, "project": pid, "title": "labelpilot", "is_interactive": True})
        if ml.get("state") != "CO":
            raise LabelStudioError(f"connecting the backend: Label Studio reports state {ml.get('state')!r}: {ml}")
        return pid, int(ml["id"])


def start(opts: StudioOptions) -> Studio:
    """Start Label Studio and the backend and connect them through a new project (see the module doc).
    On any failure both processes are stopped before the error propagates."""
    check_label_config(opts.label_config)
    venv = opts.ls_venv or default_ls_venv()
    ls_bin = venv / "bin" / "label-studio"
    if not ls_bin.exists():
        raise InputError(
            f"ls_venv: no Label Studio in {venv}. Install it once with `python3.11 -m venv {venv} && "
            f"{venv}/bin/pip install label-studio=={LS_VERSION}` (or run the live suite, which caches it there)",
            field="ls_venv",
        )
    for name, port in (("ls_port", opts.ls_port), ("port", opts.port)):
        if not _port_free(port):  # Label Studio would silently move to the next port
            raise InputError(f"{name}: port {port} on 127.0.0.1 is in use", field=name)
    creds = _credentials(opts)
    (opts.root / "files").mkdir(parents=True, exist_ok=True)
    ls_url, backend_url = f"http://127.0.0.1:{opts.ls_port}", f"http://127.0.0.1:{opts.port}"
    processes: list[subprocess.Popen] = []
    try:
        ls_log = opts.root / "label-studio.log"
        processes.append(_spawn(
            [str(ls_bin), "start", "--no-browser", "--data-dir", str(opts.root / "label-studio"),
             "--internal-host", "127.0.0.1", "--port", str(opts.ls_port)],
            ls_environment(opts.root, opts.ls_port, creds), ls_log,
        ))
        backend_log = opts.root / "labelpilot.log"
        env = {**os.environ, "LABEL_STUDIO_URL": ls_url, "LABEL_STUDIO_API_KEY": creds["token"],
               "PYTHONUNBUFFERED": "1"}
        processes.append(_spawn(
            [sys.executable, "-m", "labelpilot.cli", "serve", "--host", "127.0.0.1", "--port", str(opts.port),
             "--data-dir", str(opts.root / "labelpilot-data")],
            env, backend_log,
        ))
        wait_healthy(backend_url + "/health", processes[1], backend_log, min(opts.timeout, 120.0), "labelpilot serve")
        wait_healthy(ls_url + "/health", processes[0], ls_log, opts.timeout, "Label Studio")
        pid, ml_id = create_connected_project(ls_url, creds["token"], backend_url, opts)
    except BaseException:
        for proc in reversed(processes):
            stop_group(proc)
        raise
    return Studio(ls_url=ls_url, backend_url=backend_url, project_id=pid, ml_backend_id=ml_id,
                  username=creds["username"], password=creds["password"], token=creds["token"], processes=processes)


def _say(line: str) -> None:
    print(line, flush=True)  # plain lines (no rich wrapping): scripts and tests read them from a pipe


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run(opts: StudioOptions, out: Callable[[str], None] = _say) -> int:
    """``labelpilot studio``: start, print where to go, wait for Ctrl-C or SIGTERM (0) or a server dying (1),
    then stop both. SIGTERM acts like Ctrl-C, also while the servers are still starting."""
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        try:
            studio = start(opts)
        except KeyboardInterrupt:
            return 130
        try:
            out(f"Label Studio {studio.ls_url}  (log in as {studio.username} / {studio.password})")
            out(f"labelpilot   {studio.backend_url}  (data under {opts.root.resolve()})")
            out(f"project {studio.project_id} connected to ML backend {studio.ml_backend_id}: {studio.project_url}")
            out("Ctrl-C stops both.")
            while studio.alive():
                time.sleep(0.5)
            return 1
        except KeyboardInterrupt:
            return 0
        finally:
            studio.stop()
    finally:
        signal.signal(signal.SIGTERM, previous)
