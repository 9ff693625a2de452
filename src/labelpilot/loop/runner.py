"""The seed-003 file operator: one round of split → (load) → train with early stop → predict → query hard
examples → save the model → write the predictions CSV.

Nothing is written into ``output_dir`` until the round has succeeded: files are staged in a temporary
sibling folder and moved in at the end, so bad input (reported with file and line) leaves ``output_dir``
untouched.

Output (``output_dir``):

- ``predictions.csv``: one row per unlabelled item, in input order, columns ``sampleId, path``, ``text``
  (only when the input had inline text: echoed), ``label``
  (predicted, ``|``-separated when multi-label), ``confidence`` (the model's confidence in that label),
  ``uncertainty`` (the strategy's score, higher = more worth labelling), ``hard_example`` (1 for the
  ``query_cnt`` items to label next), ``rank`` (1 = label first; hard examples come first), then
  ``prob_<label>`` for every label;
- ``report.json``: split sizes, ``training`` (what the final model holds, the early-stopping fit, the
  round's ``quality`` and how it was measured; see :mod:`labelpilot.loop.quality`), ``summary`` (that in one
  line), training report and metrics, strategy, timings, ``stopping`` advice and the round ``history``
  (see :mod:`labelpilot.loop.history`), and where the model went;
- ``model/``: the saved model and its ``loop_history.json``, only when no registry is used (otherwise it is
  a new registry version, with the history in its ``al_*`` metrics).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from labelpilot.data.types import Example, FitReport, Prediction
from labelpilot.encoders import persisting
from labelpilot.errors import InputError
from labelpilot.loop import files
from labelpilot.loop import history as round_history
from labelpilot.loop.build import LOOP_OPTIONS, StartingModel, _factory, _open_registry, prepare_model
from labelpilot.loop.plugin import PluginModel
from labelpilot.loop.quality import RoundFit, describe, fit_round
from labelpilot.loop.steps import (
    _Inputs,
    _predicted_key,
    _Previous,
    _previous_round,
    _read_inputs,
    _settings,
    _split,
)
from labelpilot.models.base import Embeds
from labelpilot.models.bundle import Bundle
from labelpilot.registry import ModelVersion, Registry, parse_model_ref
from labelpilot.strategies import (
    Pool,
    Selection,
    StopAdvice,
    UncertaintySampling,
    canonical_name,
    get_strategy,
)

#: Strategies that need vectors for the whole pool (the model's ``embed``). The others (diverse, badge,
#: kmeans, cold start) only vectorise their candidates, from the texts, which is far cheaper on big pools.
_VECTOR_STRATEGIES = frozenset({"kcenter"})


@dataclass
class LoopResult:
    output_dir: Path
    predictions_csv: Path
    report: dict[str, Any]
    selection: Selection
    model_version: ModelVersion | None = None
    model_dir: Path | None = None
    hard_ids: list[str] = field(default_factory=list)


def load_avg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []



def _mean_uncertainty(pool: Pool) -> float | None:
    try:
        unc = UncertaintySampling("least_confidence").scores(pool)
    except ValueError:
        return None
    return float(np.nanmean(unc)) if np.isfinite(unc).any() else None


def _select(
    strategy: str,
    pool: Pool,
    n: int,
    params: dict[str, Any],
    seed: int,
    plugin_flags: dict[str, bool] | None,
    ids: Sequence[str],
) -> Selection:
    if plugin_flags is not None:  # the plug-in chose its hard examples itself
        try:
            scores = UncertaintySampling(
                "least_confidence" if canonical_name(strategy) == "least_confidence" else "margin"
            ).scores(pool)
        except ValueError:
            scores = np.zeros(pool.size)
        flagged = [i for i, sid in enumerate(ids) if plugin_flags.get(sid)]
        keyed = np.nan_to_num(scores[flagged], nan=-np.inf) if flagged else np.zeros(0)
        order = np.asarray(flagged, dtype=np.int64)[np.argsort(-keyed, kind="stable")]
        return Selection(order, scores, f"plugin:{strategy}", {"source": "plug-in hard-example flags"})
    return get_strategy(strategy, random_state=seed, **params).select(pool, n)



@dataclass
class _Outcome:
    """Fit, predictions and selection of the round, with wall and CPU seconds per step."""

    round_fit: RoundFit
    preds: list[Prediction]
    pool: Pool
    selection: Selection
    seconds: dict[str, float]
    cpu: dict[str, float]


@dataclass(frozen=True)
class _Round:
    """Everything one round has read and done, as step 5 (outputs and ``report.json``) needs it. ``run``: the
    call's own settings and its start time; ``split``: the training and validation examples."""

    run: dict[str, Any]
    inputs: _Inputs
    start: StartingModel
    split: tuple[list[Example], list[Example] | None]
    previous: _Previous
    outcome: _Outcome


