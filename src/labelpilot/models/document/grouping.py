"""doc-fields decoding and scoring helpers: grouping labelled segments into boxes, and field-level P/R/F1.

Split out of the doc-fields family module (issue #12); see :mod:`labelpilot.models.document`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from labelpilot import geometry
from labelpilot.data.types import Example, Prediction
from labelpilot.metrics import prf
from labelpilot.models.document.segments import Segment
from labelpilot.ocr import OcrPage

OTHER = "O"


def _softmax(z: Any) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _union(boxes: Sequence[tuple[float, float, float, float]]) -> tuple[float, float, float, float]:
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


def _join(parts: Sequence[str]) -> str:
    out = ""
    for p in parts:
        if out and ((out[-1].isascii() and out[-1].isalnum()) or (p[:1].isascii() and p[:1].isalnum())):
            out += " "
        out += p
    return out


def _groups(segs: Sequence[Segment], labels: Sequence[str]) -> list[tuple[str, list[int]]]:
    """Connected runs of same-label segments: next to each other on a row, or the lines of a paragraph
    (vertically adjacent and overlapping or left-aligned). Members come in reading order."""
    idx = [i for i, lab in enumerate(labels) if lab != OTHER]
    parent = {i: i for i in idx}

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a_pos, a in enumerate(idx):
        for b in idx[a_pos + 1 :]:
            if labels[a] != labels[b]:
                continue
            ax0, ay0, ax1, ay1 = segs[a].box
            bx0, by0, bx1, by1 = segs[b].box
            h = max(segs[a].height, segs[b].height)
            vover = min(ay1, by1) - max(ay0, by0)
            hgap = max(bx0 - ax1, ax0 - bx1)
            vgap = max(by0 - ay1, ay0 - by1)
            hover = min(ax1, bx1) - max(ax0, bx0)
            same_row = vover > 0.5 * min(segs[a].height, segs[b].height) and hgap < 2.0 * h
            stacked = vgap < 1.0 * h and (hover > 0 or abs(ax0 - bx0) < 1.5 * h)
            if same_row or stacked:
                parent[find(a)] = find(b)
    groups: dict[int, list[int]] = {}
    for i in idx:
        groups.setdefault(find(i), []).append(i)
    out = []
    for members in groups.values():
        members.sort(key=lambda i: (segs[i].box[1], segs[i].box[0]))
        out.append((labels[members[0]], members))
    return out


def _best_annotation(
    box: tuple[float, float, float, float], ex: Example, page: OcrPage, label: str
) -> tuple[float, float, float, float] | None:
    best, best_iou = None, 0.3
    for b in ex.target.boxes if ex.target else ():
        if b.label != label:
            continue
        a = (b.x * page.width, b.y * page.height, (b.x + b.width) * page.width, (b.y + b.height) * page.height)
        overlap = geometry.iou(a, box)
        if overlap > best_iou:
            best, best_iou = a, overlap
    return best


def field_scores(preds: Sequence[Prediction], examples: Sequence[Example], iou: float = 0.5) -> dict[str, float]:
    """Field-level precision / recall / F1: a predicted box is right when it has the label of a gold box of
    the page and IoU >= ``iou`` with it (each gold box matched once; coordinates relative to the page)."""
    tp = fp = fn = 0
    for pred, ex in zip(preds, examples, strict=True):
        gold = list(ex.target.boxes) if ex.target else []
        used = [False] * len(gold)
        for b in sorted(pred.boxes, key=lambda b: -(b.score or 0)):
            pb = geometry.corners(b.x, b.y, b.width, b.height)
            best, best_j = 0.0, -1
            for j, g in enumerate(gold):
                if used[j] or g.label != b.label:
                    continue
                v = geometry.iou(pb, geometry.corners(g.x, g.y, g.width, g.height))
                if v > best:
                    best, best_j = v, j
            if best_j >= 0 and best >= iou:
                used[best_j] = True
                tp += 1
            else:
                fp += 1
        fn += used.count(False)
    p, r, f1 = prf(tp, fp, fn)
    return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(f1, 4)}
