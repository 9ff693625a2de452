"""Box utilities of the image-detector: greedy NMS and VOC-style average precision (IoU: labelpilot.geometry).

Split out of :mod:`labelpilot.models.vision.detector` (issue #12); numpy only, no Pillow or torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from labelpilot.data.types import Box
from labelpilot.geometry import iou_matrix


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float = 0.5, classes: np.ndarray | None = None) -> np.ndarray:
    """Greedy non-maximum suppression (per class when ``classes`` is given). Returns kept indices, best first."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    if classes is not None:
        # offset boxes by class so that boxes of different classes never overlap
        span = float(max(boxes.max(), 1.0)) + 1.0
        boxes = boxes + (np.asarray(classes, dtype=np.float64).reshape(-1, 1) * span)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    suppressed = np.zeros(len(boxes), dtype=bool)
    ious = iou_matrix(boxes, boxes)
    for i in order:
        if suppressed[i]:
            continue
        keep.append(int(i))
        suppressed |= ious[i] > iou
    return np.asarray(keep, dtype=np.int64)


def _corners(boxes: Sequence[Box]) -> np.ndarray:
    return np.array([[b.x, b.y, b.x + b.width, b.y + b.height] for b in boxes], dtype=np.float64).reshape(-1, 4)


def average_precision(
    predictions: Sequence[Sequence[Box]], truths: Sequence[Sequence[Box]], iou: float = 0.5
) -> dict[str, float]:
    """VOC-style (all-point interpolated) AP per label at ``iou``, plus ``"mAP"`` over labels with truths.

    ``predictions[i]`` / ``truths[i]`` are the boxes of image ``i`` (predicted boxes need a score).
    """
    labels = sorted({b.label for t in truths for b in t})
    out: dict[str, float] = {}
    for label in labels:
        gts = [_corners([b for b in t if b.label == label]) for t in truths]
        npos = sum(len(g) for g in gts)
        dets = [(b.score or 0.0, i, b) for i, p in enumerate(predictions) for b in p if b.label == label]
        dets.sort(key=lambda d: -d[0])
        used = [np.zeros(len(g), dtype=bool) for g in gts]
        tp = np.zeros(len(dets))
        for k, (_, i, b) in enumerate(dets):
            g = gts[i]
            if len(g) == 0:
                continue
            overlaps = iou_matrix(_corners([b]), g)[0]
            j = int(np.argmax(overlaps))
            if overlaps[j] >= iou and not used[i][j]:
                tp[k] = 1
                used[i][j] = True
        ctp = np.cumsum(tp)
        cfp = np.cumsum(1 - tp)
        recall = ctp / max(npos, 1)
        precision = ctp / np.maximum(ctp + cfp, 1e-12)
        mrec = np.concatenate([[0.0], recall, [1.0]])
        mpre = np.concatenate([[0.0], precision, [0.0]])
        mpre = np.maximum.accumulate(mpre[::-1])[::-1]
        idx = np.where(mrec[1:] != mrec[:-1])[0]
        out[label] = float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]))
    out["mAP"] = float(np.mean([out[lab] for lab in labels])) if labels else 0.0
    return out
