"""Text classification end to end, driven only through Label Studio's API.

connect -> predictions before any model (empty, initial version) -> annotate -> Start Training ->
new model_version in LS -> predictions of the new version (valid labels, numeric scores, no duplicates)
-> interactive pre-annotation.
"""

from __future__ import annotations

from collections import Counter

import pytest

from .corpus import SENTIMENT_CONFIG, SENTIMENT_LABELS, SENTIMENT_TEXTS, sentiment_result, sentiment_split
from .helpers import NewVersionWaiter, connect, make_project, needs_text_model
from .lsapi import count_by_task_and_version
from .validation import LabelConfig, assert_valid_predictions, prediction_problems

N_ANNOTATED_PER_CLASS = 7  # 21 of the 30 tasks get a human label
CFG = LabelConfig.parse(SENTIMENT_CONFIG)


@pytest.fixture(scope="module")
def backend(labelpilot):
    # automatic retraining off: in this scenario only "Start Training" may produce a new model
    return labelpilot.start("text", LABELPILOT_RETRAIN_EVERY=0)


@pytest.fixture(scope="module")
def project(ls):
    train, rest = sentiment_split(N_ANNOTATED_PER_CLASS)
    items = train + rest
    proj = make_project(ls, "live sentiment", SENTIMENT_CONFIG, [{"text": t} for t, _ in items])
    proj.gold = {tid: label for tid, (_, label) in zip(proj.task_ids, items, strict=True)}
    proj.annotated_ids = proj.task_ids[: len(train)]
    return proj


@pytest.fixture(scope="module")
def ml(ls, project, backend):
    return connect(ls, project, backend, title="labelpilot text", is_interactive=True)


@pytest.fixture(scope="module")
def trained(ls, ls_server, project, backend, ml):
    """Annotate ~20 tasks, press Start Training, wait until LS reports a new model_version."""
    log_mark = ls_server.log_mark()
    for tid in project.annotated_ids:
        ls.annotate(tid, sentiment_result(project.gold[tid]))
    waiter = NewVersionWaiter(ls, ml["id"], backend, project.uid)
    ls.train(ml["id"])
    after = waiter.wait()
    return {"before": waiter.before, "after": after["model_version"], "ml": after, "log_mark": log_mark}


def test_connect_backend(ls, project, ml):
    assert ml["state"] == "CO"
    assert ml["is_interactive"] is True
    version = ls.ml_backend(ml["id"])["model_version"]
    assert isinstance(version, str) and ("untrained" in version or version.startswith("zero-shot-")), (
        f"initial model_version {version!r}"
    )
    assert ls.project(project.id)["min_annotations_to_start_training"] == 0


def test_predictions_before_training(ls, project, ml):
    initial = ls.ml_backend(ml["id"])["model_version"]
    out = ls.retrieve_predictions(project.id)
    assert out["processed_items"] == len(project.task_ids), out
    preds = ls.predictions(project=project.id)
    per_task = Counter(p["task"] for p in preds)
    assert per_task == Counter(project.task_ids), f"expected one prediction per task, got {per_task}"
    assert {p["model_version"] for p in preds} == {initial}
    if "untrained" in initial:  # without the text encoder nothing is proposed before training
        assert all(p["result"] == [] for p in preds), [p["result"] for p in preds if p["result"]][:3]
    else:  # zero-shot from the label names
        assert all(p["result"] for p in preds), [p for p in preds if not p["result"]][:3]
    assert_valid_predictions(preds, CFG, project.tasks)


def test_interactive_before_training(ls, project, ml):
    tid = project.task_ids[-1]
    context = {"result": sentiment_result("Neutral")}
    out = ls.interactive(ml["id"], tid, context)
    assert set(out) == {"data"}, out
    data = out["data"]
    assert isinstance(data.get("result"), list), data
    assert not prediction_problems(data, CFG, project.tasks[tid]), prediction_problems(data, CFG)


@needs_text_model
def test_start_training_changes_model_version(trained):
    assert trained["after"] != trained["before"]
    assert "untrained" not in trained["after"], trained["after"]
    assert trained["ml"]["state"] == "CO", trained["ml"]


@needs_text_model
def test_predictions_after_training(ls, project, ml, trained):
    version = trained["after"]
    out = ls.retrieve_predictions(project.id)
    assert out["processed_items"] == len(project.task_ids), out
    preds = [p for p in ls.predictions(project=project.id) if p["model_version"] == version]
    assert Counter(p["task"] for p in preds) == Counter(project.task_ids), (
        f"expected one prediction of {version} per task; got {len(preds)}"
    )
    assert_valid_predictions(preds, CFG, project.tasks, allow_empty=False)
    for p in preds:
        assert len(p["result"]) == 1, p
        assert p["result"][0]["value"]["choices"][0] in SENTIMENT_LABELS
        assert isinstance(p["score"], (int, float)) and 0.0 <= p["score"] <= 1.0, p["score"]
    # the model learnt something from the cue words (on the tasks it was trained on)
    hits = sum(
        p["result"][0]["value"]["choices"][0] == project.gold[p["task"]]
        for p in preds
        if p["task"] in project.annotated_ids
    )
    assert hits >= 0.6 * len(project.annotated_ids), f"{hits}/{len(project.annotated_ids)} training items right"


