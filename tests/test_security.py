"""Issue 11, items 1-3 and 6-10: each attack or bad input replayed against a real `labelpilot serve` on
loopback, and shown refused or handled."""

from __future__ import annotations

import http.client
import json
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from labelpilot.errors import ForbiddenError
from labelpilot.netpolicy import FetchPolicy
from tests.conftest import SENTIMENT_CONFIG, wait_for

CREDS = ("ls-user", "s3cret-pass")
UID = "1.1700000000"
UNSUPPORTED = '<View><Text name="t" value="$text"/><TextArea name="answer" toName="t"/></View>'
KW_URL_CONFIG = (
    '<View><Text name="text" value="$text" valueType="url"/>'
    '<Labels name="kw" toName="text"><Label value="keyword" predicted_values="keyword"/></Labels></View>'
)
SECRET = "internal-secret-Zebra-Quokka solar power plant report quarterly revenue figures"


@dataclass
class Listener:
    """A loopback HTTP server that records every request and answers from ``routes`` (path -> response)."""

    url: str = ""
    requests: list[tuple[str, str, str]] = field(default_factory=list)  # (method, path, Authorization)
    routes: dict[str, tuple[int, dict[str, str], bytes]] = field(default_factory=dict)
    delay: float = 0.0  # seconds before each answer: a slow media server

    @property
    def authorizations(self) -> list[str]:
        return [auth for _, _, auth in self.requests if auth]


def _listener() -> Iterator[Listener]:
    state = Listener()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            state.requests.append((self.command, self.path, self.headers.get("Authorization", "")))
            time.sleep(state.delay)
            code, headers, body = state.routes.get(self.path.split("?")[0], (200, {}, b"[]"))
            self.send_response(code)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield state
    httpd.shutdown()
    httpd.server_close()


listener = pytest.fixture(_listener)
thief = pytest.fixture(_listener)


def _finished_job(client: httpx.Client, uid: str, auth: Any = None) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        jobs = client.get("/training", params={"project": uid}, auth=auth).json()["jobs"]
        return jobs[0] if jobs and jobs[0]["state"] in ("done", "failed") else None

    return wait_for(done, timeout=90, what="the training job to finish")


# -- item 1: the token is bound to the origin it was given with -------------------------------------------
def test_changed_hostname_without_token_never_sends_the_token_to_the_new_host(start_server, fake_ls, thief) -> None:
    fake_ls.tokens.add("Token real-token")
    server = start_server(LABELPILOT_RETRAIN_EVERY="0")
    train = {"action": "START_TRAINING", "project": UID}
    with server.client() as client:
        first = client.post("/setup", json={"project": UID, "schema": SENTIMENT_CONFIG, "hostname": fake_ls.url,
                                            "access_token": "real-token"})
        assert first.status_code == 200
        moved = client.post("/setup", json={"project": UID, "schema": SENTIMENT_CONFIG, "hostname": thief.url})
        assert moved.status_code == 200
        assert any("token" in w and "dropped" in w for w in moved.json()["warnings"]), moved.json()
        assert client.post("/webhook", json=train).status_code == 201
        job = _finished_job(client, UID)
        # the text of a valueType="url" task is fetched from "Label Studio" too: still no token
        client.post("/predict", json={"tasks": [{"id": 1, "data": {"text": "/data/upload/1/a.txt"}}],
                                      "label_config": KW_URL_CONFIG, "project": UID})
    assert job["state"] == "failed" and "token" in job["error"], job
    assert thief.authorizations == [], thief.requests
    assert not any("real-token" in auth for auth in thief.authorizations)
    # given again with a token for the new host, that token (not the old one) goes there
    with server.client() as client:
        client.post("/setup", json={"project": UID, "schema": SENTIMENT_CONFIG, "hostname": thief.url,
                                    "access_token": "thief-own-token"})
        assert client.post("/webhook", json=train).status_code == 201
        wait_for(lambda: thief.requests, timeout=90, what="the export request")
    assert {a for a in thief.authorizations} == {"Token thief-own-token"}


