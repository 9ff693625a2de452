"""doc-fields segments: OCR lines cut into key and value segments, their neighbours and their dense features.

Split out of the doc-fields family module (issue #12) so the model class stays readable; the pipeline is
described in :mod:`labelpilot.models.document`.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np

from labelpilot.models import doc_keyvalue as kv
from labelpilot.ocr import OcrLine, OcrPage

_COLONS = (":", "：")
_COLONS = (":", "：")
_DATE = re.compile(
    r"(\d{4}\s*[-/.年]\s*\d{1,2}\s*[-/.月]\s*\d{1,2}日?)|(\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4})|"
    r"([A-Za-z]{3,9}\.?\s+\d{1,2},?\s+\d{4})|(\d{1,2}\s+[A-Za-z]{3,9}\.?\s+\d{4})"
)
_N_DENSE = 36


@dataclass(frozen=True, slots=True)
class Segment:
    text: str
    box: tuple[float, float, float, float]  # pixels
    score: float  # OCR confidence
    split_value: bool = False  # the part after a colon of a longer line
    is_key: bool = False  # ends with a colon

    @property
    def height(self) -> float:
        return max(1.0, self.box[3] - self.box[1])


# ------------------------------------------------------------------------------------------ segments


def _char_spans(line: OcrLine) -> list[tuple[float, float] | None]:
    """The x extent of each character of ``line.text`` (None for spaces): from rapidocr's word boxes when
    they spell the line, else the line box shared out by character width (CJK full, others ~0.55)."""
    text = line.text
    out: list[tuple[float, float] | None] = [None] * len(text)
    pieces: list[tuple[str, float, float]] = []
    if line.words and "".join(w.text for w in line.words).replace(" ", "") == text.replace(" ", ""):
        pieces = [(w.text.replace(" ", ""), w.box[0], w.box[2]) for w in line.words]
    else:
        pieces = [(text.replace(" ", ""), line.box[0], line.box[2])]
    chars = [i for i, ch in enumerate(text) if ch != " "]
    k = 0
    for word, x0, x1 in pieces:
        total = sum(kv.char_weight(c) for c in word) or 1.0
        acc = 0.0
        for c in word:
            w = kv.char_weight(c)
            if k < len(chars):
                out[chars[k]] = (x0 + (x1 - x0) * acc / total, x0 + (x1 - x0) * (acc + w) / total)
            acc += w
            k += 1
    return out


def _cuts(line: OcrLine, spans: list[tuple[float, float] | None]) -> list[int]:
    """Where to cut a line into segments: after each key's colon; before the next key when a value is
    followed by another key on the same line (at the widest gap between them); and at any gap wider than
    1.2 line heights (text of two columns read as one line)."""
    text = line.text
    colons = [i + 1 for i, ch in enumerate(text[:-1]) if ch in _COLONS and i >= 1 and text[i + 1 :].strip()]
    cuts = set(colons)
    pos = [i for i, sp in enumerate(spans) if sp is not None]

    def widest_gap(a: int, b: int) -> tuple[float, int]:
        best, at = -1.0, -1
        inside = [i for i in pos if a <= i < b]
        for p_, q in pairwise(inside):
            gap = spans[q][0] - spans[p_][1]  # type: ignore[index]
            if gap > best:
                best, at = gap, q
        return best, at

    for a, b in pairwise(colons):  # value + next key between two colons
        _, at = widest_gap(a, b - 1)
        if at > a:
            cuts.add(at)
    for p_, q in pairwise(pos):
        if spans[q][0] - spans[p_][1] > 1.2 * line.height:  # type: ignore[index]
            cuts.add(q)
    return sorted(c for c in cuts if 0 < c < len(text))


def segments_of(page: OcrPage) -> list[Segment]:
    """OCR lines cut into key and value segments (see :func:`_cuts`), each with the tightest box known."""
    out: list[Segment] = []
    for line in page.lines:
        spans = _char_spans(line)
        bounds = [0, *_cuts(line, spans), len(line.text)]
        several = len(bounds) > 2
        for a, b in pairwise(bounds):
            xs = [sp for sp in spans[a:b] if sp is not None]
            text = line.text[a:b].strip()
            if not xs or not text:
                continue
            x0, x1 = min(v[0] for v in xs), max(v[1] for v in xs)
            ys = [w.box for w in line.words if w.box[2] > x0 and w.box[0] < x1]
            y0 = min((v[1] for v in ys), default=line.box[1])
            y1 = max((v[3] for v in ys), default=line.box[3])
            is_key = text.endswith(_COLONS)
            out.append(Segment(text, (x0, y0, x1, y1), line.score, split_value=several and not is_key, is_key=is_key))
    return out


def _neighbours(segs: Sequence[Segment]) -> np.ndarray:
    """(n, 4) indices of the left, right, above and below neighbour of each segment (-1: none)."""
    n = len(segs)
    nb = np.full((n, 4), -1, dtype=np.int64)
    if n == 0:
        return nb
    b = np.array([s.box for s in segs], dtype=np.float64)
    h = np.maximum(b[:, 3] - b[:, 1], 1.0)
    cy = (b[:, 1] + b[:, 3]) / 2
    for i in range(n):
        x0, y0, x1, y1 = b[i]
        vover = np.minimum(b[:, 3], y1) - np.maximum(b[:, 1], y0)
        same_row = vover >= 0.5 * np.minimum(h, h[i])
        same_row[i] = False
        left = same_row & (b[:, 2] <= x0 + 0.3 * h[i])
        if left.any():
            nb[i, 0] = int(np.where(left)[0][np.argmax(b[left, 2])])
        right = same_row & (b[:, 0] >= x1 - 0.3 * h[i])
        if right.any():
            nb[i, 1] = int(np.where(right)[0][np.argmin(b[right, 0])])
        hover = (np.minimum(b[:, 2], x1) - np.maximum(b[:, 0], x0)) > 0
        hover |= np.abs(b[:, 0] - x0) < 1.5 * h[i]
        hover[i] = False
        above = hover & (cy < cy[i] - 0.5 * h[i]) & (cy[i] - cy < 4 * h[i])
        if above.any():
            nb[i, 2] = int(np.where(above)[0][np.argmax(cy[above])])
        below = hover & (cy > cy[i] + 0.5 * h[i]) & (cy - cy[i] < 4 * h[i])
        if below.any():
            nb[i, 3] = int(np.where(below)[0][np.argmin(cy[below])])
    return nb


def _norm(text: str) -> str:
    return re.sub(r"\d", "0", unicodedata.normalize("NFKC", text).lower())


def _dense(segs: Sequence[Segment], nb: np.ndarray, width: int, height: int) -> np.ndarray:
    n = len(segs)
    out = np.zeros((n, _N_DENSE), dtype=np.float64)
    if n == 0:
        return out
    b = np.array([s.box for s in segs], dtype=np.float64)
    h = np.maximum(b[:, 3] - b[:, 1], 1.0)
    med_h = float(np.median(h))
    order = np.argsort((b[:, 1] + b[:, 3]) / 2)
    rank = np.empty(n)
    rank[order] = np.arange(n) / max(1, n - 1)
    for i, s in enumerate(segs):
        t = s.text
        L = max(1, len(t))
        cx, cy = (b[i, 0] + b[i, 2]) / 2 / width, (b[i, 1] + b[i, 3]) / 2 / height
        f = [
            b[i, 0] / width,
            b[i, 2] / width,
            b[i, 1] / height,
            cx,
            cy,
            (b[i, 2] - b[i, 0]) / width,
            h[i] / med_h,
            math.log1p(len(t)) / 4,
            sum(c.isdigit() for c in t) / L,
            sum(unicodedata.east_asian_width(c) in ("W", "F") for c in t) / L,
            sum(c.isalpha() and c.isascii() for c in t) / L,
            sum(unicodedata.category(c).startswith("P") for c in t) / L,
            float(s.is_key),
            float(s.split_value),
            float(bool(_DATE.search(t))),
            rank[i],
            *(float(nb[i, k] >= 0) for k in range(4)),
            (b[i, 0] - b[nb[i, 0], 2]) / med_h / 10 if nb[i, 0] >= 0 else 0.0,
            float(s.score),
        ]
        # binned position: 6 columns x 8 rows, one-hot
        f.extend(float(k == min(5, int(cx * 6))) for k in range(6))
        f.extend(float(k == min(7, int(cy * 8))) for k in range(8))
        out[i, : len(f)] = f
    return out