@needs_text_model
def test_retrieving_twice_creates_no_duplicates(ls, project, trained):
    ls.retrieve_predictions(project.id)
    first = ls.predictions(project=project.id)
    ls.retrieve_predictions(project.id)
    second = ls.predictions(project=project.id)
    assert len(second) == len(first)
    dupes = {k: n for k, n in count_by_task_and_version(second).items() if n > 1}
    assert not dupes, f"(task, model_version) with more than one prediction: {dupes}"


@needs_text_model
def test_interactive_after_training(ls, project, ml, trained):
    tid = project.task_ids[-1]
    out = ls.interactive(ml["id"], tid, {"result": sentiment_result("Neutral")})
    data = out["data"]
    assert data.get("model_version") == trained["after"], data
    assert not prediction_problems(data, CFG, project.tasks[tid], allow_empty=False), (
        prediction_problems(data, CFG, allow_empty=False),
        data,
    )


@needs_text_model
def test_model_versions_listed(ls, ml, trained):
    """``GET /api/ml/{id}/versions`` (LS calls the backend's /versions) knows the trained version."""
    out = ls.get(f"/api/ml/{ml['id']}/versions")
    assert trained["after"] in out.get("versions", []), out


@needs_text_model
def test_label_studio_logged_no_errors_calling_the_backend(ls_server, backend, trained):
    """Annotation webhooks have a 1 s time-out in LS (live doc G5); LS only logs the failures."""
    assert not ls_server.log_errors_about(backend.url, since=trained["log_mark"])


@needs_text_model
def test_odd_texts_still_get_one_prediction_each(ls, project, trained):
    """LS drops the whole batch when the number of results differs from the number of tasks."""
    odd = [
        {"text": ""},
        {"text": "   "},
        {"text": "great " * 3000},
        {"text": "这个手机非常好用 👍 très bien"},
        {"text": "<b>awful</b> &amp; \u0000 broken"},
        {"text": "12345"},
    ]
    ids = ls.import_tasks(project.id, odd)
    out = ls.retrieve_predictions(project.id, ids)
    assert out["processed_items"] == len(ids), out
    preds = [p for p in ls.predictions(project=project.id) if p["task"] in ids]
    per_task = Counter(p["task"] for p in preds)
    assert per_task == Counter(ids), f"predictions per task: {per_task}"
    assert {p["model_version"] for p in preds} == {trained["after"]}
    assert_valid_predictions(preds, CFG, dict(zip(ids, odd, strict=True)))


@pytest.fixture(scope="module")
def other(ls, backend, trained):
    """A second project on the same backend, connected after the first one was trained."""
    proj = make_project(ls, "live sentiment B", SENTIMENT_CONFIG, [{"text": t} for t, _ in SENTIMENT_TEXTS[::5]])
    proj.ml = connect(ls, proj, backend, title="labelpilot text B")
    return proj


@needs_text_model
def test_second_project_on_the_same_backend_is_independent(ls, other, trained):
    version = ls.ml_backend(other.ml["id"])["model_version"]
    assert "untrained" in version or version.startswith("zero-shot-"), f"project B got project A's model: {version}"
    ls.retrieve_predictions(other.id)
    preds = ls.predictions(project=other.id)
    assert len(preds) == len(other.task_ids), preds[:2]
    if "untrained" in version:
        assert all(p["result"] == [] for p in preds), preds[:2]
    assert {p["model_version"] for p in preds} == {version}


@needs_text_model
def test_model_versions_are_not_offered_to_another_project(ls, other, trained):
    """LS's model-version list for project B comes from the backend's ``GET /versions``, which LS calls
    without naming a project: a backend serving several projects must not answer with A's versions."""
    listed = ls.get(f"/api/ml/{other.ml['id']}/versions")
    assert trained["after"] not in listed.get("versions", []), f"project A's version offered for project B: {listed}"


@needs_text_model
def test_backend_restart_keeps_the_model(ls, labelpilot, backend, project, ml, trained):
    """Last in this module: it replaces the backend process (same port, same data dir)."""
    count = len(ls.predictions(project=project.id))
    labelpilot.restart(backend)
    state = ls.ml_backend(ml["id"])
    assert state["state"] == "CO" and state["model_version"] == trained["after"], state
    ls.retrieve_predictions(project.id)
    assert len(ls.predictions(project=project.id)) == count  # same version: nothing re-predicted
    tid = project.task_ids[0]
    data = ls.interactive(ml["id"], tid, {"result": sentiment_result("Positive")})["data"]
    assert data.get("model_version") == trained["after"], data
    assert not prediction_problems(data, CFG, project.tasks[tid], allow_empty=False), data
