"""When annotation webhooks start a retrain: early and often while a project is young, then every N events.

``LABELPILOT_RETRAIN_SCHEDULE`` (default ``"1,2,5"``) lists the project's annotation counts (in the webhook
copy) at which a retrain starts: the first model comes after the first annotation, the next after the
second, then after the fifth. Independently, a retrain starts whenever ``LABELPILOT_RETRAIN_EVERY`` (default
10) annotation events (creations, updates, deletions) have arrived since the last one, so the defaults retrain
at 1, 2, 5, 15, 25, ... annotations. ``LABELPILOT_RETRAIN_EVERY=0`` turns automatic retraining off (Start
Training only), schedule included; ``LABELPILOT_RETRAIN_SCHEDULE=""`` keeps only the every-N rule.
"""

from __future__ import annotations

from collections.abc import Sequence

from labelpilot.config import parse_schedule

__all__ = ["parse_schedule", "retrain_due"]


def retrain_due(
    schedule: Sequence[int], every: int, *, total_before: int, total_after: int, since_train: int
) -> str | None:
    """The reason to retrain now, or None.

    ``total_before``/``total_after``: annotations kept for the project before and after this event;
    ``since_train``: annotation events since the last automatic retrain, this one included.
    """
    if every <= 0:
        return None
    crossed = [n for n in schedule if total_before < n <= total_after]
    if crossed:
        return f"{total_after} annotation(s): early retrain (schedule {','.join(map(str, schedule))})"
    if since_train >= every:
        return f"{since_train} annotation events"
    return None
