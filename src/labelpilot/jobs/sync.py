"""Bring the backend's copy of a project's annotations up to date before Start Training, cheaply when possible.

Why: Start Training used to re-export the whole project every time. On a 53k-task project that export is the
largest part of the time from the button to a new version serving, although the copy that webhooks keep is
nearly always complete already. So Start Training first *checks* (:func:`incremental_sync`), and falls back to
the full export (:func:`full_sync`) only when the check cannot vouch for the copy.

The check asks Label Studio 1.23.2's Data Manager task list (``GET /api/tasks``, the only listing that takes
filters) two cheap questions, never the annotations themselves:

1. which tasks changed since the copy was last known complete: a filter ``updated_at > synced_at``. Label
   Studio bumps a task's ``updated_at`` whenever one of its annotations is created, updated or deleted (also
   on predictions and data edits: false positives, which only cost a re-fetch). So an annotation whose webhook
   was missed (backend down, event lost) still shows up here;
2. how many not-cancelled annotations the project holds (``total_annotations`` of the unfiltered list).

The changed tasks (at most ``sync_max_changed``) are re-exported by id (``/export?ids[]=...`` with every task,
so a task whose last annotation was deleted comes back empty) and replace their rows in the copy. Then the copy
must hold exactly Label Studio's number of not-cancelled annotations; any disagreement (a missed deletion of
a task that disappeared, an annotation made during the check, a copy edited by hand) falls back to the full
export. ``synced_at`` is Label Studio's own clock (the ``Date`` header of the first answer, less a margin for
its one-second resolution), so clock skew between the two machines cannot hide a change.

Every path leaves a note in the job's report saying which one was taken and why.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from labelpilot.errors import LabelpilotError
from labelpilot.jobs.state import ProjectStore
from labelpilot.lsclient import LabelStudioClient

#: seconds taken off Label Studio's clock (the Date header has one-second resolution): a change made in the
#: second of the check is asked for again next time rather than missed
CLOCK_MARGIN = 2.0

#: task ids a single ``/export?ids[]=...`` request carries (keeps the URL well under common limits)
EXPORT_IDS_BATCH = 400


@dataclass
class SyncResult:
    """What a sync produced: the tasks to train on, the notes for the job, the path taken and its timings."""

    tasks: list[dict[str, Any]]
    notes: list[str]
    path: str  # "incremental" | "full" | "copy"
    timings: dict[str, float] = field(default_factory=dict)


def live_annotations(tasks: list[dict[str, Any]]) -> int:
    """Annotations of export-shaped tasks that Label Studio counts in ``total_annotations`` (not cancelled)."""
    return sum(1 for t in tasks for a in t.get("annotations") or []
               if isinstance(a, dict) and not a.get("was_cancelled"))


def incremental_sync(
    store: ProjectStore, uid: str, ls_id: int, client: LabelStudioClient, *, max_changed: int,
    export_timeout: float = 600.0, export_max_bytes: int = 2_000_000_000,
) -> SyncResult | str:
    """Check the copy against Label Studio and fetch only the tasks changed since the last sync.

    Returns the result, or the reason (a string) why the copy cannot be vouched for and a full export is
    needed. Errors talking to Label Studio propagate (:class:`~labelpilot.errors.LabelStudioError`)."""
    project = store.project(uid) or {}
    synced_at = project.get("synced_at")
    if not project.get("synced") or synced_at is None:
        return "the copy was never checked against a full export"
    t0 = time.perf_counter()
    totals, clock = client.task_page(ls_id, page_size=1)
    checked_at = (clock if clock is not None else time.time()) - CLOCK_MARGIN
    changed = client.changed_task_ids(ls_id, float(synced_at), limit=max_changed)
    check_s = time.perf_counter() - t0
    if changed is None:
        return f"more than {max_changed} tasks changed since the last sync"
    t1 = time.perf_counter()
    started = time.time()
    written = 0
    for i in range(0, len(changed), EXPORT_IDS_BATCH):
        ids = changed[i:i + EXPORT_IDS_BATCH]
        exported = client.export_tasks(ls_id, ids=ids, all_tasks=True, max_bytes=export_max_bytes,
                                       timeout=export_timeout)
        written += store.refresh_tasks(uid, [t for t in exported if isinstance(t, dict)], ids, since=started)
    fetch_s = time.perf_counter() - t1
    t2 = time.perf_counter()
    tasks = store.tasks(uid)
    read_s = time.perf_counter() - t2
    ours, theirs = live_annotations(tasks), int(totals.get("total_annotations") or 0)
    timings = {"check_s": round(check_s, 3), "fetch_s": round(fetch_s, 3), "read_copy_s": round(read_s, 3)}
    if ours != theirs:
        return (f"Label Studio counts {theirs} annotations, the copy {ours} after re-fetching {len(changed)} "
                f"changed tasks")
    store.mark_synced(uid, checked_at)
    note = (f"incremental sync: {len(changed)} tasks changed since the last sync re-fetched ({written} annotations); "
            f"the copy agrees with Label Studio on {ours} annotations in {len(tasks)} tasks "
            f"(check {check_s:.2f} s, fetch {fetch_s:.2f} s); no full export")
    return SyncResult(tasks, [note], "incremental", timings)


def full_sync(
    store: ProjectStore, uid: str, ls_id: int, client: LabelStudioClient, *, export_timeout: float,
    export_max_bytes: int,
) -> SyncResult:
    """The whole project's export replaces the copy, and ``synced_at`` is set for the next incremental sync
    (from Label Studio's clock before the export; left unset when Label Studio's task list cannot be read)."""
    t0 = time.perf_counter()
    clock: float | None
    try:
        _, clock = client.task_page(ls_id, page_size=1)
    except LabelpilotError:
        clock = None
    synced_at = None if clock is None else clock - CLOCK_MARGIN
    started = time.time()
    tasks = client.export_tasks(ls_id, max_bytes=export_max_bytes, timeout=export_timeout)
    fetch_s = time.perf_counter() - t0
    store.replace_tasks(uid, tasks, since=started, synced_at=synced_at)
    t1 = time.perf_counter()
    out = store.tasks(uid)
    timings = {"fetch_s": round(fetch_s, 3), "read_copy_s": round(time.perf_counter() - t1, 3)}
    return SyncResult(out, [f"exported {len(tasks)} annotated tasks from Label Studio (full export, {fetch_s:.2f} s)"],
                      "full", timings)


def sync_for_training(
    store: ProjectStore, uid: str, ls_id: int, client: LabelStudioClient, *, incremental: bool, max_changed: int,
    export_timeout: float, export_max_bytes: int,
) -> SyncResult:
    """Start Training's sync: the incremental one when allowed and it agrees, else the full export, with a
    note of why. Raises when the full export fails (the caller falls back to the copy)."""
    reason = "incremental sync is off (LABELPILOT_INCREMENTAL_SYNC=0)"
    if incremental:
        try:
            result = incremental_sync(store, uid, ls_id, client, max_changed=max_changed,
                                      export_timeout=export_timeout, export_max_bytes=export_max_bytes)
        except LabelpilotError as exc:
            result = f"the check failed ({exc.message})"
        if isinstance(result, SyncResult):
            return result
        reason = result
    full = full_sync(store, uid, ls_id, client, export_timeout=export_timeout, export_max_bytes=export_max_bytes)
    full.notes.insert(0, f"full export: {reason}")
    return full