def _train_predict_select(
    start: StartingModel,
    train_ex: list[Example],
    val_ex: list[Example] | None,
    pool_ex: list[Example],
    pool_ids: Sequence[str],
    *,
    is_image: bool,
    query_cnt: int,
    strategy_name: str,
    strategy_params: dict[str, Any],
    refit: bool,
    seed: int,
) -> _Outcome:
    """Steps 3 and 4: train (the seed-003 split for early stopping, then the final model on all labels, see
    loop/quality.py), predict the pool and query the hard examples."""
    the_model, control = start.model, start.control
    t0, c0 = time.perf_counter(), time.process_time()
    round_fit = fit_round(
        the_model,
        train_ex,
        val_ex,
        keys=control.label_keys,
        multi=control.multiple,
        make=_factory(the_model, control, seed),
        plugin=isinstance(the_model, PluginModel),
        refit=refit,
        seed=seed,
    )
    t_fit, c_fit = time.perf_counter() - t0, time.process_time() - c0

    t0, c0 = time.perf_counter(), time.process_time()
    preds = the_model.predict(pool_ex)
    t_predict, c_predict = time.perf_counter() - t0, time.process_time() - c0
    t0, c0 = time.perf_counter(), time.process_time()
    threshold = control.score_threshold if control.score_threshold is not None else 0.5
    vectors = None
    if canonical_name(strategy_name) in _VECTOR_STRATEGIES and isinstance(the_model, Embeds):
        vectors = the_model.embed(pool_ex)
    pool = Pool.from_predictions(
        preds,
        control.label_keys,
        multi_label=control.multiple,
        threshold=threshold,
        vectors=vectors,
        texts=[e.text for e in pool_ex] if not is_image else None,
        n_labeled=len(train_ex) + len(val_ex or ()),
    )
    flags = the_model.hard_flags_ if isinstance(the_model, PluginModel) else None
    selection = _select(strategy_name, pool, min(query_cnt, pool.size), strategy_params, seed, flags, pool_ids)
    t_select, c_select = time.perf_counter() - t0, time.process_time() - c0
    return _Outcome(round_fit, preds, pool, selection,
                    {"fit": t_fit, "predict": t_predict, "select": t_select},
                    {"fit": c_fit, "predict": c_predict, "select": c_select})


def _advise(
    previous: _Previous, outcome: _Outcome, pool_ids: Sequence[str]
) -> tuple[list[dict[str, Any]], StopAdvice]:
    """The stopping signal from the round history (loop/history.py); this round's figures go into the fit
    report's ``al_*`` metrics."""
    new_history, advice = round_history.advise(
        previous.history, outcome.round_fit.n_labels, outcome.round_fit.quality, _mean_uncertainty(outcome.pool),
        previous.view, pool_ids, [_predicted_key(p) for p in outcome.preds],
    )
    fit_report: FitReport = outcome.round_fit.report
    metrics = dict(fit_report.metrics)
    last = new_history[-1]
    for key in ("mean_uncertainty", "kappa", "changed", "quality", "n_labels"):
        if last.get(key) is not None:
            metrics[f"al_{key}"] = last[key]
    fit_report.metrics = metrics
    return new_history, advice


