"""Play Label Studio and an annotator against a real ``labelpilot serve``, task by task.

For each task in order: ``/predict`` it (as Label Studio does when the annotator opens it), score the
pre-label against the annotation the annotator then saves (:mod:`labelpilot.prelabel.metrics`), post that
annotation as an ``ANNOTATION_CREATED`` webhook, and let the server retrain as it is configured to.

Waiting, ``wait``:
- ``"person"`` (default): the annotator needs ``seconds_per_task`` per task, so a retrain that finishes
  within that time serves the next task. Simulated without sleeping when nothing is pending: after each
  webhook, while a training job is queued or running, wait for it up to ``seconds_per_task``.
- ``"version"``: after a webhook that started or joined a retrain, wait until it ends (``timeout`` at most):
  the best the schedule can do, whatever the training time.
- ``"none"``: never wait (an annotator faster than any retrain).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from labelpilot.prelabel.datasets import BenchDataset
from labelpilot.prelabel.metrics import TaskScore, score_choices, score_spans
from labelpilot.prelabel.server import ServedBackend, project_object

WAITS = ("person", "version", "none")


@dataclass
class TaskRecord:
    index: int  # 1-based position in the annotation order
    version: str
    latency_ms: float
    score: TaskScore
    waited_s: float = 0.0


@dataclass
class RunResult:
    dataset: str
    kind: str
    multiple: bool
    records: list[TaskRecord] = field(default_factory=list)
    jobs: list[dict[str, Any]] = field(default_factory=list)
    setup_version: str = ""
    seconds: float = 0.0
    env: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def _wait_for_training(backend: ServedBackend, uid: str, budget: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < budget:
        if not backend.pending(uid):
            break
        time.sleep(0.05)
    return time.monotonic() - t0


def run_dataset(
    ds: BenchDataset,
    *,
    env: dict[str, str] | None = None,
    wait: str = "person",
    seconds_per_task: float = 5.0,
    timeout: float = 120.0,
    project_id: int = 1,
    log: Callable[[str], None] = print,
) -> RunResult:
    """One fresh server, one project, every task of ``ds`` in order."""
    if wait not in WAITS:
        raise ValueError(f"wait must be one of {WAITS}, not {wait!r}")
    out = RunResult(ds.name, ds.kind, ds.multiple, env=dict(env or {}))
    config = ds.label_config
    project = project_object(project_id, config, f"bench {ds.name}")
    uid = f"{project_id}.1700000000"
    t_start = time.monotonic()
    with ServedBackend(env) as backend:
        out.setup_version = backend.setup(uid, config)
        for i, (task, gold) in enumerate(zip(ds.tasks, ds.gold, strict=True), start=1):
            t0 = time.perf_counter()
            pred = backend.predict(uid, config, task)
            latency = (time.perf_counter() - t0) * 1000
            result = pred.get("result") or []
            score = score_spans(result, gold) if ds.kind == "spans" else score_choices(result, gold, ds.multiple)
            rec = TaskRecord(i, str(pred.get("model_version", "")), latency, score)
            out.records.append(rec)
            answer = backend.annotate(project, task, 100_000 + i, gold)
            started = "training" in answer
            if wait == "person":
                rec.waited_s = _wait_for_training(backend, uid, seconds_per_task)
            elif wait == "version" and started:
                rec.waited_s = _wait_for_training(backend, uid, timeout)
            if i in (1, 10, 50) or i % 100 == 0:
                log(f"  {ds.name}: task {i}/{len(ds.tasks)} version {rec.version} ({latency:.1f} ms)")
        out.jobs = backend.jobs(uid)
        out.errors = [f"job {j['id']}: {j['error']}" for j in out.jobs if j["state"] == "failed" and j["error"]]
    out.seconds = time.monotonic() - t_start
    return out
