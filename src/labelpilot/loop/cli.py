"""``labelpilot loop``: one round of the seed-003 operator from the command line.

Mounted by the main CLI as ``app.command("loop")(loop_command)``.
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


def loop_command(
    input_dir: Annotated[
        Path, typer.Option(help="Folder with input_label.csv, input_added_label.csv, input_unlabel.csv")
    ],
    output_dir: Annotated[Path, typer.Option(help="Where predictions.csv, report.json (and model/) go")],
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
) -> None:
    """Run one round of the file operator: split, train, predict, mark hard examples, save the model.

    CSV columns: sampleId,path,label (input_unlabel.csv: sampleId,path); a text column may replace path.
    Multi-label rows separate their labels with "|" (sports|finance). Output: OUTPUT_DIR/predictions.csv
    (sortable by the rank column) and report.json; nothing is written when the input is bad.
    """
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
    rep = result.report
    where = rep["model"]["registry"] or rep["model"]["dir"]
    typer.echo(rep["summary"])
    typer.echo(
        f"predicted {rep['split']['pool']}, marked {rep['strategy']['query_cnt']} hard examples by "
        f"{rep['strategy']['used']}; model: {where}"
    )
    typer.echo(f"predictions: {result.predictions_csv}")
    stop = rep["stopping"]
    typer.echo(
        f"stopping (round {stop['rounds']}): {'suggest stop' if stop['stop'] else 'continue'} ({stop['reason']})"
    )
