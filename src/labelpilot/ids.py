"""Ids that come from outside (URL segments, webhook ids, settings, Label Studio projects), parsed strictly.

Integers: in range.

``str.isdigit`` accepts Unicode digits such as ``"¹"`` that ``int`` refuses, and Python ints are unbounded
while SQLite's are 64-bit, so every outside id goes through :func:`parse_uint` instead.
"""

from __future__ import annotations

from datetime import datetime
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


def project_uid(project: Any) -> str | None:
    """Label Studio's ``"<id>.<int(created_at timestamp)>"`` from a webhook's project object or a string."""
    if isinstance(project, str):
        return project or None
    if isinstance(project, int):
        return str(project)
    if not isinstance(project, dict) or parse_uint(project.get("id")) is None:
        return None  # Label Studio's project ids are integers
    created = project.get("created_at")
    if isinstance(created, str) and created:
        try:
            ts = datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp()
            return f"{project['id']}.{int(ts)}"
        except ValueError:
            pass
    return str(project["id"])


def ls_project_id(uid: str) -> int | None:
    return parse_uint(uid.split(".", 1)[0])
