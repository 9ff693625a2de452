"""``labelpilot audit``: find likely label errors in a labelled file or a Label Studio export.

Mounted by the main CLI as ``app.command("audit")(audit_command)``; only typer and rich are imported at module
level, the audit itself (numpy, the model families) when the command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

console = Console()


def audit_command(
    data: Annotated[Path, typer.Argument(help="Labelled file (formats of `labelpilot train`) or a Label Studio "
                                              "JSON export (with --config).")],
    config: Annotated[Path | None, typer.Option("--config", help="Label config XML of the Label Studio export.")
                      ] = None,
    control: Annotated[str | None, typer.Option("--control", help="Control to audit (default: the first).")
                       ] = None,
    out: Annotated[Path, typer.Option("--out", help="Folder for suspects.csv and summary.json.")] = Path("audit"),
    top: Annotated[int | None, typer.Option("--top", min=1, help="Rows in suspects.csv (default: all).")] = None,
    kind: Annotated[str, typer.Option(help="File input: choices, multilabel, taxonomy, spans or image.")
                    ] = "choices",
    text_col: Annotated[str, typer.Option("--text-col", help="Column with the text.")] = "text",
    pair_col: Annotated[str | None, typer.Option("--pair-col", help="Optional second text column.")] = None,
    label_col: Annotated[str, typer.Option("--label-col", help="Column with the label(s); several by |.")
                         ] = "label",
    id_col: Annotated[str | None, typer.Option("--id-col", help="Column with the row id (default: row number).")
                      ] = None,
    family: Annotated[str | None, typer.Option(help="Model family (default: the one for the control).")] = None,
    options: Annotated[list[str] | None, typer.Option("--options", help="Family options: JSON or key=value.")
                       ] = None,
    folds: Annotated[int, typer.Option(min=2, help="Cross-validation folds.")] = 5,
    repeats: Annotated[int | None, typer.Option(min=1, help="Class labels: average over this many fold splits "
                                                            "(default: the audit's size-aware default).")] = None,
    seed: int = 0,
    fmt: Annotated[str | None, typer.Option("--format", help="csv, tsv, jsonl, json, parquet, conll.")] = None,
) -> None:
    """Out-of-fold predictions for every annotation, ranked by how likely it is wrong (suspects.csv), with
    per-class counts and, when tasks have several annotations, annotator agreement."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from labelpilot.audit.agreement import agreement  # lazy: CLI start-up
    from labelpilot.audit.oof import out_of_fold  # lazy: CLI start-up
    from labelpilot.audit.report import class_counts, write_summary, write_suspects_csv  # lazy: CLI start-up
    from labelpilot.audit.suspects import suspects_from_oof  # lazy: CLI start-up
    from labelpilot.batch import Columns  # lazy: CLI start-up
    from labelpilot.loop.cli import parse_options  # lazy: CLI start-up

    audit_in = _read_input(data, config, control, kind, Columns(text=text_col, pair=pair_col, label=label_col,
                                                                 id=id_col), fmt)
    ctl = audit_in.control
    with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task("audit", total=None)

        def progress(done: int, total: int, message: str) -> None:
            bar.update(task, completed=done, total=total or None, description=message)

        oof = out_of_fold(ctl, audit_in.examples, folds=folds, seed=seed, family=family,
                          options=parse_options(options), progress=progress, repeats=repeats)
    suspects = suspects_from_oof(oof)
    multi = [a for a in audit_in.annotations if len(a) >= 2]
    agree = agreement(ctl, audit_in.annotations) if multi else None
    out.mkdir(parents=True, exist_ok=True)
    n_rows = write_suspects_csv(out / "suspects.csv", suspects, oof.examples, top)
    counts = class_counts(suspects, oof.examples)
    n_flagged = sum(s.flagged for s in suspects)
    write_summary(out / "summary.json", {
        "control": ctl.name, "kind": str(ctl.kind), "family": oof.family, "examples": len(oof.examples),
        "folds": oof.folds, "repeats": oof.repeats, "seconds": round(oof.seconds, 2), "flagged": n_flagged,
        "notes": oof.notes, "skipped": audit_in.bad_rows[:100], "per_class": counts,
    }, agree)

    _print_report(oof, counts, n_flagged, agree, suspects)
    console.print(f"{n_rows} rows -> {out / 'suspects.csv'}; summary -> {out / 'summary.json'}")

