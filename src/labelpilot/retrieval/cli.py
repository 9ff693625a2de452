"""``labelpilot index ...`` and ``labelpilot faq ...``: build indexes from files, near-duplicate reports, FAQs.

Mounted by ``labelpilot.cli``; heavy imports (faiss, the encoder, torch) happen inside the commands. Indexes
and FAQ models go to the data dir the server reads (``<data dir>/indexes``, ``<data dir>/faq``), so a running
server serves a new version at its next request.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from labelpilot.data.types import IMAGE_SUFFIXES
from labelpilot.errors import InputError

index_app = typer.Typer(no_args_is_help=True, help="Similarity-search indexes: build, list, search, near-duplicates.")
faq_app = typer.Typer(no_args_is_help=True, help="FAQ matching: train from a CSV, answer a query.")
console = Console()

DataDir = Annotated[
    Path, typer.Option("--data-dir", envvar="LABELPILOT_DATA_DIR", help="Where models and state are kept.")
]
LsUrl = Annotated[str | None, typer.Option("--ls-url", envvar="LABEL_STUDIO_URL", help="Label Studio's address.")]
LsToken = Annotated[str | None, typer.Option("--ls-token", envvar="LABEL_STUDIO_API_KEY",
                                             help="A Label Studio token (legacy or personal access token).")]
CHUNK = 2000


def _store(data_dir: Path) -> Any:
    from labelpilot.retrieval.service import IndexStore  # lazy: CLI start-up

    return IndexStore(data_dir / "indexes")


def _file_items(source: Path, text_col: str, id_col: str, image_col: str | None,
                label_col: str | None) -> tuple[str, list[dict[str, Any]]]:
    """(kind, raw items) from a table file; Label Studio exports: the columns are looked up in ``data``."""
    from labelpilot.files import read_rows  # lazy: CLI start-up

    items: list[dict[str, Any]] = []
    col = image_col or text_col
    for row in read_rows(source):
        if row.error:
            raise InputError(f"{source}: line {row.line}: {row.error}", field="input")
        values = row.values
        data = values.get("data") if isinstance(values.get("data"), dict) and col not in values else values
        if col not in data:
            raise InputError(f"{source}: line {row.line}: no column {col!r} (have {sorted(data)})", field=col)
        ident = values.get(id_col, data.get(id_col))
        item: dict[str, Any] = {"id": str(ident) if ident not in (None, "") else f"row-{row.line}"}
        meta = {"label": str(data[label_col])} if label_col and data.get(label_col) is not None else {}
        if image_col:
            path = Path(str(data[col]))
            item["path"] = str(path if path.is_absolute() else (source.parent / path))
            meta["source"] = str(data[col])
        else:
            item["text"] = str(data[col] or "")
        item["meta"] = meta
        items.append(item)
    return ("image" if image_col else "text"), items


def _folder_items(folder: Path) -> list[dict[str, Any]]:
    """Every image under ``folder``; id = its relative path, meta.label = its parent folder's name."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"{folder}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})", field="input")
    return [{"id": str(p.relative_to(folder)), "path": str(p),
             "meta": {"source": str(p.relative_to(folder)), "label": p.parent.name}} for p in files]


def _project_items(project_id: int, ls_url: str | None, ls_token: str | None, text_col: str, image_col: str | None,
                   data_dir: Path) -> tuple[str, list[dict[str, Any]], Any]:
    """(kind, raw items, image fetch or None) for every task of a Label Studio project."""
    from labelpilot.retrieval.project import client_for, fetcher_for, project_items  # lazy: CLI start-up

    client = client_for(ls_url, ls_token)
    got = project_items(client, project_id, text_col=text_col, image_col=image_col)
    for tid, why in got.skipped.items():
        console.print(f"[yellow]skipped[/yellow] task {tid}: {why}")
    raw = [{"id": it.id, "text": it.text, "url": it.url, "meta": it.meta} for it in got.items]
    if got.kind != "image":
        return got.kind, raw, None
    fetcher = fetcher_for(client, data_dir / "media-cache")
    task_of = {it.url: int(it.id or 0) for it in got.items}
    return got.kind, raw, lambda url: fetcher.fetch(url, task_id=task_of.get(url))


