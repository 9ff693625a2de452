"""One round of the seed-003 operator for span (NER) tasks: ``labelpilot loop --task spans``.

The same files and steps as the classification round (:mod:`labelpilot.loop.runner`), for labels that are
spans (:mod:`labelpilot.loop.span_files`: Label Studio span JSON or BIO tags in the ``label`` column):

1. read the three CSVs; malformed rows are skipped and listed in ``report.json`` (``skipped_rows``) and on
   stderr, with file and line; only file-level problems stop the round (nothing is written then);
2. the model: ``--model-id`` (a registry version or a model folder), else a fresh one of ``--model``: a
   family serving ``<Labels>`` (default ``ner-crf``) or a seed-003 plug-in (:mod:`labelpilot.loop.span_plugin`);
3. the seed-003 split (a plug-in splits itself), a fit on ``train`` scored on ``val`` with entity-level
   micro P/R/F1 (exact start, end and label; per label too): the round's quality. The final model is then
   refit on all labels (the validation rows rejoin; ``--options refit=false`` keeps the first model, and
   plug-ins keep theirs, as in classification rounds), in one fit (a family's own held-out slice,
   ``min_holdout_examples``, is lifted for it: the quality is already measured);
4. predict the pool and select the hard examples: MNLP by default (``-(1/T) sum log p_t`` of the tokens'
   max marginals, :class:`labelpilot.strategies.SpanUncertainty`; ``strategy_params`` ``aggregation`` =
   ``max``/``mean``/``sum``, ``measure`` = ``lc``/``entropy``), or ``RandomSampling``. ``--token-budget`` caps
   the tokens of the batch (tokens of :func:`labelpilot.data.bio.tokenize`: a character of CJK text, a word
   otherwise); ``--query-cnt`` caps its items. A model without per-token probabilities is ranked by its
   ``uncertainty``, else by ``1 - confidence``; a plug-in that flags hard examples keeps its choice (the
   budget still applies, in its order);
5. write ``predictions.csv`` (:func:`labelpilot.loop.span_files.write_span_predictions`), ``report.json``
   and ``model/`` (or a registry version), staged and moved in at the end.

Stopping advice uses the same history as classification rounds; the agreement signal compares each pool
item's predicted span set (start, end, label) with the previous round's ``predictions.csv``.
"""

from __future__ import annotations

import csv
import json
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from labelpilot.data.bio import tokenize
from labelpilot.data.types import Example, FitReport, Prediction, Span
from labelpilot.errors import InputError
from labelpilot.loop import files, span_files
from labelpilot.loop import history as round_history
from labelpilot.loop.build import (
    _build_model,
    _factory,
    _load_previous,
    _open_registry,
    _resolve_model_ref,
    _without_time_budget,
)
from labelpilot.loop.plugin import PluginModel
from labelpilot.loop.runner import LoopResult, commit_outputs, jsonable, load_avg
from labelpilot.loop.span_plugin import SpanPluginModel
from labelpilot.metrics import span_prf
from labelpilot.models.base import Model
from labelpilot.models.bundle import Bundle
from labelpilot.registry import Registry, parse_model_ref
from labelpilot.schema import ControlSpec, LabelSchema, TaskKind, make_label_config, parse_label_config
from labelpilot.split import split_train_val
from labelpilot.strategies import Pool, Selection, canonical_name
from labelpilot.strategies.dedupe import DEFAULT_DEDUPE
from labelpilot.strategies.spans import select_scored, span_scores

SPAN_STRATEGY_PARAMS = ("aggregation", "measure", "dedupe")
MAX_REPORTED_PROBLEMS = 200


@dataclass
class _SpanInputs:
    init_rows: list[files.SeedRow]
    added_rows: list[files.SeedRow]
    pool_rows: list[files.SeedRow]
    problems: list[str]
    forms: dict[str, int]

    @property
    def labelled(self) -> list[files.SeedRow]:
        return [*self.init_rows, *self.added_rows]


