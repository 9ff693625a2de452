"""``labelpilot loop``: one round of the seed-003 operator from the command line, and ``labelpilot loop accept``
(seed 003's step 6: the final labelled set, :mod:`labelpilot.loop.accept`).

Mounted by the main CLI as ``app.add_typer(loop_app, name="loop")``: a group whose callback runs the round
when no subcommand is given, so ``labelpilot loop --input-dir ... --output-dir ...`` works as before.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from labelpilot.errors import LabelpilotError


def parse_options(values: list[str] | None) -> dict[str, Any]:
    """``--options '{"C": 2}'`` and/or ``--options C=2 --options max_iter=100`` (values parsed as JSON when
    they parse, else kept as strings; ``a=1,b=2`` in one value works too)."""
    out: dict[str, Any] = {}
    for raw in values or []:
        raw = raw.strip()
        if not raw:
            continue
        if raw.startswith("{"):
            try:
                parsed = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise typer.BadParameter(f"--options is not valid JSON: {exc}") from None
            if not isinstance(parsed, dict):
                raise typer.BadParameter("--options JSON must be an object")
            out.update(parsed)
            continue
        for part in raw.split(","):
            key, sep, value = part.partition("=")
            if not sep or not key.strip():
                raise typer.BadParameter(f"--options expects key=value or a JSON object, got {part!r}")
            try:
                out[key.strip()] = json.loads(value)
            except json.JSONDecodeError:
                out[key.strip()] = value
    return out


loop_app = typer.Typer(
    add_completion=False,
    help="The seed-003 file operator: train, predict the unlabelled pool, mark hard examples.",
)


def _echo_round(rep: dict[str, Any], predictions_csv: Path) -> None:
    """The round's summary on stdout: what was predicted and marked, where the model is, stopping advice."""
    where = rep["model"]["registry"] or rep["model"]["dir"]
    typer.echo(rep["summary"])
    typer.echo(
        f"predicted {rep['split']['pool']}, marked {rep['strategy']['query_cnt']} hard examples by "
        f"{rep['strategy']['used']}; model: {where}"
    )
    typer.echo(f"predictions: {predictions_csv}")
    stop = rep["stopping"]
    typer.echo(
        f"stopping (round {stop['rounds']}): {'suggest stop' if stop['stop'] else 'continue'} ({stop['reason']})"
    )


