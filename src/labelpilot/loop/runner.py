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

import inspect
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

from labelpilot.data.types import FitReport, Prediction
from labelpilot.errors import InputError, ModelOptionsError, NotFoundError
from labelpilot.loop import files
from labelpilot.loop import history as round_history
from labelpilot.loop.plugin import PluginModel, is_plugin_class, load_object
from labelpilot.loop.quality import describe, fit_round
from labelpilot.models.base import Embeds, Model, build_model, families, family_for, get_family, option_names
from labelpilot.models.bundle import MANIFEST, Bundle
from labelpilot.registry import ModelVersion, Registry, parse_model_ref
from labelpilot.schema import ControlSpec, LabelSchema, TaskKind, make_label_config, parse_label_config
from labelpilot.split import split_train_val
from labelpilot.strategies import (
    DEFAULT_STRATEGY,
    Pool,
    Selection,
    UncertaintySampling,
    canonical_name,
    get_strategy,
)
from labelpilot.training import TIME_BUDGET, without_time_budget

#: ``options`` keys the loop itself reads; everything else goes to the model family's constructor.
LOOP_OPTIONS = ("strategy_params", "dedupe", "family", "refit")
#: At most this many pool items are predicted by the previous model for the agreement (kappa) signal.
STOP_SAMPLE = 5000
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


def _load_avg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def _open_registry(registry: Registry | str | Path | None) -> Registry | None:
    if registry is None or isinstance(registry, Registry):
        return registry
    return Registry(Path(registry))


def _load_bundle_dir(path: Path, hint: Any = None) -> tuple[LabelSchema, ControlSpec, Model]:
    """Load a saved bundle's first model. ``hint``: the ``model=`` the caller gave (a class or a ref), used
    for families that are not registered under ``labelpilot.models``."""
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise NotFoundError(f"{path} holds no saved model ({MANIFEST} missing)", field="model_id")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    schema = parse_label_config(manifest["label_config"])
    name, entry = next(iter(manifest["controls"].items()))
    control = schema.control(name)
    if entry["family"] == PluginModel.name:
        return schema, control, PluginModel.load(path / entry["dir"], control)
    if entry["family"] not in families() and hint is not None:
        cls = load_object(hint) if isinstance(hint, str) else hint
        if getattr(cls, "name", None) == entry["family"]:
            return schema, control, cls.load(path / entry["dir"], control)
    bundle = Bundle.load(path)
    return schema, control, bundle.models[name]


def _load_previous(
    model_id: str, reg: Registry | None, hint: Any = None
) -> tuple[LabelSchema, ControlSpec, Model, str, list[dict[str, Any]]]:
    """(schema, control, model, parent ref, history of earlier rounds, oldest first)."""
    if reg is not None and not Path(model_id).is_dir():
        name, version = parse_model_ref(model_id)
        mv = reg.get(name, version)
        schema, control, model = _load_bundle_dir(mv.path, hint)
        return schema, control, model, f"{mv.name}@{mv.version}", round_history.from_registry(reg, mv)
    path = Path(model_id)
    if path.is_dir():
        schema, control, model = _load_bundle_dir(path, hint)
        return schema, control, model, str(path), round_history.from_folder(path)
    raise InputError(
        f"model_id {model_id!r} is neither a folder with a saved model nor usable without a registry "
        "(pass registry= / --registry to load NAME@VERSION)",
        field="model_id",
    )


#: Training options of seed 003's demo (``epochs``, ``batch_size``, ``lr``, ``lrf``) are meant for neural plug-ins;
#: a family that has no such parameter ignores them (noted in the report) instead of failing the round.
SEED003_GENERIC_OPTIONS = frozenset({"epochs", "batch_size", "lr", "lrf"})


def _build_model(
    cls: type, control: ControlSpec, options: dict[str, Any], seed: int, ignored: list[str] | None = None
) -> Model:
    """A fresh model of family ``cls`` through the model contract (``models.base.build_model``): seed 003's
    generic training options the family does not take are dropped (noted in ``ignored``), ``random_state``
    defaults to the round's seed where the family has one, anything else unknown is a ModelOptionsError."""
    known = option_names(cls, control)
    options = dict(options)
    for key in sorted(SEED003_GENERIC_OPTIONS & set(options) - known):
        options.pop(key)
        if ignored is not None:
            ignored.append(key)
    if "random_state" in known and "random_state" not in options:
        options["random_state"] = seed
    try:
        return build_model(cls, control, options)
    except ModelOptionsError as exc:
        raise ModelOptionsError(f"{exc.message} (loop options: {', '.join(LOOP_OPTIONS)})", option=exc.option,
                                valid=exc.valid, family=exc.family) from None