def _read(input_dir: Path, is_first_train: bool) -> _SpanInputs:
    problems: list[str] = []
    forms: dict[str, int] = {}
    init = span_files.read_span_rows(input_dir, files.LABEL_FILE, labelled=True, problems=problems, forms=forms)
    added = [] if is_first_train else span_files.read_span_rows(
        input_dir, files.ADDED_FILE, labelled=True, problems=problems, forms=forms)
    pool = span_files.read_span_rows(input_dir, files.UNLABEL_FILE, labelled=False, problems=problems, forms=forms)
    init, added, pool = files.check_disjoint([init, added, pool], problems)
    if not init and not added:
        raise InputError(f"{files.LABEL_FILE} has no usable labelled rows" + _first_problems(problems),
                         field=files.LABEL_FILE)
    if not pool:
        raise InputError(f"{files.UNLABEL_FILE} has no usable rows: nothing to predict or query"
                         + _first_problems(problems), field=files.UNLABEL_FILE)
    return _SpanInputs(init, added, pool, problems, forms)


def _first_problems(problems: Sequence[str], k: int = 5) -> str:
    return "" if not problems else "; skipped: " + "; ".join(problems[:k]) + (" ..." if len(problems) > k else "")


@dataclass
class _Start:
    schema: LabelSchema
    control: ControlSpec
    model: Model
    parent_ref: str | None
    history: list[dict[str, Any]]
    ignored: list[str]


def _prepare(inputs: _SpanInputs, *, model_id: str | None, reg: Registry | None, model: Any,
             opts: dict[str, Any], seed: int, refit: bool) -> _Start:
    """The round's model: the saved one of ``model_id`` (rebuilt with new options), or a fresh one."""
    ignored: list[str] = []
    history: list[dict[str, Any]] = []
    parent_ref = None
    if model_id:
        schema, control, the_model, parent_ref, history = _load_previous(model_id, reg, model)
        if control.kind is not TaskKind.TEXT_SPANS:
            raise InputError(f"model {model_id!r} labels {control.kind}, not spans", field="model_id")
        if isinstance(the_model, PluginModel) and not isinstance(the_model, SpanPluginModel):
            loaded = the_model
            the_model = SpanPluginModel(control, loaded.plugin, loaded.ref)
            the_model._fitted = True
        model_opts = {k: v for k, v in opts.items() if k != "family"}
        if isinstance(the_model, PluginModel):
            the_model.options = model_opts
        elif model_opts:
            params = {k: v for k, v in the_model.get_params().items() if k != "control"}  # type: ignore[attr-defined]
            the_model = _build_model(type(the_model), control, {**params, **model_opts}, seed, ignored)
        _drop_unknown_labels(inputs, control)
    else:
        labels = sorted({s.label for r in inputs.labelled for s in r.spans or ()})
        if not labels:
            raise InputError("the labelled rows hold no span at all: label at least one entity",
                             field=files.LABEL_FILE)
        schema = parse_label_config(make_label_config(labels, kind="labels"))
        control = schema.controls[0]
        kind, cls = _resolve_model_ref(model, control, opts)
        if kind == "plugin":
            ref = model if isinstance(model, str) else f"{cls.__module__}:{cls.__qualname__}"
            plugin = SpanPluginModel.create(control, ref, cls, opts)
            plugin.options = dict(opts)
            the_model = plugin
        else:
            if TaskKind.TEXT_SPANS not in getattr(cls, "kinds", ()):
                raise InputError(f"model family {getattr(cls, 'name', cls)!r} does not label spans", field="model")
            the_model = _build_model(cls, control, opts, seed, ignored)
    the_model = _without_time_budget(the_model, control, opts, seed, refit)
    return _Start(schema, control, the_model, parent_ref, history, ignored)


def _drop_unknown_labels(inputs: _SpanInputs, control: ControlSpec) -> None:
    known = set(control.label_keys)
    for name in ("init_rows", "added_rows"):
        keep = []
        for r in getattr(inputs, name):
            bad = sorted({s.label for s in r.spans or ()} - known)
            if bad:
                inputs.problems.append(f"{r.where}: label(s) {', '.join(bad)} unknown to the model "
                                       f"(it knows {', '.join(control.label_keys)}); row left out")
            else:
                keep.append(r)
        setattr(inputs, name, keep)
    if not inputs.labelled:
        raise InputError("no labelled row uses the model's labels" + _first_problems(inputs.problems))


