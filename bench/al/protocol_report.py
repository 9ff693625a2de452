"""The leave-one-dataset-out fold rule of bench/RESULTS.md applied to ``protocol.py``'s summaries.

Per dataset, ``curves.summarise`` gives each candidate's mean curve, labels to 95 % of the full-pool score,
normalised AUC and worst relative shortfall vs random. Here:

- labels to 95 %: a curve that never reaches it within the budget counts as ``budget + batch`` (one more
  round; shown as ``>budget``), for random too, so a saving is still defined (and then conservative for the
  candidate when random is the one that failed);
- saving vs random = 1 - labels / random's labels; admissible = worst shortfall vs random ≤ 5 % at every
  round on every dataset the choice looks at;
- fold for held-out H: the admissible candidate (on the datasets other than H) with the best mean saving
  over them, ties by mean AUC; reported with its figures on H;
- default: the candidate winning the most folds among those admissible on every dataset, ties by mean AUC
  (when no such candidate wins a fold: the one of them with the best mean saving).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from simulate import plot

ROBUST = 0.05


def labels_needed(row: dict[str, Any], batch: int) -> tuple[int, bool]:
    """(labels to 95 %, reached?) with the ``budget + batch`` convention for a curve that never got there."""
    need = row["labels_to_target"]
    return (int(need), True) if need is not None else (int(row["budget"]) + batch, False)


def cell_figures(summaries: dict[str, dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """dataset -> candidate -> labels, reached, saving, auc, gap, seconds per round, select seconds."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for name, s in summaries.items():
        batch = int(s["sizes"]["batch"])
        rows = s["summary"]
        r_need, _ = labels_needed(rows["random"], batch)
        out[name] = {}
        for cand, row in rows.items():
            need, reached = labels_needed(row, batch)
            out[name][cand] = {
                "labels": need, "reached": reached, "saving": 1.0 - need / r_need, "auc": row["auc"],
                "gap": float(row.get("worst_gap_vs_random") or 0.0), "s_round": row["seconds_per_round"],
                "s_select": row["select_seconds"], "final": row["final"],
            }
    return out


def candidates(cells: dict[str, dict[str, dict[str, Any]]], names: list[str]) -> set[str]:
    """Candidates present on every dataset of ``names``, without random and the small-text peers."""
    common = set.intersection(*(set(cells[n]) for n in names))
    return {c for c in common if c != "random" and not c.startswith("peer:")}


def choose(cells: dict[str, dict[str, dict[str, Any]]], names: list[str], cands: set[str]) -> str | None:
    """The candidate of ``cands`` admissible on ``names`` with the best mean saving there (ties: mean AUC)."""
    ok = [c for c in cands if all(cells[n][c]["gap"] <= ROBUST for n in names)]
    if not ok:
        return None
    return max(sorted(ok), key=lambda c: (np.mean([cells[n][c]["saving"] for n in names]),
                                          np.mean([cells[n][c]["auc"] for n in names])))


def folds(cells: dict[str, dict[str, dict[str, Any]]]) -> tuple[list[dict[str, Any]], str | None]:
    names = sorted(cells)
    cands = candidates(cells, names)  # only those run on every dataset (a cut-short run may lack some)
    rows = []
    for held in names:
        others = [n for n in names if n != held]
        pick = choose(cells, others, cands)
        row: dict[str, Any] = {"held_out": held, "chosen": pick}
        if pick is not None:
            row.update(cells[held][pick], random_labels=cells[held]["random"]["labels"])
        rows.append(row)
    robust = [c for c in cands if all(cells[n][c]["gap"] <= ROBUST for n in names)]
    wins = {c: sum(r["chosen"] == c for r in rows) for c in robust}
    mean_auc = {c: float(np.mean([cells[n][c]["auc"] for n in names])) for c in robust}
    mean_save = {c: float(np.mean([cells[n][c]["saving"] for n in names])) for c in robust}
    if any(wins.values()):
        default = max(sorted(robust), key=lambda c: (wins[c], mean_auc[c]))
    else:
        default = max(sorted(robust), key=lambda c: mean_save[c]) if robust else None
    return rows, default


