"""The ``labelpilot bench prelabel`` command (mounted by ``cli.py``)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated

import typer

from labelpilot.prelabel import datasets as dsets
from labelpilot.prelabel.harness import WAITS, run_dataset
from labelpilot.prelabel.report import summarize_run, write
from labelpilot.testing.corpora import default_data_root


def _env(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--env wants KEY=VALUE, got {pair!r}")
        out[key] = value
    return out


def bench_prelabel_command(
    datasets: Annotated[str, typer.Option(help=f"Comma-separated: {','.join(dsets.ALL)} (or 'all')")]
    = "tnews,cluener,sst2,conll2003",
    tasks: Annotated[int, typer.Option(min=1, help="Tasks per dataset, in annotation order")] = 200,
    seed: Annotated[int, typer.Option(min=0, help="Task order: the pool shuffled with this seed (0: the reported one)")]
    = 0,
    out: Annotated[Path, typer.Option(help="Folder for prelabel.json, prelabel.md and prelabel.png")]
    = Path("bench/results/prelabel"),
    wait: Annotated[str, typer.Option(help=f"Wait for retrains: {' | '.join(WAITS)} (see the docs)")] = "person",
    seconds_per_task: Annotated[float, typer.Option(help="With --wait person: the annotator's seconds per task")]
    = 5.0,
    timeout: Annotated[float, typer.Option(help="With --wait version: longest wait for one retrain")] = 120.0,
    data_root: Annotated[Path | None, typer.Option(help="The shared datasets folder")] = None,
    jsonl: Annotated[list[Path] | None, typer.Option(help="A handmade dataset (see datasets.from_jsonl)")] = None,
    env: Annotated[list[str] | None, typer.Option(help="KEY=VALUE for the server, e.g. LABELPILOT_RETRAIN_EVERY=10")]
    = None,
) -> None:
    """Play Label Studio and an annotator against a real server: pre-label quality and effort saved per window
    of tasks, retrain seconds and predict latency. Writes JSON, a markdown table and a PNG."""
    root = data_root or default_data_root()
    names = list(dsets.ALL) if datasets.strip() == "all" else [d.strip() for d in datasets.split(",") if d.strip()]
    server_env = _env(env or [])
    loaded = [dsets.from_jsonl(p) for p in jsonl or []]
    for name in names if not jsonl else []:
        why = dsets.missing(name, root)
        if why:
            typer.echo(f"skipping {name}: {why}")
            continue
        loaded.append(dsets.load(name, root, tasks, seed=seed))
    summaries = []
    for i, ds in enumerate(loaded, start=1):
        t0 = time.monotonic()
        typer.echo(f"{ds.name}: {len(ds.tasks)} tasks, {len(ds.labels)} labels, load {os.getloadavg()[0]:.2f}")
        run = run_dataset(ds, env=server_env, wait=wait, seconds_per_task=seconds_per_task, timeout=timeout,
                          project_id=i)
        summaries.append(summarize_run(run))
        typer.echo(f"{ds.name}: done in {time.monotonic() - t0:.0f} s; {len(run.errors)} failed job(s)")
    meta = {"command": "labelpilot bench prelabel", "tasks": tasks, "seed": seed, "wait": wait,
            "seconds_per_task": seconds_per_task, "env": server_env, "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
    paths = write(summaries, out, meta)
    typer.echo(paths["md"].read_text())
    typer.echo(f"wrote {', '.join(str(p) for p in paths.values())}")