# -- item 2: one outbound-fetch policy, redirects re-checked -------------------------------------------------
def test_setup_hostname_cannot_turn_predict_into_a_url_reader(start_server, listener) -> None:
    listener.routes["/secret.txt"] = (200, {}, SECRET.encode())
    listener.routes["/data/upload/1/secret.txt"] = (200, {}, SECRET.encode())
    server = start_server(LABELPILOT_ALLOW_PRIVATE_HOSTS="")  # the default: loopback/private refused
    with server.client() as client:
        client.post("/setup", json={"project": UID, "schema": KW_URL_CONFIG, "hostname": listener.url,
                                    "access_token": "t"})
        tasks = [{"id": 1, "data": {"text": listener.url + "/secret.txt"}},
                 {"id": 2, "data": {"text": "/data/upload/1/secret.txt"}},
                 {"id": 3, "data": {"text": "http://[::1]:1/x"}},
                 {"id": 4, "data": {"text": "file:///etc/passwd"}}]
        resp = client.post("/predict", json={"tasks": tasks, "project": UID})
    assert resp.status_code == 200, resp.text
    assert [r["result"] for r in resp.json()["results"]] == [[], [], [], []]
    assert "Zebra" not in resp.text and "Quokka" not in resp.text
    assert listener.requests == []  # nothing was even asked of the internal host
    assert "loopback/private" in server.tail(200)


def test_allowed_label_studio_media_is_read_but_absolute_urls_off_its_media_paths_are_not(
    start_server, listener
) -> None:
    listener.routes["/data/upload/1/ok.txt"] = (200, {}, SECRET.encode())
    listener.routes["/admin/secret.txt"] = (200, {}, b"admin page")
    server = start_server(LABELPILOT_ALLOW_PRIVATE_HOSTS="127.0.0.1")
    with server.client() as client:
        client.post("/setup", json={"project": UID, "schema": KW_URL_CONFIG, "hostname": listener.url,
                                    "access_token": "t"})
        tasks = [{"id": 1, "data": {"text": "/data/upload/1/ok.txt"}},
                 {"id": 2, "data": {"text": listener.url + "/admin/secret.txt"}}]
        resp = client.post("/predict", json={"tasks": tasks, "project": UID})
    results = resp.json()["results"]
    assert results[0]["result"], results  # Label Studio's own media path: read, keywords found
    assert results[1]["result"] == []
    assert [p for _, p, _ in listener.requests] == ["/data/upload/1/ok.txt"]
    assert listener.requests[0][2] == "Token t"


def test_redirects_are_rechecked_on_every_hop_and_never_carry_the_token(start_server, listener, thief) -> None:
    thief.routes["/leak.txt"] = (200, {}, SECRET.encode())
    listener.routes["/data/upload/1/r.txt"] = (302, {"Location": thief.url + "/leak.txt"}, b"")
    listener.routes["/data/upload/1/loop.txt"] = (302, {"Location": "/data/upload/1/loop.txt"}, b"")
    env = {"LABELPILOT_ALLOW_PRIVATE_HOSTS": "127.0.0.1"}
    server = start_server(**env)
    tasks = [{"id": 1, "data": {"text": "/data/upload/1/r.txt"}},
             {"id": 2, "data": {"text": "/data/upload/1/loop.txt"}}]
    setup = {"project": UID, "schema": KW_URL_CONFIG, "hostname": listener.url, "access_token": "t"}
    with server.client() as client:
        client.post("/setup", json=setup)
        resp = client.post("/predict", json={"tasks": tasks, "project": UID})
    assert [r["result"] for r in resp.json()["results"]] == [[], []]
    assert thief.requests == []  # the redirect target is not Label Studio's and not allowlisted
    assert 2 <= sum(p == "/data/upload/1/loop.txt" for _, p, _ in listener.requests) <= 7  # hop limit
    # allowlisting the other host lets the redirect through, without Label Studio's token
    thief_host = thief.url.split("//")[1]
    server2 = start_server(LABELPILOT_MEDIA_ALLOWLIST=thief_host, **env)
    with server2.client() as client:
        client.post("/setup", json=setup)
        resp = client.post("/predict", json={"tasks": tasks[:1], "project": UID})
    assert resp.json()["results"][0]["result"]
    assert [(p, a) for _, p, a in thief.requests] == [("/leak.txt", "")]


