"""Rank annotations that are likely wrong, from out-of-fold predictions (``oof.py``).

Classification follows confident learning (Northcutt et al., 2021): per-class thresholds ``t_j`` = the mean
out-of-fold probability of class ``j`` over the examples annotated ``j``; an example counts in the off-diagonal
of the *confident joint* when some other class ``j`` reaches its threshold and is the likeliest such class
(``flagged``); every example is ranked by its label quality, the self-confidence ``p[given]`` (default) or the
normalized margin ``p[given] - max_{j != given} p[j]``. ``score`` = 1 - quality, mapped to 0..1. Multi-label is
the same per label (given 1 vs 0, thresholds per label and side) and an example scores by its worst label.
Single-label quality is read from the probabilities softened by ``RANK_TEMPERATURE`` = 2 (``p ** (1 / T)``
renormalized): many-class models put near-zero mass on an annotated class they merely find unlikely, and
softening separates those; chosen on TREC and GoEmotions only (``bench/RESULTS.md``).

Why not cleanlab: it is often listed as AGPL-3.0, but the 2.9.0 wheel's METADATA and LICENSE say Apache-2.0
(checked in a throwaway venv), so the licence is not the obstacle. Its weight is: it pulls pandas,
tqdm, termcolor and more into a server whose RSS budget is 300 MB, for what is here ~60 lines of numpy
(thresholds, confident joint, ranking) over the probabilities our own families already produce.
``bench/noise.py --cleanlab PYTHON`` runs cleanlab's ``find_label_issues`` on the same out-of-fold
probabilities in that other interpreter and reports its figures beside ours.

Spans (NER): every annotated span is scored by how little the out-of-fold model supports it: 1 - the weakest
of the marginal probabilities of the annotated tags on its tokens and of the span ending there (the next token
not continuing it), from ``marginals`` when the family has them (else 1 - the predicted span's score when the
model predicted the same span, and the token max-marginals otherwise). On CoNLL-2003 the weakest-token rule
found 66 % of planted span errors against 51 % for the mean (moved boundaries: 85 % against 7 %). Every span the
model predicts that overlaps no annotation is a *missed span*, scored by the mean probability that its tokens
are inside some entity (1 - P(O); the model's span score without marginals).
A task's score is its worst span. Boxes: annotated and predicted boxes are matched by IoU (the project's
``geometry.iou``); a match with another label scores the predicted box's score, a predicted box with no
annotated box is a missed box, an annotated box the model did not find scores 0.5 (a detector miss is weak
evidence).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from labelpilot.audit.oof import OutOfFold, out_of_fold
from labelpilot.audit.spans import SpanIssue, span_issues, span_text
from labelpilot.data.types import Box, Example, Prediction
from labelpilot.geometry import corners, iou
from labelpilot.schema.types import ControlSpec, TaskKind

__all__ = ["SpanIssue", "Suspect", "find_suspects", "span_issues", "suspects_from_oof"]

RANK_BY = ("self_confidence", "normalized_margin")
#: Temperature of single-label probabilities for the ranking (p ** (1 / T), renormalized; the confident joint's
#: flag uses the raw probabilities). Chosen on TREC and GoEmotions, never on SST-2/TNEWS: T = 2 found 74.7 % of
#: planted errors on their mean against 73.3 % for T = 1 (bench/RESULTS.md). Two classes: the order is unchanged.
RANK_TEMPERATURE = 2.0
#: IoU from which an annotated and a predicted box are the same object.
BOX_IOU = 0.5
#: Score of an annotated box the detector did not find (weak evidence; see the module doc).
UNFOUND_BOX_SCORE = 0.5


@dataclass(frozen=True)
class Suspect:
    """One annotation that is probably wrong (one per example, its worst part for spans and boxes)."""

    example_id: str | None  # Example.id (task id)
    control: str  # control name
    given: tuple[str, ...]  # the annotated label(s); for spans/boxes: a short text form
    suggested: tuple[str, ...]  # what the out-of-fold model says
    score: float  # 0..1, higher = more likely wrong
    reason: str  # one short human sentence
    flagged: bool = False  # classification: off-diagonal of the confident joint; spans/boxes: score >= 0.5


# ----------------------------------------------------------------------------- classification


def _prob_matrix(preds: Sequence[Prediction], classes: list[str]) -> np.ndarray:
    col = {c: j for j, c in enumerate(classes)}
    p = np.zeros((len(preds), len(classes)))
    for i, pred in enumerate(preds):
        for lab, v in (pred.probs or {}).items():
            if lab in col:
                p[i, col[lab]] = float(v)
        if not pred.probs:
            for lab in pred.labels:  # a model without probabilities: its labels, at full weight
                if lab in col:
                    p[i, col[lab]] = 1.0
    return p


def _classes(control: ControlSpec, oof: OutOfFold) -> list[str]:
    keys = list(control.label_keys)
    seen = {lab for ex in oof.examples for lab in ex.target.labels}  # type: ignore[union-attr]
    return keys + sorted(seen - set(keys))


def confident_learning(
    probs: np.ndarray, given: np.ndarray, rank_by: str = "self_confidence", temperature: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Single-label confident learning: ``(score 0..1, flagged, confident class)`` per example.

    ``probs`` is (n, k) out-of-fold probabilities, ``given`` the annotated class indices; ``temperature``
    softens (> 1) or sharpens (< 1) them for the score only (``RANK_TEMPERATURE``)."""
    if rank_by not in RANK_BY:
        raise ValueError(f"rank_by must be one of {RANK_BY}")
    if not temperature > 0:
        raise ValueError("temperature must be > 0")
    n, k = probs.shape
    rows = np.arange(n)
    thresholds = np.full(k, np.inf)
    for j in range(k):
        mask = given == j
        if mask.any():
            thresholds[j] = probs[mask, j].mean()
    above = probs >= thresholds[None, :] - 1e-12
    masked = np.where(above, probs, -1.0)
    confident = masked.argmax(axis=1)
    has = above.any(axis=1)
    flagged = has & (confident != given)
    ranked = probs
    if temperature != 1.0:
        ranked = np.clip(probs, 1e-12, None) ** (1.0 / temperature)
        ranked = ranked / ranked.sum(axis=1, keepdims=True)
    self_conf = ranked[rows, given]
    if rank_by == "self_confidence":
        quality = self_conf
    else:
        others = ranked.copy()
        others[rows, given] = -np.inf
        margin = self_conf - (others.max(axis=1) if k > 1 else 0.0)
        quality = (margin + 1.0) / 2.0
    return np.clip(1.0 - quality, 0.0, 1.0), flagged, np.where(has, confident, probs.argmax(axis=1))


