"""Training triggered by Label Studio's annotation webhooks alone (no "Start Training")."""

from __future__ import annotations

import pytest

from .corpus import SENTIMENT_CONFIG, sentiment_result, sentiment_split
from .helpers import NewVersionWaiter, connect, make_project, needs_text_model
from .validation import LabelConfig, assert_valid_predictions

RETRAIN_EVERY = 5


@pytest.fixture(scope="module")
def backend(labelpilot):
    return labelpilot.start("retrain-every-5", LABELPILOT_RETRAIN_EVERY=RETRAIN_EVERY, LABELPILOT_RETRAIN_SCHEDULE="")


@needs_text_model
def test_annotation_webhooks_retrain_without_start_training(ls, ls_server, backend):
    log_mark = ls_server.log_mark()
    train, _ = sentiment_split(4)  # 12 texts, the three classes interleaved
    project = make_project(ls, "live webhook retrain", SENTIMENT_CONFIG, [{"text": t} for t, _ in train])
    # LS's own trigger (START_TRAINING every N annotations) is off: only the backend's counter can train
    assert ls.project(project.id)["min_annotations_to_start_training"] == 0
    ml = connect(ls, project, backend, title="labelpilot retrain")
    waiter = NewVersionWaiter(ls, ml["id"], backend, project.uid)
    assert "untrained" in waiter.before or waiter.before.startswith("zero-shot-")  # zero-shot with the encoder

    for tid, (_, label) in zip(project.task_ids[:10], train, strict=False):
        ls.annotate(tid, sentiment_result(label))
    after = waiter.wait(timeout=180)
    assert not ls_server.log_errors_about(backend.url, since=log_mark)  # every webhook answered within LS's 1 s

    assert after["model_version"] != waiter.before
    assert after["state"] == "CO", after
    after = waiter.settle()  # the 10th annotation may have queued a second run: predict with the last one
    assert after["model_version"] != waiter.before
    ls.retrieve_predictions(project.id)
    preds = [p for p in ls.predictions(project=project.id) if p["model_version"] == after["model_version"]]
    assert len(preds) == len(project.task_ids)
    assert_valid_predictions(preds, LabelConfig.parse(SENTIMENT_CONFIG), project.tasks, allow_empty=False)


@needs_text_model
def test_updates_and_deletions_count_towards_retraining(ls, ls_server, backend):
    """ANNOTATION_UPDATED and ANNOTATIONS_DELETED reach the backend and count like creations."""
    log_mark = ls_server.log_mark()
    train, _ = sentiment_split(4)
    project = make_project(ls, "live webhook update/delete", SENTIMENT_CONFIG, [{"text": t} for t, _ in train])
    ml = connect(ls, project, backend, title="labelpilot retrain update/delete")
    labels = dict(zip(project.task_ids, (label for _, label in train), strict=True))

    waiter = NewVersionWaiter(ls, ml["id"], backend, project.uid)
    annotations = [ls.annotate(tid, sentiment_result(labels[tid])) for tid in project.task_ids[:RETRAIN_EVERY]]
    first = waiter.wait(timeout=180)
    first = waiter.settle()

    # 2 creations alone would not reach RETRAIN_EVERY; 2 updates + 1 deletion make it 5 events
    waiter = NewVersionWaiter(ls, ml["id"], backend, project.uid)
    for tid in project.task_ids[RETRAIN_EVERY : RETRAIN_EVERY + 2]:
        ls.annotate(tid, sentiment_result(labels[tid]))
    ls.update_annotation(annotations[0]["id"], sentiment_result("Neutral"))
    ls.update_annotation(annotations[1]["id"], sentiment_result("Neutral"))
    ls.delete_annotation(annotations[2]["id"])
    second = waiter.wait(timeout=180)
    assert second["model_version"] not in (first["model_version"], waiter.before), second
    assert second["state"] == "CO", second
    assert not ls_server.log_errors_about(backend.url, since=log_mark)
