"""Fixtures for the end-to-end suite against a real Label Studio (marker ``live``).

* ``ls_venv``     label-studio==1.23.2 in its own cached virtualenv (installed once, atomically, under an
                  fcntl lock); skips the live tests with the reason when no package registry is reachable.
* ``ls_server``   one Label Studio for the whole session, started from a cached pristine data-dir template.
* ``labelpilot``  a factory (module scope) that starts ``labelpilot serve`` subprocesses with per-scenario
                  environment variables and stops them when the module is done.

Set ``LABELPILOT_SKIP_LIVE=1`` to skip the suite on purpose. Nothing here imports Label Studio.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from .lsapi import LabelStudioAPI
from .lsenv import (
    ADMIN_EMAIL,
    LEGACY_TOKEN,
    BackendProcess,
    LabelStudioProcess,
    LabelStudioUnavailable,
    ensure_ls_venv,
    keep_logs,
    start_backend,
    start_label_studio,
    tail_file,
)

LIVE_DIR = Path(__file__).parent
# Generous backstop per test: the first live test pays for the one-off install (~1-3 min) and a cold
# Label Studio start (~45-65 s); every wait inside the scenarios has its own, tighter timeout.
LIVE_TEST_TIMEOUT = 1200

# (title, log file) of every process the live fixtures started; their tails go into failure reports.
_PROCESS_LOGS: list[tuple[str, Path]] = []
# every log of the session, copied to <cache>/last-run-logs when Label Studio stops
_SESSION_LOGS: list[Path] = []


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if LIVE_DIR in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.live)
            if item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(LIVE_TEST_TIMEOUT))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if report.failed and item.get_closest_marker("live") is not None:
        for title, path in _PROCESS_LOGS:
            report.sections.append((f"{title} (tail of {path})", _readable_tail(path)))
    return report


def _readable_tail(path: Path, lines: int = 80) -> str:
    """The end of a log without Label Studio's doubled lines (live doc G14) and its polling noise."""
    out: list[str] = []
    for line in tail_file(path, 2000).splitlines():
        if out and line == out[-1]:
            continue
        if '"GET /api/ml/' in line and "django.server" in line:
            continue
        out.append(line)
    return "\n".join(out[-lines:])


# ----------------------------------------------------------------------------------------------------
# Label Studio


@pytest.fixture(scope="session")
def ls_venv() -> Path:
    if os.environ.get("LABELPILOT_SKIP_LIVE", "").lower() in ("1", "true", "yes"):
        pytest.skip("live Label Studio tests disabled by LABELPILOT_SKIP_LIVE")
    try:
        return ensure_ls_venv()
    except LabelStudioUnavailable as exc:
        pytest.skip(f"Label Studio unavailable: {exc}")


@dataclass
class LiveLabelStudio:
    """What ``ls_server`` yields."""

    url: str
    session: httpx.Client  # Authorization: Token <legacy token>
    api: LabelStudioAPI  # helpers over that same session
    files_root: Path
    process: LabelStudioProcess
    legacy_token: str = LEGACY_TOKEN
    _pat: str | None = field(default=None, repr=False)

    def personal_access_token(self) -> str:
        """The admin's PAT, minted once per server (only one live PAT per user, live doc G12)."""
        if self._pat is None:
            self._pat = self.api.create_pat()
        return self._pat

    def log_mark(self) -> int:
        """A position in Label Studio's log; pass it to ``log_errors_about(since=...)``."""
        return self.process.log_path.stat().st_size

    def log_errors_about(self, backend_url: str, since: int = 0) -> list[str]:
        """Errors Label Studio logged (after ``since``) while calling ``backend_url``: webhook time-outs,
        refused connections... LS logs failed webhook sends but never fails the API call behind them."""
        port = backend_url.rsplit(":", 1)[-1].split("/", 1)[0]
        with open(self.process.log_path, "rb") as fh:
            fh.seek(since)
            text = fh.read().decode(errors="replace")
        hits = [
            line
            for line in text.splitlines()
            if (backend_url in line or f"port={port})" in line) and ("ERROR" in line or "rror" in line)
        ]
        return list(dict.fromkeys(hits))

    def pat_api(self) -> LabelStudioAPI:
        """A client that authenticates like a modern LS user: Bearer access tokens from the PAT."""
        return LabelStudioAPI(self.url, pat=self.personal_access_token())


@pytest.fixture(scope="session")
def ls_server(ls_venv: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveLabelStudio]:
    root = tmp_path_factory.mktemp("label-studio")
    proc = start_label_studio(ls_venv, root)
    _PROCESS_LOGS.append(("Label Studio log", proc.log_path))
    how = "from the cached template" if proc.started_from_template else "cold (template saved for next time)"
    print(
        f"\n[live] Label Studio {proc.base_url} healthy after {proc.startup_seconds:.1f} s, {how}; log {proc.log_path}"
    )
    api = LabelStudioAPI(proc.base_url, LEGACY_TOKEN)
    try:
        me = api.whoami()
        assert me["email"] == ADMIN_EMAIL, me
        yield LiveLabelStudio(url=proc.base_url, session=api.http, api=api, files_root=proc.files_root, process=proc)
    finally:
        api.close()
        proc.stop()
        print(f"\n[live] logs of this session kept in {keep_logs(proc.log_path, *_SESSION_LOGS)}")


@pytest.fixture(scope="session")
def ls(ls_server: LiveLabelStudio) -> LabelStudioAPI:
    """The legacy-token API client (a shortcut for ``ls_server.api``)."""
    return ls_server.api


# ----------------------------------------------------------------------------------------------------
# labelpilot serve


class BackendFactory:
    """Starts ``labelpilot serve`` processes; all are stopped when the owning fixture ends."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory, ls_url: str):
        self._tmp = tmp_path_factory
        self.ls_url = ls_url
        self.started: list[BackendProcess] = []

    def start(self, name: str = "backend", **env: str | int) -> BackendProcess:
        root = self._tmp.mktemp(f"labelpilot-{name}")
        backend = start_backend(root, {k: str(v) for k, v in env.items()})
        self.started.append(backend)
        _PROCESS_LOGS.append((f"labelpilot serve [{name}] log", backend.log_path))
        _SESSION_LOGS.append(backend.log_path)
        print(
            f"\n[live] labelpilot serve [{name}] {backend.url} healthy after {backend.startup_seconds:.1f} s "
            f"(env {sorted(env)}); log {backend.log_path}"
        )
        return backend

    def restart(self, backend: BackendProcess) -> BackendProcess:
        """Stop ``backend`` and start it again on the same port with the same data dir and env."""
        backend.stop()
        again = start_backend(backend.root, backend.env_extra, port=backend.port)
        self.started.append(again)
        print(f"\n[live] labelpilot serve restarted on {again.url} in {again.startup_seconds:.1f} s")
        return again

    def stop_all(self) -> None:
        for backend in self.started:
            backend.stop()
            entry = next((e for e in _PROCESS_LOGS if e[1] == backend.log_path), None)
            if entry:
                _PROCESS_LOGS.remove(entry)
        self.started.clear()


@pytest.fixture(scope="module")
def labelpilot(ls_server: LiveLabelStudio, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackendFactory]:
    factory = BackendFactory(tmp_path_factory, ls_server.url)
    try:
        yield factory
    finally:
        factory.stop_all()