def _choices_suspects(control: ControlSpec, oof: OutOfFold, rank_by: str, temperature: float) -> list[Suspect]:
    classes = _classes(control, oof)
    col = {c: j for j, c in enumerate(classes)}
    probs = _prob_matrix(oof.predictions, classes)
    ok = np.array([p.error is None for p in oof.predictions])
    out: list[Suspect] = []
    if control.multiple:
        given = np.zeros_like(probs, dtype=bool)
        for i, ex in enumerate(oof.examples):
            for lab in ex.target.labels:  # type: ignore[union-attr]
                given[i, col[lab]] = True
        # per label: a two-class problem (absent, present) with its own thresholds
        scores = np.zeros_like(probs)
        flags = np.zeros_like(probs, dtype=bool)
        for j in range(len(classes)):
            pj = np.stack([1.0 - probs[:, j], probs[:, j]], axis=1)
            scores[:, j], flags[:, j], _ = confident_learning(pj, given[:, j].astype(int), rank_by)
        for i, ex in enumerate(oof.examples):
            if not ok[i]:
                continue
            j = int(scores[i].argmax())
            lab = classes[j]
            suggested = tuple(c for c, v in zip(classes, probs[i], strict=True) if v >= 0.5)
            what = (f"annotated {lab!r} but the model gives it {probs[i, j]:.2f}" if given[i, j]
                    else f"{lab!r} not annotated but the model gives it {probs[i, j]:.2f}")
            out.append(Suspect(ex.id, control.name, ex.target.labels, suggested,  # type: ignore[union-attr]
                               float(scores[i, j]), what, bool(flags[i].any())))
        return out
    given_idx = np.array([col[ex.target.labels[0]] for ex in oof.examples])  # type: ignore[union-attr]
    scores, flagged, confident = confident_learning(probs, given_idx, rank_by, temperature)
    for i, ex in enumerate(oof.examples):
        if not ok[i]:
            continue
        g, c = classes[given_idx[i]], classes[confident[i]]
        if flagged[i]:
            reason = f"annotated {g!r}; the model is confident it is {c!r} ({probs[i, confident[i]]:.2f})"
        else:
            reason = f"annotated {g!r}; the model gives it {probs[i, given_idx[i]]:.2f}"
        out.append(Suspect(ex.id, control.name, ex.target.labels, (c,),  # type: ignore[union-attr]
                           float(scores[i]), reason, bool(flagged[i])))
    return out


# ------------------------------------------------------------------------------------ spans


