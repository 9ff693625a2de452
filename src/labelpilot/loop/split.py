"""The seed-003 split, one implementation for every model.

Validation comes only from ``input_label.csv``; which rows go there depends only on the random seed, the
sampleIds and their labels (not on row order), so every round with the same seed gets the same
validation set. Training is the rest of ``input_label.csv`` plus, after the first round,
``input_added_label.csv``. ``val_size`` is the fraction of ``input_label.csv`` held out (0 = no validation).
The split is stratified by label set, and never takes the only example of a label set away from training.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TypeVar

import numpy as np

from labelpilot.errors import InputError

T = TypeVar("T")


def _stratum_seed(random_seed: int, key: str) -> int:
    digest = hashlib.sha256(f"{random_seed}\x1f{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def split_train_val(
    init: Sequence[T],
    added: Sequence[T],
    *,
    ids: Sequence[str],
    strata: Sequence[str],
    is_first_train: bool,
    val_size: float,
    random_seed: int = 0,
) -> tuple[list[T], list[T] | None]:
    """(train, val) from the initial labels ``init`` and the added labels ``added``.

    ``ids`` and ``strata`` are aligned with ``init`` (sampleId and a label-set key per item). ``val`` is
    None when ``val_size`` is 0. Within each stratum the items are ordered by sampleId and shuffled with
    a generator seeded by (``random_seed``, stratum), then the first ``round(val_size * count)`` go to
    validation (largest remainders fill up the total, at most ``count - 1`` per stratum).
    """
    if not 0 <= val_size < 1:
        raise InputError(f"val_size must be in [0, 1), got {val_size}", field="val_size")
    if len(ids) != len(init) or len(strata) != len(init):
        raise ValueError("ids and strata must be aligned with init")
    extra = [] if is_first_train else list(added)
    if val_size == 0 or len(init) < 2:
        return list(init) + extra, None
    groups: dict[str, list[int]] = {}
    for i, key in enumerate(strata):
        groups.setdefault(key, []).append(i)
    keys = sorted(groups)
    want = val_size * np.array([len(groups[k]) for k in keys], dtype=np.float64)
    quota = np.floor(want).astype(int)
    total = round(val_size * len(init))
    caps = np.array([len(groups[k]) - 1 for k in keys])
    quota = np.minimum(quota, caps)
    for j in np.argsort(-(want - np.floor(want)), kind="stable"):
        if quota.sum() >= total:
            break
        if quota[j] < caps[j]:
            quota[j] += 1
    val_idx: set[int] = set()
    for key, q in zip(keys, quota, strict=True):
        members = sorted(groups[key], key=lambda i: ids[i])
        rng = np.random.default_rng(_stratum_seed(random_seed, key))
        order = rng.permutation(len(members))
        val_idx.update(members[int(o)] for o in order[:q])
    train = [x for i, x in enumerate(init) if i not in val_idx] + extra
    val = [x for i, x in enumerate(init) if i in val_idx]
    return train, (val or None)