def _examples(rows: Sequence[files.SeedRow]) -> list[Example]:
    out = []
    for r in rows:
        ex = r.example()
        ex.meta["label_json"] = span_files.spans_json(r.spans or (), r.text or "")
        out.append(ex)
    return out


def _gold(examples: Sequence[Example]) -> list[tuple[Span, ...]]:
    return [e.target.spans if e.target else () for e in examples]


def _fit(start: _Start, train: list[Example], val: list[Example] | None, *, refit: bool, seed: int
         ) -> tuple[Model, FitReport, dict[str, Any], int]:
    """(final model, its report, quality, examples in it): fit on train, score on val, refit on all."""
    model = start.model
    plugin = isinstance(model, PluginModel)
    report = model.fit(train, val=val)
    if not val:
        note = "no validation rows (--val-size 0): no span P/R/F1 this round"
        return model, report, {"method": "none", "detail": note, "metric": "f1", "score": None, "n": 0}, len(train)
    metrics = span_prf(_gold(val), [p.spans for p in model.predict(val)])
    quality = {"method": "validation", "detail": f"entity-level P/R/F1 on the {len(val)} validation rows of "
               "the seed-003 split, predicted by the model fitted on the training rows", "metric": "f1",
               "score": metrics["f1"], "n": len(val), "metrics": metrics}
    make = None if plugin else _factory(model, start.control, seed)
    if not refit or make is None:
        return model, report, quality, len(train)
    final = make()
    everything = [*train, *val]
    # the round's quality is measured above: the family's own held-out slice (ner-crf: 10 % from 200 texts,
    # then a refit) would only train twice; lifted for this fit, restored before the model is saved
    options = getattr(final, "options", None)
    lifted = isinstance(options, dict) and "min_holdout_examples" in options
    saved = options.get("min_holdout_examples") if lifted else None
    if lifted:
        options["min_holdout_examples"] = len(everything) + 1
    try:
        final_report = final.fit(everything)
    finally:
        if lifted:
            options["min_holdout_examples"] = saved
    final_report.metrics = {**final_report.metrics, **{f"val_{k}": v for k, v in metrics.items()}}
    return final, final_report, quality, len(train) + len(val)


