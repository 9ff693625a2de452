"""Suspect annotations reach a real Label Studio and sort there (issue 16).

20 tasks are annotated, two of them with the wrong label; Start Training trains, serves, then audits the
labels (jobs/audit_step.py) and imports one prediction per annotated task under the model version
``<tag>-suspects`` with the suspicion as its score. A reviewer picks that version in the project settings and
sorts the Data Manager by "Prediction score": done here through the same API the UI uses.
"""

from __future__ import annotations

import json
import time

from .corpus import SENTIMENT_CONFIG, SENTIMENT_TEXTS, sentiment_result
from .helpers import connect, make_project, needs_text_model, training_status

WRONG = {0: "Negative", 13: "Positive"}  # item index -> the wrong label given to it


@needs_text_model
def test_suspects_reach_label_studio_and_sort_by_prediction_score(ls, labelpilot):
    backend = labelpilot.start("suspects", LABELPILOT_RETRAIN_EVERY=0)
    items = [(t, lab) for t, lab in SENTIMENT_TEXTS if lab != "Neutral"]
    project = make_project(ls, "live suspects", SENTIMENT_CONFIG, [{"text": t} for t, _ in items])
    ml = connect(ls, project, backend, title="labelpilot suspects")
    wrong_ids = {project.task_ids[i] for i in WRONG}
    for i, (tid, (_, label)) in enumerate(zip(project.task_ids, items, strict=True)):
        ls.annotate(tid, sentiment_result(WRONG.get(i, label)))
    ls.train(ml["id"])
    deadline = time.monotonic() + 240
    job = None
    while time.monotonic() < deadline:
        status = training_status(backend, project.uid) or {}
        jobs = status.get("jobs") or []
        if jobs and jobs[0]["state"] in ("done", "failed"):
            job = jobs[0]
            break
        time.sleep(1)
    assert job is not None and job["state"] == "done", job
    tag = job["version"]

    preds = [p for p in ls.predictions(project=project.id) if p["model_version"] == f"{tag}-suspects"]
    assert sorted(p["task"] for p in preds) == sorted(project.task_ids), preds[:3]
    assert all(0.0 <= p["score"] <= 1.0 for p in preds)
    for p in preds:  # what the out-of-fold model proposes, as a valid choices result
        assert all(r["from_name"] == "sentiment" and r["type"] == "choices" for r in p["result"]), p

    # the reviewer's view: the suspects version selected, tasks sorted by prediction score, most suspect first
    ls.patch(f"/api/projects/{project.id}", json={"model_version": f"{tag}-suspects"})
    query = json.dumps({"ordering": ["-tasks:predictions_score"]})
    tasks = ls.get("/api/tasks", params={"project": project.id, "fields": "all", "page_size": 100,
                                         "query": query})["tasks"]
    order = [t["id"] for t in tasks]
    scores = [t.get("predictions_score") for t in tasks]
    print(f"\n[live] suspects: order {order[:6]}, scores {scores[:6]}, wrong {sorted(wrong_ids)}")
    assert len(order) == len(items)
    assert scores == sorted(scores, reverse=True), scores
    assert set(order[: len(wrong_ids)]) == wrong_ids, (order[:5], sorted(wrong_ids), scores[:5])
