"""Integers that come from outside (URL segments, webhook ids, settings): parsed strictly, in range.

``str.isdigit`` accepts Unicode digits such as ``"¹"`` that ``int`` refuses, and Python ints are unbounded
while SQLite's are 64-bit, so every outside id goes through :func:`parse_uint` instead.
"""

from __future__ import annotations

from typing import Any

INT64_MAX = 2**63 - 1


def parse_uint(value: Any, *, maximum: int = INT64_MAX) -> int | None:
    """A non-negative int from an int (not a bool) or a string of ASCII digits, at most ``maximum``;
    ``None`` for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        n = value
    elif isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
        n = int(value)
    else:
        return None
    return n if 0 <= n <= maximum else None