def test_export_and_refresh_obey_the_policy_and_label_studio_url_is_trusted(start_server, fake_ls) -> None:
    fake_ls.tokens.add("Token real-token")
    fake_ls.tasks[1] = []
    train = {"action": "START_TRAINING", "project": UID}
    setup = {"project": UID, "schema": SENTIMENT_CONFIG, "hostname": fake_ls.url, "access_token": "real-token"}
    strict = start_server(LABELPILOT_ALLOW_PRIVATE_HOSTS="")
    with strict.client() as client:
        client.post("/setup", json=setup)
        client.post("/webhook", json=train)
        job = _finished_job(client, UID)
    assert job["state"] == "failed" and "loopback/private" in job["error"], job
    assert fake_ls.requests == []  # a loopback Label Studio only /setup named is not reached
    # the operator's LABEL_STUDIO_URL is trusted (and wins over /setup's hostname)
    named = start_server(LABELPILOT_ALLOW_PRIVATE_HOSTS="", LABEL_STUDIO_URL=fake_ls.url)
    with named.client() as client:
        client.post("/setup", json={**setup, "hostname": "http://127.0.0.1:1"})
        client.post("/webhook", json=train)
        _finished_job(client, UID)
    # Label Studio's clock from its task list (for the next incremental sync), then the export: both to the
    # trusted URL with the project's token
    assert [(p.split("?")[0], a) for _, p, a in fake_ls.requests] == [
        ("/api/tasks", "Token real-token"), ("/api/projects/1/export", "Token real-token")]


def test_fetch_policy_address_rules() -> None:
    strict = FetchPolicy()
    for url in ("http://127.0.0.1/x", "http://localhost/x", "http://10.1.2.3/x", "http://169.254.169.254/latest",
                "http://[::1]/x", "http://[::ffff:127.0.0.1]/x", "http://0.0.0.0/x", "ftp://8.8.8.8/x",
                "http://user:pw@8.8.8.8/x"):
        with pytest.raises(ForbiddenError):
            strict.check_address(url)
    strict.check_address("http://8.8.8.8/x")  # a public address
    FetchPolicy(private_ok=["10.0.0.0/8"]).check_address("http://10.1.2.3/x")
    FetchPolicy(private_ok=["localhost"]).check_address("http://localhost:8080/x")
    FetchPolicy(trusted_hosts=["127.0.0.1:8080"]).check_address("http://127.0.0.1:8080/x")
    with pytest.raises(ForbiddenError):
        FetchPolicy(trusted_hosts=["127.0.0.1:8080"]).check_address("http://127.0.0.1:9999/x")


# -- item 3: config only from /setup or an authenticated source ----------------------------------------------
@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    from tests.conftest import launch_server, stop_server

    root = tmp_path_factory.mktemp("sec-auth")
    server = launch_server(root / "data", root / "log", BASIC_AUTH_USER=CREDS[0], BASIC_AUTH_PASS=CREDS[1],
                           LABELPILOT_RETRAIN_EVERY="0")
    yield server
    stop_server(server.proc)


def test_unauthenticated_webhook_cannot_replace_the_config(auth_server) -> None:
    uid = "9.1795289948"
    project = {"id": 9, "created_at": "2026-11-21T19:39:08.538679Z", "label_config": UNSUPPORTED}
    event = {"action": "ANNOTATION_CREATED", "project": project, "task": {"id": 1, "data": {"text": "great"}},
             "annotation": {"id": 5, "result": []}}
    predict = {"tasks": [{"id": 1, "data": {"text": "great"}}], "project": uid}
    with auth_server.client() as client:
        assert client.post("/setup", json={"project": uid, "schema": SENTIMENT_CONFIG}, auth=CREDS).status_code == 200
        assert client.post("/webhook", json=event).status_code == 201  # the annotation is still taken
        assert client.post("/predict", json=predict, auth=CREDS).status_code == 200  # config unchanged
        # an authenticated event with a config labelpilot cannot serve is not stored either
        resp = client.post("/webhook", json=event, auth=CREDS)
        assert resp.status_code == 201 and "not stored" in resp.json()["warnings"][0]
        assert client.post("/predict", json=predict, auth=CREDS).status_code == 200