def _strategy(strategy: str | None, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    name = "span" if strategy in (None, "", "default") else canonical_name(strategy)
    if name not in ("span", "random"):
        raise InputError(f"strategy {strategy!r} does not rank span tasks; use mnlp (the default; "
                         "strategy_params aggregation=max|mean|sum, measure=lc|entropy) or RandomSampling",
                         field="strategy")
    bad = sorted(set(params) - set(SPAN_STRATEGY_PARAMS))
    if bad:
        raise InputError(f"strategy_params {', '.join(bad)} unknown for span rounds "
                         f"(known: {', '.join(SPAN_STRATEGY_PARAMS)})", field="strategy")
    return name, params


def _select(name: str, params: dict[str, Any], preds: Sequence[Prediction], pool: Pool, lengths: np.ndarray,
            n: int, token_budget: int | None, seed: int, flags: dict[str, bool] | None,
            ids: Sequence[str]) -> Selection:
    agg, measure = params.get("aggregation", "mnlp"), params.get("measure", "lc")
    fallback = np.array([p.uncertainty if p.uncertainty is not None else 1.0 - p.score for p in preds], dtype=float)
    if name == "random":
        scores, used = np.random.default_rng(seed).random(len(preds)), "random"
    elif pool.token_probs is not None:
        try:
            scores = span_scores(pool.token_probs, agg, measure)
        except ValueError as exc:
            raise InputError(str(exc), field="strategy") from None
        scores = np.where(np.isnan(scores), fallback, scores)
        used = f"span:{agg}"
    else:
        scores, used = fallback, "span:model-uncertainty"
    scores = np.where(pool.valid, scores, np.nan)
    dedupe = params.get("dedupe", DEFAULT_DEDUPE)
    if flags is not None:  # the plug-in chose: its flagged rows, best score first, within the budget
        ranked = np.where([bool(flags.get(s)) for s in ids], np.nan_to_num(scores, nan=-1e9), np.nan)
        sel = select_scored(ranked, pool, n, name=f"plugin:{used}", token_budget=token_budget, lengths=lengths,
                            random_state=seed, dedupe=None)
        sel.info["source"] = "plug-in hard-example flags"
        return Selection(sel.indices, scores, sel.strategy, sel.info)
    return select_scored(scores, pool, n, name=used, token_budget=token_budget, lengths=lengths, random_state=seed,
                         dedupe=dedupe)


def _span_key(spans: Sequence[Any]) -> str:
    return ";".join(sorted(f"{s[0]}-{s[1]}-{s[2]}" for s in spans))


def _previous_view(output_dir: Path) -> dict[str, str] | None:
    """sampleId -> predicted span set of the previous round's ``predictions.csv`` in ``output_dir``."""
    path = output_dir / files.PREDICTIONS_FILE
    if not path.is_file():
        return None
    view: dict[str, str] = {}
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            for rec in csv.DictReader(fh):
                regions = json.loads(rec.get("label") or "[]")
                view[rec["sampleId"]] = _span_key(
                    [(r["start"], r["end"], (r.get("labels") or [""])[0]) for r in regions])
    except (OSError, ValueError, KeyError, TypeError, csv.Error):
        return None
    return view


def run_span_loop(
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
    token_budget: int | None = None,
) -> LoopResult:
    """One span round (see the module doc); arguments as :func:`labelpilot.loop.run_loop`, plus
    ``token_budget`` (at most this many tokens in the batch of hard examples)."""
    t_start = time.perf_counter()
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    opts = dict(options or {})
    params = dict(opts.pop("strategy_params", None) or {})
    if "dedupe" in opts:
        params["dedupe"] = opts.pop("dedupe")
    refit = bool(opts.pop("refit", True))
    strategy_name, params = _strategy(strategy, params)
    if query_cnt < 0:
        raise InputError(f"query_cnt must be >= 0, got {query_cnt}", field="query_cnt")
    if token_budget is not None and token_budget < 1:
        raise InputError(f"token_budget must be >= 1, got {token_budget}", field="token_budget")
    if not input_dir.is_dir():
        raise InputError(f"input_dir {input_dir} is not a folder", field="input_dir")
    inputs = _read(input_dir, is_first_train)
    reg = _open_registry(registry)
    start = _prepare(inputs, model_id=model_id, reg=reg, model=model, opts=opts, seed=random_seed, refit=refit)
    control = start.control
    pool_rows = inputs.pool_rows
    pool_ex = [r.example(with_target=False) for r in pool_rows]
    pool_ids = [r.sample_id for r in pool_rows]
    seconds: dict[str, float] = {}
    cpu: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="labelpilot-loop-") as work:
        init_ex, added_ex = _examples(inputs.init_rows), _examples(inputs.added_rows)
        the_model = start.model
        if isinstance(the_model, PluginModel):
            the_model.work_dir, the_model.is_first_train = Path(work), is_first_train
            the_model.query_cnt, the_model.strategy = query_cnt, strategy_name
            train_ex, val_ex = the_model.split(init_ex, added_ex, is_first_train, val_size, random_seed)
            val_ex = None if val_size == 0 else val_ex
        else:
            train_ex, val_ex = split_train_val(
                init_ex, added_ex, ids=[r.sample_id for r in inputs.init_rows],
                strata=["spans" if r.spans else "none" for r in inputs.init_rows],
                is_first_train=is_first_train, val_size=val_size, random_seed=random_seed)
        t0, c0 = time.perf_counter(), time.process_time()
        final, fit_report, quality, n_in_model = _fit(start, train_ex, val_ex, refit=refit, seed=random_seed)
        seconds["fit"], cpu["fit"] = time.perf_counter() - t0, time.process_time() - c0
        t0, c0 = time.perf_counter(), time.process_time()
        preds = final.predict(pool_ex)
        seconds["predict"], cpu["predict"] = time.perf_counter() - t0, time.process_time() - c0
        t0, c0 = time.perf_counter(), time.process_time()
        lengths = np.array([len(tokenize(e.text)) for e in pool_ex], dtype=np.int64)
        n_labels = len(train_ex) + len(val_ex or ())
        pool = Pool.from_predictions(preds, control.label_keys, texts=[e.text for e in pool_ex], n_labeled=n_labels)
        flags = final.hard_flags_ if isinstance(final, PluginModel) else None
        selection = _select(strategy_name, params, preds, pool, lengths, min(query_cnt, pool.size), token_budget,
                            random_seed, flags, pool_ids)
        seconds["select"], cpu["select"] = time.perf_counter() - t0, time.process_time() - c0
        start.model = final
        run = {"input_dir": input_dir, "is_first_train": is_first_train, "random_seed": random_seed,
               "val_size": val_size, "strategy": strategy, "token_budget": token_budget, "t_start": t_start,
               "model_id": model_id, "model_name": model_name, "refit": refit, "cpu": cpu}
        report = _write(output_dir, run, inputs, start, (train_ex, val_ex), (fit_report, quality, n_in_model),
                        preds, selection, lengths, seconds, reg)
    return LoopResult(output_dir=output_dir, predictions_csv=output_dir / files.PREDICTIONS_FILE, report=report,
                      selection=selection, model_version=report.pop("_mv"),
                      model_dir=None if report["model"]["dir"] is None else Path(report["model"]["dir"]),
                      hard_ids=report["hard_examples"])


