"""Start Training without a full re-export (issue 14): the incremental check, a missed webhook, a disagreement.

Whether a full export happened is read from Label Studio's own request log: the full export is
``GET /api/projects/<id>/export`` without ``ids[]``; the incremental path only exports changed tasks by id.
"""

from __future__ import annotations

import re

import pytest

from .corpus import SENTIMENT_CONFIG, SENTIMENT_LABELS, sentiment_result
from .helpers import NewVersionWaiter, connect, make_project, needs_text_model, training_status

N_TASKS = 300


@pytest.fixture(scope="module")
def backend(labelpilot):
    # webhooks alone never train here: only Start Training does
    return labelpilot.start("incremental-sync", LABELPILOT_RETRAIN_EVERY=1_000_000, LABELPILOT_RETRAIN_SCHEDULE="")


def _exports(ls_server, project_id: int, since: int) -> tuple[list[str], list[str]]:
    """(full exports, by-id exports) of ``project_id`` Label Studio logged after ``since``."""
    with open(ls_server.process.log_path, "rb") as fh:
        fh.seek(since)
        lines = fh.read().decode(errors="replace").splitlines()
    hits = list(dict.fromkeys(ln for ln in lines if f"/api/projects/{project_id}/export" in ln and '"GET ' in ln))
    return [h for h in hits if "ids" not in h], [h for h in hits if "ids" in h]


def _train(ls, ml_id: int, backend, uid: str) -> dict:
    """Start Training as the button does; the finished job's row (from the backend's diagnostics)."""
    waiter = NewVersionWaiter(ls, ml_id, backend, uid)
    ls.train(ml_id)
    waiter.wait(timeout=240)
    waiter.settle()
    jobs = (training_status(backend, uid) or {}).get("jobs") or []
    assert jobs and jobs[0]["id"] > waiter.last_job and jobs[0]["state"] == "done", jobs[:2]
    return jobs[0]


def _notes(job: dict) -> str:
    return " | ".join((job.get("report") or {}).get("notes") or [])


def _changed(notes: str) -> int:
    """Tasks the incremental sync re-fetched. At least the ones annotated since, and maybe a few more: Label
    Studio also bumps ``updated_at`` when predictions are stored (the backend's suspects, for one)."""
    m = re.search(r"incremental sync: (\d+) tasks changed", notes)
    assert m, notes
    return int(m.group(1))


@needs_text_model
def test_start_training_syncs_incrementally_and_falls_back(ls, ls_server, labelpilot, backend):
    labels = [SENTIMENT_LABELS[i % len(SENTIMENT_LABELS)] for i in range(N_TASKS)]
    data = [{"text": f"text {i} is {labels[i].lower()} {'good' if labels[i] == 'Positive' else 'meh'}"}
            for i in range(N_TASKS)]
    project = make_project(ls, "live incremental sync", SENTIMENT_CONFIG, data)
    ml = connect(ls, project, backend, title="labelpilot incremental")
    ids = project.task_ids
    made = {tid: ls.annotate(tid, sentiment_result(labels[i])) for i, tid in enumerate(ids[:12])}

    # 1. never synced: the full export, which also records Label Studio's clock for the next check
    mark = ls_server.log_mark()
    job = _train(ls, ml["id"], backend, project.uid)
    full, _ = _exports(ls_server, project.id, mark)
    assert full, "the first Start Training did not export the project"
    assert "full export: the copy was never checked" in _notes(job), _notes(job)

    # 2. annotations delivered by webhook: Start Training checks and fetches only the changed tasks
    for i, tid in enumerate(ids[12:18], start=12):
        made[tid] = ls.annotate(tid, sentiment_result(labels[i]))
    mark = ls_server.log_mark()
    job = _train(ls, ml["id"], backend, project.uid)
    full, by_id = _exports(ls_server, project.id, mark)
    assert not full, f"a full export happened: {full}"
    assert _changed(_notes(job)) >= 6 and "agrees with Label Studio on 18 annotations" in _notes(job), _notes(job)
    assert by_id, "the changed tasks were not fetched by id"

    # 3. the backend is down while annotations are made, changed and deleted: the check picks them up
    backend.stop()
    for i, tid in enumerate(ids[18:21], start=18):
        made[tid] = ls.annotate(tid, sentiment_result(labels[i]))
    ls.update_annotation(made[ids[0]]["id"], sentiment_result("Neutral"))
    ls.delete_annotation(made.pop(ids[1])["id"])
    backend = labelpilot.restart(backend)
    mark = ls_server.log_mark()
    job = _train(ls, ml["id"], backend, project.uid)
    full, by_id = _exports(ls_server, project.id, mark)
    assert not full, f"a full export happened: {full}"
    assert _changed(_notes(job)) >= 5 and "agrees with Label Studio on 20 annotations" in _notes(job), _notes(job)

    # 4. a disagreement: a task deleted with its annotation (no annotation webhook, no task left to re-fetch)
    ls.call("DELETE", f"/api/tasks/{ids[2]}", expect=204)
    mark = ls_server.log_mark()
    job = _train(ls, ml["id"], backend, project.uid)
    full, _ = _exports(ls_server, project.id, mark)
    assert full, "the disagreement did not fall back to the full export"
    assert "full export: Label Studio counts 19 annotations, the copy 20" in _notes(job), _notes(job)

    # 5. after the full export the copy agrees again: the next Start Training is incremental
    mark = ls_server.log_mark()
    job = _train(ls, ml["id"], backend, project.uid)
    assert not _exports(ls_server, project.id, mark)[0]
    assert "incremental sync" in _notes(job) and "19 annotations" in _notes(job), _notes(job)