# -- item 10: a config refused at /setup is not stored --------------------------------------------------------
def test_a_config_refused_at_setup_is_not_stored(shared_server) -> None:
    predict = {"tasks": [{"id": 1, "data": {"text": "x"}}], "project": "11.1700000000"}
    with shared_server.client() as client:
        assert client.post("/setup", json={"project": "11.1700000000", "schema": UNSUPPORTED}).status_code == 422
        resp = client.post("/predict", json=predict)
        assert resp.status_code == 422 and resp.json()["field"] == "label_config"  # never set up
        assert "never set up" in resp.json()["detail"]
        assert client.post("/setup", json={"project": "11.1700000000", "schema": SENTIMENT_CONFIG}).status_code == 200
        assert client.post("/setup", json={"project": "11.1700000000", "schema": UNSUPPORTED}).status_code == 422
        assert client.post("/predict", json=predict).status_code == 200  # the good config is still served


# -- item 6: bad ids are 4xx JSON naming the field, on a connection that stays open --------------------------
@pytest.mark.parametrize(
    ("event", "field"),
    [
        ({"annotation": {"id": "abc"}, "task": {"id": 1}}, "annotation.id"),
        ({"annotation": {}, "task": {"id": 1}}, "annotation.id"),
        ({"task": {"id": 1}}, "annotation"),
        ({"annotation": {"id": 1}, "task": {"id": 2**70}}, "task.id"),
        ({"annotation": {"id": 1.5}, "task": {"id": 1}}, "annotation.id"),
        ({"annotation": {"id": 1}, "task": {"id": "¹"}}, "task.id"),
        ({"annotation": {"id": 1}, "task": "nope"}, "task"),
    ],
)
def test_bad_webhook_ids_are_422_naming_the_field_and_keep_the_connection(shared_server, event, field) -> None:
    host, port = shared_server.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    body = json.dumps({"action": "ANNOTATION_CREATED", "project": {"id": 3}, **event})
    conn.request("POST", "/webhook", body=body, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    data = json.loads(resp.read())
    sock = conn.sock
    assert resp.status == 422, data
    assert data["field"] == field and data["error"] == "InputError", data
    assert "traceback" not in json.dumps(data).lower()
    assert resp.getheader("connection", "").lower() != "close"
    conn.request("GET", "/health")
    again = conn.getresponse()
    again.read()
    assert again.status == 200 and conn.sock is sock  # the same keep-alive connection served the next request
    conn.close()


def test_bulk_events_skip_bad_entries_and_name_them(shared_server) -> None:
    annotations = [{"id": 1, "task": {"id": 1, "data": {"text": "a"}}}, {"id": "abc", "task": {"id": 2}},
                   {"id": 3, "task": {"id": 2**70}}, "not an object"]
    with shared_server.client() as client:
        created = client.post("/webhook", json={"action": "ANNOTATIONS_CREATED", "project": {"id": 4},
                                                "annotations": annotations})
        deleted = client.post("/webhook", json={"action": "ANNOTATIONS_DELETED", "project": {"id": 4},
                                                "annotations": [{"id": 2**70}, {"id": 1}, {}]})
        not_a_list = client.post("/webhook", json={"action": "ANNOTATIONS_CREATED", "project": {"id": 4},
                                                   "annotations": {"id": 1}})
    assert created.status_code == 201, created.text
    assert [s.split(" ")[0] for s in created.json()["skipped"]] == ["annotations.1.id", "annotations.2.task.id",
                                                                     "annotations.3"]
    assert deleted.status_code == 201 and len(deleted.json()["skipped"]) == 2
    assert not_a_list.status_code == 422 and not_a_list.json()["field"] == "annotations"


# -- item 7: a Unicode digit (or a huge number) as a version ------------------------------------------------
def test_unicode_or_huge_version_is_404_not_500(shared_server) -> None:
    with shared_server.client() as client:
        for version in ("%C2%B9", "v%C2%B9", "%D9%A1", "99999999999999999999999", "v-1", "1.0"):
            resp = client.post(f"/v1/models/news/versions/{version}/predict", json={"text": "x"})
            assert resp.status_code == 404, (version, resp.text)
            assert resp.json()["field"] == "version"


# -- item 8: /metrics label values stay bounded -------------------------------------------------------------
def test_unknown_model_names_never_become_metric_labels(shared_server) -> None:
    with shared_server.client() as client:
        for i in range(300):
            client.post(f"/v1/models/random-name-{i}/predict", json={"text": "x"})
        client.request("FROBNICATE", "/metrics")
        text = client.get("/metrics").text
    assert "random-name" not in text
    assert re.search(r'labelpilot_model_requests_total\{model="unknown",status="404",version="unknown"\} 300\.0', text)
    assert "FROBNICATE" not in text
    assert len(text) < 100_000


# -- item 9: docs behind basic auth; the OpenAPI description has the real request bodies ----------------------
def test_docs_need_basic_auth_and_openapi_declares_request_bodies(auth_server) -> None:
    with auth_server.client() as client:
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert client.get(path).status_code == 401, path
            assert client.get(path, auth=CREDS).status_code == 200, path
        spec = client.get("/openapi.json", auth=CREDS).json()
    paths = spec["paths"]
    bodies = {p: paths[p]["post"]["requestBody"]["content"]["application/json"]["schema"]
              for p in ("/setup", "/predict", "/webhook", "/v1/models/{name}/predict",
                        "/v1/models/{name}/versions/{version}/predict")}
    assert {"project", "schema", "hostname", "access_token"} <= set(bodies["/setup"]["properties"])
    assert bodies["/setup"]["required"] == ["project", "schema"]
    assert "tasks" in bodies["/predict"]["required"]
    assert bodies["/webhook"]["required"] == ["action", "project"]
    assert len(bodies["/v1/models/{name}/predict"]["anyOf"]) == 3
    assert not any(p.startswith("/s/") for p in paths)


def test_an_unexpected_error_is_a_json_500_without_traceback_on_a_kept_connection(tmp_path) -> None:
    """No route of labelpilot raises on purpose, so one is added to the real app, served by uvicorn on loopback."""
    import uvicorn

    from labelpilot.config import Settings
    from labelpilot.server.app import create_app
    from tests.conftest import free_port

    app = create_app(Settings(data_dir=tmp_path / "data"))

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals")

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=30, what="uvicorn to start")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/boom")
        resp = conn.getresponse()
        body = resp.read().decode()
        sock = conn.sock
        conn.request("GET", "/health")
        again = conn.getresponse()
        again.read()
        same_connection = conn.sock is sock
    finally:
        conn.close()
        server.should_exit = True
        thread.join(10)
    assert resp.status == 500 and json.loads(body)["error"] == "InternalError"
    assert "secret internals" not in body and "Traceback" not in body
    assert again.status == 200 and same_connection


