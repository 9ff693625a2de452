"""Box geometry: intersection over union, the one implementation every box-handling module uses.

Label Studio's rectangles, the detector, the document-field model and its metrics all compare boxes by IoU;
they hold boxes as ``x, y, width, height`` (Label Studio, :class:`labelpilot.data.types.Box`) or as corners
``(x1, y1, x2, y2)`` (numpy work). This module knows nothing of labelpilot: it sits below every layer.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Corners = tuple[float, float, float, float]


def corners(x: float, y: float, width: float, height: float) -> Corners:
    """``(x1, y1, x2, y2)`` of a box given by its top-left corner and size."""
    return (x, y, x + width, y + height)


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two corner boxes ``(x1, y1, x2, y2)``; 0.0 when the union is empty. Plain floats: this is
    called in per-box Python loops, where numpy's per-call cost would dominate."""
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of corner boxes ``a`` (n, 4) and ``b`` (m, 4), shape (n, m); degenerate boxes have area 0."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    ix1 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy1 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix2 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)
