"""Merge span active-learning runs of ``simulate.py`` (one output folder per dataset and seed, written with
``--first-seed``) into one table and one PNG per dataset.

    .venv/bin/python bench/al/ner_report.py bench/results/al/r13 --out bench/results/al

Each input ``<run>/<dataset>.json`` holds the per-seed curves (sentences, tokens, F1 per round) of every
strategy; the runs of a dataset must share pool, test and sizes (checked). Per dataset and strategy: the mean
curve over the seeds, sentences and tokens at the first round where it reaches 95 % of the full-pool F1, the
saving against random, and the worst relative shortfall below random, both at equal sentence counts (round by
round) and at equal token counts (random's mean F1-vs-tokens curve interpolated at the strategy's tokens).
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from curves import Curve, summarise
from simulate import plot


def load_runs(root: Path) -> dict[str, dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {}
    for path in sorted(root.glob("*/*.json")):
        res = json.loads(path.read_text(encoding="utf-8"))
        if "curves" not in res:
            continue
        key = f"{res['dataset']}-b{res['sizes']['budget']}"  # runs with another budget are reported apart
        entry = merged.setdefault(
            key,
            {"full_pool": res["full_pool"], "sizes": res["sizes"], "pool_tokens": res["pool_tokens"], "curves": []},
        )
        if entry["sizes"] != res["sizes"] or abs(entry["full_pool"] - res["full_pool"]) > 1e-9:
            raise SystemExit(f"{path}: sizes / full-pool F1 differ from the other runs of {key}")
        seen = {(c["strategy"], c["seed"]) for c in entry["curves"]}
        entry["curves"] += [c for c in res["curves"] if (c["strategy"], c["seed"]) not in seen]
    return merged


def first_hit(x: np.ndarray, y: np.ndarray, target: float) -> float | None:
    hit = np.flatnonzero(y >= target)
    return float(x[hit[0]]) if len(hit) else None


def crossing(x: np.ndarray, y: np.ndarray, target: float) -> float | None:
    """``x`` where ``y`` first reaches ``target``, linearly interpolated between the two rounds around it."""
    hit = np.flatnonzero(y >= target)
    if not len(hit):
        return None
    i = int(hit[0])
    if i == 0:
        return float(x[0])
    return float(x[i - 1] + (target - y[i - 1]) / (y[i] - y[i - 1]) * (x[i] - x[i - 1]))


def dataset_rows(entry: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    full = entry["full_pool"]
    curves: dict[str, list[Curve]] = {}
    tokens: dict[str, list[list[int]]] = {}
    for c in entry["curves"]:
        curves.setdefault(c["strategy"], []).append(
            Curve(
                c["strategy"],
                c["seed"],
                c["sentences"],
                c["f1"],
                c.get("round_seconds", []),
                c.get("select_seconds", []),
            )
        )
        tokens.setdefault(c["strategy"], []).append(c["tokens"])
    summary = summarise(curves, full)
    rows: dict[str, dict[str, Any]] = {}
    for name, row in summary.items():
        L = len(row["x"])
        row["x_tokens"] = np.mean([t[:L] for t in tokens[name]], axis=0).tolist()
    target = 0.95 * full
    base = summary.get("random")
    for name, row in summary.items():
        x, tx, m = np.array(row["x"]), np.array(row["x_tokens"]), np.array(row["mean"])
        out = {
            "seeds": sorted(c.seed for c in curves[name]),
            "sentences": first_hit(x, m, target),
            "tokens": first_hit(tx, m, target),
            "tokens_interpolated": crossing(tx, m, target),
            "budget_sentences": int(x[-1]),
            "budget_tokens": float(tx[-1]),
            "final": float(m[-1]),
            "auc": row["auc"],
        }
        if base is not None and name != "random":
            bx, bm = np.array(base["x_tokens"]), np.array(base["mean"])
            out["gap_sentences"] = row.get("worst_gap_vs_random")
            inside = (tx >= bx[0]) & (tx <= bx[-1])
            r_at = np.interp(tx[inside], bx, bm)
            out["gap_tokens"] = float(np.max((r_at - m[inside]) / np.maximum(r_at, 1e-9))) if inside.any() else None
        rows[name] = out
    r = rows.get("random")
    for name, out in rows.items():
        if name == "random" or r is None:
            continue
        if out["tokens_interpolated"] is not None and r["tokens_interpolated"] is not None:
            out["saving_tokens_interpolated"] = 1.0 - out["tokens_interpolated"] / r["tokens_interpolated"]
        for unit in ("sentences", "tokens"):
            need, r_need = out[unit], r[unit]
            if need is not None and r_need is not None:
                out[f"saving_{unit}"] = (1.0 - need / r_need, False)
            elif need is not None:  # random never reached the target: a lower bound against its budget
                out[f"saving_{unit}"] = (1.0 - need / r[f"budget_{unit}"], True)
    return summary, rows


def _n(v: float | None, budget: float) -> str:
    return f">{budget:,.0f}" if v is None else f"{v:,.0f}"


def _save(v: tuple[float, bool] | None) -> str:
    if v is None:
        return "—"
    return f"{'≥' if v[1] else ''}{100 * v[0]:.0f} %"


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:+.1f} %"


def _pct1(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.0f} %"


def main(root: Path, out: Path) -> None:
    lines = [
        "| dataset (pool sent. / tokens; full-pool F1) | seeds | span-mnlp: sentences / tokens to 95 % "
        "| random: sentences / tokens | saving sentences / tokens | worst shortfall vs random (equal sentences "
        "/ equal tokens) | final F1 at budget mnlp / random | tokens to 95 % interpolated mnlp / random (saving) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {}
    warnings.filterwarnings("ignore", "Mean of empty slice")  # runs that did not record seconds per round
    warnings.filterwarnings("ignore", "invalid value encountered")
    for name, entry in load_runs(root).items():
        summary, rows = dataset_rows(entry)
        report[name] = {"full_pool": entry["full_pool"], "sizes": entry["sizes"], "rows": rows}
        plot(name, summary, entry["full_pool"], "entity_f1", out / f"{name}.png", "labelled tokens (≈ characters)")
        m, r = rows.get("span-mnlp"), rows.get("random")
        if r is None:
            continue
        if m is None:  # a random-only extension of the budget
            lines.append(
                f"| {name} ({entry['sizes']['pool']:,} / {entry['pool_tokens']:,}; {entry['full_pool']:.3f}) "
                f"| {','.join(map(str, r['seeds']))} | not run "
                f"| {_n(r['sentences'], r['budget_sentences'])} / {_n(r['tokens'], r['budget_tokens'])} "
                f"| — | — | — / {r['final']:.3f} | — / {_n(r['tokens_interpolated'], r['budget_tokens'])} |"
            )
            continue
        lines.append(
            f"| {name} ({entry['sizes']['pool']:,} / {entry['pool_tokens']:,}; {entry['full_pool']:.3f}) "
            f"| {','.join(map(str, m['seeds']))} "
            f"| {_n(m['sentences'], m['budget_sentences'])} / {_n(m['tokens'], m['budget_tokens'])} "
            f"| {_n(r['sentences'], r['budget_sentences'])} / {_n(r['tokens'], r['budget_tokens'])} "
            f"| {_save(m.get('saving_sentences'))} / {_save(m.get('saving_tokens'))} "
            f"| {_pct(m.get('gap_sentences'))} / {_pct(m.get('gap_tokens'))} | {m['final']:.3f} / {r['final']:.3f} "
            f"| {_n(m['tokens_interpolated'], m['budget_tokens'])} / {_n(r['tokens_interpolated'], r['budget_tokens'])}"
            f" ({_pct1(m.get('saving_tokens_interpolated'))}) |"
        )
    table = "\n".join(lines) + "\n"
    (out / "spans-zh.md").write_text(table, encoding="utf-8")
    (out / "spans-zh.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(table)


if __name__ == "__main__":
    args = sys.argv[1:]
    main(Path(args[0]), Path(args[args.index("--out") + 1]) if "--out" in args else Path("bench/results/al"))