def _read_input(data: Path, config: Path | None, control: str | None, kind: str, cols: Any, fmt: str | None) -> Any:
    """The examples to audit: a Label Studio export with its config, or a labelled file; skipped rows shown."""
    from labelpilot.audit.inputs import load_ls_export  # lazy: CLI start-up
    from labelpilot.errors import InputError  # lazy: CLI start-up

    if not data.exists():
        raise InputError(f"{data}: no such file or folder", field="data")
    if config is not None:
        if not config.is_file():
            raise InputError(f"{config}: no such label config file", field="config")
        audit_in = load_ls_export(data, config.read_text(encoding="utf-8"), control)
        remote = [ex.image for ex in audit_in.examples if ex.image and not Path(ex.image).is_file()]
        if remote:
            raise InputError(f"{len(remote)} image task(s) point at files not on this machine (e.g. {remote[0]!r}); "
                             "audit image projects from the server (audit_project) or with local paths",
                             field="data")
    else:
        audit_in = load_file(data, kind, cols, fmt=fmt)
    for line in audit_in.bad_rows[:10]:
        console.print(f"[yellow]skipped[/yellow] {line}")
    if len(audit_in.bad_rows) > 10:
        console.print(f"[yellow]... {len(audit_in.bad_rows) - 10} more skipped[/yellow]")
    return audit_in


def _print_report(oof: Any, counts: list[dict[str, Any]], n_flagged: int, agree: Any, suspects: list[Any]) -> None:
    ctl = oof.control
    console.print(f"{len(oof.examples)} annotated examples of {ctl.name!r} ({ctl.kind}), {oof.family}, "
                  f"{oof.folds} folds, {oof.seconds:.1f} s: {n_flagged} flagged")
    for note in oof.notes:
        console.print(f"[yellow]note[/yellow] {note}")
    table = Table("label", "examples", "flagged", "share", "most suggested", title="per class")
    for r in counts:
        table.add_row(r["label"], str(r["examples"]), str(r["flagged"]), f"{100 * r['flagged_share']:.1f} %",
                      r["top_suggestion"])
    console.print(table)
    if agree is not None:
        _print_agreement(agree)
    head = Table("rank", "id", "given", "suggested", "score", "reason", title="most suspect")
    for i, s in enumerate(suspects[:10], 1):
        head.add_row(str(i), str(s.example_id), "|".join(s.given), "|".join(s.suggested), f"{s.score:.3f}", s.reason)
    console.print(head)


def _print_agreement(agree) -> None:
    def fmt(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    console.print(f"agreement ({agree.metric}) over {agree.n_tasks} tasks with several annotations: "
                  f"{fmt(agree.overall)}")
    pairs = Table("annotator A", "annotator B", "tasks", agree.metric, "identical", title="per pair")
    for p in agree.pairs:
        pairs.add_row(p.a, p.b, str(p.n_tasks), fmt(p.value), f"{100 * p.observed:.1f} %")
    console.print(pairs)
    per = Table("annotator", "shared tasks", agree.metric, title="per annotator")
    for a in agree.annotators:
        per.add_row(a.annotator, str(a.n_tasks), fmt(a.value))
    console.print(per)

def load_file(path: Path, kind: str, cols: Any, labels: list[str] | None = None, fmt: str | None = None) -> Any:
    """A labelled file through ``labelpilot train``'s reader (``batch.load_labelled`` + ``schema_for``)."""
    from labelpilot.audit.inputs import AuditInput  # lazy: CLI start-up
    from labelpilot.batch import load_labelled, schema_for  # lazy: CLI start-up
    from labelpilot.errors import InputError  # lazy: CLI start-up

    if not path.exists():
        raise InputError(f"{path}: no such file or folder", field="data")
    loaded = load_labelled(path, kind, cols, fmt)
    if not loaded.examples:
        detail = f": {loaded.bad_rows[0]}" if loaded.bad_rows else ""
        raise InputError(f"{path}: no labelled rows{detail}", field="data")
    schema = schema_for(loaded.examples, kind, labels, pair=bool(getattr(cols, "pair", None)))
    control = schema.controls[0]
    known = set(control.label_keys)
    out = AuditInput(control, [], bad_rows=list(loaded.bad_rows))
    for n, ex in enumerate(loaded.examples, 1):
        unknown = [lab for lab in ex.target.labels if lab not in known] if ex.target else []
        if unknown:
            out.bad_rows.append(f"{ex.id or n}: label(s) {unknown} not in --labels")
            continue
        if ex.id is None:
            ex.id = str(n)
        out.examples.append(ex)
    return out
