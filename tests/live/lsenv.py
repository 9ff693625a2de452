"""Process plumbing for the live suite: Label Studio's own virtualenv, its data-dir template and the
subprocesses (Label Studio, ``labelpilot serve``).

Nothing here imports Label Studio: it lives in a separate, cached virtualenv and only ever runs as a
subprocess. See tests/live/README.md for the cache layout and the environment knobs.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from labelpilot import studio  # one home for Label Studio's environment (the studio command uses it too)
from labelpilot.studio import stop_group

LS_VERSION = studio.LS_VERSION
LS_REQUIREMENT = f"label-studio=={LS_VERSION}"
# the versions of Label Studio's own dependencies that the live suite passed with (pip constraints)
LS_CONSTRAINTS = Path(__file__).with_name("ls-constraints.txt")

# Credentials baked into the data-dir template (live doc §2/§3). They only apply when the user and the
# organisation are first created, so they are part of the template's identity (see TEMPLATE_ID).
ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "adminpass123"
LEGACY_TOKEN = "lptoken0123456789abcdef0123456789abcdef"
TEMPLATE_ID = {"ls": LS_VERSION, "user": ADMIN_EMAIL, "token": LEGACY_TOKEN, "legacy": True, "format": 1}

VENV_MARKER = ".labelpilot-ls-venv.json"
TEMPLATE_MARKER = ".labelpilot-ls-template.json"

SCRUBBED_VARS = studio.LS_SCRUBBED  # plain names Label Studio's get_env() falls back to: never passed on

# pip output that means "no package registry could be reached" rather than a broken install.
_NETWORK_ERRORS = (
    "NewConnectionError",
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Name or service not known",
    "Network is unreachable",
    "Connection refused",
    "ConnectTimeoutError",
    "Read timed out",
    "ProxyError",
    "Could not fetch URL",
    "No matching distribution found for label-studio",
    "connection broken",
    "Max retries exceeded",
)


class LabelStudioUnavailable(RuntimeError):
    """Label Studio cannot be installed here (no package registry); the live tests are skipped."""


# ----------------------------------------------------------------------------------------------------
# cache layout


def cache_root() -> Path:
    configured = os.environ.get("LABELPILOT_LS_CACHE")
    root = Path(configured).expanduser() if configured else Path.home() / ".cache" / "labelpilot"
    return root / f"label-studio-{LS_VERSION}"


def venv_dir() -> Path:
    return cache_root() / "venv"


def template_dir() -> Path:
    return cache_root() / "template-data"


@contextlib.contextmanager
def file_lock(path: Path, what: str) -> Iterator[None]:
    """An exclusive fcntl lock, so that two pytest processes never build the same cache entry."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"[live] waiting for another process that holds {path} ({what})", file=sys.stderr)
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def base_python() -> str:
    """The python3.11 the project venv was made from (never the project venv itself)."""
    base = getattr(sys, "_base_executable", None)
    if sys.version_info[:2] == (3, 11) and base and Path(base).exists():
        return base
    found = shutil.which("python3.11")
    if found:
        return found
    raise LabelStudioUnavailable("no python3.11 interpreter found to build Label Studio's virtualenv")


# ----------------------------------------------------------------------------------------------------
# Label Studio's virtualenv


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def constraints_digest() -> str:
    return hashlib.sha256(LS_CONSTRAINTS.read_bytes()).hexdigest()[:16]


def venv_is_valid(venv: Path) -> bool:
    marker = _read_json(venv / VENV_MARKER)
    return bool(
        marker
        and marker.get("requirement") == LS_REQUIREMENT
        and marker.get("constraints") == constraints_digest()
        and (venv / "bin" / "python").exists()
        and (venv / "bin" / "label-studio").exists()
    )


