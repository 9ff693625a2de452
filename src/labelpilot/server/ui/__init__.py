"""The dashboard at ``/ui``: server-rendered pages (Jinja2) plus one small static script, no build step.

Pages: the overview (Label Studio projects and their connection state, other registry models), a project or
model page (versions with metrics, evaluation reports with confusion matrices, a learning curve, training
jobs with live progress, suspect annotations) and the `/v1` traffic page. The pages poll two small JSON
endpoints, ``/ui/api/jobs?project=`` (every second) and ``/ui/api/traffic`` (every 5 s).

Security: the router has the same ``require_basic`` dependency as the Label Studio routes, so with
``BASIC_AUTH_USER``/``BASIC_AUTH_PASS`` set every page, script and JSON answer needs them. Templates are
autoescaped (project ids, hostnames, label names and anything a report holds are user-controlled); data for
the charts goes into ``<script type="application/json">`` blocks through ``tojson`` (which escapes ``<``,
``>``, ``&`` and quotes), never into executable script. Every /ui answer carries a Content-Security-Policy
that allows scripts, styles and connections only from this origin and no inline script or style.

Charts: Chart.js 4.6.1 (MIT, https://www.chartjs.org), its UMD build ``dist/chart.umd.min.js`` vendored as
``static/chart.umd.min.js`` from the npm package ``chart.js@4.6.1`` (``npm pack chart.js``), with only its
trailing ``sourceMappingURL`` comment removed; its licence is ``static/chart.js-LICENSE.md`` and
``static/NOTICE``. No CDN: the dashboard works offline.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from labelpilot import __version__
from labelpilot.errors import NotFoundError, SchemaError
from labelpilot.jobs.training import model_name
from labelpilot.registry import ModelVersion, Registry
from labelpilot.schema import parse_label_config
from labelpilot.server.auth import require_basic
from labelpilot.server.deps import ServicesDep
from labelpilot.server.responses import JSON

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
PROJECT_PREFIX = "ls-project-"

#: Only these files are served from static/ (no path from the URL ever reaches the file system).
STATIC_FILES = {
    "chart.umd.min.js": "text/javascript; charset=utf-8",
    "ui.js": "text/javascript; charset=utf-8",
    "ui.css": "text/css; charset=utf-8",
    "NOTICE": "text/plain; charset=utf-8",
    "chart.js-LICENSE.md": "text/plain; charset=utf-8",
}

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}

#: metric names drawn on the learning curve (quality in [0, 1]); others (n_features, losses) are listed only
_QUALITY_WORDS = ("accuracy", "f1", "precision", "recall", "map", "kappa", "auc", "exact")

_env = Environment(
    loader=FileSystemLoader(str(HERE / "templates")),
    autoescape=select_autoescape(("html",), default_for_string=True, default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _when(ts: float | None) -> str:
    if not ts:
        return "—"
    return datetime.fromtimestamp(float(ts), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _num(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"


_env.filters["when"] = _when
_env.filters["num"] = _num

router = APIRouter(prefix="/ui", dependencies=[Depends(require_basic)], include_in_schema=False)


def _page(template: str, **context: Any) -> HTMLResponse:
    html = _env.get_template(template).render(version=__version__, **context)
    return HTMLResponse(html, headers=SECURITY_HEADERS)


def _json(body: Any) -> JSON:
    return JSON(body, headers=SECURITY_HEADERS)


# -- what the pages show ------------------------------------------------------------------------------
def config_summary(label_config: str | None) -> list[dict[str, Any]]:
    """The controls of a label config as short rows: name, tag, kind, labels (at most 12 shown)."""
    if not label_config:
        return []
    try:
        schema = parse_label_config(label_config)
    except SchemaError as exc:
        return [{"name": "?", "type": "invalid config", "kind": exc.message, "labels": [], "more": 0}]
    rows = []
    for c in schema.controls:
        keys = c.label_keys
        rows.append({"name": c.name, "type": c.type, "kind": c.kind.value, "labels": keys[:12],
                     "more": max(0, len(keys) - 12), "to_name": c.to_name})
    rows.extend({"name": u.name, "type": u.type, "kind": "not pre-labelled", "labels": [], "more": 0}
                for u in schema.unsupported)
    return rows


def _serving(registry: Registry, name: str) -> ModelVersion | None:
    try:
        return registry.get(name)
    except NotFoundError:
        return None


def _versions(registry: Registry, name: str) -> list[ModelVersion]:
    try:
        return registry.list_versions(name)
    except NotFoundError:
        return []


def overview_context(state: Any) -> dict[str, Any]:
    registry: Registry = state.registry
    store = state.store
    projects = []
    for uid in store.project_uids():
        info = store.project(uid) or {}
        serving = _serving(registry, model_name(uid))
        jobs = store.jobs(uid, limit=1)
        projects.append({
            "uid": uid,
            "hostname": info.get("hostname") or "",
            "updated": info.get("updated"),
            "authed": bool(info.get("authed")),
            "has_token": bool(info.get("access_token")),
            "since_train": info.get("since_train", 0),
            "annotations": store.count_annotations(uid),
            "controls": config_summary(info.get("label_config")),
            "model_version": serving.tag if serving else None,
            "n_versions": len(_versions(registry, model_name(uid))),
            "last_job": jobs[0] if jobs else None,
        })
    project_models = {model_name(p["uid"]) for p in projects}
    others = [m for m in registry.list_models() if m["name"] not in project_models]
    for m in others:
        serving = _serving(registry, m["name"])
        m["tag"] = serving.tag if serving else None
    return {"projects": projects, "models": others}


def _is_quality(key: str, value: Any) -> bool:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        return False
    last = key.rsplit(".", 1)[-1].lower()
    return 0.0 <= value <= 1.0 and not last.startswith("n_") and any(w in last for w in _QUALITY_WORDS)


def learning_curve(versions: list[ModelVersion]) -> dict[str, Any]:
    """Quality against the number of annotations, one series per quality metric, from the versions' stored
    metrics (text-linear's are cross-validated out-of-fold scores up to 3,000 annotations). Versions trained
    on the same number of annotations keep the latest figure."""
    points: dict[str, dict[int, float]] = {}
    for mv in sorted(versions, key=lambda m: m.version):
        for key, value in (mv.metrics or {}).items():
            if _is_quality(key, value):
                points.setdefault(key, {})[int(mv.n_examples)] = round(float(value), 4)
    series = [{"metric": k, "points": [{"x": n, "y": v} for n, v in sorted(pts.items())]}
              for k, pts in sorted(points.items())]
    return {"series": series, "n_points": sum(len(s["points"]) for s in series)}


def _heat(matrix: list[list[int]]) -> list[list[dict[str, Any]]]:
    """Cells with a CSS class h0..h9 from the row-normalised count (no inline styles: the CSP forbids them)."""
    out = []
    for row in matrix:
        total = sum(row) or 1
        out.append([{"n": n, "cls": f"h{min(9, int(10 * n / total))}"} for n in row])
    return out


def evaluations(registry: Registry, name: str) -> list[dict[str, Any]]:
    """Stored evaluation reports of a model (``labelpilot evaluate``), newest first, with their confusion
    matrices as label-indexed heat tables."""
    out = []
    for ev in reversed(registry.evaluations(name)):
        result = ev.get("result") or {}
        metrics = result.get("metrics") or {}
        flat = {k: v for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        per_class = metrics.get("per_class") or metrics.get("per_type") or {}
        matrix = result.get("confusion_matrix")
        cm = None
        if isinstance(matrix, list) and matrix and all(isinstance(r, list) for r in matrix):
            labels = [str(k) for k in per_class][: len(matrix)]
            labels += [f"#{i}" for i in range(len(labels), len(matrix))]
            cols = labels + ["(none)"] * (len(matrix[0]) - len(labels))
            cm = {"rows": labels, "cols": cols, "cells": _heat(matrix)}
        out.append({"version": ev.get("version"), "at": ev.get("at"), "data": ev.get("data"), "metrics": flat,
                    "per_class": per_class if isinstance(per_class, dict) else {}, "confusion": cm})
    return out


def suspects(versions: list[ModelVersion]) -> dict[str, Any] | None:
    """The ``suspects`` rows of the newest version whose report has them (a list of objects: likely label
    errors), with the union of their keys as columns; None when no version has any yet."""
    for mv in sorted(versions, key=lambda m: m.version, reverse=True):
        rows = mv.report.get("suspects") if isinstance(mv.report, dict) else None
        if isinstance(rows, list) and rows:
            rows = [r for r in rows if isinstance(r, dict)][:200]
            cols: list[str] = []
            for r in rows:
                cols.extend(k for k in r if k not in cols)
            return {"version": mv.version, "tag": mv.tag, "columns": cols, "rows": rows}
    return None


def _version_row(mv: ModelVersion) -> dict[str, Any]:
    report = mv.report or {}
    return {"version": mv.version, "tag": mv.tag, "created": mv.created, "families": mv.families,
            "n_examples": mv.n_examples, "metrics": mv.metrics, "serving": mv.serving,
            "seconds": report.get("seconds"), "n_train": report.get("n_train"), "n_val": report.get("n_val"),
            "notes": report.get("notes") or [], "n_skipped": report.get("n_skipped", 0)}


def model_context(registry: Registry, name: str) -> dict[str, Any]:
    versions = _versions(registry, name)
    return {
        "model": name,
        "versions": [_version_row(mv) for mv in reversed(versions)],
        "curve": learning_curve(versions),
        "evaluations": evaluations(registry, name),
        "suspects": suspects(versions),
        "history": registry.history(name)[-20:] if versions else [],
    }


def job_rows(store: Any, uid: str, limit: int = 20) -> list[dict[str, Any]]:
    """Training jobs of a project, newest first, as the jobs endpoint sends them (no reports: they can be
    large; the version row has what the page needs)."""
    rows = []
    for j in store.jobs(uid, limit=limit):
        done, total = _fraction(j.get("progress") or "")
        rows.append({"id": j["id"], "reason": j["reason"], "state": j["state"], "queued": j["queued"],
                     "started": j["started"], "finished": j["finished"], "progress": j.get("progress") or "",
                     "done": done, "total": total, "version": j.get("version"), "error": j.get("error")})
    return rows


def _fraction(progress: str) -> tuple[int | None, int | None]:
    """``"fitting (3/10)"`` → (3, 10)."""
    if progress.endswith(")") and "(" in progress:
        inner = progress.rsplit("(", 1)[1][:-1]
        a, sep, b = inner.partition("/")
        if sep and a.strip().isdigit() and b.strip().isdigit():
            return int(a), int(b)
    return None, None


# -- routes -------------------------------------------------------------------------------------------
@router.get("")
@router.get("/")
async def overview(state: ServicesDep) -> HTMLResponse:
    return _page("overview.html", page="overview", **overview_context(state))


@router.get("/projects/{uid:path}")
async def project_page(state: ServicesDep, uid: str) -> HTMLResponse:
    info = state.store.project(uid)
    if info is None:
        raise NotFoundError(f"unknown project {uid!r}", field="project")
    context = model_context(state.registry, model_name(uid))
    return _page("model.html", page="project", uid=uid, project={
        "hostname": info.get("hostname") or "", "updated": info.get("updated"), "authed": bool(info.get("authed")),
        "since_train": info.get("since_train", 0), "annotations": state.store.count_annotations(uid),
        "controls": config_summary(info.get("label_config")),
    }, jobs=job_rows(state.store, uid), retrain_every=state.settings.retrain_every,
        schedule=list(state.settings.schedule), **context)


@router.get("/models/{name:path}")
async def model_page(state: ServicesDep, name: str) -> HTMLResponse:
    registry = state.registry
    if not _versions(registry, name):
        raise NotFoundError(f"unknown model {name!r}", field="model")
    return _page("model.html", page="model", uid=None, project=None, jobs=[], **model_context(registry, name))


@router.get("/traffic")
async def traffic_page(state: ServicesDep) -> HTMLResponse:
    ring = state.metrics.traffic
    return _page("traffic.html", page="traffic", totals=ring.totals(last=30), slots=ring.slots)


@router.get("/api/jobs")
async def api_jobs(state: ServicesDep, project: str) -> JSON:
    if state.store.project(project) is None:
        raise NotFoundError(f"unknown project {project!r}", field="project")
    versions = _versions(state.registry, model_name(project))
    serving = next((m.tag for m in versions if m.serving), None)
    return _json({"project": project, "jobs": job_rows(state.store, project), "n_versions": len(versions),
                  "model_version": serving})


@router.get("/api/traffic")
async def api_traffic(state: ServicesDep, last: int = 90) -> JSON:
    ring = state.metrics.traffic
    return _json({"bucket_seconds": 10, "series": ring.series(last=last), "last_5min": ring.totals(last=30)})


@router.get("/static/{name}")
async def static(name: str) -> Response:
    media_type = STATIC_FILES.get(name)
    if media_type is None:
        raise NotFoundError(f"no static file {name!r}", field="name")
    headers = {**SECURITY_HEADERS, "Cache-Control": "max-age=3600"}
    return Response((STATIC_DIR / name).read_bytes(), media_type=media_type, headers=headers)
