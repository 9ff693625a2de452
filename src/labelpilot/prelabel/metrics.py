"""How good a pre-label is, and how much of the annotator's work it saves.

Quality: for choices, accuracy (single) or micro-F1 over labels (multiple); for spans, exact-match span
precision / recall / F1 (same start, end and label).

**Edits** (what the annotator must do to turn the pre-label into the annotation they save):

- *Choices, single*: 1 click without a pre-label; with one, 0 when it is right and 1 when it is wrong (one
  click on the right choice replaces the wrong one).
- *Choices, multiple*: without a pre-label one click per gold label; with one, one click per label that must
  be toggled (the symmetric difference of predicted and gold labels).
- *Spans*: without a pre-label one insertion per gold span. With pre-labels, each predicted span is paired
  with at most one gold span (exact matches first, then the largest character overlap): an exact match costs
  0, a pair with the right boundaries but the wrong label costs 1 (a label fix), the right label but other
  boundaries 1 (a boundary fix), both wrong 2; an unpaired predicted span costs 1 deletion and an unpaired gold
  span 1 insertion.

**Effort saved** over a window of tasks = 1 − Σ edits_with / Σ edits_without. 1 means nothing left to do,
0 means the pre-labels saved as much as they cost, negative means they cost more than labelling from
scratch. Tasks whose gold is empty count only their edits_with (deleting wrong spans).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class TaskScore:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    correct: int | None = None  # single-label choices only
    edits_with: int = 0
    edits_without: int = 0
    predicted: bool = False  # the pre-label was not empty


def _choices(result: list[dict[str, Any]] | None) -> set[str]:
    out: set[str] = set()
    for region in result or []:
        if isinstance(region, dict) and region.get("type") in ("choices", "taxonomy"):
            for c in (region.get("value") or {}).get("choices") or []:
                out.add("/".join(c) if isinstance(c, list) else str(c))
    return out


def _spans(result: list[dict[str, Any]] | None) -> list[tuple[int, int, str]]:
    out = []
    for region in result or []:
        value = region.get("value") if isinstance(region, dict) else None
        if region.get("type") == "labels" and isinstance(value, dict) and value.get("labels"):
            out.append((int(value["start"]), int(value["end"]), str(value["labels"][0])))
    return out


def score_choices(pred: list[dict[str, Any]] | None, gold: list[dict[str, Any]], multiple: bool) -> TaskScore:
    p, g = _choices(pred), _choices(gold)
    s = TaskScore(tp=len(p & g), fp=len(p - g), fn=len(g - p), predicted=bool(p))
    if multiple:
        s.edits_without = len(g)
        s.edits_with = len(p ^ g)
    else:
        s.correct = int(bool(p) and p == g)
        s.edits_without = 1
        s.edits_with = 0 if s.correct else 1
    return s


def score_spans(pred: list[dict[str, Any]] | None, gold: list[dict[str, Any]]) -> TaskScore:
    p, g = set(_spans(pred)), set(_spans(gold))
    exact = p & g
    s = TaskScore(tp=len(exact), fp=len(p - g), fn=len(g - p), predicted=bool(p), edits_without=len(g))
    rest_p, rest_g = sorted(p - exact), sorted(g - exact)
    pairs = []
    for i, (ps, pe, _) in enumerate(rest_p):
        for j, (gs, ge, _) in enumerate(rest_g):
            overlap = min(pe, ge) - max(ps, gs)
            if overlap > 0:
                pairs.append((-overlap, i, j))
    used_p: set[int] = set()
    used_g: set[int] = set()
    edits = 0
    for _, i, j in sorted(pairs):
        if i in used_p or j in used_g:
            continue
        used_p.add(i)
        used_g.add(j)
        (ps, pe, pl), (gs, ge, gl) = rest_p[i], rest_g[j]
        edits += int(pl != gl) + int((ps, pe) != (gs, ge))
    edits += (len(rest_p) - len(used_p)) + (len(rest_g) - len(used_g))
    s.edits_with = edits
    return s


def summarize(scores: list[TaskScore], kind: str, multiple: bool) -> dict[str, float | int | None]:
    """Quality and effort saved over a window of tasks."""
    n = len(scores)
    tp, fp, fn = (sum(getattr(s, a) for s in scores) for a in ("tp", "fp", "fn"))
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    without = sum(s.edits_without for s in scores)
    with_ = sum(s.edits_with for s in scores)
    out: dict[str, float | int | None] = {
        "tasks": n,
        "prelabelled": sum(s.predicted for s in scores) / n if n else 0.0,
        "effort_saved": 1.0 - with_ / without if without else None,
        "edits_with": with_,
        "edits_without": without,
    }
    if kind == "choices" and not multiple:
        out["accuracy"] = sum(s.correct or 0 for s in scores) / n if n else 0.0
    elif kind == "choices":
        out["micro_f1"] = f1
    else:
        out.update(precision=prec, recall=rec, f1=f1)
    return out


def headline(kind: str, multiple: bool) -> str:
    """The metric plotted and put first in the table."""
    if kind == "choices":
        return "micro_f1" if multiple else "accuracy"
    return "f1"