@loop_app.callback(invoke_without_command=True)
def loop_command(
    ctx: typer.Context,
    input_dir: Annotated[
        Path | None, typer.Option(help="Folder with input_label.csv, input_added_label.csv, input_unlabel.csv")
    ] = None,
    output_dir: Annotated[Path | None, typer.Option(help="Where predictions.csv, report.json (and model/) go")] = None,
    is_first_train: Annotated[
        bool, typer.Option("--is-first-train/--not-first-train", help="First round: input_added_label.csv is ignored")
    ] = True,
    query_cnt: Annotated[int, typer.Option(help="How many hard examples to mark")] = 100,
    val_size: Annotated[
        float,
        typer.Option(
            help="Fraction of input_label.csv used as validation for early stopping (0 = none); these rows then "
            "rejoin training (--options refit=false keeps them out)"
        ),
    ] = 0.2,
    strategy: Annotated[
        str,
        typer.Option(
            help="LeastConfidence, MarginSampling, EntropySampling, RandomSampling, diverse, badge, default, ..."
        ),
    ] = "default",
    options: Annotated[
        list[str] | None, typer.Option(help="Model options: JSON object or key=value (repeatable)")
    ] = None,
    model_id: Annotated[
        str | None, typer.Option(help="Start from NAME@VERSION in the registry, or a model folder")
    ] = None,
    random_seed: Annotated[int, typer.Option(help="Seed of the validation split and the strategy")] = 0,
    model: Annotated[
        str | None,
        typer.Option(
            help="Model family (text-linear), or a seed-003 plug-in package.module:Class / "
            "labelpilot.plugins entry point"
        ),
    ] = None,
    registry: Annotated[
        Path | None,
        typer.Option(
            help="Registry root; without it the model is saved into OUTPUT_DIR/model", envvar="LABELPILOT_REGISTRY"
        ),
    ] = None,
    model_name: Annotated[str | None, typer.Option(help="Registry name for the new version")] = None,
    task: Annotated[
        str,
        typer.Option(help="auto, spans (alias ner: label = Label Studio span JSON or BIO tags) or classes; auto = "
                     "spans when most label cells of input_label.csv read as spans"),
    ] = "auto",
    token_budget: Annotated[
        int | None, typer.Option(help="Span tasks: at most this many tokens (CJK characters / words) of hard examples")
    ] = None,
) -> None:
    """Run one round of the file operator: split, train, predict, mark hard examples, save the model.

    CSV columns: sampleId,path,label (input_unlabel.csv: sampleId,path); a text column may replace path.
    Multi-label rows separate their labels with "|" (sports|finance). Span tasks (--task spans): label =
    Label Studio span JSON or BIO tags, malformed rows skipped and reported. Output: OUTPUT_DIR/predictions.csv
    (sortable by the rank column) and report.json; nothing is written when the input is bad.
    `labelpilot loop accept --help`: the final labelled set once the hard examples' predictions satisfy.
    """
    if ctx.invoked_subcommand is not None:
        return
    if input_dir is None or output_dir is None:
        missing = " and ".join(n for n, v in (("--input-dir", input_dir), ("--output-dir", output_dir)) if v is None)
        typer.echo(ctx.get_help())
        typer.echo(f"error: missing option {missing}", err=True)
        raise typer.Exit(2)
    from labelpilot.loop import span_files  # lazy: CLI start-up (only a round reads its files)

    task = task.strip().lower()
    if task not in span_files.TASKS and task not in span_files.CLASS_TASKS:
        raise typer.BadParameter(f"--task must be one of {', '.join(span_files.TASKS)}, got {task!r}")
    if task in span_files.SPAN_TASKS or (task == "auto" and span_files.detect_task(input_dir) == "spans"):
        _span_round(input_dir, output_dir, is_first_train=is_first_train, query_cnt=query_cnt, val_size=val_size,
                    strategy=strategy, options=parse_options(options), model_id=model_id, random_seed=random_seed,
                    model=model, registry=registry, model_name=model_name, token_budget=token_budget)
        return
    if token_budget is not None:
        typer.echo("error: --token-budget is for span tasks (--task spans)", err=True)
        raise typer.Exit(2)
    from labelpilot.loop.runner import run_loop  # lazy: CLI start-up: the runner loads sklearn, scipy and pandas

    try:
        result = run_loop(
            input_dir,
            output_dir,
            is_first_train=is_first_train,
            query_cnt=query_cnt,
            val_size=val_size,
            strategy=strategy,
            options=parse_options(options),
            model_id=model_id,
            random_seed=random_seed,
            model=model,
            registry=registry,
            model_name=model_name,
        )
    except LabelpilotError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None
    _echo_round(result.report, result.predictions_csv)


def _span_round(input_dir: Path, output_dir: Path, **kwargs: Any) -> None:
    """``labelpilot loop --task spans``: :func:`labelpilot.loop.span_round.run_span_loop` and its summary."""
    from labelpilot.loop.span_round import run_span_loop  # lazy: CLI start-up (sklearn, scipy, the CRF)

    try:
        result = run_span_loop(input_dir, output_dir, **kwargs)
    except LabelpilotError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None
    rep = result.report
    skipped = rep["skipped_rows"]
    for problem in skipped["rows"][:10]:
        typer.echo(f"skipped: {problem}", err=True)
    if skipped["count"] > 10:
        typer.echo(f"skipped: ... {skipped['count'] - 10} more rows (report.json skipped_rows)", err=True)
    _echo_round(rep, result.predictions_csv)
    st = rep["strategy"]
    budget = "" if st["token_budget"] is None else f" of a budget of {st['token_budget']}"
    typer.echo(f"hard examples: {st['query_cnt']} texts, {st['tokens']} tokens{budget}; "
               f"{skipped['count']} malformed rows skipped")


def _accept_registry(
    registry: Path | None, data_dir: Path, output_dir: Path, *, name: str | None, model_id: str | None
) -> Path | None:
    """The registry ``loop accept`` uses: ``--registry``, else DATA_DIR/registry when something needs one
    (``--name``, a ``NAME@VERSION`` model id, or a round whose report.json names a registry version)."""
    reg_root = registry
    if reg_root is None and (name is not None or (model_id and not Path(model_id).is_dir())):
        reg_root = data_dir / "registry"
    if reg_root is None:
        # the loop's registry version, if report.json names one, lives under the default registry
        report_path = output_dir / "report.json"
        try:
            reported = json.loads(report_path.read_text(encoding="utf-8")).get("model", {}).get("registry")
        except (OSError, ValueError, AttributeError):
            reported = None
        if reported:
            reg_root = data_dir / "registry"
    return reg_root


