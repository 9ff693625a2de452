"""Annotation webhook events, checked before anything is stored.

Label Studio sends integer ids (``annotation.id``, ``task.id``, ``annotations[].id``). An event for one
annotation whose ids are missing, not integers or out of SQLite's 64-bit range is refused with a 422 naming
the field; in a bulk event (``ANNOTATIONS_CREATED`` / ``ANNOTATIONS_DELETED``) such entries are skipped and
named in the answer, so one bad entry never spoils the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from labelpilot.errors import InputError
from labelpilot.ids import parse_uint

MAX_SKIPPED_NAMED = 20


@dataclass
class AnnotationEvent:
    items: list[tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=list)  # (task, annotation)
    deleted: list[int] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        """What the event adds to the retrain counter (at least 1, as before)."""
        return max(len(self.items) + len(self.deleted), 1)


def _id_problem(obj: Any, where: str) -> str | None:
    if not isinstance(obj, dict):
        return f"{where} must be an object"
    if "id" not in obj or obj["id"] is None:
        return f"{where}.id is missing"
    if parse_uint(obj["id"]) is None:
        return f"{where}.id must be an integer between 0 and 2^63-1, got {str(obj['id'])[:40]!r}"
    return None


def _with_int_id(obj: dict[str, Any]) -> dict[str, Any]:
    return {**obj, "id": parse_uint(obj["id"])}


def parse_annotation_event(action: str, body: dict[str, Any]) -> AnnotationEvent:
    event = AnnotationEvent()
    if action == "ANNOTATIONS_DELETED":
        for i, ann in enumerate(_list(body, "annotations")):
            problem = _id_problem(ann, f"annotations.{i}")
            if problem:
                event.skipped.append(problem)
            else:
                event.deleted.append(parse_uint(ann["id"]))
        return event
    if action == "ANNOTATIONS_CREATED":
        for i, ann in enumerate(_list(body, "annotations")):
            task = ann.get("task") if isinstance(ann, dict) and isinstance(ann.get("task"), dict) else body.get("task")
            problem = _id_problem(ann, f"annotations.{i}") or _id_problem(task, f"annotations.{i}.task")
            if problem:
                event.skipped.append(problem)
            else:
                event.items.append((_with_int_id(task), _with_int_id(ann)))
        return event
    ann = body.get("annotation")
    task = ann.get("task") if isinstance(ann, dict) and isinstance(ann.get("task"), dict) else body.get("task")
    for obj, where in ((ann, "annotation"), (task, "task")):
        problem = _id_problem(obj, where)
        if problem:
            raise InputError(f"{action}: {problem}", field=f"{where}.id" if isinstance(obj, dict) else where)
    event.items.append((_with_int_id(task), _with_int_id(ann)))
    return event


def _list(body: dict[str, Any], key: str) -> list[Any]:
    value = body.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise InputError(f"{key} must be a list", field=key)
    return value
