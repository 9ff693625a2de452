"""Every request Label Studio 1.23.2 really sent (tests/fixtures/ls-captures) replayed against a real
`labelpilot serve` on loopback, checked against the protocol (../shared/ls-protocol.md §17)."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.conftest import FIXTURES, Server

CAPTURES = sorted((FIXTURES / "ls-captures").glob("*/*.json"))
ANNOTATION_EVENTS = {"ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED", "ANNOTATIONS_CREATED"}


def _send(client: httpx.Client, capture: dict) -> httpx.Response:
    headers = {k: v for k, v in capture["headers"].items() if k.lower() in ("user-agent", "content-type", "accept")}
    if capture["method"] == "GET":
        return client.get(capture["path"], headers=headers)
    return client.post(capture["path"], content=json.dumps(capture["json"]), headers=headers)


def check_protocol(capture: dict, resp: httpx.Response, setup_versions: dict[str, str]) -> None:
    path, body = capture["path"], capture["json"]
    assert resp.headers["content-type"].startswith("application/json"), resp.text
    data = resp.json()
    if path == "/health":
        assert resp.status_code == 200
        assert data["status"] == "UP" and isinstance(data["model_class"], str)
    elif path == "/setup":
        assert resp.status_code == 200, resp.text
        assert isinstance(data["model_version"], str) and data["model_version"]
        setup_versions[body["project"]] = data["model_version"]
    elif path == "/predict":
        assert resp.status_code == 200, resp.text
        results = data["results"]
        assert isinstance(results, list) and len(results) == len(body["tasks"])
        for r in results:
            assert isinstance(r["result"], list)
            assert isinstance(r["score"], float)
            assert isinstance(r["model_version"], str) and r["model_version"]  # never null
            if body["project"] in setup_versions:  # dedupe needs the /setup version (§5.2)
                assert r["model_version"] == setup_versions[body["project"]]
    elif path == "/webhook":
        action = body["action"]
        if action == "START_TRAINING":
            assert resp.status_code == 201 and data["status"] == "ok"
            assert "job" not in data  # LS would create a legacy MLBackendTrainJob row and poll /job_status
        elif action in ANNOTATION_EVENTS:
            assert resp.status_code == 201 and data["status"] == "ok"
        else:
            assert resp.status_code == 200 and data == {"status": "Unknown event"}
    elif path == "/versions":
        assert resp.status_code == 404 or isinstance(data["versions"], list)
    else:
        pytest.fail(f"capture of an unexpected path {path}")


def test_replay_all_captures(start_server) -> None:
    assert len(CAPTURES) >= 40, "fixtures missing"
    server: Server = start_server(LABELPILOT_RETRAIN_EVERY="0")
    versions: dict[str, str] = {}
    with server.client() as client:
        for path in CAPTURES:
            capture = json.loads(path.read_text())
            resp = _send(client, capture)
            check_protocol(capture, resp, versions)
        assert client.get("/metrics").status_code == 200


def test_predict_before_any_model_is_empty_and_versioned(start_server) -> None:
    server = start_server()
    capture = json.loads((FIXTURES / "ls-captures/07-retrieve-preds-cls-all/025-POST-predict.json").read_text())
    with server.client() as client:
        body = capture["json"]
        setup = client.post("/setup", json={"project": body["project"], "schema": body["label_config"]})
        resp = client.post("/predict", json=capture["json"]).json()
    version = setup.json()["model_version"]
    if version == "untrained":  # no text encoder: nothing before training
        assert all(r == {"result": [], "score": 0.0, "model_version": version} for r in resp["results"])
    else:  # the label names (Positive/Negative/Neutral) mean something: zero-shot pre-labels
        assert version == "zero-shot-text-linear"
        for r in resp["results"]:
            assert r["model_version"] == version and 0.0 < r["score"] < 1.0
            assert r["result"][0]["from_name"] == "sentiment"
            assert r["result"][0]["value"]["choices"][0] in {"Positive", "Negative", "Neutral"}


@pytest.mark.parametrize(
    ("path", "body", "status", "field"),
    [
        ("/setup", b"{not json", 422, "body"),
        ("/setup", b"", 422, "body"),
        ("/setup", b"[1, 2]", 422, "body"),
        ("/setup", json.dumps({"schema": "<View/>"}).encode(), 422, "project"),
        ("/setup", json.dumps({"project": "1.1"}).encode(), 422, "schema"),
        ("/setup", json.dumps({"project": "1.1", "schema": "<View><oops"}).encode(), 422, "label_config"),
        ("/predict", json.dumps({"label_config": "<View/>"}).encode(), 422, "tasks"),
        ("/predict", json.dumps({"tasks": [{"data": {"text": "x"}}]}).encode(), 422, "label_config"),
        ("/predict", json.dumps({"tasks": "nope", "label_config": "<View/>"}).encode(), 422, "tasks"),
        ("/webhook", json.dumps({"project": {"id": 1}}).encode(), 422, "action"),
        ("/webhook", json.dumps({"action": "START_TRAINING"}).encode(), 422, "project"),
        ("/webhook", b"{{", 422, "body"),
    ],
)
def test_bad_input_gets_json_4xx_naming_the_field(shared_server, path, body, status, field) -> None:
    with shared_server.client() as client:
        resp = client.post(path, content=body, headers={"Content-Type": "application/json"})
    assert resp.status_code == status, resp.text
    data = resp.json()
    assert data["field"] == field, data
    assert data["detail"]


def test_unsupported_config_is_named_at_setup_and_predict(shared_server) -> None:
    config = '<View><Text name="t" value="$text"/><TextArea name="answer" toName="t"/></View>'
    server = shared_server
    with server.client() as client:
        setup = client.post("/setup", json={"project": "5.1700000000", "schema": config})
        pred = client.post("/predict", json={"tasks": [{"id": 1, "data": {"text": "x"}}], "label_config": config})
    for resp in (setup, pred):
        assert resp.status_code == 422
        detail = resp.json()["detail"]
        assert "TextArea" in detail and "answer" in detail and "<Choices>" in detail  # names control + supported


def test_partly_supported_config_sets_up_with_a_warning(shared_server) -> None:
    config = (
        '<View><Text name="t" value="$text"/><TextArea name="answer" toName="t"/>'
        '<Choices name="c" toName="t"><Choice value="A"/><Choice value="B"/></Choices></View>'
    )
    server = shared_server
    with server.client() as client:
        setup = client.post("/setup", json={"project": "6.1700000000", "schema": config, "extra_params": {"a": 1}})
    assert setup.status_code == 200
    assert setup.json()["model_version"] == "untrained"
    assert any("TextArea" in w for w in setup.json()["warnings"])


def test_a_model_family_attribute_that_cannot_be_used_is_warned_about_at_setup(shared_server) -> None:
    config = (
        '<View><Text name="t" value="$text"/>'
        '<Choices name="c" toName="t" model_family="nope"><Choice value="A"/><Choice value="B"/></Choices>'
        '<Choices name="d" toName="t" model_family="doc-fields"><Choice value="X"/><Choice value="Y"/></Choices>'
        '<Choices name="e" toName="t" model_family="text-linear"><Choice value="P"/><Choice value="Q"/></Choices>'
        "</View>"
    )
    with shared_server.client() as client:
        setup = client.post("/setup", json={"project": "7.1700000000", "schema": config})
    assert setup.status_code == 200
    warnings = setup.json()["warnings"]
    assert len(warnings) == 2
    assert 'name="c"> model_family="nope": unknown model family' in warnings[0]
    assert 'name="d"> model_family="doc-fields" cannot serve text-choices; text-linear is used instead' in warnings[1]


def test_extra_params_object_string_and_null_are_accepted(shared_server) -> None:
    """The reference server answers 500 to a non-empty extra_params (ls-protocol §16.1)."""
    server = shared_server
    cfg = json.loads((FIXTURES / "ls-captures/01-add-backend-cls/009-POST-setup.json").read_text())["json"]["schema"]
    with server.client() as client:
        for extra in ({"model_options": {"C": 2}}, '{"x": 1}', None, {}):
            resp = client.post("/setup", json={"project": "7.1700000000", "schema": cfg, "extra_params": extra})
            assert resp.status_code == 200, resp.text


def test_predict_accepts_a_single_task_object(shared_server) -> None:
    """tests/test_api.py of the reference server sends `tasks` as one dict."""
    server = shared_server
    cfg = json.loads((FIXTURES / "ls-captures/01-add-backend-cls/009-POST-setup.json").read_text())["json"]["schema"]
    with server.client() as client:
        resp = client.post("/predict", json={"tasks": {"id": 1, "data": {"text": "hi"}}, "label_config": cfg,
                                             "project": "1.1000000000", "params": {"context": {}}})
    assert resp.status_code == 200
    assert len(resp.json()["results"]) == 1


def test_sub_path_mount_and_metrics_formats(start_server) -> None:
    server = start_server(LABELPILOT_WEBHOOK_SECRET="s3cret")
    with server.client() as client:
        assert client.get("/s/s3cret/health").json()["status"] == "UP"
        assert client.get("/s/wrong/setup").status_code in (404, 405)
        assert client.post("/s/wrong/webhook", json={"action": "X"}).status_code == 404
        assert client.get("/no/such/path/123").status_code == 404
        assert client.post("/v1/models/nosuchmodel/predict", json={"tasks": []}).status_code in (404, 422)
        text = client.get("/metrics").text
        assert "labelpilot_http_requests_total" in text
        # route labels are the matched routes' templates (secret prefix dropped), never raw paths
        assert 'method="GET",route="/health",status="200"' in text
        assert 'method="POST",route="/webhook",status="404"' in text
        assert 'method="POST",route="/v1/models/{name}/predict",status="404"' in text
        assert 'method="GET",route="other",status="404"' in text
        assert "/no/such/path" not in text and "nosuchmodel" not in text and "s3cret" not in text
        assert isinstance(client.get("/metrics", headers={"Accept": "application/json"}).json(), dict)


def test_unknown_route_is_json_404(shared_server) -> None:
    server = shared_server
    with server.client() as client:
        resp = client.get("/nope")
    assert resp.status_code == 404 and resp.json()["status"] == 404
