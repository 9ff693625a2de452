"""Precision / recall / F1, and entity-level span matching: the one implementation behind every score.

``evaluate.py`` (file evaluation reports), the ner-crf family (its validation metrics), the document-field
model (field scores) and the benchmarks all count true/false positives their own way, then turn them into
P/R/F1 here. Spans match exactly: same start, end and label (seqeval's entity-level, "strict" mode).
Depends only on the data types.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from labelpilot.data.types import Span


def prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    """(precision, recall, F1) from counts; 0.0 where a denominator is 0."""
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


def span_counts(gold: Iterable[Iterable[Span]], pred: Iterable[Iterable[Span]]) -> dict[str, Counter]:
    """Per label, ``tp``/``fp``/``fn`` of exact (start, end, label) matches, text by text (``gold`` and
    ``pred`` are parallel: the spans of one text each)."""
    counts: dict[str, Counter] = {}
    for g, p in zip(gold, pred, strict=True):
        gs = {(s.start, s.end, s.label) for s in g}
        ps = {(s.start, s.end, s.label) for s in p}
        for key in gs | ps:
            c = counts.setdefault(key[2], Counter())
            c["tp"] += key in gs and key in ps
            c["fp"] += key in ps and key not in gs
            c["fn"] += key in gs and key not in ps
    return counts


def total(counts: dict[str, Counter]) -> Counter:
    """The counts of every label summed (micro-averaging)."""
    out: Counter = Counter(tp=0, fp=0, fn=0)
    for c in counts.values():
        out.update(c)
    return out


def span_prf(gold: Iterable[Iterable[Span]], pred: Iterable[Iterable[Span]]) -> dict[str, float]:
    """Entity-level micro P/R/F1, ``support`` (gold spans) and per-label F1 (``f1/<label>``)."""
    counts = span_counts(gold, pred)
    t = total(counts)
    p, r, f = prf(t["tp"], t["fp"], t["fn"])
    out = {"precision": p, "recall": r, "f1": f, "support": float(t["tp"] + t["fn"])}
    for label, c in sorted(counts.items()):
        out[f"f1/{label}"] = prf(c["tp"], c["fp"], c["fn"])[2]
    return out