@index_app.command("build")
def build(
    name: Annotated[str, typer.Argument(help="Index name.")],
    source: Annotated[Path | None, typer.Argument(help="CSV/TSV/JSONL/JSON/Parquet/TXT of texts (or image paths), "
                                                       "or a folder of images (not with --from-project).")] = None,
    text_col: Annotated[str, typer.Option(help="Text column.")] = "text",
    id_col: Annotated[str, typer.Option(help="Id column (missing: row-<line>).")] = "id",
    image_col: Annotated[str | None, typer.Option(help="Column of image paths (relative to the file).")] = None,
    label_col: Annotated[str | None, typer.Option(help="Column kept with each item (e.g. its label).")] = None,
    fresh: Annotated[bool, typer.Option(help="Start from an empty index (default: add to the existing one).")] = False,
    from_project: Annotated[int | None, typer.Option(
        "--from-project", min=1, help="Every task of this Label Studio project (id = task id; --text-col or "
                                      "--image-col name the data field).")] = None,
    ls_url: LsUrl = None,
    ls_token: LsToken = None,
    data_dir: DataDir = Path("./labelpilot-data"),
) -> None:
    """Build (or extend) an index from a file, a folder or a Label Studio project; each run stores one new version."""
    import time

    import numpy as np

    from labelpilot.retrieval.index import VectorIndex  # lazy: CLI start-up
    from labelpilot.retrieval.service import Item, kind_dim, payload, vectorise  # lazy: CLI start-up

    t0 = time.perf_counter()
    fetch = None
    if (source is None) == (from_project is None):
        raise InputError("give a SOURCE file or folder, or --from-project", field="source")
    if from_project is not None:
        kind, raw, fetch = _project_items(from_project, ls_url, ls_token, text_col, image_col, data_dir)
    elif source is not None and source.is_dir():
        kind, raw = "image", _folder_items(source)
    else:
        assert source is not None
        kind, raw = _file_items(source, text_col, id_col, image_col, label_col)
    store = _store(data_dir)
    if store.exists(name) and not fresh:
        _, index = store.get(name)
        if index.kind != kind:
            raise InputError(f"index {name!r} holds {index.kind} items, not {kind}", field="kind")
    else:
        size, encoder = kind_dim(kind, None)
        index = VectorIndex(kind, size, encoder=encoder)
    seen: dict[str, int] = {}
    for n, r in enumerate(raw):
        seen[r["id"]] = n  # a repeated id: the last row wins
    raw = [raw[n] for n in sorted(seen.values())]
    failed = 0
    for start in range(0, len(raw), CHUNK):
        chunk = raw[start : start + CHUNK]
        items = [Item(field=f"row.{r['id']}", id=r["id"], text=r.get("text"), path=r.get("path"), url=r.get("url"),
                      meta=r["meta"]) for r in chunk]
        vectors, errors = vectorise(items, index.dim, fetch)
        good = [i for i, e in enumerate(errors) if e is None]
        for i, e in enumerate(errors):
            if e is not None:
                failed += 1
                console.print(f"[yellow]skipped[/yellow] {items[i].id}: {e['detail']}")
        index.add([items[i].id for i in good], np.ascontiguousarray(vectors[good]), [payload(items[i]) for i in good])
        console.print(f"  {min(start + CHUNK, len(raw))}/{len(raw)} items")
    origin = f"Label Studio project {from_project}" if from_project is not None else str(source)
    version = store.save(name, index, note=f"built from {origin}")
    info = {**store.describe(name), "failed": failed, "seconds": round(time.perf_counter() - t0, 2)}
    assert info["version"] == version
    console.print_json(json.dumps(info, ensure_ascii=False))


@index_app.command("list")
def list_indexes(data_dir: DataDir = Path("./labelpilot-data")) -> None:
    """The indexes of the data dir (name, version, kind, type, count)."""
    store = _store(data_dir)
    console.print_json(json.dumps([store.describe(n) for n in store.names() if store.exists(n)], ensure_ascii=False))


@index_app.command("search")
def search(
    name: Annotated[str, typer.Argument()],
    text: Annotated[str | None, typer.Option(help="Query text.")] = None,
    item_id: Annotated[str | None, typer.Option("--id", help="Items like this one.")] = None,
    k: Annotated[int, typer.Option(min=1, max=1000)] = 10,
    data_dir: DataDir = Path("./labelpilot-data"),
) -> None:
    """Top-k items like a text or an item of the index."""
    from labelpilot.retrieval.service import text_vectors  # lazy: CLI start-up

    store = _store(data_dir)
    _, index = store.get(name)
    if (text is None) == (item_id is None):
        raise InputError("give --text or --id", field="text")
    query = index.vector(item_id) if item_id is not None else text_vectors([text or ""])[0]
    hits = index.search(query, k, exclude=[item_id] if item_id else [])[0]
    console.print_json(json.dumps(store.hits(hits), ensure_ascii=False))


