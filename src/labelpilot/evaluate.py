"""Reports for a model on labelled examples: classification (single/multi-label), spans, and a
confusion-matrix plot. Pure computation (P/R/F1 and span matching from :mod:`labelpilot.metrics`) plus one
PNG writer."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from labelpilot.data.types import Example, Prediction
from labelpilot.metrics import prf, span_counts, total


def classification_report(
    gold: Sequence[tuple[str, ...]], pred: Sequence[tuple[str, ...]], labels: Sequence[str]
) -> dict[str, Any]:
    """Per-class and averaged P/R/F1. Single-label when every gold item has exactly one label."""
    single = all(len(g) == 1 for g in gold)
    per: dict[str, dict[str, float]] = {}
    totals = Counter()
    for lab in labels:
        tp = sum(1 for g, p in zip(gold, pred, strict=True) if lab in g and lab in p)
        fp = sum(1 for g, p in zip(gold, pred, strict=True) if lab not in g and lab in p)
        fn = sum(1 for g, p in zip(gold, pred, strict=True) if lab in g and lab not in p)
        totals.update(tp=tp, fp=fp, fn=fn)
        p_, r_, f_ = prf(tp, fp, fn)
        per[lab] = {"precision": p_, "recall": r_, "f1": f_, "support": sum(1 for g in gold if lab in g)}
    present = [lab for lab in labels if per[lab]["support"] > 0]
    macro = {k: float(np.mean([per[lab][k] for lab in present])) if present else 0.0
             for k in ("precision", "recall", "f1")}
    micro = dict(zip(("precision", "recall", "f1"), prf(totals["tp"], totals["fp"], totals["fn"]), strict=True))
    out: dict[str, Any] = {
        "n": len(gold),
        "macro_precision": macro["precision"], "macro_recall": macro["recall"], "macro_f1": macro["f1"],
        "micro_precision": micro["precision"], "micro_recall": micro["recall"], "micro_f1": micro["f1"],
        "per_class": per,
    }
    if single:
        out["accuracy"] = sum(1 for g, p in zip(gold, pred, strict=True) if p[:1] == g) / max(len(gold), 1)
    else:
        out["subset_accuracy"] = sum(1 for g, p in zip(gold, pred, strict=True) if set(g) == set(p)) / max(len(gold), 1)
    return out


def confusion(gold: Sequence[str], pred: Sequence[str], labels: Sequence[str]) -> np.ndarray:
    index = {lab: i for i, lab in enumerate(labels)}
    none = len(labels)  # a column for "no prediction"
    m = np.zeros((len(labels), len(labels) + 1), dtype=int)
    for g, p in zip(gold, pred, strict=True):
        if g in index:
            m[index[g], index.get(p, none)] += 1
    return m


def span_report(gold: Sequence[Example], preds: Sequence[Prediction]) -> dict[str, Any]:
    """Entity-level exact-match P/R/F1, micro and per type (seqeval-style)."""
    counts = span_counts([ex.target.spans if ex.target else () for ex in gold], [pr.spans for pr in preds])
    per = {}
    for t, c in sorted(counts.items()):
        p_, r_, f_ = prf(c["tp"], c["fp"], c["fn"])
        per[t] = {"precision": p_, "recall": r_, "f1": f_, "support": c["tp"] + c["fn"]}
    all_ = total(counts)
    p_, r_, f_ = prf(all_["tp"], all_["fp"], all_["fn"])
    return {"n": len(gold), "precision": p_, "recall": r_, "f1": f_, "per_type": per}


def plot_confusion(matrix: np.ndarray, labels: Sequence[str], path: Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import font_manager

    # CJK labels need a font that has them; use one if the system has it, else fall back silently.
    for name in ("Noto Sans CJK SC", "WenQuanYi Zen Hei", "SimHei", "Source Han Sans SC"):
        if any(name in f.name for f in font_manager.fontManager.ttflist):
            plt.rcParams["font.sans-serif"] = [name, "DejaVu Sans"]
            break
    n = len(labels)
    size = max(5.0, 0.45 * n + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    norm = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    cols = [*labels, "(none)"] if matrix.shape[1] == n + 1 else list(labels)
    ax.set_xticks(range(len(cols)), cols, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), labels, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    if n <= 30:
        for i in range(n):
            for j in range(len(cols)):
                if matrix[i, j]:
                    ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
    ax.set_title(title or "confusion matrix (rows normalised)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