def _resolve_model_ref(model: Any, control: ControlSpec, options: dict[str, Any]) -> tuple[str, Any]:
    """("family"|"plugin", class) for a family name, a ``package.module:Class`` ref or a class."""
    if model is None:
        family = options.pop("family", None)
        if family:
            return "family", get_family(family)
        cls = family_for(control)
        if cls is None:
            if control.kind in (TaskKind.IMAGE_CHOICES, TaskKind.IMAGE_BOXES):
                raise InputError("image models not available yet: give --model a seed-003 plug-in for images")
            raise InputError(f"no model family serves {control.kind} yet", field="model")
        return "family", cls
    if isinstance(model, str):
        if model in families():
            return "family", get_family(model)
        obj = load_object(model)
    else:
        obj = model
    if is_plugin_class(obj):
        return "plugin", obj
    if inspect.isclass(obj) and callable(getattr(obj, "fit", None)) and callable(getattr(obj, "predict", None)):
        return "family", obj
    raise InputError(
        f"{model!r} is neither a model family (fit/predict/save/load) nor a seed-003 plug-in "
        f"(methods {', '.join(('__init__', 'split_train_val', 'save_model', 'load_model', 'train_model'))}, "
        "query_hard_example)",
        field="model",
    )


def _label_strata(rows: Sequence[files.SeedRow]) -> list[str]:
    return ["|".join(sorted(r.labels)) for r in rows]


def _check_known_labels(rows: Sequence[files.SeedRow], control: ControlSpec) -> None:
    known = set(control.label_keys)
    for r in rows:
        bad = [lab for lab in r.labels if lab not in known]
        if bad:
            raise InputError(
                f"{r.where}: label(s) {', '.join(map(repr, bad))} unknown to the model "
                f"(it knows {', '.join(control.label_keys)})",
                field=r.file,
            )
        if len(r.labels) > 1 and not control.multiple:
            raise InputError(f"{r.where}: several labels, but the model is single-label", field=r.file)


def _mean_uncertainty(pool: Pool) -> float | None:
    try:
        unc = UncertaintySampling("least_confidence").scores(pool)
    except ValueError:
        return None
    return float(np.nanmean(unc)) if np.isfinite(unc).any() else None


def _predicted_key(p: Prediction) -> str:
    return "|".join(sorted(p.labels)) if p.error is None else "<error>"


def _factory(model: Any, control: ControlSpec, seed: int) -> Any:
    """A maker of fresh unfitted copies of ``model`` (for the loop's cross-validation), or None."""
    if isinstance(model, PluginModel) or not callable(getattr(model, "get_params", None)):
        return None
    params = {k: v for k, v in model.get_params().items() if k != "control"}
    return lambda: _build_model(type(model), control, params, seed)


