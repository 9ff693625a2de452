"""One label config with two controls on the same text (``<Choices>`` and ``<Labels>``): one prediction
per task carrying regions of both, each valid for its own control."""

from __future__ import annotations

import pytest

from .corpus import MIXED_CONFIG, NER_SENTENCES, ner_result, sentiment_result
from .helpers import NewVersionWaiter, connect, make_project, needs_text_model
from .validation import LabelConfig, assert_valid_predictions

CFG = LabelConfig.parse(MIXED_CONFIG)
N_ANNOTATED = 16


@pytest.fixture(scope="module")
def backend(labelpilot):
    return labelpilot.start("mixed", LABELPILOT_RETRAIN_EVERY=0)


@needs_text_model
def test_choices_and_spans_in_one_project(ls, backend):
    project = make_project(ls, "live mixed", MIXED_CONFIG, [{"text": s} for s, _ in NER_SENTENCES])
    ml = connect(ls, project, backend, title="labelpilot mixed")
    # a sentence's "sentiment" here is only whether it names a person (learnable from the names)
    gold = {
        tid: ("Positive" if any(lab == "PER" for _, lab in ents) else "Neutral")
        for tid, (_, ents) in zip(project.task_ids, NER_SENTENCES, strict=True)
    }
    for tid, (text, ents) in zip(project.task_ids[:N_ANNOTATED], NER_SENTENCES, strict=False):
        ls.annotate(tid, sentiment_result(gold[tid]) + ner_result(text, ents))
    waiter = NewVersionWaiter(ls, ml["id"], backend, project.uid)
    ls.train(ml["id"])
    version = waiter.wait(timeout=240)["model_version"]

    ls.retrieve_predictions(project.id)
    preds = [p for p in ls.predictions(project=project.id) if p["model_version"] == version]
    assert len(preds) == len(project.task_ids)
    assert_valid_predictions(preds, CFG, project.tasks, allow_empty=False)
    with_choice = [p for p in preds if any(r["from_name"] == "sentiment" for r in p["result"])]
    with_spans = [p for p in preds if any(r["from_name"] == "ner" for r in p["result"])]
    assert len(with_choice) == len(preds), "every task should get a sentiment choice"
    assert len(with_spans) >= len(preds) // 2, f"only {len(with_spans)}/{len(preds)} tasks got spans"
    for p in preds:
        assert sum(r["from_name"] == "sentiment" for r in p["result"]) == 1, p["result"]
