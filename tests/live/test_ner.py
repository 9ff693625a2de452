"""Span pre-labelling (NER, ``<Labels>`` on ``<Text>``) end to end through Label Studio."""

from __future__ import annotations

import pytest

from .corpus import NER_CONFIG, NER_SENTENCES, ner_result
from .helpers import NewVersionWaiter, connect, make_project
from .validation import LabelConfig, assert_valid_predictions

CFG = LabelConfig.parse(NER_CONFIG)
N_ANNOTATED = 16


@pytest.fixture(scope="module")
def backend(labelpilot):
    return labelpilot.start("ner", LABELPILOT_RETRAIN_EVERY=0)


def test_ner_project_setup_train_and_predict(ls, backend):
    project = make_project(ls, "live NER", NER_CONFIG, [{"text": s} for s, _ in NER_SENTENCES])
    ml = connect(ls, project, backend, title="labelpilot NER")  # /setup accepts a <Labels> config
    initial = ls.ml_backend(ml["id"])["model_version"]

    ls.retrieve_predictions(project.id)
    preds = ls.predictions(project=project.id)
    assert len(preds) == len(project.task_ids) and {p["model_version"] for p in preds} == {initial}
    assert_valid_predictions(preds, CFG, project.tasks)

    for tid, (text, entities) in zip(project.task_ids[:N_ANNOTATED], NER_SENTENCES, strict=False):
        ls.annotate(tid, ner_result(text, entities))
    waiter = NewVersionWaiter(ls, ml["id"], backend, project.uid)
    ls.train(ml["id"])
    after = waiter.wait(timeout=240)
    version = after["model_version"]
    assert version != initial and after["state"] == "CO", after

    ls.retrieve_predictions(project.id)
    preds = [p for p in ls.predictions(project=project.id) if p["model_version"] == version]
    assert len(preds) == len(project.task_ids)
    assert_valid_predictions(preds, CFG, project.tasks)  # offsets in range, text == data[start:end]
    non_empty = [p for p in preds if p["result"]]
    assert len(non_empty) >= len(preds) // 2, f"only {len(non_empty)}/{len(preds)} tasks got spans"
    # on the training sentences, most gold entities come back with the right label
    gold = {
        (tid, e["value"]["start"], e["value"]["end"], e["value"]["labels"][0])
        for tid, (text, ents) in zip(project.task_ids[:N_ANNOTATED], NER_SENTENCES, strict=False)
        for e in ner_result(text, ents)
    }
    found = {
        (p["task"], r["value"]["start"], r["value"]["end"], r["value"]["labels"][0]) for p in preds for r in p["result"]
    }
    assert len(gold & found) >= 0.5 * len(gold), f"{len(gold & found)}/{len(gold)} gold spans predicted"
