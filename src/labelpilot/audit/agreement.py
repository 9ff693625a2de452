"""Annotator agreement on tasks annotated by several people: per pair of annotators and per annotator.

Measures, by what a control produces:

* choices / taxonomy: Cohen's kappa (``sklearn.metrics.cohen_kappa_score``) over the tasks both annotated,
  besides the raw share of identical answers; a multi-label answer counts as the set of its labels;
* spans: entity-level F1 with exact start/end/label match (the project's ``metrics.span_prf``; symmetric, so
  it does not matter which annotator plays gold);
* boxes: F1 of one-to-one IoU matching (IoU >= 0.5, same label; the matcher of ``suspects.py``, which uses
  ``geometry.iou``).

An annotator's figure is the mean of their pairs weighted by the number of shared tasks. Kappa is undefined
(None) when both annotators gave the same single label to every shared task.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations

from labelpilot.audit.suspects import match_boxes
from labelpilot.data.types import Target
from labelpilot.metrics import span_prf
from labelpilot.schema.types import ControlSpec, TaskKind

__all__ = ["Agreement", "AnnotatorAgreement", "PairAgreement", "agreement", "metric_name"]


@dataclass(frozen=True)
class PairAgreement:
    a: str
    b: str
    n_tasks: int
    value: float | None  # kappa (choices) or F1 (spans, boxes)
    observed: float  # share of tasks where both gave exactly the same answer


@dataclass(frozen=True)
class AnnotatorAgreement:
    annotator: str
    n_tasks: int  # tasks shared with at least one other annotator
    value: float | None  # weighted mean of the annotator's pair values


@dataclass
class Agreement:
    control: str
    metric: str  # "cohen_kappa", "span_f1" or "box_f1"
    n_tasks: int  # tasks with two or more annotators
    pairs: list[PairAgreement] = field(default_factory=list)
    annotators: list[AnnotatorAgreement] = field(default_factory=list)
    overall: float | None = None  # mean over pairs, weighted by shared tasks

    def to_dict(self) -> dict:
        return {
            "control": self.control, "metric": self.metric, "n_tasks": self.n_tasks, "overall": self.overall,
            "pairs": [vars(p) for p in self.pairs], "annotators": [vars(a) for a in self.annotators],
        }


def metric_name(control: ControlSpec) -> str:
    if control.kind is TaskKind.TEXT_SPANS:
        return "span_f1"
    if control.kind is TaskKind.IMAGE_BOXES:
        return "box_f1"
    return "cohen_kappa"


def _answer(control: ControlSpec, t: Target) -> tuple:
    if control.kind is TaskKind.TEXT_SPANS:
        return tuple(sorted((s.start, s.end, s.label) for s in t.spans))
    if control.kind is TaskKind.IMAGE_BOXES:
        return tuple(sorted((round(b.x, 4), round(b.y, 4), round(b.width, 4), round(b.height, 4), b.label)
                            for b in t.boxes))
    return tuple(sorted(t.labels))


def box_f1(a: Sequence[Target], b: Sequence[Target], min_iou: float = 0.5) -> float:
    """F1 of one-to-one IoU matching with the same label, pooled over tasks."""
    tp = n_a = n_b = 0
    for ta, tb in zip(a, b, strict=True):
        n_a += len(ta.boxes)
        n_b += len(tb.boxes)
        tp += sum(1 for i, j, _ in match_boxes(ta.boxes, tb.boxes, min_iou) if ta.boxes[i].label == tb.boxes[j].label)
    return 2 * tp / (n_a + n_b) if n_a + n_b else 1.0


def _pair_value(control: ControlSpec, a: Sequence[Target], b: Sequence[Target]) -> float | None:
    if control.kind is TaskKind.TEXT_SPANS:
        if not any(t.spans for t in a) and not any(t.spans for t in b):
            return 1.0  # both found nothing anywhere: full agreement
        return float(span_prf([t.spans for t in a], [t.spans for t in b])["f1"])
    if control.kind is TaskKind.IMAGE_BOXES:
        return box_f1(a, b)
    from sklearn.metrics import cohen_kappa_score

    ya = ["|".join(_answer(control, t)) for t in a]
    yb = ["|".join(_answer(control, t)) for t in b]
    if len(set(ya) | set(yb)) < 2:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        k = float(cohen_kappa_score(ya, yb))
    return None if math.isnan(k) else k


def _weighted(values: list[tuple[float | None, int]]) -> float | None:
    known = [(v, n) for v, n in values if v is not None]
    total = sum(n for _, n in known)
    return sum(v * n for v, n in known) / total if total else None


def agreement(control: ControlSpec, tasks: Sequence[Mapping[str, Target]]) -> Agreement:
    """Agreement from ``tasks``: per task, annotator name -> that annotator's target for ``control``."""
    multi = [t for t in tasks if len(t) >= 2]
    names = sorted({a for t in multi for a in t})
    out = Agreement(control=control.name, metric=metric_name(control), n_tasks=len(multi))
    per: dict[str, list[tuple[float | None, int]]] = {a: [] for a in names}
    shared_tasks: dict[str, int] = dict.fromkeys(names, 0)
    for t in multi:
        for a in t:
            shared_tasks[a] += 1
    for a, b in combinations(names, 2):
        both = [t for t in multi if a in t and b in t]
        if not both:
            continue
        ta, tb = [t[a] for t in both], [t[b] for t in both]
        value = _pair_value(control, ta, tb)
        same = sum(_answer(control, x) == _answer(control, y) for x, y in zip(ta, tb, strict=True)) / len(both)
        out.pairs.append(PairAgreement(a, b, len(both), value, same))
        per[a].append((value, len(both)))
        per[b].append((value, len(both)))
    out.annotators = [AnnotatorAgreement(a, shared_tasks[a], _weighted(per[a])) for a in names]
    out.overall = _weighted([(p.value, p.n_tasks) for p in out.pairs])
    return out