# -- a family named in a request is looked up among registered families, never imported ----------------------
def test_a_model_family_named_by_a_request_never_imports_a_module(start_server, tmp_path) -> None:
    pkg = tmp_path / "importable"
    pkg.mkdir()
    marker = tmp_path / "imported.txt"
    (pkg / "lp_marker_family.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('imported')\nclass Family: ...\n")
    path = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH", ""), str(pkg)) if p)
    server = start_server(PYTHONPATH=path)
    config = ('<View><Text name="t" value="$text"/><Choices name="c" toName="t" model_family="lp_marker_family:Family">'
              '<Choice value="A"/><Choice value="B"/></Choices></View>')
    with httpx.Client(base_url=server.url, timeout=30) as client:
        resp = client.post("/setup", json={
            "project": UID, "schema": config,
            "extra_params": {"families": {"c": "lp_marker_family:Family"}, "model_options": {"C": 1.0}},
        })
        assert resp.status_code == 200, resp.text
        warning = resp.json()["warnings"][0]
        assert 'model_family="lp_marker_family:Family"' in warning and "not registered" in warning
        assert "'labelpilot.models' entry point" in warning
        predict = client.post("/predict", json={"tasks": [{"id": 1, "data": {"text": "x"}}], "project": UID})
        assert predict.status_code == 200  # the default family serves the control instead
    assert not marker.exists(), "the server imported a module named by a request"
