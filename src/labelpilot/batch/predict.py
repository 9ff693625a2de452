"""Batch prediction (:func:`predict_file`): a file or media folder streamed through every control of a
bundle into an output file, in a bounded number of chunks (optionally in worker processes).

The unprefixed output columns (``predictions``, ``confidence``, ...) are the first control's, as for a
single-control model, and a multi-control model adds ``<control>.predictions``, ... for each of its controls."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from labelpilot.batch.cluster import connect, run_on_cluster
from labelpilot.batch.inputs import (
    Columns,
    _row_example,
    is_media_input,
    load_folder,
    media_rows,
    model_folder,
)
from labelpilot.data.labelstudio import IMAGE_KINDS
from labelpilot.data.types import Example, Prediction
from labelpilot.errors import InputError
from labelpilot.files import LABEL_SEP, Row, RowWriter, read_rows
from labelpilot.models.bundle import Bundle
from labelpilot.registry import Registry, parse_model_ref
from labelpilot.schema import ControlSpec, TaskKind

_WORKER_BUNDLE: Bundle | None = None


def _init_worker(bundle_dir: str) -> None:
    global _WORKER_BUNDLE
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _WORKER_BUNDLE = load_folder(Path(bundle_dir))


def _predict_controls(bundle: Bundle, examples: dict[str, list[Example]]) -> dict[str, list[Prediction]]:
    """Every control's predictions for its examples (control name -> examples of one chunk)."""
    return {name: bundle.models[name].predict(exs) for name, exs in examples.items()}


def _predict_chunk(examples: dict[str, list[Example]]) -> dict[str, list[Prediction]]:
    assert _WORKER_BUNDLE is not None, "the worker initializer loads the bundle"
    return _predict_controls(_WORKER_BUNDLE, examples)


@dataclass
class PredictStats:
    rows: int = 0
    predicted: int = 0
    bad_rows: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _format(pred: Prediction, control: ControlSpec, outputs: set[str], threshold: float | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    probs = pred.probs or {}
    labels = list(pred.labels)
    if threshold is not None and probs:
        labels = [lab for lab in labels if probs.get(lab, 0.0) >= threshold]
        if control.multiple:
            labels = sorted((lab for lab, p in probs.items() if p >= threshold), key=lambda k: -probs[k])
    if "predictions" in outputs:
        if control.kind is TaskKind.TEXT_SPANS:
            out["predictions"] = [{"start": s.start, "end": s.end, "label": s.label, "score": s.score,
                                   "text": s.text} for s in pred.spans]
        else:
            out["predictions"] = LABEL_SEP.join(labels)
        out["confidence"] = round(float(pred.score), 6)
    if "probabilities" in outputs and probs:
        out["probabilities"] = {k: round(float(v), 6) for k, v in probs.items()}
    if "logits" in outputs:
        logits = pred.logits or {k: round(math.log(max(v, 1e-12)), 6) for k, v in probs.items()}
        out["logits"] = {k: round(float(v), 6) for k, v in logits.items()}
    if pred.error:
        out["error"] = pred.error
    return out


def _bundle_dir(registry: Registry | None, ref: str | Path) -> Path:
    """The bundle folder of a model folder or of a registry model ``NAME[@VERSION]``."""
    folder = model_folder(ref)
    if folder is not None:
        return folder
    name, version = parse_model_ref(str(ref))
    if registry is None:
        raise InputError(f"{ref!r} is not a model folder and no registry was given", field="model")
    return registry.get(name, version).path


def _output_fields(outputs: Sequence[str]) -> tuple[set[str], list[str]]:
    """The requested outputs (checked) and the per-control fields they give, in column order."""
    out_set = set(outputs)
    unknown = out_set - {"predictions", "probabilities", "logits"}
    if unknown:
        raise InputError(f"unknown --outputs {sorted(unknown)}; use predictions, probabilities, logits",
                         field="outputs")
    fields = [c for c in ("predictions", "confidence") if "predictions" in out_set]
    fields += [c for c in ("probabilities", "logits") if c in out_set] + ["error"]
    return out_set, fields


@dataclass
class _Reader:
    """Reads the input into chunks of per-control examples plus each row's pass-through values (id, appended
    columns), counting rows and collecting malformed ones in ``stats``."""

    path: Path
    controls: list[ControlSpec]
    cols: Columns
    append_cols: Sequence[str]
    fmt: str | None
    strict: bool
    chunk: int
    media_input: bool
    own_col: bool  # text controls label different objects: each reads its own column
    stats: PredictStats

    def row_examples(self, row: Row) -> dict[str, Example]:
        out = {}
        for control in self.controls:
            kind = "image" if control.kind in IMAGE_KINDS else "text"
            own = self.own_col and kind == "text" and control.value_key in row.values
            out[control.name] = _row_example(row, replace(self.cols, text=control.value_key) if own else self.cols,
                                             kind)
        return out

    def batches(self) -> Iterator[tuple[dict[str, list[Example]], list[dict[str, Any]]]]:
        path, cols, stats = self.path, self.cols, self.stats
        exs: dict[str, list[Example]] = {c.name: [] for c in self.controls}
        meta: list[dict[str, Any]] = []
        for row in media_rows(path, cols) if self.media_input else read_rows(path, self.fmt):
            stats.rows += 1
            if row.error:
                msg = f"{path.name}:{row.line}: {row.error}"
            else:
                try:
                    for name, ex in self.row_examples(row).items():
                        exs[name].append(ex)
                    meta.append({c: row.values.get(c) for c in self.append_cols} | (
                        {"id": row.values.get(cols.id)} if cols.id else {}))
                    msg = None
                except ValueError as exc:
                    msg = f"{path.name}:{row.line}: {exc}"
            if msg:
                stats.bad_rows.append(msg)
                if self.strict:
                    raise InputError(f"malformed row {msg} (--strict)", field="input")
            if len(meta) >= self.chunk:
                yield exs, meta
                exs, meta = {c.name: [] for c in self.controls}, []
        if meta:
            yield exs, meta


@dataclass
class _Emitter:
    """Formats one chunk's predictions into output rows and writes them."""

    writer: RowWriter
    controls: list[ControlSpec]
    out_set: set[str]
    threshold: float | None
    stats: PredictStats
    on_progress: Callable[[int], None] | None

    def __call__(self, preds: dict[str, list[Prediction]], meta: list[dict[str, Any]]) -> None:
        controls = self.controls
        rows = []
        for i, m in enumerate(meta):
            formatted = {c.name: _format(preds[c.name][i], c, self.out_set, self.threshold) for c in controls}
            row = m | formatted[controls[0].name]
            if len(controls) > 1:
                row |= {f"{name}.{k}": v for name, f in formatted.items() for k, v in f.items()}
            rows.append(row)
        self.writer.write(rows)
        self.stats.predicted += len(meta)
        if self.on_progress:
            self.on_progress(self.stats.predicted)


def _run(bundle: Bundle, bundle_dir: Path, reader: _Reader, emit: _Emitter, workers: int,
         cluster: str | None = None, cluster_timeout: float = 20.0) -> None:
    """Predict every chunk, in this process, in ``workers`` processes with a bounded number in flight, or on
    a Dask cluster (:mod:`.cluster`)."""
    if cluster:
        with connect(cluster, timeout=cluster_timeout) as client:
            run_on_cluster(client, bundle_dir, reader.batches(), emit)
        return
    if workers <= 1:
        for exs, meta in reader.batches():
            emit(_predict_controls(bundle, exs), meta)
        return
    with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker,
                             initargs=(str(bundle_dir),)) as pool:
        pending: list[tuple[Future, list[dict[str, Any]]]] = []
        for exs, meta in reader.batches():
            pending.append((pool.submit(_predict_chunk, exs), meta))
            if len(pending) > 2 * workers:  # bounded: constant memory whatever the input size
                fut, m = pending.pop(0)
                emit(fut.result(), m)
        for fut, m in pending:
            emit(fut.result(), m)


