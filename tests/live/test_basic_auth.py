"""Basic auth on the backend (BASIC_AUTH_USER/PASS) and in Label Studio's model settings.

LS sends basic auth on /health, /setup, /predict and START_TRAINING, but its webhook engine sends none
on annotation events: those must still reach the backend (project set up with valid credentials, or
the secret webhook path).
"""

from __future__ import annotations

import pytest

from .corpus import SENTIMENT_CONFIG, sentiment_result, sentiment_split
from .helpers import NewVersionWaiter, connect, make_project, needs_text_model
from .validation import LabelConfig, assert_valid_predictions

USER, PASSWORD = "lp-user", "lp-pass-7f3a9c"
SECRET = "hook-5d1e2b7c9a0f"
RETRAIN_EVERY = 5
CFG = LabelConfig.parse(SENTIMENT_CONFIG)


@pytest.fixture(scope="module")
def backend(labelpilot):
    return labelpilot.start(
        "basic-auth",
        BASIC_AUTH_USER=USER,
        BASIC_AUTH_PASS=PASSWORD,
        LABELPILOT_RETRAIN_EVERY=RETRAIN_EVERY,
        LABELPILOT_RETRAIN_SCHEDULE="",  # only the every-N rule: one retrain per 5, no early 1/2 versions
    )


def sentiment_project(ls, title: str):
    train, _ = sentiment_split(4)  # 12 tasks
    project = make_project(ls, title, SENTIMENT_CONFIG, [{"text": t} for t, _ in train])
    project.gold = {tid: label for tid, (_, label) in zip(project.task_ids, train, strict=True)}
    return project


def test_connect_is_refused_without_the_right_credentials(ls, backend):
    project = sentiment_project(ls, "live basic auth refused")
    for creds in (None, (USER, "wrong-password")):
        resp = ls.http.post(
            "/api/ml",
            json={
                "url": backend.url,
                "project": project.id,
                "title": "no auth",
                **(
                    {"auth_method": "BASIC_AUTH", "basic_auth_user": creds[0], "basic_auth_pass": creds[1]}
                    if creds
                    else {}
                ),
            },
        )
        assert resp.status_code == 400, f"{creds}: {resp.status_code} {resp.text}"
    for leftover in ls.ml_backends(project.id):  # keep LS tidy if it half-created a row
        ls.call("DELETE", f"/api/ml/{leftover['id']}", expect=204)


@needs_text_model
def test_connect_predict_webhooks_and_train_with_basic_auth(ls, ls_server, backend):
    project = sentiment_project(ls, "live basic auth")
    ml = connect(ls, project, backend, title="labelpilot basic auth", basic_auth=(USER, PASSWORD))
    assert ml["auth_method"] == "BASIC_AUTH"
    initial = ls.ml_backend(ml["id"])["model_version"]

    # /predict through basic auth
    ls.retrieve_predictions(project.id)
    preds = ls.predictions(project=project.id)
    assert len(preds) == len(project.task_ids) and {p["model_version"] for p in preds} == {initial}
    assert_valid_predictions(preds, CFG, project.tasks)

    # annotation webhooks (sent without credentials) are accepted and count towards retraining
    log_mark = ls_server.log_mark()
    waiter = NewVersionWaiter(ls, ml["id"], backend, project.uid, auth=(USER, PASSWORD))
    for tid in project.task_ids[:RETRAIN_EVERY]:
        ls.annotate(tid, sentiment_result(project.gold[tid]))
    by_webhooks = waiter.wait(timeout=180)
    by_webhooks = waiter.settle()
    assert by_webhooks["model_version"] != initial and by_webhooks["state"] == "CO", by_webhooks
    assert not ls_server.log_errors_about(backend.url, since=log_mark)

    # Start Training (START_TRAINING carries basic auth) trains on the annotations made since
    for tid in project.task_ids[RETRAIN_EVERY : RETRAIN_EVERY + 3]:
        ls.annotate(tid, sentiment_result(project.gold[tid]))
    waiter = NewVersionWaiter(ls, ml["id"], backend, project.uid, auth=(USER, PASSWORD))
    ls.train(ml["id"])
    by_button = waiter.wait(timeout=180)
    assert by_button["model_version"] not in (initial, by_webhooks["model_version"]), by_button

    ls.retrieve_predictions(project.id)
    preds = [p for p in ls.predictions(project=project.id) if p["model_version"] == by_button["model_version"]]
    assert len(preds) == len(project.task_ids)
    assert_valid_predictions(preds, CFG, project.tasks, allow_empty=False)


@needs_text_model
def test_secret_webhook_path(ls, labelpilot):
    backend = labelpilot.start(
        "secret-path",
        BASIC_AUTH_USER=USER,
        BASIC_AUTH_PASS=PASSWORD,
        LABELPILOT_WEBHOOK_SECRET=SECRET,
        LABELPILOT_RETRAIN_EVERY=RETRAIN_EVERY,
        LABELPILOT_RETRAIN_SCHEDULE="",
    )
    project = sentiment_project(ls, "live secret path")
    url = f"{backend.url}/s/{SECRET}"
    ml = connect(ls, project, backend, url=url, title="labelpilot secret path", basic_auth=(USER, PASSWORD))
    assert ml["url"] == url
    waiter = NewVersionWaiter(ls, ml["id"], backend, project.uid, auth=(USER, PASSWORD))
    for tid in project.task_ids[:RETRAIN_EVERY]:
        ls.annotate(tid, sentiment_result(project.gold[tid]))
    after = waiter.wait(timeout=180)
    assert after["model_version"] != waiter.before and after["state"] == "CO", after
    ls.retrieve_predictions(project.id)
    preds = [p for p in ls.predictions(project=project.id) if p["model_version"] == after["model_version"]]
    assert len(preds) == len(project.task_ids)
    assert_valid_predictions(preds, CFG, project.tasks, allow_empty=False)