@index_app.command("similar")
def similar(
    name: Annotated[str, typer.Argument(help="An index built with --from-project.")],
    task: Annotated[int, typer.Option("--task", min=1, help="The task the others are compared with.")],
    to_project: Annotated[int, typer.Option("--to-project", min=1, help="The Label Studio project of the tasks.")],
    k: Annotated[int | None, typer.Option(min=1, help="How many tasks get a score (default: all).")] = None,
    ls_url: LsUrl = None,
    ls_token: LsToken = None,
    data_dir: DataDir = Path("./labelpilot-data"),
) -> None:
    """Score the project's tasks by similarity to one task, as predictions of version similar-to-<task> (select
    it as the project's model version and sort the Data Manager by "Prediction score")."""
    from labelpilot.retrieval.project import client_for, similar_predictions  # lazy: CLI start-up

    _, index = _store(data_dir).get(name)
    preds = similar_predictions(index, task, k)
    created = client_for(ls_url, ls_token).import_predictions(to_project, preds)
    top = [{"task": p["task"], "score": p["score"]} for p in preds[:5]]
    console.print_json(json.dumps({"model_version": preds[0]["model_version"] if preds else None,
                                   "scored": len(preds), "created": created, "top": top}))


@index_app.command("dups")
def dups(
    name: Annotated[str, typer.Argument()],
    threshold: Annotated[float, typer.Option(help="Cosine from which two items are near-duplicates.")] = 0.95,
    output: Annotated[Path, typer.Option("-o", "--output", help="The CSV report.")] = Path("near-duplicates.csv"),
    k: Annotated[int, typer.Option(min=1, max=100, help="Neighbours looked at per item.")] = 10,
    data_dir: DataDir = Path("./labelpilot-data"),
) -> None:
    """Near-duplicate report: pairs above the threshold, in clusters, as CSV; prints the counts."""
    from labelpilot.retrieval.dups import write_report  # lazy: CLI start-up

    _, index = _store(data_dir).get(name)
    report = write_report(index, threshold, output, k=k)
    console.print_json(json.dumps({**report.to_dict(), "output": str(output)}))


@faq_app.command("train")
def faq_train(
    csv: Annotated[Path, typer.Argument(help="CSV/TSV/JSONL with query, question_id, answer (question optional).")],
    name: Annotated[str, typer.Option(help="FAQ name (served at /v1/faq/<name>/answer).")],
    query_col: str = "query",
    id_col: str = "question_id",
    answer_col: str = "answer",
    question_col: str = "question",
    no_answer_share: Annotated[float | None, typer.Option(
        min=0.0, max=0.99, help="Expected share of queries with no answer (default: the CSV's rows without a "
                                "question id, else 0.2); sets the no-answer threshold's trade-off.")] = None,
    data_dir: DataDir = Path("./labelpilot-data"),
) -> None:
    """Train a FAQ matcher (retrieval + classifier, "no answer" threshold tuned on held-out data)."""
    from labelpilot.retrieval.faq import FaqModel, FaqStore, read_faq_csv  # lazy: CLI start-up

    rows = read_faq_csv(csv, query_col=query_col, id_col=id_col, answer_col=answer_col, question_col=question_col)
    model = FaqModel.fit(rows, no_answer_share=no_answer_share)
    version = FaqStore(data_dir / "faq").register(name, model)
    console.print_json(json.dumps({"faq": name, "version": version, **model.metrics}))


@faq_app.command("answer")
def faq_answer(
    name: Annotated[str, typer.Argument()],
    query: Annotated[str, typer.Argument()],
    data_dir: DataDir = Path("./labelpilot-data"),
) -> None:
    """Answer one query with a trained FAQ."""
    from labelpilot.retrieval.faq import FaqStore  # lazy: CLI start-up

    _, model = FaqStore(data_dir / "faq").get(name)
    console.print_json(json.dumps(model.answer([query])[0], ensure_ascii=False))
