"""Basic auth on every endpoint but /health, and the deliberate rules for /webhook (see server/auth.py)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import FIXTURES, SENTIMENT_CONFIG

CREDS = ("ls-user", "s3cret-pass")
WEBHOOK_PROJECT = {"id": 9, "created_at": "2026-11-21T19:39:08.538679Z", "label_config": SENTIMENT_CONFIG}
UID = "9.1795289948"  # id.int(created_at timestamp): what Label Studio sends as "project" to /setup


def annotation_event(action: str = "ANNOTATION_CREATED", project: dict = WEBHOOK_PROJECT) -> dict:
    return {
        "action": action,
        "project": project,
        "task": {"id": 1, "data": {"text": "great"}},
        "annotation": {"id": 5, "result": [{"from_name": "sentiment", "to_name": "text", "type": "choices",
                                             "value": {"choices": ["Positive"]}}]},
    }


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    from tests.conftest import launch_server, stop_server

    root = tmp_path_factory.mktemp("auth")
    server = launch_server(
        root / "data", root / "log", BASIC_AUTH_USER=CREDS[0], BASIC_AUTH_PASS=CREDS[1],
        LABELPILOT_WEBHOOK_SECRET="hook-secret", LABELPILOT_RETRAIN_EVERY="0",
    )
    yield server
    stop_server(server.proc)


def test_health_is_open_everything_else_needs_basic_auth(auth_server) -> None:
    with auth_server.client() as client:
        assert client.get("/health").status_code == 200
        assert client.get("/").status_code == 200
        for method, path, body in (
            ("POST", "/setup", {"project": UID, "schema": SENTIMENT_CONFIG}),
            ("POST", "/predict", {"tasks": [], "label_config": SENTIMENT_CONFIG}),
            ("GET", "/versions", None),
            ("GET", "/metrics", None),
        ):
            resp = client.request(method, path, json=body)
            assert resp.status_code == 401, path
            assert resp.headers["www-authenticate"] == 'Basic realm="Login required"'
            assert client.request(method, path, json=body, auth=("ls-user", "wrong")).status_code == 401
            assert client.request(method, path, json=body, auth=CREDS).status_code in (200, 404)


def test_webhook_rules(auth_server) -> None:
    with auth_server.client() as client:
        # a project never set up with credentials, no credentials: refused
        stranger = {**WEBHOOK_PROJECT, "id": 77}
        assert client.post("/webhook", json=annotation_event(project=stranger)).status_code == 401
        # START_TRAINING always needs credentials (or the secret path)
        train = {"action": "START_TRAINING", "project": WEBHOOK_PROJECT}
        assert client.post("/webhook", json=train).status_code == 401
        # once the project was set up with valid credentials, LS's credential-less annotation webhooks get in
        assert client.post("/setup", json={"project": UID, "schema": SENTIMENT_CONFIG}, auth=CREDS).status_code == 200
        assert client.post("/webhook", json=annotation_event()).status_code == 201
        assert client.post("/webhook", json=annotation_event("ANNOTATION_UPDATED")).status_code == 201
        assert client.post("/webhook", json=train).status_code == 401
        # START_TRAINING with basic auth (what LS's MLApi sends) or through the secret path
        assert client.post("/webhook", json=train, auth=CREDS).status_code == 201
        assert client.post("/s/hook-secret/webhook", json=train).status_code == 201
        assert client.post("/s/not-the-secret/webhook", json=train).status_code == 404
        # events nobody trains on are answered without credentials too
        assert client.post("/s/hook-secret/webhook", json={"action": "PROJECT_UPDATED"}).json() == {
            "status": "Unknown event"
        }


def test_secret_path_routes_still_need_basic_auth_for_predict(auth_server) -> None:
    capture = json.loads((FIXTURES / "ls-captures/06-retrieve-preds-cls-2tasks/022-POST-predict.json").read_text())
    with auth_server.client() as client:
        assert client.post("/s/hook-secret/predict", json=capture["json"]).status_code == 401
        resp = client.post("/s/hook-secret/predict", json=capture["json"], auth=CREDS)
        assert resp.status_code == 200 and len(resp.json()["results"]) == 2