def predict_file(
    registry: Registry | None,
    ref: str | Path,
    path: Path,
    output: Path,
    *,
    cols: Columns | None = None,
    outputs: Sequence[str] = ("predictions", "probabilities"),
    append_cols: Sequence[str] = (),
    threshold: float | None = None,
    fmt: str | None = None,
    out_fmt: str | None = None,
    strict: bool = False,
    workers: int = 2,
    chunk: int = 4096,
    on_progress: Callable[[int], None] | None = None,
    cluster: str | None = None,
    cluster_timeout: float = 20.0,
) -> PredictStats:
    """Stream ``path`` through a model into ``output`` (constant memory: a bounded number of chunks in
    flight). Malformed rows are reported with their line number and skipped, or stop everything with
    ``strict`` (then no output file is left behind). ``cluster`` (``tcp://host:port`` or ``local:N``) runs
    the chunks on Dask workers instead of local processes; the output is the same."""
    cols = cols or Columns()
    bundle_dir = _bundle_dir(registry, ref)
    bundle = load_folder(bundle_dir)
    controls = [bundle.schema.control(name) for name in bundle.models]
    # text controls read --text-col; only when they label different objects does each read its own column
    own_col = len({c.to_name for c in controls if c.kind not in IMAGE_KINDS}) > 1
    media_input = any(c.kind in IMAGE_KINDS for c in controls) and is_media_input(path)
    if media_input and not cols.id:
        cols = Columns(**{**cols.__dict__, "id": "id"})  # a folder of files: say which file each row is
    out_set, fields = _output_fields(outputs)
    columns = [c for c in ("id",) if cols.id] + list(append_cols) + fields
    if len(controls) > 1:  # the unprefixed columns stay the first control's; every control also has its own
        columns += [f"{c.name}.{f}" for c in controls for f in fields]
    writer = RowWriter(output, columns, out_fmt)
    stats = PredictStats()
    t0 = time.perf_counter()
    reader = _Reader(path, controls, cols, append_cols, fmt, strict, chunk, media_input, own_col, stats)
    emit = _Emitter(writer, controls, out_set, threshold, stats, on_progress)
    try:
        _run(bundle, bundle_dir, reader, emit, workers, cluster, cluster_timeout)
    except BaseException:
        writer.abort()
        raise
    writer.close()
    stats.seconds = time.perf_counter() - t0
    return stats
