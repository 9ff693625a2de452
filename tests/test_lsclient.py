"""Label Studio client: token kinds, PAT refresh to Bearer, clear messages when LS refuses."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time

import pytest

import labelpilot.lsclient as lsclient
from labelpilot.errors import LabelStudioError
from labelpilot.lsclient import LabelStudioClient, token_kind


def jwt(payload: dict) -> str:
    def enc(d: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip("=")

    return f"{enc({'alg': 'HS256'})}.{enc(payload)}.c2ln"


def test_token_kinds() -> None:
    assert token_kind("0123456789abcdef") == "legacy"
    assert token_kind(jwt({"token_type": "refresh", "exp": time.time() + 1e6})) == "refresh"
    assert token_kind(jwt({"token_type": "access", "exp": time.time() + 300})) == "access"
    assert token_kind("a.b.c") == "legacy"


def test_legacy_token_export(fake_ls) -> None:
    fake_ls.tokens.add("Token legacy-key")
    fake_ls.tasks[4] = [{"id": 1, "data": {"text": "x"}, "annotations": []}]
    client = LabelStudioClient(fake_ls.url, "legacy-key")
    assert client.export_tasks(4) == fake_ls.tasks[4]
    assert fake_ls.requests[-1][2] == "Token legacy-key"


def test_pat_is_exchanged_and_sent_as_bearer_and_cached(fake_ls) -> None:
    pat = jwt({"token_type": "refresh", "exp": time.time() + 1e8})
    access = jwt({"token_type": "access", "exp": time.time() + 300})
    fake_ls.refresh[pat] = access
    fake_ls.tokens.add(f"Bearer {access}")
    client = LabelStudioClient(fake_ls.url, pat)
    client.export_tasks(1)
    client.export_tasks(1)
    refreshes = [r for r in fake_ls.requests if r[1] == "/api/token/refresh/"]
    assert len(refreshes) == 1
    assert fake_ls.requests[-1][2] == f"Bearer {access}"


def test_refused_legacy_setup_token_says_what_to_configure(fake_ls) -> None:
    client = LabelStudioClient(fake_ls.url, "legacy-key", token_source="setup")
    with pytest.raises(LabelStudioError, match="LABEL_STUDIO_API_KEY to a personal access token"):
        client.export_tasks(1)


def test_bad_pat_and_bad_urls() -> None:
    with pytest.raises(LabelStudioError, match="must start with http"):
        LabelStudioClient("localhost:8080", "k")
    with pytest.raises(LabelStudioError, match="no Label Studio token"):
        LabelStudioClient("http://127.0.0.1:1", "")
    with pytest.raises(LabelStudioError, match="could not reach"):
        LabelStudioClient("http://127.0.0.1:1", "k").export_tasks(1)


def test_export_size_limit(fake_ls) -> None:
    fake_ls.tokens.add("Token k")
    fake_ls.tasks[2] = [{"id": i, "data": {"text": "x" * 100}} for i in range(100)]
    with pytest.raises(LabelStudioError, match="larger than"):
        LabelStudioClient(fake_ls.url, "k").export_tasks(2, max_bytes=1000)


class _Trickle:
    """A loopback HTTP server whose answer (a task list page) arrives ``step`` bytes at a time, ``pause`` apart."""

    def __init__(self, body: bytes, step: int, pause: float) -> None:
        self.body, self.step, self.pause = body, step, pause
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(self.body)}\r\n\r\n"
                try:
                    conn.sendall(head.encode())
                    for i in range(0, len(self.body), self.step):
                        conn.sendall(self.body[i:i + self.step])
                        time.sleep(self.pause)
                except OSError:
                    continue


def test_task_list_reads_are_bounded_in_time_and_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """The incremental sync's task-list reads get the export's limits: a trickling or oversized answer stops."""
    body = json.dumps({"total": 1, "total_annotations": 0, "tasks": [{"id": 1}], "pad": "x" * 400}).encode()
    slow = _Trickle(body, step=8, pause=0.05)  # each read is quick; the whole answer takes ~2.5 s
    started = time.monotonic()
    with pytest.raises(LabelStudioError, match="took longer"):
        LabelStudioClient(slow.url, "k", timeout=1.0).task_page(1)
    assert time.monotonic() - started < 2.0
    fast = _Trickle(body, step=len(body), pause=0)
    assert LabelStudioClient(fast.url, "k").task_page(1)[0]["total"] == 1
    monkeypatch.setattr(lsclient, "API_MAX_BYTES", 100)
    with pytest.raises(LabelStudioError, match="larger than 100 bytes"):
        LabelStudioClient(fast.url, "k").task_page(1)
    slow.sock.close()
    fast.sock.close()
