"""A span label written in one cell of a table (CSV/TSV/JSONL/Parquet): Label Studio span JSON or BIO tags.

The seed-003 operator's ``label`` column (:mod:`labelpilot.loop.span_files`) and the file doors
(``labelpilot train/evaluate`` on a span table, :mod:`labelpilot.batch.inputs`) read span cells here.

- **Label Studio span JSON**: a list of regions ``{"start", "end", "labels": [...]}`` (or ``"label": "X"``),
  or Label Studio result objects holding them under ``value``, or a whole annotation ``{"result": [...]}``.
  Character offsets, end exclusive; a region's optional ``text`` must equal ``text[start:end]``. ``[]`` is a
  text without entities.
- **BIO tags** (any scheme :mod:`labelpilot.data.bio` reads), space separated: one tag per non-space character
  when the text holds CJK characters, else one per whitespace-separated token; when the count does not match,
  one per character (spaces included), then per :func:`labelpilot.data.bio.tokenize` token.

Every parser raises ValueError saying what is wrong with the cell.
"""

from __future__ import annotations

import json
import re
from typing import Any

from labelpilot.data.bio import has_cjk, split_tag, tags_to_spans, tokenize
from labelpilot.data.types import Span
from labelpilot.errors import InputError

_WORD_RE = re.compile(r"\S+")


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
        raise ValueError(f"{what} {value!r} is not an integer")
    return int(value)


def _region_labels(v: dict[str, Any]) -> list[str]:
    raw = v.get("labels", v.get("label"))
    labels = [raw] if isinstance(raw, str) else raw
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) and x.strip() for x in labels):
        raise ValueError("needs a non-empty \"labels\" list (or a \"label\" string)")
    return [x.strip() for x in labels]


def parse_span_json(cell: str, text: str) -> list[Span]:
    """Spans from Label Studio span JSON (see the module doc). Raises ValueError saying what is wrong."""
    try:
        obj = json.loads(cell)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc.msg} at character {exc.pos}") from None
    if isinstance(obj, dict):
        obj = obj["result"] if isinstance(obj.get("result"), list) else [obj]
    if not isinstance(obj, list):
        raise ValueError("span JSON must be a list of regions")
    spans: list[Span] = []
    for k, region in enumerate(obj, start=1):
        if not isinstance(region, dict):
            raise ValueError(f"region {k} is not an object")
        v = region["value"] if isinstance(region.get("value"), dict) else region
        try:
            start, end = _int(v.get("start"), "start"), _int(v.get("end"), "end")
            labels = _region_labels(v)
        except ValueError as exc:
            raise ValueError(f"region {k}: {exc}") from None
        if not 0 <= start < end <= len(text):
            raise ValueError(f"region {k}: [{start}, {end}) is not inside the text (length {len(text)})")
        given = v.get("text")
        if isinstance(given, str) and given != text[start:end]:
            raise ValueError(f"region {k}: text {given!r} is not the text at [{start}, {end}): {text[start:end]!r}")
        spans.extend(Span(start, end, lab, text=text[start:end]) for lab in labels)
    return spans


def tag_offsets(text: str, n_tags: int) -> list[tuple[int, int]]:
    """The tokens ``n_tags`` BIO tags stand for (see the module doc). Raises ValueError when no rule fits."""
    chars = [(i, i + 1) for i, ch in enumerate(text) if not ch.isspace()]
    words = [m.span() for m in _WORD_RE.finditer(text)]
    primary = chars if has_cjk(text) else words
    for offsets in (primary, [(i, i + 1) for i in range(len(text))], tokenize(text)):
        if len(offsets) == n_tags:
            return offsets
    unit = "non-space character (the text holds CJK)" if primary is chars else "whitespace-separated token"
    raise ValueError(f"{n_tags} BIO tags for {len(primary)} tokens: one tag per {unit} expected")


def parse_bio(cell: str, text: str) -> list[Span]:
    tags = cell.split()
    for tag in tags:
        try:
            split_tag(tag)
        except InputError as exc:
            raise ValueError(exc.message) from None
    return tags_to_spans(tag_offsets(text, len(tags)), tags, text)


def cell_form(cell: str) -> str | None:
    """``"json"``, ``"bio"`` or None (not a span label, e.g. a class name), without the text."""
    c = cell.strip()
    if c[:1] in ("[", "{"):
        try:
            obj = json.loads(c)
        except json.JSONDecodeError:
            return "json"  # meant as JSON, malformed: reported when read
        return "json" if isinstance(obj, list | dict) else None
    tags = c.split()
    if not tags:
        return None
    try:
        parts = [split_tag(t) for t in tags]
    except InputError:
        return None
    return "bio" if len(tags) > 1 or parts[0][0] != "O" else None


def parse_span_cell(cell: str, text: str) -> tuple[list[Span], str]:
    """(spans, form) of one label cell; ValueError for a malformed cell."""
    form = cell_form(cell)
    if form == "json":
        return parse_span_json(cell.strip(), text), form
    if not cell.strip():
        raise ValueError("empty label (write [] for a text without entities)")
    if cell.strip() in ("O", "o"):  # one tag: a one-token text without entities
        return parse_bio(cell, text), "bio"
    if form is None and len(cell.split()) > 1 and any(t in ("O", "o") or cell_form(t) for t in cell.split()):
        return parse_bio(cell, text), "bio"  # meant as tags: says which tag is wrong
    if form is None:
        raise ValueError(f"{cell[:60]!r} is neither Label Studio span JSON nor BIO tags")
    return parse_bio(cell, text), form
