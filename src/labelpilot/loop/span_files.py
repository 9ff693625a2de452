"""Seed-003 files for span (NER) tasks: the ``label`` column holding spans, and ``predictions.csv`` with spans.

A label cell is Label Studio span JSON or BIO tags, detected per cell (:mod:`labelpilot.data.span_cells`).

A malformed row (bad JSON, offsets outside the text, a text mismatch, a wrong tag count, an empty label, a
duplicate sampleId, an unreadable path, an image) is **skipped and reported** with its file and line; the
round goes on with the others. Only file-level problems (a missing file, a bad header) stop the round.

``--task auto`` (the CLI's default) treats a round as a span task when more than half of the label cells of
``input_label.csv`` read as span JSON or as tag sequences (:func:`detect_task`); ``--task spans`` forces it,
``--task classes`` forces classification.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from labelpilot.data.span_cells import cell_form, parse_span_cell
from labelpilot.data.types import Prediction, Span
from labelpilot.errors import InputError
from labelpilot.files import read_rows
from labelpilot.loop.files import LABEL_FILE, SeedRow, read_seed_rows, write_csv

SPAN_TASKS = frozenset({"spans", "ner"})
CLASS_TASKS = frozenset({"classes", "classification", "text"})
TASKS = ("auto", "spans", "ner", "classes")
IMAGE = "an image; span tasks label texts"


def detect_task(input_dir: Path) -> str:
    """``"spans"`` when more than half of ``input_label.csv``'s label cells read as spans, else ``"classes"``
    (also when the file is missing or unreadable: the classification round reports that)."""
    path = Path(input_dir) / LABEL_FILE
    n = spans = 0
    try:
        for rec in read_rows(path, "csv"):
            cell = str(rec.values.get("label", "") or "")
            if rec.error or not cell.strip():
                continue
            n += 1
            spans += cell_form(cell) is not None
    except (InputError, OSError, UnicodeDecodeError, csv.Error):
        return "classes"
    return "spans" if n and spans * 2 > n else "classes"


def read_span_rows(
    input_dir: Path, file: str, *, labelled: bool, problems: list[str], forms: dict[str, int], required: bool = True
) -> list[SeedRow]:
    """Read one seed-003 CSV of a span task (:func:`labelpilot.loop.files.read_seed_rows`, lenient): malformed
    rows go to ``problems`` (file, line, why) and are left out. ``forms`` counts the label forms read (json/bio).
    A missing file or a bad header raises InputError."""

    def spans_of(cell: str, row: SeedRow) -> None:
        if row.text is None:
            raise ValueError(IMAGE)
        try:
            spans, form = parse_span_cell(cell, row.text)
        except ValueError as exc:
            raise ValueError(f"label: {exc}") from None
        forms[form] = forms.get(form, 0) + 1
        row.spans = tuple(spans)

    rows = read_seed_rows(input_dir, file, labelled=labelled, required=required, problems=problems, label=spans_of)
    for row in rows:
        if row.text is None:  # unlabelled rows: no label cell to read
            problems.append(f"{file} line {row.line} (sampleId={row.sample_id!r}): {IMAGE}")
    return [row for row in rows if row.text is not None]


def span_regions(spans: Sequence[Span], text: str) -> list[dict[str, Any]]:
    """Label Studio span regions (``start, end, text, labels`` and ``score`` when known)."""
    out = []
    for s in spans:
        region: dict[str, Any] = {"start": s.start, "end": s.end, "text": text[s.start:s.end], "labels": [s.label]}
        if s.score is not None:
            region["score"] = round(float(s.score), 6)
        out.append(region)
    return out


def spans_json(spans: Sequence[Span], text: str) -> str:
    return json.dumps(span_regions(spans, text), ensure_ascii=False)


def write_span_predictions(
    path: Path,
    rows: Sequence[SeedRow],
    preds: Sequence[Prediction],
    scores: Any,
    hard: Any,
    rank: Any,
    tokens: Any,
) -> None:
    """``predictions.csv`` of a span round: ``sampleId, path[, text], label, n_spans, confidence, uncertainty,
    tokens, hard_example, rank[, error]`` in input order. ``label`` is Label Studio span JSON (``start, end,
    text, labels, score``: offsets into the item's text, so it can be read back as a label cell or imported
    as pre-annotations); ``confidence`` the model's confidence in the whole labelling; ``uncertainty`` the
    strategy's score (higher = label sooner); ``tokens`` the item's length in the unit of ``--token-budget``."""
    with_text = any(r.inline for r in rows)
    with_error = any(p.error for p in preds)
    header = ["sampleId", "path", *(["text"] if with_text else []), "label", "n_spans", "confidence", "uncertainty",
              "tokens", "hard_example", "rank", *(["error"] if with_error else [])]
    out = []
    for i, (r, p) in enumerate(zip(rows, preds, strict=True)):
        s = float(scores[i])
        label = "" if p.error else spans_json(p.spans, r.text or "")
        out.append(
            [r.sample_id, r.path, *([r.text if r.inline else ""] if with_text else []), label, len(p.spans),
             f"{p.score:.6f}", "" if s != s else f"{s:.6f}", int(tokens[i]), int(hard[i]), int(rank[i])]
            + ([p.error or ""] if with_error else [])
        )
    write_csv(path, header, out)