def _round_report(
    rnd: _Round, new_history: list[dict[str, Any]], advice: StopAdvice, where: tuple[ModelVersion | None, Path | None]
) -> dict[str, Any]:
    """``report.json`` (see the module docstring)."""
    run, inputs, start, previous, outcome = rnd.run, rnd.inputs, rnd.start, rnd.previous, rnd.outcome
    train_ex, val_ex = rnd.split
    mv, model_dir = where
    control, the_model, selection = start.control, start.model, outcome.selection
    pool_ids = [r.sample_id for r in inputs.pool_rows]
    seconds = {k: round(v, 3) for k, v in outcome.seconds.items()}
    return {
        "input_dir": str(run["input_dir"]),
        "is_first_train": run["is_first_train"],
        "random_seed": run["random_seed"],
        "val_size": run["val_size"],
        "split": {
            "train": len(train_ex),
            "val": len(val_ex or ()),
            "init": len(inputs.init_rows),
            "added_used": len(inputs.added_rows),
            "pool": len(inputs.pool_rows),
        },
        "val_ids": sorted(str(e.id) for e in val_ex or ()),
        "training": outcome.round_fit.to_dict(),
        "summary": describe(outcome.round_fit),
        "labels": control.label_keys,
        "multi_label": control.multiple,
        "model": {
            "family": getattr(the_model, "family", None) or the_model.name,
            "started_from": start.parent_ref,
            "registry": None if mv is None else {"name": mv.name, "version": mv.version, "tag": mv.tag},
            "dir": None if model_dir is None else str(model_dir),
        },
        "fit": outcome.round_fit.report.to_dict(),
        "strategy": {
            "requested": run["strategy"],
            "used": selection.strategy,
            "query_cnt": len(selection.indices),
            "info": jsonable(selection.info),
        },
        "hard_examples": [pool_ids[i] for i in selection.indices],
        "stopping": {**advice.to_dict(), "rounds": len(new_history), "history_source": previous.note},
        "history": new_history,
        "seconds": {
            "previous_model_predict": round(previous.seconds, 3),
            "fit": seconds["fit"],
            "predict": seconds["predict"],
            "select": seconds["select"],
            "total": round(time.perf_counter() - run["t_start"], 3),
        },
        "cpu_seconds": {k: round(v, 3) for k, v in outcome.cpu.items()},
        "ignored_options": start.ignored,
        "load_average": load_avg(),
        "errors": sum(p.error is not None for p in outcome.preds),
    }


def _write_outputs(
    output_dir: Path,
    rnd: _Round,
    *,
    reg: Registry | None,
    model_id: str | None,
    model_name: str | None,
) -> tuple[dict[str, Any], ModelVersion | None, Path | None]:
    """Step 5: stage the outputs next to ``output_dir``, register the model, then move everything in.
    Returns (report, registry version or None, model folder or None)."""
    inputs, start, outcome = rnd.inputs, rnd.start, rnd.outcome
    new_history, advice = _advise(rnd.previous, outcome, [r.sample_id for r in inputs.pool_rows])
    control, pool, selection = start.control, outcome.pool, outcome.selection
    parent = output_dir.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.tmp-", dir=parent))
    try:
        rank = np.empty(pool.size, dtype=np.int64)
        rank[selection.ranking()] = np.arange(1, pool.size + 1)
        hard = np.zeros(pool.size, dtype=bool)
        hard[selection.indices] = True
        files.write_predictions(
            stage / files.PREDICTIONS_FILE, inputs.pool_rows, outcome.preds, selection.scores, hard, rank,
            control.label_keys,
        )
        bundle = Bundle(start.schema, {control.name: start.model})
        mv: ModelVersion | None = None
        model_dir: Path | None = None
        if reg is not None:
            name = model_name or (parse_model_ref(model_id)[0] if model_id and not Path(model_id).is_dir() else "loop")
            mv = reg.register(name, bundle, report=outcome.round_fit.report, parent=start.parent_ref)
        else:
            bundle.save(stage / "model")
            round_history.write_folder(stage / "model", new_history)
            model_dir = output_dir / "model"
        report = _round_report(rnd, new_history, advice, (mv, model_dir))
        (stage / files.REPORT_FILE).write_text(
            json.dumps(jsonable(report), ensure_ascii=False, indent=1), encoding="utf-8"
        )
        commit_outputs(stage, output_dir)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
    return report, mv, model_dir


