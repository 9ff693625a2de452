"""Legacy API tokens disabled in the organisation (the default for new LS organisations, live doc G3).

Label Studio still sends its *legacy* token as ``access_token`` in /setup, and that token is refused
then. The backend can only download the project's annotations (Start Training) when it is given a
Personal Access Token in ``LABEL_STUDIO_API_KEY`` and LS's address in ``LABEL_STUDIO_URL``.

Annotations are made *before* the backend is connected, so the backend cannot have seen them through
webhooks: training has to go through LS's export API with a working credential.
"""

from __future__ import annotations

import time

import httpx
import pytest

from .corpus import SENTIMENT_CONFIG, sentiment_result, sentiment_split
from .helpers import NewVersionWaiter, connect, make_project, needs_text_model, training_status
from .validation import LabelConfig, assert_valid_predictions

CFG = LabelConfig.parse(SENTIMENT_CONFIG)


@pytest.fixture(scope="module")
def pat(ls_server):
    return ls_server.personal_access_token()


@pytest.fixture(scope="module")
def backend_with_pat(labelpilot, ls_server, pat):
    return labelpilot.start("pat", LABEL_STUDIO_URL=ls_server.url, LABEL_STUDIO_API_KEY=pat, LABELPILOT_RETRAIN_EVERY=0)


@pytest.fixture(scope="module")
def backend_without_pat(labelpilot):
    return labelpilot.start("no-pat", LABELPILOT_RETRAIN_EVERY=0)


@pytest.fixture(scope="module")
def modern_ls(ls_server, pat):
    """Legacy tokens off in the organisation for this module, restored afterwards (Bearer auth)."""
    bearer = ls_server.pat_api()
    ls_server.api.set_jwt_settings(legacy=False)
    try:
        refused = httpx.get(ls_server.url + "/api/current-user/whoami", headers=ls_server.session.headers)
        assert refused.status_code == 401, refused.text
        yield bearer
    finally:
        bearer.set_jwt_settings(legacy=True)
        ls_server.api.whoami()  # the legacy token works again for the modules that follow
        bearer.close()


def annotated_project(ls, title: str):
    train, _ = sentiment_split(4)
    project = make_project(ls, title, SENTIMENT_CONFIG, [{"text": t} for t, _ in train])
    for tid, (_, label) in zip(project.task_ids, train, strict=True):
        ls.annotate(tid, sentiment_result(label))
    return project


@needs_text_model
def test_training_with_personal_access_token(modern_ls, backend_with_pat):
    ls = modern_ls
    project = annotated_project(ls, "live PAT")
    ml = connect(ls, project, backend_with_pat, title="labelpilot PAT")
    waiter = NewVersionWaiter(ls, ml["id"], backend_with_pat, project.uid)
    ls.train(ml["id"])
    after = waiter.wait(timeout=180)
    assert after["model_version"] != waiter.before and after["state"] == "CO", after

    ls.retrieve_predictions(project.id)
    preds = [p for p in ls.predictions(project=project.id) if p["model_version"] == after["model_version"]]
    assert len(preds) == len(project.task_ids)
    assert_valid_predictions(preds, CFG, project.tasks, allow_empty=False)


def test_training_without_credentials_fails_clearly(modern_ls, backend_without_pat):
    ls = modern_ls
    project = annotated_project(ls, "live no PAT")
    ml = connect(ls, project, backend_without_pat, title="labelpilot without PAT")
    before = ml["model_version"]
    ls.train(ml["id"])

    # The backend's own status is only a diagnostic: wait (bounded) until its job has ended.
    deadline = time.monotonic() + 90
    status: dict = {}
    while time.monotonic() < deadline:
        status = training_status(backend_without_pat, project.uid) or {}
        jobs = status.get("jobs") or []
        if jobs and all(j["state"] not in ("queued", "running") for j in jobs):
            break
        time.sleep(0.5)

    # What Label Studio shows: still connected, still the old version.
    state = ls.ml_backend(ml["id"])
    assert state["state"] == "CO", state
    assert state["model_version"] == before, f"trained without a working credential? {state} / {status}"

    # ... and the backend says what to configure.
    jobs = status.get("jobs") or []
    assert jobs and jobs[0]["state"] == "failed", status
    error = jobs[0].get("error") or ""
    assert "LABEL_STUDIO_API_KEY" in error and "LABEL_STUDIO_URL" in error, error
