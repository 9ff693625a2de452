"""Jobs whose worker died mid-job (SIGKILL, OOM, a lost machine): queued again, or failed with the reason.

The job row in :class:`~labelpilot.jobs.state.ProjectStore` is the truth users see, so recovery is decided
there, from the heartbeats the store already keeps, not from RQ's registries: a running job is dead when its
owner is a process of this machine that is gone (:func:`labelpilot.jobs.owners.owner_gone`, at once) or its
heartbeat is older than ``job_stale_after`` (any machine). Why not RQ's own retry: a work-horse killed under a
live worker is retried by RQ (``Retry``), but a worker killed together with its horse leaves the job in RQ's
started registry until another worker's maintenance (every 10 minutes by default) calls it abandoned; and an
RQ retry would find the row still 'running' under the dead owner. What RQ gives here is the transport: the
retry is a new RQ job (``labelpilot-train-<id>-attempt<n>``) on the same queue.

Each dead job is moved with ONE conditional UPDATE (``WHERE id=? AND owner=? AND state='running'``:
:meth:`~labelpilot.jobs.state.ProjectStore.requeue`, or :meth:`~labelpilot.jobs.state.ProjectStore.end_job`
fenced on the dead owner), so of
two sweeping replicas exactly one requeues it, and a job claimed anew meanwhile is not touched. The job's
``attempts`` (claims) decide: at most ``job_retries`` more runs, then 'failed' with "worker died mid-job"
naming the owner and the time of its last heartbeat. A worker that was only silent (a stale heartbeat, still
running) loses the job: its progress updates and its finish are fenced on the owner, so it stops at its next
progress step and never records an outcome over the new run's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from labelpilot.jobs.owners import owner_gone
from labelpilot.jobs.state import ProjectStore

log = logging.getLogger("labelpilot.jobs")

#: (job id, uid, full_export, attempt) of a job to hand to the queue
Requeue = Callable[[int, str, bool, int], None]


def _when(ts: float | None) -> str:
    if ts is None:
        return "never"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def why_dead(job: dict[str, Any], stale_after: float, now: float) -> str | None:
    """Why running ``job``'s worker is taken for dead, or None while it looks alive."""
    pid = owner_gone(job.get("owner"))
    heartbeat = job.get("heartbeat")
    if pid is not None:
        what = f"its process (pid {pid}) is gone"
    elif heartbeat is None or heartbeat < now - stale_after:
        what = f"no heartbeat for {stale_after:g} s"
    else:
        return None
    return f"worker died mid-job (owner {job.get('owner')}: {what}; last heartbeat {_when(heartbeat)})"


def recover_dead_jobs(store: ProjectStore, *, stale_after: float, retries: int, queue_owner: str,
                      requeue: Requeue) -> tuple[int, int]:
    """Queue again (for ``queue_owner``, then ``requeue``) or fail the running jobs whose worker died.

    Returns (requeued, failed). A failed job's coalesced follow-up is queued and handed over like a new job."""
    now = time.time()
    requeued = failed = 0
    for job in store.running_jobs():
        reason = why_dead(job, stale_after, now)
        if reason is None or not job["owner"]:
            continue
        attempts = int(job["attempts"] or 0)
        if attempts <= retries:
            if store.requeue(int(job["id"]), str(job["owner"]), queue_owner=queue_owner,
                             progress=f"queued again (attempt {attempts + 1} of {retries + 1})",
                             error=f"attempt {attempts}: {reason}"):
                log.warning("job %s of %s: %s; queued again", job["id"], job["uid"], reason)
                requeue(int(job["id"]), str(job["uid"]), bool(job["full_export"]), attempts + 1)
                requeued += 1
            continue
        error = f"{reason}; tried {attempts} time(s), job_retries={retries}"
        moved, nxt = store.end_job(int(job["id"]), str(job["owner"]), state="failed", finished=now, error=error)
        if not moved:
            continue
        failed += 1
        log.warning("job %s of %s failed: %s", job["id"], job["uid"], error)
        if nxt is not None:
            requeue(nxt[0], str(job["uid"]), nxt[1], 1)
    return requeued, failed
