"""Label Studio projects and similarity search: an index built from a project's tasks, and "the tasks most
similar to this one" sent back to Label Studio as predictions the Data Manager sorts by.

Building (``labelpilot index build NAME --from-project ID``)
    Every task of the project (Label Studio's JSON export with ``download_all_tasks=true``) becomes one item;
    its id is the task id, its text is ``data[<text col>]`` or its image is ``data[<image col>]``, downloaded from
    Label Studio with the token through the media fetcher (the same fetch policy as the server's). A task without
    the column, or whose image cannot be read, is skipped and counted.

Pulling similar tasks (``labelpilot index similar NAME --task T --to-project ID``)
    The index is searched with task ``T``'s own vector; each of the ``k`` nearest tasks (``T`` itself first, at
    1.0) gets one prediction ``{"task", "result": [], "score": <cosine, clipped to [0, 1]>, "model_version":
    "similar-to-<T>"}`` through ``POST /api/projects/{id}/import/predictions``. In Label Studio 1.23.2 the Data
    Manager's "Prediction score" column averages the scores of the predictions whose version is the project's
    selected ``model_version`` (``annotate_predictions_score``; the per-backend variant behind
    ``ff_front_dev_1682`` is off), so an annotator selects ``similar-to-<T>`` as the project's model version and
    sorts by "Prediction score", descending: ``T``, then its nearest neighbours. The result is empty, so no region
    is proposed while that version is selected (select the model's version again to get pre-annotations back).
    Running it again for the same ``T`` adds the same scores once more, which leaves the average unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labelpilot.errors import InputError
from labelpilot.ids import parse_uint
from labelpilot.lsclient import LabelStudioClient
from labelpilot.media import MediaFetcher
from labelpilot.netpolicy import FetchPolicy, host_keys
from labelpilot.retrieval.index import VectorIndex
from labelpilot.retrieval.service import Item

SIMILAR_PREFIX = "similar-to-"


@dataclass(slots=True)
class ProjectItems:
    """What a project's export gives an index: the items, and the tasks left out (id -> why)."""

    kind: str
    items: list[Item]
    skipped: dict[str, str] = field(default_factory=dict)


def client_for(url: str | None, token: str | None) -> LabelStudioClient:
    """A Label Studio client from ``--ls-url`` / ``--ls-token`` (LABEL_STUDIO_URL / LABEL_STUDIO_API_KEY)."""
    if not url:
        raise InputError("--from-project needs Label Studio's address: --ls-url or LABEL_STUDIO_URL", field="ls_url")
    if not token:
        raise InputError("--from-project needs a Label Studio token: --ls-token or LABEL_STUDIO_API_KEY",
                         field="ls_token")
    if not url.startswith(("http://", "https://")):
        raise InputError(f"--ls-url {url!r} must start with http:// or https://", field="ls_url")
    # the operator named this Label Studio: its host:port is trusted (also on a private address), nothing else
    policy = FetchPolicy(trusted_hosts={max(host_keys(url), key=len)})
    return LabelStudioClient(url, token, token_source="env", policy=policy)


def project_items(client: LabelStudioClient, project_id: int, *, text_col: str = "text",
                  image_col: str | None = None) -> ProjectItems:
    """One item per task of the project: its text (``text_col``) or its image URL (``image_col``)."""
    col = image_col or text_col
    kind = "image" if image_col else "text"
    out = ProjectItems(kind, [])
    for task in client.export_tasks(project_id, all_tasks=True):
        if not isinstance(task, dict) or parse_uint(task.get("id")) is None:
            continue
        tid = str(task["id"])
        data = task.get("data") if isinstance(task.get("data"), dict) else {}
        value = data.get(col)
        if not isinstance(value, str) or (image_col and not value):
            out.skipped[tid] = f"no {'image' if image_col else 'text'} in data.{col}"
            continue
        meta = {"task": int(tid)}
        if image_col:
            out.items.append(Item(field=f"task.{tid}", id=tid, url=value, meta={**meta, "source": value}))
        else:
            out.items.append(Item(field=f"task.{tid}", id=tid, text=value, meta=meta))
    if not out.items:
        raise InputError(f"project {project_id}: no task has data.{col} ({len(out.skipped)} tasks); "
                         f"choose the column with --{'image' if image_col else 'text'}-col", field=col)
    return out


def fetcher_for(client: LabelStudioClient, cache_dir: Path) -> MediaFetcher:
    """Task media from this Label Studio only (its origin, with its token)."""
    return MediaFetcher(cache_dir, ls=client, policy=client.policy)


def similar_predictions(index: VectorIndex, task_id: int, k: int | None = None) -> list[dict[str, Any]]:
    """The predictions that rank the project's tasks by similarity to ``task_id`` (itself first, score 1.0).

    ``k`` (default: every item) caps how many tasks get a score; items whose id is not a task id are left out."""
    if k is not None and k < 1:
        raise InputError("--k must be at least 1", field="k")
    query = index.vector(str(task_id))
    hits = index.search(query, k or len(index))[0]
    version = f"{SIMILAR_PREFIX}{task_id}"
    out: list[dict[str, Any]] = []
    for hit in hits:
        tid = parse_uint(hit.id)
        if tid is None:
            continue
        score = 1.0 if tid == task_id else min(1.0, max(0.0, float(hit.score)))
        out.append({"task": tid, "result": [], "score": round(score, 6), "model_version": version})
    return out