def _history(run: dict[str, Any], start: _Start, output_dir: Path, n_labels: int) -> tuple[list[Any], str, Any]:
    if run["model_id"]:
        history, note = start.history, f"earlier rounds from {start.parent_ref}"
    elif run["is_first_train"]:
        history, note = [], "first round (is_first_train): no earlier rounds"
    else:
        history, _, note = round_history.from_output_dir(output_dir, start.control.label_keys)
    history, rerun = round_history.drop_rerun(history, n_labels)
    view = None if rerun or run["is_first_train"] else _previous_view(output_dir)
    return history, note + ("; a rerun of the last round replaces it" if rerun else ""), view


def _write(output_dir: Path, run: dict[str, Any], inputs: _SpanInputs, start: _Start,
           split: tuple[list[Example], list[Example] | None], fitted: tuple[FitReport, dict[str, Any], int],
           preds: list[Prediction], selection: Selection, lengths: np.ndarray, seconds: dict[str, float],
           reg: Registry | None) -> dict[str, Any]:
    """Stopping advice, then ``predictions.csv``, the model and ``report.json``, staged and moved in."""
    train_ex, val_ex = split
    fit_report, quality, _ = fitted
    n_labels = len(train_ex) + len(val_ex or ())
    pool_ids = [r.sample_id for r in inputs.pool_rows]
    history, note, view = _history(run, start, output_dir, n_labels)
    scores = np.asarray(selection.scores, dtype=float)
    mean_unc = float(np.nanmean(scores)) if np.isfinite(scores).any() else None
    keys = [_span_key([(s.start, s.end, s.label) for s in p.spans]) if p.error is None else "<error>" for p in preds]
    new_history, advice = round_history.advise(history, n_labels, quality, mean_unc, view, pool_ids, keys)
    last = new_history[-1]
    fit_report.metrics = {**fit_report.metrics, **{f"al_{k}": last[k] for k in
                          ("mean_uncertainty", "kappa", "changed", "quality", "n_labels") if last.get(k) is not None}}
    parent = output_dir.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.tmp-", dir=parent))
    try:
        n = len(preds)
        rank = np.empty(n, dtype=np.int64)
        rank[selection.ranking()] = np.arange(1, n + 1)
        hard = np.zeros(n, dtype=bool)
        hard[selection.indices] = True
        span_files.write_span_predictions(stage / files.PREDICTIONS_FILE, inputs.pool_rows, preds, scores, hard,
                                          rank, lengths)
        bundle = Bundle(start.schema, {start.control.name: start.model})
        mv, model_dir = None, None
        if reg is not None:
            mid = run["model_id"]
            name = run["model_name"] or (parse_model_ref(mid)[0] if mid and not Path(mid).is_dir() else "loop")
            mv = reg.register(name, bundle, report=fit_report, parent=start.parent_ref)
        else:
            bundle.save(stage / "model")
            round_history.write_folder(stage / "model", new_history)
            model_dir = output_dir / "model"
        report = _report(run, inputs, start, split, fitted, preds, selection, lengths, seconds)
        report["model"]["registry"] = None if mv is None else {"name": mv.name, "version": mv.version, "tag": mv.tag}
        report["model"]["dir"] = None if model_dir is None else str(model_dir)
        report["stopping"] = {**advice.to_dict(), "rounds": len(new_history), "history_source": note}
        report["history"] = new_history
        report["seconds"]["total"] = round(time.perf_counter() - run["t_start"], 3)
        (stage / files.REPORT_FILE).write_text(json.dumps(jsonable(report), ensure_ascii=False, indent=1),
                                               encoding="utf-8")
        commit_outputs(stage, output_dir)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
    report["_mv"] = mv
    return report


