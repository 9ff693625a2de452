"""The train/validation split, one implementation for every door (Label Studio jobs, file training, the loop).

:func:`split_train_val` is seed 003's split. Validation comes only from ``input_label.csv``; which rows go
there depends only on the random seed, the sampleIds and their labels (not on row order), so every round
with the same seed gets the same validation set. Training is the rest of ``input_label.csv`` plus, after the
first round, ``input_added_label.csv``. ``val_size`` is the fraction of ``input_label.csv`` held out
(0 = no validation). The split is stratified by label set, and never takes the only example of a label set
away from training.

:func:`holdout` is the same split for one list of examples (``labelpilot train --val-size``): nothing added,
strata from the examples' targets. It lives below the models and the loop (it was ``loop/split.py``) so that
:mod:`labelpilot.training` and the loop share it. The hold-outs inside a family's ``fit`` (text-linear's
folds, the ner-crf early-stopping slice) are not this split: they choose hyper-parameters or an epoch count
on slices of the training examples the caller gave, which then go back into the model.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TypeVar

import numpy as np

from labelpilot.data.types import Example
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
    min_val: int = 0,
) -> tuple[list[T], list[T] | None]:
    """(train, val) from the initial labels ``init`` and the added labels ``added``.

    ``ids`` and ``strata`` are aligned with ``init`` (sampleId and a label-set key per item). ``val`` is
    None when ``val_size`` is 0. Within each stratum the items are ordered by sampleId and shuffled with
    a generator seeded by (``random_seed``, stratum), then the first ``round(val_size * count)`` go to
    validation (largest remainders fill up the total, at most ``count - 1`` per stratum). ``min_val`` raises
    that total (file training holds out at least one example when asked for a validation split).
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
    total = max(round(val_size * len(init)), min(min_val, len(init) - 1))
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


#: Fewer examples than this: :func:`holdout` keeps them all for training (a validation set of one or two
#: examples says nothing and costs the model a large share of its data).
MIN_HOLDOUT_EXAMPLES = 10

#: The stratum of examples whose label set occurs once: pooled, so that they can still be held out.
_RARE = "\x00rare"


def label_key(example: Example) -> str:
    """The label-set key of an example's target (choices, span labels and box labels, sorted)."""
    t = example.target
    if t is None:
        return ""
    found = set(t.labels) | {s.label for s in t.spans} | {b.label for b in t.boxes}
    return "|".join(sorted(found))


def holdout(
    examples: Sequence[Example], val_size: float, seed: int = 0, *, min_examples: int = MIN_HOLDOUT_EXAMPLES
) -> tuple[list[Example], list[Example] | None]:
    """(train, val) of one list of examples: :func:`split_train_val` stratified by label set (label sets seen
    once share one stratum), at least one example held out; no split (val None) when ``val_size`` is 0 or
    there are fewer than ``min_examples`` examples. Which examples go to validation depends only on the seed,
    the ids and the labels; an example without an id is named by its position."""
    if val_size <= 0 or len(examples) < min_examples:
        return list(examples), None
    keys = [label_key(ex) for ex in examples]
    counts: dict[str, int] = {}
    for key in keys:
        counts[key] = counts.get(key, 0) + 1
    strata = [key if counts[key] > 1 else _RARE for key in keys]
    ids = [ex.id if ex.id is not None else f"#{i:09d}" for i, ex in enumerate(examples)]
    return split_train_val(examples, [], ids=ids, strata=strata, is_first_train=True, val_size=val_size,
                           random_seed=seed, min_val=1)