def _spans_suspects(control: ControlSpec, oof: OutOfFold, how: str) -> list[Suspect]:
    worst: dict[int, SpanIssue] = {}
    for iss in span_issues(oof, how):
        if iss.index not in worst or iss.score > worst[iss.index].score:
            worst[iss.index] = iss
    out = []
    for i, iss in worst.items():
        text = oof.examples[i].text
        given = (span_text(iss.given, text),) if iss.given else ()
        suggested = (span_text(iss.predicted, text),) if iss.predicted else ()
        if iss.given is None:
            reason = f"the model finds {suggested[0]} ({iss.score:.2f}) where nothing is annotated"
        elif iss.predicted is not None:
            reason = f"annotated {given[0]}; the model reads {suggested[0]}"
        else:
            reason = f"annotated {given[0]}; the model supports it with {1 - iss.score:.2f}"
        out.append(Suspect(oof.examples[i].id, control.name, given, suggested, iss.score, reason, iss.score >= 0.5))
    return out


# ------------------------------------------------------------------------------------ boxes


def box_corners(b: Box) -> tuple[float, float, float, float]:
    """A box as the corners ``geometry.iou`` reads."""
    return corners(b.x, b.y, b.width, b.height)


def box_text(b: Box) -> str:
    return f"{b.label}@({b.x:.2f},{b.y:.2f},{b.width:.2f},{b.height:.2f})"


def match_boxes(a: Sequence[Box], b: Sequence[Box], min_iou: float = BOX_IOU) -> list[tuple[int, int, float]]:
    """Greedy one-to-one IoU matching (highest IoU first) of two box lists: ``(i, j, iou)`` pairs."""
    pairs = sorted(((iou(box_corners(x), box_corners(y)), i, j) for i, x in enumerate(a) for j, y in enumerate(b)),
                   reverse=True)
    used_a: set[int] = set()
    used_b: set[int] = set()
    out = []
    for v, i, j in pairs:
        if v < min_iou:
            break
        if i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
            out.append((i, j, v))
    return out


def _boxes_suspects(control: ControlSpec, oof: OutOfFold) -> list[Suspect]:
    out = []
    for ex, pred in zip(oof.examples, oof.predictions, strict=True):
        if pred.error is not None:
            continue
        gold = list(ex.target.boxes)  # type: ignore[union-attr]
        pairs = match_boxes(gold, pred.boxes)
        found: list[tuple[float, str, str, str]] = []  # (score, given, suggested, reason)
        matched_g = {i for i, _, _ in pairs}
        matched_p = {j for _, j, _ in pairs}
        for i, j, _v in pairs:
            g, p = gold[i], pred.boxes[j]
            if g.label != p.label:
                sc = p.score if p.score is not None else 0.5
                found.append((sc, box_text(g), box_text(p), f"box annotated {g.label!r}; the model sees {p.label!r}"))
        for i, g in enumerate(gold):
            if i not in matched_g:
                found.append((UNFOUND_BOX_SCORE, box_text(g), "", f"the model finds no object at {box_text(g)}"))
        for j, p in enumerate(pred.boxes):
            if j not in matched_p:
                sc = p.score if p.score is not None else 0.5
                found.append((sc, "", box_text(p), f"the model finds {box_text(p)} ({sc:.2f}) where no box is"))
        if not found:
            found.append((0.0, "", "", "annotated boxes and the model agree"))
        sc, g_txt, p_txt, reason = max(found, key=lambda f: f[0])
        out.append(Suspect(ex.id, control.name, (g_txt,) if g_txt else (), (p_txt,) if p_txt else (),
                           float(sc), reason, sc >= 0.5))
    return out


# ------------------------------------------------------------------------------------ entry


def suspects_from_oof(oof: OutOfFold, *, rank_by: str = "self_confidence", span_support: str = "min",
                      temperature: float = RANK_TEMPERATURE) -> list[Suspect]:
    """Suspects from out-of-fold predictions already made, most suspect first. ``rank_by``: class labels'
    quality ("self_confidence" or "normalized_margin"), ``temperature`` of single-label probabilities for that
    quality (multi-label: per-label two-class problems, left at 1); ``span_support``: "min" or "mean"
    (``_tag_support``)."""
    control = oof.control
    if control.kind is TaskKind.TEXT_SPANS:
        out = _spans_suspects(control, oof, span_support)
    elif control.kind is TaskKind.IMAGE_BOXES:
        out = _boxes_suspects(control, oof)
    else:
        out = _choices_suspects(control, oof, rank_by, temperature)
    return sorted(out, key=lambda s: (-s.score, not s.flagged, s.example_id or ""))


def find_suspects(
    control: ControlSpec,
    examples: Sequence[Example],
    *,
    folds: int = 5,
    seed: int = 0,
    family: str | None = None,
    options: dict[str, Any] | None = None,
    progress: Callable[[int, int, str], None] | None = None,
    repeats: int | None = None,
) -> list[Suspect]:
    """Out-of-fold predictions for ``examples`` (annotated for ``control``), then the ranked suspects.
    ``repeats``: class labels only, average over that many fold splits (see ``oof.out_of_fold``)."""
    oof = out_of_fold(control, examples, folds=folds, seed=seed, family=family, options=options, progress=progress,
                      repeats=repeats)
    return suspects_from_oof(oof)
