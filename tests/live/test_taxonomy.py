"""Text classification into a ``<Taxonomy>``: predictions must use the taxonomy shape (a list of paths
from the root), not ``choices``."""

from __future__ import annotations

import pytest

from .corpus import TAXONOMY_CONFIG, TAXONOMY_PATHS, sentiment_split, taxonomy_result
from .helpers import NewVersionWaiter, connect, make_project, needs_text_model
from .validation import LabelConfig, assert_valid_predictions

CFG = LabelConfig.parse(TAXONOMY_CONFIG)


@pytest.fixture(scope="module")
def backend(labelpilot):
    return labelpilot.start("taxonomy", LABELPILOT_RETRAIN_EVERY=0)


@needs_text_model
def test_taxonomy_train_and_predict(ls, backend):
    train, rest = sentiment_split(5)
    items = train + rest
    project = make_project(ls, "live taxonomy", TAXONOMY_CONFIG, [{"text": t} for t, _ in items])
    gold = {tid: TAXONOMY_PATHS[label] for tid, (_, label) in zip(project.task_ids, items, strict=True)}
    ml = connect(ls, project, backend, title="labelpilot taxonomy")
    annotated = project.task_ids[: len(train)]
    for tid in annotated:
        ls.annotate(tid, taxonomy_result(gold[tid]))
    waiter = NewVersionWaiter(ls, ml["id"], backend, project.uid)
    ls.train(ml["id"])
    version = waiter.wait(timeout=180)["model_version"]

    ls.retrieve_predictions(project.id)
    preds = [p for p in ls.predictions(project=project.id) if p["model_version"] == version]
    assert len(preds) == len(project.task_ids)
    assert_valid_predictions(preds, CFG, project.tasks, allow_empty=False)
    right = sum(gold[p["task"]] in p["result"][0]["value"]["taxonomy"] for p in preds if p["task"] in annotated)
    assert right >= 0.6 * len(annotated), f"{right}/{len(annotated)} training items get their path back"
