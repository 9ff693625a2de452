"""Smoke tests of the live infrastructure itself: Label Studio and ``labelpilot serve`` come up."""

from __future__ import annotations

import httpx

from .lsenv import SCRUBBED_VARS


def test_label_studio_is_up_headless(ls_server):
    proc = ls_server.process
    # our port, not one LS picked after finding it busy (live doc §2, port gotcha)
    assert ls_server.url == f"http://127.0.0.1:{proc.port}"
    assert httpx.get(ls_server.url + "/health", timeout=5).json()["status"] == "UP"
    assert not set(SCRUBBED_VARS) & set(proc.env)
    assert proc.env["LABEL_STUDIO_HOST"] == ls_server.url
    assert ls_server.api.jwt_settings()["legacy_api_tokens_enabled"] is True
    # the data dir is ours, nothing was written to the real home directory
    assert (proc.data_dir / "label_studio.sqlite3").exists()
    assert ls_server.session.headers["Authorization"] == f"Token {ls_server.legacy_token}"


def test_labelpilot_serve_starts(labelpilot):
    backend = labelpilot.start("smoke")
    health = httpx.get(backend.url + "/health", timeout=5)
    assert health.status_code == 200
    assert health.json()["status"] == "UP", health.text
    backend.stop()
    assert backend.proc.poll() is not None
