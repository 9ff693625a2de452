"""Seed-003 files: reading and checking ``input_label.csv`` / ``input_added_label.csv`` /
``input_unlabel.csv`` and writing the predictions CSV.

Input columns: ``sampleId,path,label`` (``input_unlabel.csv``: ``sampleId,path``). ``path`` is a text file
(read as UTF-8) or an image, relative to the input folder or absolute; an inline ``text`` column may stand
in for ``path`` or go with it (then the text is used and the path is only carried along). Multi-label
labels are separated by ``|`` (``sports|finance``); a task is multi-label as soon as one label cell holds
a ``|``. Every problem is reported with the file and the line (line 1 is the header; a row's line is the
one it starts on). The CSV itself is read by :func:`labelpilot.files.read_rows`, the one reader of
tabular files; this module adds only what seed 003 asks of its files (columns, ids, paths).
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labelpilot.data.types import IMAGE_SUFFIXES, Example, Prediction, Span, Target
from labelpilot.errors import InputError
from labelpilot.files import LABEL_SEP, read_rows, split_labels

LABEL_FILE = "input_label.csv"
ADDED_FILE = "input_added_label.csv"
UNLABEL_FILE = "input_unlabel.csv"
PREDICTIONS_FILE = "predictions.csv"
REPORT_FILE = "report.json"
MAX_TEXT_BYTES = 10_000_000


@dataclass
class SeedRow:
    """One checked row of a seed-003 CSV: its item (text or image) and labels."""

    sample_id: str
    path: str
    text: str | None  # the item's text (inline or read from ``path``); None for images
    image: str | None  # absolute image path for image items
    labels: tuple[str, ...]
    file: str
    line: int
    inline: bool = False  # the text came from the CSV's text column
    abs_path: str = ""  # ``path`` resolved against the input folder ("" when the row had no path)
    spans: tuple[Span, ...] | None = None  # span tasks (loop/span_files.py): the gold spans, () for none

    def example(self, with_target: bool = True) -> Example:
        target = Target(labels=self.labels) if with_target and self.labels else None
        if with_target and self.spans is not None:
            target = Target(spans=self.spans)
        return Example(
            text=self.text or "",
            image=self.image,
            target=target,
            id=self.sample_id,
            meta={
                "path": self.path,
                "abs_path": self.abs_path,
                "file": self.file,
                "line": self.line,
                "inline_text": self.inline,
            },
        )

    @property
    def where(self) -> str:
        return f"{self.file} line {self.line} (sampleId={self.sample_id!r})"


def read_item(input_dir: Path, file: str, line: int, sample_id: str, path: str, text: str | None) -> SeedRow:
    where = f"{file} line {line} (sampleId={sample_id!r})"
    abs_path = ""
    if path.strip():
        abs_path = str(Path(path) if Path(path).is_absolute() else (input_dir / path).absolute())
    if text is not None and text.strip():
        return SeedRow(sample_id, path, text, None, (), file, line, inline=True, abs_path=abs_path)
    if not path.strip():
        raise InputError(f"{where}: empty path and no text", field=file)
    full = Path(path)
    if not full.is_absolute():
        full = input_dir / full
    if full.suffix.lower() in IMAGE_SUFFIXES:
        if not full.is_file():
            raise InputError(f"{where}: image {path!r} not found (looked at {full})", field=file)
        return SeedRow(sample_id, path, None, str(full), (), file, line, abs_path=abs_path)
    try:
        if full.stat().st_size > MAX_TEXT_BYTES:
            raise InputError(f"{where}: {path!r} is larger than {MAX_TEXT_BYTES} bytes", field=file)
        content = full.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(f"{where}: path {path!r} not found (looked at {full})", field=file) from None
    except IsADirectoryError:
        raise InputError(f"{where}: path {path!r} is a folder, not a text file", field=file) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{where}: cannot read {path!r} as UTF-8 text: {exc}", field=file) from None
    return SeedRow(sample_id, path, content.strip(), None, (), file, line, abs_path=abs_path)


def check_header(file: str, header: list[str], labelled: bool) -> None:
    allowed = {"sampleId", "path", "text", "label"}
    extra = [h for h in header if h not in allowed]
    dupes = sorted({h for h in header if header.count(h) > 1})
    missing = [h for h in ("sampleId", "label") if h not in header] if labelled else []
    if "sampleId" not in header and "sampleId" not in missing:
        missing.append("sampleId")
    if "path" not in header and "text" not in header:
        missing.append("path")
    expected = "sampleId,path,label" if labelled else "sampleId,path"
    if extra or missing or dupes:
        parts = []
        if missing:
            parts.append(f"missing column(s) {', '.join(missing)}")
        if extra:
            parts.append(f"unexpected column(s) {', '.join(extra)}")
        if dupes:
            parts.append(f"repeated column(s) {', '.join(dupes)}")
        raise InputError(
            f"{file}: {'; '.join(parts)} (expected {expected}, optionally a text column); header: {','.join(header)}",
            field=file,
        )


def _class_labels(cell: str, row: SeedRow) -> None:
    row.labels = split_labels(cell)
    if not row.labels:
        raise ValueError("empty label")


def read_seed_rows(
    input_dir: Path, file: str, *, labelled: bool, required: bool = True, problems: list[str] | None = None,
    label: Callable[[str, SeedRow], None] = _class_labels,
) -> list[SeedRow]:
    """Read and check one seed-003 CSV. ``label(cell, row)`` reads a labelled row's label cell into ``row``
    (class names by default; ValueError for a bad cell). A bad row (empty or duplicate sampleId, a bad label,
    an unreadable path, a label on an unlabelled item) raises :class:`InputError` naming the file and line, or,
    given ``problems``, is appended there and left out (span rounds). A missing file (when ``required``) or a bad
    header always raises."""
    csv_path = input_dir / file
    if not csv_path.is_file():
        if required:
            raise InputError(f"{file} not found in {input_dir}", field=file)
        return []
    headers: list[list[str]] = []

    def on_header(header: list[str]) -> None:
        headers.append(header)
        check_header(file, header, labelled)

    def bad(message: str) -> None:
        if problems is None:
            raise InputError(message, field=file)
        problems.append(message)

    rows: list[SeedRow] = []
    seen: dict[str, int] = {}
    try:
        for rec in read_rows(csv_path, "csv", on_header=on_header):
            n, cells = rec.line, rec.values
            if rec.error:
                bad(f"{file} line {n}: {rec.error}")
                continue
            if all(not str(c).strip() for c in cells.values()):
                continue  # blank line
            sid = cells["sampleId"].strip()
            where = f"{file} line {n} (sampleId={sid!r})"
            if not sid:
                bad(f"{file} line {n}: empty sampleId")
                continue
            if sid in seen:
                bad(f"{where}: duplicate sampleId (first on line {seen[sid]})")
                continue
            seen[sid] = n
            label_cell = cells.get("label", "")
            if not labelled and label_cell.strip():
                bad(f"{where}: unlabelled items must not carry a label")
                continue
            try:
                row = read_item(input_dir, file, n, sid, cells.get("path", "").strip(), cells.get("text"))
                if labelled:
                    label(label_cell, row)
            except InputError as exc:
                bad(exc.message)
                continue
            except ValueError as exc:
                bad(f"{where}: {exc}")
                continue
            rows.append(row)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{file}: cannot read as a UTF-8 CSV: {exc}", field=file) from None
    if not headers:
        raise InputError(f"{file} is empty (no header line)", field=file)
    return rows


def check_disjoint(groups: Sequence[Sequence[SeedRow]], problems: list[str] | None = None) -> list[list[SeedRow]]:
    """No sampleId may appear in two files (an item cannot be labelled and unlabelled at once). A repeat raises
    :class:`InputError`, or, given ``problems``, is appended there and left out (span rounds). Returns the groups
    without the left-out rows."""
    first: dict[str, SeedRow] = {}
    kept: list[list[SeedRow]] = []
    for rows in groups:
        keep = []
        for r in rows:
            other = first.get(r.sample_id)
            if other is not None:
                message = f"{r.where}: sampleId also appears in {other.file} line {other.line}"
                if problems is None:
                    raise InputError(message, field=r.file)
                problems.append(f"{message}; row left out")
                continue
            first[r.sample_id] = r
            keep.append(r)
        kept.append(keep)
    return kept


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


def write_predictions(
    path: Path,
    rows: Sequence[SeedRow],
    preds: Sequence[Prediction],
    scores: Any,
    hard: Any,
    rank: Any,
    keys: Sequence[str],
) -> None:
    """``predictions.csv``: ``sampleId, path[, text], label, confidence, uncertainty, hard_example, rank,
    prob_<label>...`` in input order. ``text`` is there when the unlabelled file had inline text: it echoes
    that text, so hard rows can be read without joining back by ``sampleId`` (``path`` is empty for them)."""
    with_text = any(r.inline for r in rows)
    header = ["sampleId", "path", *(["text"] if with_text else []), "label", "confidence", "uncertainty"]
    header += ["hard_example", "rank", *(f"prob_{k}" for k in keys)]
    out = []
    for i, (r, p) in enumerate(zip(rows, preds, strict=True)):
        s = float(scores[i])
        probs = p.probs or {}
        out.append(
            [r.sample_id, r.path, *([r.text if r.inline else ""] if with_text else []), LABEL_SEP.join(p.labels),
             f"{p.score:.6f}", "" if s != s else f"{s:.6f}", int(hard[i]), int(rank[i])]
            + [f"{probs.get(k, 0.0):.6f}" for k in keys]
        )
    write_csv(path, header, out)