def _without_time_budget(model: Any, control: ControlSpec, opts: dict[str, Any], seed: int, refit: bool) -> Any:
    """The round's final model holds every label: a family with a training ``time_budget`` gets an unlimited one
    unless the caller set it (``training.without_time_budget``, the rule file training follows too). Only the
    parameters are copied; such a family trains from scratch on every fit."""
    if not refit or TIME_BUDGET in opts or isinstance(model, PluginModel):
        return model
    if not callable(getattr(model, "get_params", None)):
        return model
    params = {k: v for k, v in model.get_params().items() if k not in ("control", TIME_BUDGET)}
    lifted = without_time_budget(type(model), control, params)
    if TIME_BUDGET not in lifted:
        return model
    return _build_model(type(model), control, lifted, seed)


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
    opts = dict(options or {})
    strategy_params = dict(opts.pop("strategy_params", None) or {})
    refit = bool(opts.pop("refit", True))
    if "dedupe" in opts:
        strategy_params["dedupe"] = opts.pop("dedupe")
    strategy_name = DEFAULT_STRATEGY if strategy in (None, "", "default") else str(strategy)
    canonical_name(strategy_name)  # fail early on an unknown name
    if query_cnt < 0:
        raise InputError(f"query_cnt must be >= 0, got {query_cnt}", field="query_cnt")
    if not input_dir.is_dir():
        raise InputError(f"input_dir {input_dir} is not a folder", field="input_dir")

    # 1. read and check everything before writing anything
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
    is_image = images == {True}
    multi = any(len(r.labels) > 1 for r in all_labelled)

    reg = _open_registry(registry)
    ignored_opts: list[str] = []
    history: list[dict[str, Any]] = []
    parent_ref: str | None = None
    prev_model: Model | None = None
    if model_id:
        schema, control, loaded, parent_ref, history = _load_previous(model_id, reg, model)
        _check_known_labels(all_labelled, control)
        kind, cls = ("plugin", None) if isinstance(loaded, PluginModel) else ("family", type(loaded))
        model_opts = {k: v for k, v in opts.items() if k != "family"}
        if kind == "family" and model_opts:
            params = loaded.get_params() if hasattr(loaded, "get_params") else {}
            params = {k: v for k, v in params.items() if k != "control"}
            the_model: Model = _build_model(cls, control, {**params, **model_opts}, random_seed, ignored_opts)  # type: ignore[arg-type]
        else:
            the_model = loaded
            if isinstance(the_model, PluginModel):
                the_model.options = model_opts
        prev_model = loaded
        ref_for_report = parent_ref
    else:
        labels = sorted({lab for r in all_labelled for lab in r.labels})
        if len(labels) < 2 and not multi:
            raise InputError(
                f"the labelled data has a single label ({', '.join(labels)}); at least two are needed",
                field=files.LABEL_FILE,
            )
        kind_name = "image-choices" if is_image else "choices"
        schema = parse_label_config(make_label_config(labels, kind=kind_name, multiple=multi))
        control = schema.controls[0]
        kind, cls = _resolve_model_ref(model, control, opts)
        if kind == "plugin":
            ref = model if isinstance(model, str) else f"{cls.__module__}:{cls.__qualname__}"
            the_model = PluginModel.create(control, ref, cls, opts)  # type: ignore[assignment]
            the_model.options = dict(opts)
        else:
            the_model = _build_model(cls, control, opts, random_seed, ignored_opts)
        ref_for_report = None
    the_model = _without_time_budget(the_model, control, opts, random_seed, refit)
    if is_image and not isinstance(the_model, PluginModel) and TaskKind.IMAGE_CHOICES not in the_model.kinds:
        raise InputError("image models not available yet: give --model a seed-003 plug-in for images")

    init_ex = [r.example() for r in init_rows]
    added_ex = [r.example() for r in added_rows]
    pool_ex = [r.example(with_target=False) for r in pool_rows]
    pool_ids = [r.sample_id for r in pool_rows]

    with tempfile.TemporaryDirectory(prefix="labelpilot-loop-") as work:
        if isinstance(the_model, PluginModel):
            the_model.work_dir = Path(work)
            the_model.is_first_train = is_first_train
            the_model.query_cnt = query_cnt
            the_model.strategy = strategy_name
            # a seed-003 plug-in splits itself: ``split_train_val`` is part of its contract, not a second split
            train_ex, val_ex = the_model.split(init_ex, added_ex, is_first_train, val_size, random_seed)
            if val_size == 0:
                val_ex = None
        else:
            train_ex, val_ex = split_train_val(
                init_ex,
                added_ex,
                ids=[r.sample_id for r in init_rows],
                strata=_label_strata(init_rows),
                is_first_train=is_first_train,
                val_size=val_size,
                random_seed=random_seed,
            )

        # 2. the previous round: history, and the previous model's (or predictions.csv's) view of the pool
        t0 = time.perf_counter()
        prev_pred: dict[str, str] | None = None
        if model_id:
            history_note = f"earlier rounds from {ref_for_report}"
        elif is_first_train:
            history_note = "first round (is_first_train): no earlier rounds"
        else:
            history, prev_pred, history_note = round_history.from_output_dir(output_dir, control.label_keys)
        history, rerun = round_history.drop_rerun(history, len(train_ex) + len(val_ex or ()))
        if rerun:
            history_note += "; a rerun of the last round replaces it"
        prev_keys: list[str] | None = None
        if prev_model is not None and not isinstance(prev_model, PluginModel):
            stop_idx = np.arange(len(pool_ex))
            if len(stop_idx) > STOP_SAMPLE:  # kappa on a seeded sample is as informative and much cheaper
                stop_idx = np.sort(np.random.default_rng(random_seed).choice(len(pool_ex), STOP_SAMPLE, replace=False))
            prev_keys = [_predicted_key(p) for p in prev_model.predict([pool_ex[i] for i in stop_idx])]
        t_prev = time.perf_counter() - t0

        # 3. train: the seed-003 split for early stopping, then the final model on all labels (loop/quality.py)
        t0, c0 = time.perf_counter(), time.process_time()
        round_fit = fit_round(
            the_model,
            train_ex,
            val_ex,
            keys=control.label_keys,
            multi=control.multiple,
            make=_factory(the_model, control, random_seed),
            plugin=isinstance(the_model, PluginModel),
            refit=refit,
            seed=random_seed,
        )
        fit_report: FitReport = round_fit.report
        t_fit, c_fit = time.perf_counter() - t0, time.process_time() - c0

        # 4. predict the pool and query
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
        selection = _select(
            strategy_name, pool, min(query_cnt, pool.size), strategy_params, random_seed, flags, pool_ids
        )
        t_select, c_select = time.perf_counter() - t0, time.process_time() - c0

        # stopping signal, from the round history (loop/history.py)
        if prev_keys is not None:
            prev_view: dict[str, str] | None = {pool_ids[i]: k for i, k in zip(stop_idx, prev_keys, strict=True)}
        else:
            prev_view = prev_pred if not rerun else None
        new_history, advice = round_history.advise(
            history, round_fit.n_labels, round_fit.quality, _mean_uncertainty(pool),
            prev_view, pool_ids, [_predicted_key(p) for p in preds],
        )
        metrics = dict(fit_report.metrics)
        last = new_history[-1]
        for key in ("mean_uncertainty", "kappa", "changed", "quality", "n_labels"):
            if last.get(key) is not None:
                metrics[f"al_{key}"] = last[key]
        fit_report.metrics = metrics

        # 5. stage the outputs next to output_dir, register the model, then move everything in
        parent = output_dir.resolve().parent
        parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.tmp-", dir=parent))
        try:
            rank = np.empty(pool.size, dtype=np.int64)
            rank[selection.ranking()] = np.arange(1, pool.size + 1)
            hard = np.zeros(pool.size, dtype=bool)
            hard[selection.indices] = True
            files.write_predictions(
                stage / files.PREDICTIONS_FILE, pool_rows, preds, selection.scores, hard, rank, control.label_keys
            )
            bundle = Bundle(schema, {control.name: the_model})
            mv: ModelVersion | None = None
            model_dir: Path | None = None
            if reg is not None:
                name = model_name or (
                    parse_model_ref(model_id)[0] if model_id and not Path(model_id).is_dir() else "loop"
                )
                mv = reg.register(name, bundle, report=fit_report, parent=parent_ref)
            else:
                bundle.save(stage / "model")
                round_history.write_folder(stage / "model", new_history)
                model_dir = output_dir / "model"
            report = {
                "input_dir": str(input_dir),
                "is_first_train": is_first_train,
                "random_seed": random_seed,
                "val_size": val_size,
                "split": {
                    "train": len(train_ex),
                    "val": len(val_ex or ()),
                    "init": len(init_rows),
                    "added_used": len(added_rows),
                    "pool": len(pool_rows),
                },
                "val_ids": sorted(str(e.id) for e in val_ex or ()),
                "training": round_fit.to_dict(),
                "summary": describe(round_fit),
                "labels": control.label_keys,
                "multi_label": control.multiple,
                "model": {
                    "family": getattr(the_model, "family", None) or the_model.name,
                    "started_from": ref_for_report,
                    "registry": None if mv is None else {"name": mv.name, "version": mv.version, "tag": mv.tag},
                    "dir": None if model_dir is None else str(model_dir),
                },
                "fit": fit_report.to_dict(),
                "strategy": {
                    "requested": strategy_name,
                    "used": selection.strategy,
                    "query_cnt": len(selection.indices),
                    "info": _jsonable(selection.info),
                },
                "hard_examples": [pool_ids[i] for i in selection.indices],
                "stopping": {**advice.to_dict(), "rounds": len(new_history), "history_source": history_note},
                "history": new_history,
                "seconds": {
                    "previous_model_predict": round(t_prev, 3),
                    "fit": round(t_fit, 3),
                    "predict": round(t_predict, 3),
                    "select": round(t_select, 3),
                    "total": round(time.perf_counter() - t_start, 3),
                },
                "cpu_seconds": {"fit": round(c_fit, 3), "predict": round(c_predict, 3), "select": round(c_select, 3)},
                "ignored_options": ignored_opts,
                "load_average": _load_avg(),
                "errors": sum(p.error is not None for p in preds),
            }
            (stage / files.REPORT_FILE).write_text(
                json.dumps(_jsonable(report), ensure_ascii=False, indent=1), encoding="utf-8"
            )
            _commit(stage, output_dir)
        finally:
            if stage.exists():
                shutil.rmtree(stage, ignore_errors=True)
    return LoopResult(
        output_dir=output_dir,
        predictions_csv=output_dir / files.PREDICTIONS_FILE,
        report=report,
        selection=selection,
        model_version=mv,
        model_dir=model_dir,
        hard_ids=report["hard_examples"],
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating | float):
        f = float(value)
        return None if np.isnan(f) else f
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    return value


def _commit(stage: Path, output_dir: Path) -> None:
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
