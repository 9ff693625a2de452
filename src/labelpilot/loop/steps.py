"""The steps of a round of the seed-003 operator that come before training: the loop's own options, reading
and checking the input files, the seed-003 train/validation split and the previous round's view (history and
the previous model's predictions of the pool, for the stopping signal).

Split out of :mod:`labelpilot.loop.runner` (issue 12: ``run_loop`` was one 289-line function) so that
``run_loop`` reads as the sequence of its named steps; :mod:`labelpilot.loop.build` holds the "which model" step.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from labelpilot.data.types import Example, Prediction
from labelpilot.errors import InputError
from labelpilot.loop import files
from labelpilot.loop import history as round_history
from labelpilot.loop.build import StartingModel
from labelpilot.loop.plugin import PluginModel
from labelpilot.models.base import Model
from labelpilot.split import split_train_val
from labelpilot.strategies import DEFAULT_STRATEGY, canonical_name

#: At most this many pool items are predicted by the previous model for the agreement (kappa) signal.
STOP_SAMPLE = 5000
def _label_strata(rows: Sequence[files.SeedRow]) -> list[str]:
    return ["|".join(sorted(r.labels)) for r in rows]


def _predicted_key(p: Prediction) -> str:
    return "|".join(sorted(p.labels)) if p.error is None else "<error>"


@dataclass
class _Inputs:
    """The round's three files, read and checked before anything is written."""

    init_rows: list[files.SeedRow]
    added_rows: list[files.SeedRow]
    pool_rows: list[files.SeedRow]
    is_image: bool
    multi: bool

    @property
    def labelled(self) -> list[files.SeedRow]:
        return [*self.init_rows, *self.added_rows]


@dataclass
class _Previous:
    """The previous round's view: the round history so far, where it came from, and the previous model's
    (or ``predictions.csv``'s) predicted label per pool sampleId for the agreement signal (None: none)."""

    history: list[dict[str, Any]]
    note: str
    view: dict[str, str] | None
    seconds: float


def _settings(options: dict[str, Any] | None, strategy: str | None) -> tuple[dict[str, Any], dict[str, Any], bool, str]:
    """(model options, strategy params, refit, strategy name): the loop's own ``options`` keys taken out."""
    opts = dict(options or {})
    strategy_params = dict(opts.pop("strategy_params", None) or {})
    refit = bool(opts.pop("refit", True))
    if "dedupe" in opts:
        strategy_params["dedupe"] = opts.pop("dedupe")
    strategy_name = DEFAULT_STRATEGY if strategy in (None, "", "default") else str(strategy)
    canonical_name(strategy_name)  # fail early on an unknown name
    return opts, strategy_params, refit, strategy_name


def _read_inputs(input_dir: Path, is_first_train: bool) -> _Inputs:
    """Step 1: read and check everything before writing anything."""
    init_rows = files.read_seed_rows(input_dir, files.LABEL_FILE, labelled=True)
    added_rows = [] if is_first_train else files.read_seed_rows(input_dir, files.ADDED_FILE, labelled=True)
    pool_rows = files.read_seed_rows(input_dir, files.UNLABEL_FILE, labelled=False)
    if not init_rows and not added_rows:
        raise InputError(f"{files.LABEL_FILE} has no labelled rows", field=files.LABEL_FILE)
    if not pool_rows:
        raise InputError(f"{files.UNLABEL_FILE} has no rows: nothing to predict or query", field=files.UNLABEL_FILE)
    files.check_disjoint([init_rows, added_rows, pool_rows])
    all_labelled = [*init_rows, *added_rows]
    images = {r.image is not None for r in [*all_labelled, *pool_rows]}
    if len(images) > 1:
        raise InputError("the files mix images and texts; one round serves one kind of item", field="input_dir")
    multi = any(len(r.labels) > 1 for r in all_labelled)
    return _Inputs(init_rows, added_rows, pool_rows, images == {True}, multi)


def _split(
    the_model: Model,
    inputs: _Inputs,
    work: Path,
    *,
    is_first_train: bool,
    query_cnt: int,
    strategy_name: str,
    val_size: float,
    seed: int,
) -> tuple[list[Example], list[Example] | None]:
    """The seed-003 train/validation split (a plug-in, given its work folder and round settings, splits itself)."""
    init_ex = [r.example() for r in inputs.init_rows]
    added_ex = [r.example() for r in inputs.added_rows]
    if isinstance(the_model, PluginModel):
        the_model.work_dir = work
        the_model.is_first_train = is_first_train
        the_model.query_cnt = query_cnt
        the_model.strategy = strategy_name
        # a seed-003 plug-in splits itself: ``split_train_val`` is part of its contract, not a second split
        train_ex, val_ex = the_model.split(init_ex, added_ex, is_first_train, val_size, seed)
        if val_size == 0:
            val_ex = None
        return train_ex, val_ex
    return split_train_val(
        init_ex,
        added_ex,
        ids=[r.sample_id for r in inputs.init_rows],
        strata=_label_strata(inputs.init_rows),
        is_first_train=is_first_train,
        val_size=val_size,
        random_seed=seed,
    )


def _previous_round(
    start: StartingModel,
    pool_ex: Sequence[Example],
    pool_ids: Sequence[str],
    output_dir: Path,
    *,
    from_model: bool,
    is_first_train: bool,
    n_labelled: int,
    seed: int,
) -> _Previous:
    """Step 2: the round history, and the previous model's (or predictions.csv's) view of the pool."""
    t0 = time.perf_counter()
    history = start.history
    prev_pred: dict[str, str] | None = None
    if from_model:
        history_note = f"earlier rounds from {start.parent_ref}"
    elif is_first_train:
        history_note = "first round (is_first_train): no earlier rounds"
    else:
        history, prev_pred, history_note = round_history.from_output_dir(output_dir, start.control.label_keys)
    history, rerun = round_history.drop_rerun(history, n_labelled)
    if rerun:
        history_note += "; a rerun of the last round replaces it"
    view = prev_pred if not rerun else None
    prev_model = start.previous
    if prev_model is not None and not isinstance(prev_model, PluginModel):
        stop_idx = np.arange(len(pool_ex))
        if len(stop_idx) > STOP_SAMPLE:  # kappa on a seeded sample is as informative and much cheaper
            stop_idx = np.sort(np.random.default_rng(seed).choice(len(pool_ex), STOP_SAMPLE, replace=False))
        prev_keys = [_predicted_key(p) for p in prev_model.predict([pool_ex[i] for i in stop_idx])]
        view = {pool_ids[i]: k for i, k in zip(stop_idx, prev_keys, strict=True)}
    return _Previous(history, history_note, view, time.perf_counter() - t0)


