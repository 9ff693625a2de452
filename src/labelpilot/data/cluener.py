"""CLUENER2020 JSON lines <-> :class:`Example`.

CLUENER rows look like ``{"text": "...", "label": {"<type>": {"<mention>": [[start, end], ...]}}}``
with 0-based character offsets whose **end is inclusive**. Examples use end-exclusive offsets, so
reading adds 1 to each end and writing subtracts it.

Reading is lenient per span: an offset pair outside the text, or one whose text differs from the
mention it is listed under, is left out with a logged warning (such a row is inconsistent, so neither
the offsets nor the mention is trusted). Rows without ``label`` (the unlabeled
test split, ``{"id", "text"}``) give examples with ``target=None``. Besides JSON lines, the reader
accepts concatenated pretty-printed JSON objects (the layout of one public copy of the test split).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from labelpilot.data.types import Example, Span, Target
from labelpilot.errors import InputError

log = logging.getLogger(__name__)


def row_to_example(row: dict[str, Any], *, index: int | None = None) -> Example:
    """One CLUENER object -> Example (end offsets converted to exclusive)."""
    if not isinstance(row, dict) or not isinstance(row.get("text"), str):
        raise InputError(f"row {index}: a CLUENER row needs a string 'text'", field="text")
    text: str = row["text"]
    ex_id = str(row["id"]) if row.get("id") is not None else (str(index) if index is not None else None)
    labels = row.get("label")
    if labels is None:
        return Example(text=text, target=None, id=ex_id)
    if not isinstance(labels, dict):
        raise InputError(f"row {index}: 'label' must be an object", field="label")
    spans: list[Span] = []
    for typ, mentions in labels.items():
        if not isinstance(mentions, dict):
            log.warning("row %s: label %r is not a {mention: offsets} object; left out", index, typ)
            continue
        for mention, pairs in mentions.items():
            for pair in pairs or ():
                try:
                    s, e_incl = int(pair[0]), int(pair[1])
                except (TypeError, ValueError, IndexError):
                    log.warning("row %s: bad offsets %r for %r; left out", index, pair, mention)
                    continue
                e = e_incl + 1
                if not 0 <= s < e <= len(text):
                    log.warning("row %s: offsets [%d, %d] outside the text; left out", index, s, e_incl)
                    continue
                if text[s:e] != mention:
                    log.warning(
                        "row %s: text[%d:%d]=%r differs from mention %r; left out", index, s, e, text[s:e], mention
                    )
                    continue
                spans.append(Span(s, e, str(typ), text=mention))
    spans.sort(key=lambda sp: (sp.start, sp.end))
    return Example(text=text, target=Target(spans=tuple(spans)), id=ex_id)


def example_to_row(example: Example) -> dict[str, Any]:
    """Example -> CLUENER object (end offsets inclusive). Types and mentions keep first-seen order."""
    row: dict[str, Any] = {"text": example.text}
    if example.target is None:
        if example.id is not None:
            row["id"] = example.id
        return row
    label: dict[str, dict[str, list[list[int]]]] = {}
    for sp in sorted(example.target.spans, key=lambda x: (x.start, x.end)):
        if not 0 <= sp.start < sp.end <= len(example.text):
            raise InputError(f"span [{sp.start}, {sp.end}) is outside the text", field="spans")
        mention = example.text[sp.start : sp.end]
        label.setdefault(sp.label, {}).setdefault(mention, []).append([sp.start, sp.end - 1])
    row["label"] = label
    return row


def iter_json_objects(text: str) -> Iterator[Any]:
    """Objects of a JSON-lines text or of concatenated (pretty-printed) JSON values."""
    dec = json.JSONDecoder()
    pos, n = 0, len(text)
    while True:
        while pos < n and text[pos].isspace():
            pos += 1
        if pos >= n:
            return
        try:
            obj, pos = dec.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            line = text.count("\n", 0, pos) + 1
            raise InputError(f"line {line}: not valid JSON ({exc.msg})", field="json") from exc
        yield obj


def parse_cluener(text: str) -> list[Example]:
    return [row_to_example(obj, index=i) for i, obj in enumerate(iter_json_objects(text))]


def read_cluener(path: str | Path) -> list[Example]:
    """Read a CLUENER file (JSON lines, or concatenated JSON objects)."""
    return parse_cluener(Path(path).read_text(encoding="utf-8"))


def format_cluener(examples: Iterable[Example]) -> str:
    return "".join(json.dumps(example_to_row(ex), ensure_ascii=False) + "\n" for ex in examples)


def write_cluener(examples: Iterable[Example], path: str | Path) -> None:
    """Write examples as CLUENER JSON lines (UTF-8, not ASCII-escaped)."""
    Path(path).write_text(format_cluener(examples), encoding="utf-8")
