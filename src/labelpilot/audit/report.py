"""The audit's outputs: ``suspects.csv`` (written atomically), per-class counts and ``summary.json``.

Per-class counts answer "where are the problems": for each annotated class (spans and boxes: each annotated
label), how many examples carry it, how many of them are flagged, and what the model most often suggests
instead.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from labelpilot.audit.agreement import Agreement
from labelpilot.audit.suspects import Suspect
from labelpilot.data.types import Example
from labelpilot.files import RowWriter

__all__ = ["CSV_COLUMNS", "class_counts", "write_summary", "write_suspects_csv"]

CSV_COLUMNS = ["rank", "id", "control", "given", "suggested", "score", "reason", "text"]
EXCERPT = 160


def _excerpt(ex: Example | None) -> str:
    if ex is None:
        return ""
    if ex.image:
        return ex.image
    text = " ".join((ex.text or "").split())
    return text if len(text) <= EXCERPT else text[: EXCERPT - 1] + "…"


def _labels_of(ex: Example) -> list[str]:
    t = ex.target
    if t is None:
        return []
    return list(t.labels) or sorted({s.label for s in t.spans}) or sorted({b.label for b in t.boxes}) or ["(none)"]


def class_counts(suspects: Sequence[Suspect], examples: Sequence[Example]) -> list[dict[str, Any]]:
    """Per annotated class: examples, flagged examples, share flagged, the most common suggestion."""
    by_id = {s.example_id: s for s in suspects}
    rows: dict[str, dict[str, Any]] = {}
    for ex in examples:
        s = by_id.get(ex.id)
        for lab in _labels_of(ex):
            r = rows.setdefault(lab, {"label": lab, "examples": 0, "flagged": 0, "suggested": Counter()})
            r["examples"] += 1
            if s is not None and s.flagged:
                r["flagged"] += 1
                r["suggested"].update(x for x in s.suggested if x != lab)
    out = []
    for lab in sorted(rows, key=lambda k: (-rows[k]["flagged"], k)):
        r = rows[lab]
        top = r["suggested"].most_common(1)
        out.append({"label": lab, "examples": r["examples"], "flagged": r["flagged"],
                    "flagged_share": round(r["flagged"] / r["examples"], 4) if r["examples"] else 0.0,
                    "top_suggestion": top[0][0] if top else ""})
    return out


def write_suspects_csv(path: Path, suspects: Sequence[Suspect], examples: Sequence[Example],
                       top: int | None = None) -> int:
    """``suspects.csv`` (most suspect first; ``top`` rows at most), written to a temp file and renamed."""
    by_id = {ex.id: ex for ex in examples}
    writer = RowWriter(path, CSV_COLUMNS, fmt="csv")
    n = 0
    try:
        rows = []
        for rank, s in enumerate(suspects[:top] if top else suspects, 1):
            rows.append({"rank": rank, "id": s.example_id, "control": s.control, "given": "|".join(s.given),
                         "suggested": "|".join(s.suggested), "score": round(s.score, 4), "reason": s.reason,
                         "text": _excerpt(by_id.get(s.example_id))})
            n += 1
        writer.write(rows)
    except BaseException:
        writer.abort()
        raise
    writer.close()
    return n


def write_summary(path: Path, summary: dict[str, Any], agreement: Agreement | None) -> None:
    """``summary.json`` next to the CSV (atomic like it)."""
    body = {**summary, "agreement": agreement.to_dict() if agreement else None}
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(json.dumps(body, ensure_ascii=False, indent=1, default=str), encoding="utf-8")
    os.replace(tmp, path)
