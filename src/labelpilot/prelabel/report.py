"""Windows of tasks (1–10, 11–50, 51–100, 101–200, 201–500, …), the JSON, the markdown table and the PNG."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from labelpilot.prelabel.harness import RunResult
from labelpilot.prelabel.metrics import headline, summarize

EDGES = (10, 50, 100, 200, 500, 1000, 2000, 5000)


def windows(n: int) -> list[tuple[int, int]]:
    out, lo = [], 1
    for hi in EDGES:
        if lo > n:
            break
        out.append((lo, min(hi, n)))
        lo = hi + 1
    if lo <= n:
        out.append((lo, n))
    return out


def _pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def job_rows(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Finished jobs, oldest first: annotations trained on, fit seconds, job wall time, queue wait."""
    rows = []
    for j in sorted(jobs, key=lambda j: j["id"]):
        report = j.get("report") or {}
        rows.append({
            "id": j["id"], "state": j["state"], "reason": j["reason"],
            "n_examples": report.get("n_examples") or report.get("n_train"),
            "fit_s": report.get("seconds"),
            "job_s": (j["finished"] - j["started"]) if j.get("finished") and j.get("started") else None,
            "queued_s": (j["started"] - j["queued"]) if j.get("started") else None,
            "error": j.get("error"),
        })
    return rows


def summarize_run(run: RunResult) -> dict[str, Any]:
    n = len(run.records)
    jobs = job_rows(run.jobs)
    out_windows = []
    for lo, hi in windows(n):
        recs = run.records[lo - 1 : hi]
        row: dict[str, Any] = {"window": f"{lo}-{hi}"}
        row.update(summarize([r.score for r in recs], run.kind, run.multiple))
        lat = [r.latency_ms for r in recs]
        row["predict_p50_ms"], row["predict_p99_ms"] = _pct(lat, 50), _pct(lat, 99)
        # retrains that ended while these tasks were being annotated: trained on lo-1 .. hi-1 annotations
        done = [j for j in jobs if j["state"] == "done" and j["n_examples"] and lo - 1 <= j["n_examples"] < hi]
        row["retrains"] = len(done)
        row["train_s_mean"] = float(np.mean([j["job_s"] for j in done])) if done else None
        row["train_s_max"] = float(max(j["job_s"] for j in done)) if done else None
        row["versions"] = len({r.version for r in recs})
        out_windows.append(row)
    overall = {"window": f"1-{n}", **summarize([r.score for r in run.records], run.kind, run.multiple)}
    return {
        "dataset": run.dataset, "kind": run.kind, "multiple": run.multiple, "metric": headline(run.kind, run.multiple),
        "tasks": n, "seconds": run.seconds, "setup_version": run.setup_version, "env": run.env,
        "windows": out_windows, "overall": overall, "jobs": jobs, "errors": run.errors[:20],
        "per_task": [{"i": r.index, "version": r.version, "ms": round(r.latency_ms, 2),
                      "waited_s": round(r.waited_s, 2),
                      "tp": r.score.tp, "fp": r.score.fp, "fn": r.score.fn, "correct": r.score.correct,
                      "edits_with": r.score.edits_with, "edits_without": r.score.edits_without}
                     for r in run.records],
    }


def _fmt(v: Any, pct: bool = False) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{100 * v:.0f} %" if pct else f"{v:.2f}"
    return str(v)


def markdown(summaries: list[dict[str, Any]], load: str = "") -> str:
    lines = [
        "| dataset | tasks | metric | value | P / R | pre-labelled | effort saved | retrains | train s (mean / max) "
        "| predict p50 / p99 ms |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        for w in [*s["windows"], {**s["overall"], "window": f"**{s['overall']['window']}**"}]:
            pr = f"{_fmt(w.get('precision'))} / {_fmt(w.get('recall'))}" if "precision" in w else ""
            train = f"{_fmt(w.get('train_s_mean'))} / {_fmt(w.get('train_s_max'))}" if "retrains" in w else ""
            lat = f"{_fmt(w.get('predict_p50_ms'))} / {_fmt(w.get('predict_p99_ms'))}" if "predict_p50_ms" in w else ""
            lines.append(
                f"| {s['dataset']} | {w['window']} | {s['metric']} | {_fmt(w.get(s['metric']))} | {pr} | "
                f"{_fmt(w.get('prelabelled'), True)} | {_fmt(w.get('effort_saved'), True)} | "
                f"{w.get('retrains', '')} | {train} | {lat} |"
            )
    if load:
        lines.append(f"\nload average at the end: {load}")
    return "\n".join(lines) + "\n"


def rolling(summary: dict[str, Any], width: int = 20) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Task index, rolling headline metric and rolling effort saved (over the last ``width`` tasks)."""
    rows = summary["per_task"]
    idx, metric, saved = [], [], []
    for end in range(1, len(rows) + 1):
        win = rows[max(0, end - width) : end]
        if summary["metric"] == "accuracy":
            m = float(np.mean([r["correct"] or 0 for r in win]))
        else:
            tp, fp, fn = (sum(r[k] for r in win) for k in ("tp", "fp", "fn"))
            m = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
        w, wo = sum(r["edits_with"] for r in win), sum(r["edits_without"] for r in win)
        idx.append(end)
        metric.append(m)
        saved.append(1 - w / wo if wo else np.nan)
    return np.array(idx), np.array(metric), np.array(saved)


def plot(summaries: list[dict[str, Any]], path: Path, width: int = 20) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(summaries)
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, s in zip(axes.flat, summaries, strict=False):
        x, m, saved = rolling(s, width)
        ax.plot(x, m, label=s["metric"])
        ax.plot(x, saved, label="effort saved", linestyle="--")
        for j in s["jobs"]:
            if j["state"] == "done" and j["n_examples"]:
                ax.axvline(j["n_examples"] + 1, color="0.85", linewidth=0.6, zorder=0)
        ax.set_title(s["dataset"])
        ax.set_xlabel("task (order of annotation)")
        ax.set_ylim(min(-0.2, float(np.nanmin(saved)) if len(saved) else 0), 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(f"pre-labels, rolling over {width} tasks (grey: a new model version)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(summaries: list[dict[str, Any]], out_dir: Path, meta: dict[str, Any]) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    paths = {"json": out_dir / "prelabel.json", "md": out_dir / "prelabel.md", "png": out_dir / "prelabel.png"}
    paths["json"].write_text(json.dumps({**meta, "load_average": load, "datasets": summaries}, indent=1,
                                        ensure_ascii=False))
    paths["md"].write_text(markdown(summaries, load))
    if summaries:
        plot(summaries, paths["png"])
    else:
        del paths["png"]
    return paths