def _labels(c: dict[str, Any], budget: int) -> str:
    return str(c["labels"]) if c["reached"] else f">{budget}"


def write_report(summaries: dict[str, dict[str, Any]], model: str, results: Path) -> str:
    """PNG curves per dataset, ``protocol-<model>.json`` and ``protocol-<model>.md``; returns the markdown."""
    results.mkdir(parents=True, exist_ok=True)
    tag = "" if model == "text-linear" else f"-{model}"
    for name, s in summaries.items():
        plot(f"{name} ({model})", s["summary"], s["full_pool"], s["metric"], results / f"protocol-{name}{tag}.png",
             "labelled items")
    cells = cell_figures(summaries)
    fold_rows, default = folds(cells)
    names = sorted(cells)
    lines = [f"Model `{model}`; seeds per dataset: "
             + ", ".join(f"{n} {summaries[n]['seeds']}" for n in names) + ".", "",
             "| held out | chosen on the others | labels to 95 % (random) | saving | AUC | worst shortfall vs random "
             "| s/round | select s |", "|---|---|---|---|---|---|---|---|"]
    for r in fold_rows:
        b = summaries[r["held_out"]]["sizes"]["budget"]
        if r["chosen"] is None:
            lines.append(f"| {r['held_out']} | (none admissible) | | | | | | |")
            continue
        rl = cells[r["held_out"]]["random"]
        lines.append(f"| {r['held_out']} | `{r['chosen']}` | {_labels(r, b)} ({_labels(rl, b)}) | "
                     f"{100 * r['saving']:.0f} % | {r['auc']:.4f} | {100 * r['gap']:+.1f} % | {r['s_round']:.2f} | "
                     f"{r['s_select']:.3f} |")
    lines += ["", f"Default by the rule: **`{default}`**.", "",
              "| dataset (full-pool score) | candidate | labels to 95 % | saving vs random | AUC | final "
              "| worst shortfall vs random | s/round | select s |", "|---|---|---|---|---|---|---|---|---|"]
    for n in names:
        b = summaries[n]["sizes"]["budget"]
        for cand, c in sorted(cells[n].items(), key=lambda kv: (kv[0] != "random", -kv[1]["saving"])):
            save = "—" if cand == "random" else f"{100 * c['saving']:.0f} %"
            lines.append(f"| {n} ({summaries[n]['full_pool']:.3f}) | {cand} | {_labels(c, b)} | {save} | "
                         f"{c['auc']:.4f} | {c['final']:.4f} | {100 * c['gap']:+.1f} % | {c['s_round']:.2f} | "
                         f"{c['s_select']:.3f} |")
    cands = sorted(set.intersection(*(set(cells[n]) for n in names)) - {"random"})
    lines += ["", "| candidate | mean saving | min saving | worst shortfall (dataset) | mean AUC |",
              "|---|---|---|---|---|"]
    for cand in cands:
        sv = [cells[n][cand]["saving"] for n in names]
        worst = max(names, key=lambda n: cells[n][cand]["gap"])
        lines.append(f"| {cand} | {100 * np.mean(sv):.0f} % | {100 * min(sv):.0f} % | "
                     f"{100 * cells[worst][cand]['gap']:+.1f} % ({worst}) | "
                     f"{np.mean([cells[n][cand]['auc'] for n in names]):.4f} |")
    md = "\n".join(lines) + "\n"
    (results / f"protocol{tag}.md").write_text(md, encoding="utf-8")
    payload = {"model": model, "default": default, "folds": fold_rows, "cells": cells,
               "datasets": {n: {k: v for k, v in s.items() if k != "summary"} | {"summary": s["summary"]}
                            for n, s in summaries.items()}}
    (results / f"protocol{tag}.json").write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    return md