def _summary(quality: dict[str, Any], n_train: int, n_val: int, n_in_model: int) -> str:
    if quality.get("score") is None:
        return f"{n_in_model} labelled texts in the model; {quality['detail']}"
    m = quality["metrics"]
    rejoin = " (validation rows rejoined for the final model)" if n_in_model == n_train + n_val else ""
    return (f"{n_in_model} labelled texts in the model{rejoin}; validation span F1 {m['f1']:.3f} "
            f"(P {m['precision']:.3f}, R {m['recall']:.3f}, {int(m['support'])} gold spans in {n_val} texts)")


def _report(run: dict[str, Any], inputs: _SpanInputs, start: _Start, split: tuple[list[Example], list[Example] | None],
            fitted: tuple[FitReport, dict[str, Any], int], preds: list[Prediction], selection: Selection,
            lengths: np.ndarray, seconds: dict[str, float]) -> dict[str, Any]:
    train_ex, val_ex = split
    fit_report, quality, n_in_model = fitted
    pool_ids = [r.sample_id for r in inputs.pool_rows]
    the_model = start.model
    idx = selection.indices
    return {
        "task": "spans",
        "input_dir": str(run["input_dir"]),
        "is_first_train": run["is_first_train"],
        "random_seed": run["random_seed"],
        "val_size": run["val_size"],
        "label_forms": inputs.forms,
        "skipped_rows": {"count": len(inputs.problems), "rows": inputs.problems[:MAX_REPORTED_PROBLEMS]},
        "split": {"train": len(train_ex), "val": len(val_ex or ()), "init": len(inputs.init_rows),
                  "added_used": len(inputs.added_rows), "pool": len(inputs.pool_rows)},
        "val_ids": sorted(str(e.id) for e in val_ex or ()),
        "training": {"quality": quality, "n_in_model": n_in_model, "refit": n_in_model > len(train_ex)},
        "summary": _summary(quality, len(train_ex), len(val_ex or ()), n_in_model),
        "labels": start.control.label_keys,
        "multi_label": False,
        "model": {"family": getattr(the_model, "family", None) or the_model.name, "started_from": start.parent_ref,
                  "registry": None, "dir": None},
        "fit": fit_report.to_dict(),
        "strategy": {"requested": run["strategy"], "used": selection.strategy, "query_cnt": len(idx),
                     "token_budget": run["token_budget"], "tokens": int(lengths[idx].sum()),
                     "info": jsonable(selection.info)},
        "hard_examples": [pool_ids[i] for i in idx],
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        "cpu_seconds": {k: round(v, 3) for k, v in run["cpu"].items()},
        "ignored_options": start.ignored,
        "load_average": load_avg(),
        "errors": sum(p.error is not None for p in preds),
    }


__all__ = ["run_span_loop"]
