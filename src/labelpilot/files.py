"""Read and write example files of any size: CSV/TSV, JSON Lines, Label Studio JSON exports, Parquet.

Readers stream rows (constant memory); each row carries its line number so a malformed row can be reported
precisely. Multi-label values are separated by ``|`` (:data:`LABEL_SEP`, :func:`split_labels`). This is the
one reader of tabular files: batch train/predict, ``labelpilot keywords`` and the seed-003 CSVs of
``labelpilot loop`` (``loop/files.py``, a checking layer on top) all read through :func:`read_rows`.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labelpilot.errors import InputError

LABEL_SEP = "|"
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


@dataclass(slots=True)
class Row:
    line: int  # 1-based line (CSV: counting the header as line 1) or record number
    values: dict[str, Any]
    error: str | None = None  # the row could not be parsed


def file_format(path: Path, fmt: str | None = None) -> str:
    if fmt:
        return fmt.lower()
    name = path.name.lower()
    for suffix, kind in ((".csv", "csv"), (".tsv", "tsv"), (".jsonl", "jsonl"), (".ndjson", "jsonl"),
                         (".json", "json"), (".parquet", "parquet"), (".txt", "txt")):
        if name.endswith(suffix) or name.endswith(suffix + ".gz"):
            return kind
    raise InputError(f"{path}: unknown file type (use .csv, .tsv, .jsonl, .json or .parquet, or --format)",
                     field="input")


def _open_text(path: Path) -> io.TextIOBase:
    if path.name.endswith(".gz"):
        import gzip

        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", newline="")
    return path.open("r", encoding="utf-8-sig", newline="")


def read_rows(
    path: Path | str, fmt: str | None = None, *, on_header: Callable[[list[str]], None] | None = None
) -> Iterator[Row]:
    """Stream the rows of a file as dicts. Unparseable rows come back with ``error`` set (never raised),
    so a caller can report them by line and go on, or stop (``--strict``). A CSV/TSV row's line is the
    line it starts on; ``on_header`` gets a CSV/TSV file's header (stripped names) before any row (it may
    raise to refuse the file); a file without a header line yields nothing and calls no ``on_header``."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file", field="input")
    kind = file_format(path, fmt)
    if kind in ("csv", "tsv"):
        with _open_text(path) as fh:
            reader = csv.reader(fh, delimiter="\t" if kind == "tsv" else ",")
            header = next(reader, None)
            if not header:
                return
            header = [h.strip() for h in header]
            if on_header is not None:
                on_header(header)
            while True:
                line = reader.line_num + 1  # a quoted cell may hold newlines: the row starts here
                values = next(reader, None)
                if values is None:
                    break
                if not values:
                    continue
                if len(values) != len(header):
                    yield Row(line, {}, f"{len(values)} fields where the header has {len(header)}")
                    continue
                yield Row(line, dict(zip(header, values, strict=True)))
    elif kind == "jsonl":
        with _open_text(path) as fh:
            for line, text in enumerate(fh, 1):
                if not text.strip():
                    continue
                try:
                    value = json.loads(text)
                except json.JSONDecodeError as exc:
                    yield Row(line, {}, f"not JSON: {exc.msg}")
                    continue
                if not isinstance(value, dict):
                    yield Row(line, {}, "not a JSON object")
                    continue
                yield Row(line, value)
    elif kind == "json":
        with _open_text(path) as fh:
            try:
                data = json.load(fh)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}: not JSON ({exc.msg} at line {exc.lineno})", field="input") from exc
        if not isinstance(data, list):
            raise InputError(f"{path}: a JSON file must hold a list (e.g. a Label Studio export)", field="input")
        for i, value in enumerate(data, 1):
            if isinstance(value, dict):
                yield Row(i, value)
            else:
                yield Row(i, {}, "not a JSON object")
    elif kind == "txt":
        with _open_text(path) as fh:
            for line, text in enumerate(fh, 1):
                if text.strip():
                    yield Row(line, {"text": text.rstrip("\r\n")})
    elif kind == "parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as exc:
            raise InputError("reading Parquet needs pyarrow: pip install 'labelpilot[parquet]'", field="input") from exc
        n = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
            for value in batch.to_pylist():
                n += 1
                yield Row(n, value)
    else:
        raise InputError(f"{path}: unsupported format {kind!r}", field="format")


def split_labels(value: Any) -> tuple[str, ...]:
    """The labels of a cell: ``"a|b| c"`` (or a list) -> ``("a", "b", "c")``; order kept, blanks and
    repeats dropped."""
    if value is None:
        return ()
    parts = value if isinstance(value, list | tuple) else str(value).split(LABEL_SEP)
    return tuple(dict.fromkeys(p for p in (str(v).strip() for v in parts) if p))


class RowWriter:
    """Writes dict rows as CSV, JSONL or Parquet, atomically (a temporary file renamed at close)."""

    def __init__(self, path: Path | str, columns: list[str], fmt: str | None = None) -> None:
        self.path = Path(path)
        self.kind = file_format(self.path, fmt) if fmt or self.path.suffix else "csv"
        self.columns = columns
        self.tmp = self.path.with_name(f".{self.path.name}.part")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._pq_writer = None
        self._pending: list[dict[str, Any]] = []
        if self.kind in ("csv", "tsv"):
            self._fh = self.tmp.open("w", encoding="utf-8", newline="")
            self._csv = csv.writer(self._fh, delimiter="\t" if self.kind == "tsv" else ",")
            self._csv.writerow(columns)
        elif self.kind == "jsonl":
            self._fh = self.tmp.open("w", encoding="utf-8")
        elif self.kind == "parquet":
            try:
                import pyarrow  # noqa: F401
            except ImportError as exc:
                raise InputError("writing Parquet needs pyarrow: pip install 'labelpilot[parquet]'",
                                 field="output") from exc
        else:
            raise InputError(f"{self.path}: cannot write {self.kind!r}", field="output")

    def write(self, rows: list[dict[str, Any]]) -> None:
        if self.kind in ("csv", "tsv"):
            for row in rows:
                self._csv.writerow([_cell(row.get(c)) for c in self.columns])
        elif self.kind == "jsonl":
            for row in rows:
                self._fh.write(json.dumps({c: row.get(c) for c in self.columns}, ensure_ascii=False) + "\n")
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pylist([{c: _pq_cell(row.get(c)) for c in self.columns} for row in rows])
            if self._pq_writer is None:
                self._pq_writer = pq.ParquetWriter(self.tmp, table.schema)
            self._pq_writer.write_table(table.cast(self._pq_writer.schema))

    def close(self) -> None:
        if self._pq_writer is not None:
            self._pq_writer.close()
        elif hasattr(self, "_fh"):
            self._fh.close()
        if self.kind == "parquet" and self._pq_writer is None:
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.table({c: pa.array([], pa.string()) for c in self.columns}), self.tmp)
        self.tmp.replace(self.path)

    def abort(self) -> None:
        if hasattr(self, "_fh"):
            self._fh.close()
        if self._pq_writer is not None:
            self._pq_writer.close()
        self.tmp.unlink(missing_ok=True)


def _cell(value: Any) -> Any:
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return "" if value is None else value


def _pq_cell(value: Any) -> Any:
    return json.dumps(value, ensure_ascii=False) if isinstance(value, dict | list) else value