def _echo_accept(res: Any) -> None:
    """``loop accept``'s summary on stdout: threshold, counts, estimate, per class, notes, files."""
    rep = res.report
    c, est = rep["counts"], rep["estimated_accuracy"]
    thr = "none" if rep["threshold"] is None else f"{rep['threshold']:.4f}"
    typer.echo(f"threshold {thr}: {rep['threshold_rule']}")
    cov = "n/a" if c["coverage"] is None else f"{c['coverage']:.1%}"
    typer.echo(f"accepted {c['accepted']} of {c['predicted']} model labels ({cov}), {c['left_for_humans']} left for "
               f"humans, {c['human']} human labels")
    if est["accuracy"] is not None:
        typer.echo(f"estimated accuracy of the accepted labels: {est['accuracy']:.3f} "
                   f"[{est['low']:.3f}, {est['high']:.3f}] (Wilson 95%, {est['n']} held-out labels)")
    else:
        typer.echo(f"estimated accuracy of the accepted labels: {est.get('note', 'not estimated')}")
    for label, e in rep["per_class"].items():
        h = e.get("held_out") or {}
        acc = "" if h.get("accuracy") is None else f", held-out {h['accuracy']:.3f} (n={h['n']})"
        typer.echo(f"  {label}: accepted {e['accepted']}, left {e['left_for_humans']}{acc}")
    for note in res.notes:
        typer.echo(f"note: {note}")
    if res.model_ref:
        typer.echo(f"registered: {res.model_ref}")
    typer.echo(f"final labels: {res.final_csv}")
    typer.echo(f"report: {res.report_path}")


@loop_app.command("accept")
def accept_command(
    input_dir: Annotated[
        Path, typer.Option(help="The loop's input folder: input_label.csv, input_added_label.csv, input_unlabel.csv")
    ],
    output_dir: Annotated[
        Path, typer.Option(help="The last round's output folder: predictions.csv, report.json (and model/)")
    ],
    target_accuracy: Annotated[
        float, typer.Option(help="Accept model labels above the lowest score where held-out labels reach this")
    ] = 0.95,
    threshold: Annotated[float | None, typer.Option(help="Accept model labels with score >= this (by hand)")] = None,
    accept_all: Annotated[bool, typer.Option("--all", help="Accept every model label (seed 003 step 6.1)")] = False,
    lower_bound: Annotated[
        bool, typer.Option("--lower-bound", help="Choose the threshold where the 95% lower bound reaches the target")
    ] = False,
    name: Annotated[
        str | None, typer.Option("--name", help="Register the final model under this name (the next project's start)")
    ] = None,
    registry: Annotated[
        Path | None,
        typer.Option(help="Registry root (the loop's, if it used one); default DATA_DIR/registry",
                     envvar="LABELPILOT_REGISTRY"),
    ] = None,
    data_dir: Annotated[
        Path, typer.Option("--data-dir", envvar="LABELPILOT_DATA_DIR", help="Where models and state are kept")
    ] = Path("./labelpilot-data"),
    model_id: Annotated[
        str | None, typer.Option(help="The round's model, if report.json does not say: a folder or NAME@VERSION")
    ] = None,
    final_dir: Annotated[
        Path | None, typer.Option(help="Where final_label.csv, final_unlabel.csv, accept.json go (default OUTPUT_DIR)")
    ] = None,
    random_seed: Annotated[int | None, typer.Option(help="Seed of the held-out folds (default: the round's)")] = None,
) -> None:
    """Seed 003 step 6: the final labelled set = human labels + the model labels worth accepting.

    Writes FINAL_DIR/final_label.csv (sampleId,path[,text],label,source,score; source human/model),
    final_unlabel.csv (what is left for humans, input_unlabel.csv's format) and accept.json (threshold,
    estimated accuracy of the accepted labels with a Wilson 95% interval, counts, per class). The threshold
    is chosen on held-out predictions of input_label.csv (cross-validated with the round's model), unless
    --threshold or --all. With --name the round's model becomes a registry version (step 8).
    """
    from labelpilot.loop.accept import run_accept  # lazy: CLI start-up

    try:
        round_task = json.loads((output_dir / "report.json").read_text(encoding="utf-8")).get("task")
    except (OSError, ValueError, AttributeError):
        round_task = None
    if round_task == "spans":
        typer.echo("error: loop accept chooses a threshold for class labels; a span round's predictions.csv holds "
                   "Label Studio span JSON to import or correct (accepting spans is not built yet)", err=True)
        raise typer.Exit(2)
    reg_root = _accept_registry(registry, data_dir, output_dir, name=name, model_id=model_id)
    try:
        res = run_accept(
            input_dir, output_dir, target_accuracy=target_accuracy, threshold=threshold, accept_all=accept_all,
            name=name, registry=reg_root, model_id=model_id, final_dir=final_dir, random_seed=random_seed,
            lower_bound=lower_bound,
        )
    except LabelpilotError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None
    _echo_accept(res)