def _relocate(tmp: Path, final: Path) -> None:
    """Point the scripts of a venv built in ``tmp`` at ``final`` (pip writes absolute shebangs)."""
    old, new = str(tmp).encode(), str(final).encode()
    for path in [*(tmp / "bin").iterdir(), tmp / "pyvenv.cfg"]:
        if path.is_symlink() or not path.is_file():
            continue
        data = path.read_bytes()
        if old in data[:4096]:
            path.write_bytes(data.replace(old, new))


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _run_pip(cmd: list[str], *, timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """pip, with a stalled download (no answer within ``timeout``) reported like an unreachable registry."""
    try:
        return subprocess.run(cmd, timeout=timeout, **kwargs)
    except subprocess.TimeoutExpired as exc:
        raise LabelStudioUnavailable(
            f"cannot install {LS_REQUIREMENT}: pip made no progress within {timeout:.0f} s "
            "(package registry unreachable or too slow)"
        ) from exc


def ensure_ls_venv() -> Path:
    """Return a virtualenv with label-studio==LS_VERSION, installing it once per machine.

    The install goes into a temporary sibling directory which is renamed into place only after the
    package imports with the right version, so an interrupted install never looks valid.
    Raises LabelStudioUnavailable when no package registry can be reached.
    """
    final = venv_dir()
    if venv_is_valid(final):
        return final
    root = cache_root()
    with file_lock(root / "install.lock", "installing Label Studio"):
        if venv_is_valid(final):  # somebody else finished while we waited
            return final
        for stale in root.glob("venv.tmp-*"):  # leftovers of interrupted installs (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        python = base_python()
        tmp = Path(tempfile.mkdtemp(prefix="venv.tmp-", dir=root))
        log_path = root / "install.log"
        started = time.monotonic()
        print(f"[live] installing {LS_REQUIREMENT} into {final} (one-off, ~1-3 min)", file=sys.stderr)
        try:
            subprocess.run(
                [python, "-m", "venv", "--prompt", f"label-studio-{LS_VERSION}", str(tmp)],
                check=True,
                capture_output=True,
                timeout=300,
            )
            with open(log_path, "w") as log:
                proc = _run_pip(
                    [
                        str(tmp / "bin" / "python"),
                        "-m",
                        "pip",
                        "install",
                        "--no-input",
                        "--disable-pip-version-check",
                        "--timeout",
                        "60",
                        "--retries",
                        "3",
                        "--constraint",
                        str(LS_CONSTRAINTS),
                        LS_REQUIREMENT,
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    timeout=1800,
                    env={**os.environ, "PIP_NO_INPUT": "1"},
                )
            output = log_path.read_text(errors="replace")
            if proc.returncode != 0:
                if any(marker.lower() in output.lower() for marker in _NETWORK_ERRORS):
                    raise LabelStudioUnavailable(
                        f"cannot install {LS_REQUIREMENT}: no package registry reachable "
                        f"(pip exit {proc.returncode}: {_tail(output, 1).strip()}; full log {log_path})"
                    )
                raise RuntimeError(f"pip install {LS_REQUIREMENT} failed (exit {proc.returncode}):\n{_tail(output)}")
            check = subprocess.run(
                [str(tmp / "bin" / "python"), "-c", "import label_studio; print(label_studio.__version__)"],
                capture_output=True,
                text=True,
                timeout=120,
            )
            if check.returncode != 0 or check.stdout.strip() != LS_VERSION:
                raise RuntimeError(
                    f"installed Label Studio does not import as {LS_VERSION}: "
                    f"{check.stdout.strip()} {_tail(check.stderr)}"
                )
            _relocate(tmp, final)
            (tmp / VENV_MARKER).write_text(
                json.dumps(
                    {
                        "requirement": LS_REQUIREMENT,
                        "constraints": constraints_digest(),
                        "python": python,
                        "installed_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                        "seconds": round(time.monotonic() - started, 1),
                    }
                )
            )
            if final.exists():  # an invalid leftover: move it out of the way first
                trash = Path(tempfile.mkdtemp(prefix="venv.old-", dir=root))
                final.rename(trash / "venv")
                shutil.rmtree(trash, ignore_errors=True)
            tmp.rename(final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        print(f"[live] Label Studio installed in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return final


# ----------------------------------------------------------------------------------------------------
# subprocess helpers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail_file(path: Path, lines: int = 60) -> str:
    try:
        return _tail(path.read_text(errors="replace"), lines)
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"


def keep_logs(*paths: Path) -> Path:
    """Copy this session's logs to ``<cache>/last-run-logs`` (pytest prunes its old tmp dirs quickly)."""
    dest = cache_root() / "last-run-logs"
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(dict.fromkeys(paths)):
        with contextlib.suppress(OSError):
            shutil.copy2(path, dest / f"{i:02d}-{path.parent.name}-{path.name}")
    return dest


def _warming_up(resp: httpx.Response) -> bool:
    try:
        body = resp.json()
    except ValueError:
        return False
    return isinstance(body, dict) and bool(body.get("warming_up"))


def wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float, what: str) -> float:
    """Poll ``url`` until it answers 200; fail fast if the process died. Returns seconds waited."""
    started = time.monotonic()
    with httpx.Client(timeout=2.0) as client:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{what} exited with code {proc.returncode} before it was healthy; log {log}:\n{tail_file(log)}"
                )
            try:
                resp = client.get(url)
                # labelpilot's /health says warming_up until its start-up warm-up (the text encoder) is done,
                # so the first /setup's version is the one that stays until a training
                if resp.status_code == 200 and not _warming_up(resp):
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"{what} not healthy at {url} after {timeout:.0f} s; log {log}:\n{tail_file(log)}")
            time.sleep(0.3)


# ----------------------------------------------------------------------------------------------------
# Label Studio server


@dataclass
class LabelStudioProcess:
    base_url: str
    port: int
    root: Path
    data_dir: Path
    files_root: Path
    log_path: Path
    proc: subprocess.Popen
    started_from_template: bool
    startup_seconds: float
    env: Mapping[str, str] = field(repr=False, default_factory=dict)

    def stop(self) -> None:
        stop_group(self.proc)


def ls_environment(root: Path, data_dir: Path, files_root: Path, port: int) -> dict[str, str]:
    creds = {"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD, "token": LEGACY_TOKEN}
    return studio.ls_environment(root, port, creds, data_dir=data_dir, files_root=files_root)


def template_is_valid(path: Path) -> bool:
    return _read_json(path / TEMPLATE_MARKER) == TEMPLATE_ID and (path / ".env").exists()


def _save_template(data_dir: Path) -> None:
    """Snapshot a freshly migrated, idle data dir (sqlite is consistent then) as the template."""
    final = template_dir()
    root = cache_root()
    with file_lock(root / "template.lock", "saving the Label Studio data-dir template"):
        if template_is_valid(final):
            return
        tmp = Path(tempfile.mkdtemp(prefix="template.tmp-", dir=root))
        try:
            shutil.copytree(data_dir, tmp / "data", symlinks=True)
            (tmp / "data" / TEMPLATE_MARKER).write_text(json.dumps(TEMPLATE_ID))
            if final.exists():
                shutil.rmtree(final)
            (tmp / "data").rename(final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _launch(
    cmd: list[str],
    env: dict[str, str],
    cwd: Path,
    log_path: Path,
    health_url: str,
    timeout: float,
    what: str,
    then: Callable[[], None] | None = None,
) -> tuple[subprocess.Popen, float]:
    """Start ``cmd`` in its own process group, output appended to ``log_path``, and wait until ``health_url``
    answers (then run ``then``). On any failure the group is stopped before the error propagates."""
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, cwd=cwd,
        )
    try:
        waited = wait_healthy(health_url, proc, log_path, timeout, what)
        if then is not None:
            then()
    except BaseException:
        stop_group(proc)
        raise
    return proc, waited


def start_label_studio(venv: Path, root: Path, *, timeout: float = 360.0) -> LabelStudioProcess:
    """Start Label Studio headless on a free loopback port with a data dir under ``root``.

    A template that does not start (copied from another install, damaged...) is thrown away and Label
    Studio is started once more from scratch, which also makes a new template.
    """
    try:
        return _start_label_studio(venv, root, timeout=timeout, use_template=True)
    except RuntimeError as exc:
        if not template_is_valid(template_dir()):
            raise
        print(f"[live] Label Studio did not start from the cached template; starting cold. ({exc})", file=sys.stderr)
        with file_lock(cache_root() / "template.lock", "discarding a broken data-dir template"):
            shutil.rmtree(template_dir(), ignore_errors=True)
        shutil.rmtree(root / "data", ignore_errors=True)
        return _start_label_studio(venv, root, timeout=timeout, use_template=False)


def _start_label_studio(venv: Path, root: Path, *, timeout: float, use_template: bool) -> LabelStudioProcess:
    data_dir, files_root = root / "data", root / "files"
    files_root.mkdir(parents=True, exist_ok=True)
    template = template_dir()
    from_template = use_template and template_is_valid(template)
    if from_template:
        timeout = min(timeout, 120.0)  # a copy of the template is up in seconds; fall back to cold soon
    if from_template:
        shutil.copytree(template, data_dir, symlinks=True)
        (data_dir / TEMPLATE_MARKER).unlink(missing_ok=True)
    port = free_port()
    env = ls_environment(root, data_dir, files_root, port)
    log_path = root / "label-studio.log"
    cmd = [
        str(venv / "bin" / "label-studio"),
        "start",
        "--no-browser",
        "--data-dir",
        str(data_dir),
        "--internal-host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    base = f"http://127.0.0.1:{port}"
    proc, waited = _launch(
        cmd, env, root, log_path, base + "/health", timeout, "Label Studio",
        then=None if from_template else (lambda: _save_template(data_dir)),
    )
    return LabelStudioProcess(
        base_url=base,
        port=port,
        root=root,
        data_dir=data_dir,
        files_root=files_root,
        log_path=log_path,
        proc=proc,
        started_from_template=from_template,
        startup_seconds=waited,
        env=env,
    )


# ----------------------------------------------------------------------------------------------------
# labelpilot serve


def labelpilot_executable() -> Path:
    """The ``labelpilot`` console script of the venv running the tests (the project's .venv)."""
    beside = Path(sys.executable).parent / "labelpilot"
    if beside.exists():
        return beside
    repo_venv = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "labelpilot"
    if repo_venv.exists():
        return repo_venv
    found = shutil.which("labelpilot")
    if found:
        return Path(found)
    raise RuntimeError("no `labelpilot` executable found (is the project installed in the venv?)")


# Variables of the test runner's environment that would change the backend's behaviour behind a
# test's back; each test passes the ones it wants explicitly.
_BACKEND_ENV_PREFIXES = ("LABEL_STUDIO_", "LABELPILOT_", "BASIC_AUTH_")


@dataclass
class BackendProcess:
    url: str
    port: int
    root: Path
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen
    env_extra: Mapping[str, str]
    startup_seconds: float

    def stop(self) -> None:
        stop_group(self.proc)


def start_backend(
    root: Path,
    extra_env: Mapping[str, str] | None = None,
    *,
    timeout: float = 90.0,
    port: int | None = None,
) -> BackendProcess:
    """Start ``labelpilot serve`` with its data dir and log under ``root`` (both reused on a restart)."""
    port = port or free_port()
    data_dir = root / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(_BACKEND_ENV_PREFIXES)}
    env["LABELPILOT_ALLOW_PRIVATE_HOSTS"] = "127.0.0.1,localhost"  # Label Studio runs on loopback here
    env.update(extra_env or {})
    env["PYTHONUNBUFFERED"] = "1"
    log_path = root / "labelpilot.log"
    cmd = [
        str(labelpilot_executable()),
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
    ]
    url = f"http://127.0.0.1:{port}"
    proc, waited = _launch(cmd, env, root, log_path, url + "/health", timeout, "labelpilot serve")
    return BackendProcess(
        url=url,
        port=port,
        root=root,
        data_dir=data_dir,
        log_path=log_path,
        proc=proc,
        env_extra=dict(extra_env or {}),
        startup_seconds=waited,
    )