def run_loop(
    input_dir: str | Path,
    output_dir: str | Path,
    *,
    is_first_train: bool = True,
    query_cnt: int = 100,
    val_size: float = 0.2,
    strategy: str | None = "default",
    options: dict[str, Any] | None = None,
    model_id: str | None = None,
    random_seed: int = 0,
    model: Any = None,
    registry: Registry | str | Path | None = None,
    model_name: str | None = None,
) -> LoopResult:
    """One round of the seed-003 operator. See the module docstring for the files it reads and writes.

    - ``strategy``: a strategy name or alias (``LeastConfidence``, ``MarginSampling``, ``EntropySampling``,
      ``RandomSampling``, ``diverse``, ``badge``, ...); None or ``"default"`` = the measured default.
    - ``options``: model constructor parameters, plus the loop's own keys ``strategy_params`` (dict for the
      strategy), ``dedupe`` (cosine threshold, None = exact duplicates only) and ``family``.
    - ``model_id``: start from a saved model: ``NAME@VERSION`` in ``registry``, or a folder holding a saved
      model (e.g. the previous round's ``output_dir/model``).
    - ``model``: a model family name (``text-linear``), a seed-003 plug-in (``package.module:Class`` or a
      ``labelpilot.plugins`` entry-point name) or a class; default: the family serving the task.
    - ``registry``: a :class:`Registry` or its root folder; the trained model becomes a new version of
      ``model_name`` (default: the name in ``model_id``, else ``"loop"``). Without a registry the model is
      saved into ``output_dir/model``.
    """
    t_start = time.perf_counter()
    input_dir = Path(input_dir)
    output_dir = Path(output_dir)
    opts, strategy_params, refit, strategy_name = _settings(options, strategy)
    if query_cnt < 0:
        raise InputError(f"query_cnt must be >= 0, got {query_cnt}", field="query_cnt")
    if not input_dir.is_dir():
        raise InputError(f"input_dir {input_dir} is not a folder", field="input_dir")

    inputs = _read_inputs(input_dir, is_first_train)
    reg = _open_registry(registry)
    start = prepare_model(inputs.labelled, is_image=inputs.is_image, multi=inputs.multi, model_id=model_id,
                          reg=reg, model=model, opts=opts, seed=random_seed, refit=refit)
    pool_ex = [r.example(with_target=False) for r in inputs.pool_rows]
    pool_ids = [r.sample_id for r in inputs.pool_rows]
    run = {"input_dir": input_dir, "is_first_train": is_first_train, "random_seed": random_seed,
           "val_size": val_size, "strategy": strategy_name, "t_start": t_start}

    # the pool is predicted again next round, in a new process: its text vectors (and the labelled texts')
    # go to the encoder's on-disk store, so that round reads them back instead of encoding them again
    with tempfile.TemporaryDirectory(prefix="labelpilot-loop-") as work, persisting():
        train_ex, val_ex = _split(start.model, inputs, Path(work), is_first_train=is_first_train,
                                  query_cnt=query_cnt, strategy_name=strategy_name, val_size=val_size,
                                  seed=random_seed)
        previous = _previous_round(start, pool_ex, pool_ids, output_dir, from_model=bool(model_id),
                                   is_first_train=is_first_train, n_labelled=len(train_ex) + len(val_ex or ()),
                                   seed=random_seed)
        outcome = _train_predict_select(start, train_ex, val_ex, pool_ex, pool_ids, is_image=inputs.is_image,
                                        query_cnt=query_cnt, strategy_name=strategy_name,
                                        strategy_params=strategy_params, refit=refit, seed=random_seed)
        rnd = _Round(run, inputs, start, (train_ex, val_ex), previous, outcome)
        report, mv, model_dir = _write_outputs(output_dir, rnd, reg=reg, model_id=model_id, model_name=model_name)
    return LoopResult(
        output_dir=output_dir,
        predictions_csv=output_dir / files.PREDICTIONS_FILE,
        report=report,
        selection=outcome.selection,
        model_version=mv,
        model_dir=model_dir,
        hard_ids=report["hard_examples"],
    )


def jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating | float):
        f = float(value)
        return None if np.isnan(f) else f
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    return value


def commit_outputs(stage: Path, output_dir: Path) -> None:
    """Move the staged files into ``output_dir`` (one rename when it does not exist yet)."""
    if not output_dir.exists():
        os.rename(stage, output_dir)
        return
    if not output_dir.is_dir():
        raise InputError(f"output_dir {output_dir} exists and is not a folder", field="output_dir")
    for entry in stage.iterdir():
        target = output_dir / entry.name
        if target.is_dir() and not target.is_symlink():
            old = output_dir / f".{entry.name}.old-{os.getpid()}"
            os.rename(target, old)
            os.rename(entry, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(entry, target)


__all__ = ["LOOP_OPTIONS", "LoopResult", "run_loop"]
