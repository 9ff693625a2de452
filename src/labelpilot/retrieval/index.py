"""A vector index with string ids on faiss: exact below a size threshold, HNSW above it; saved as a folder.

Why faiss (faiss-cpu, MIT, Meta) over hnswlib and usearch: all three give HNSW with inner product and
deletion of some kind, but faiss also has the exact flat index behind the same interface (so a small index
is exact and a large one approximate with one code path), IVF/PQ for when memory matters, ID selectors at
search time (deleted items are filtered inside the graph walk), and a stable on-disk format with 1.x wheels
for every CPython on Linux/macOS/Windows. hnswlib's last release is from 2023 and it has no exact index;
usearch is fast and small but younger, and its file format changed between majors. faiss-cpu's wheel
(~30 MB with OpenBLAS) is the largest of the three, which the ``retrieval`` extra keeps optional.

Layout of an index: ``IndexIDMap2`` over ``IndexFlatIP`` (exact) or ``IndexHNSWFlat`` (approximate, inner
product), on L2-normalised vectors, so a score is a cosine in [-1, 1]. faiss labels are int64 counters; the
string id of each label lives here. Removal: the flat index removes in place (``IndexIDMap2.remove_ids``);
HNSW graphs cannot drop a node, so a removed label is a *tombstone* filtered at search time by an
``IDSelectorNot`` and the graph is rebuilt from the live vectors once tombstones pass 25 % of it. Crossing
``hnsw_min`` items turns an exact index into HNSW (one rebuild).

A saved index is a folder: ``index.faiss`` (``faiss.write_index``), ``ids.json`` (labels, string ids, short
per-item payloads, tombstones) and ``meta.json`` (kind, dim, type, encoder, format version).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from labelpilot.errors import InputError, LabelpilotError, NotFoundError

FORMAT_VERSION = 1
INDEX_FILE = "index.faiss"
IDS_FILE = "ids.json"
META_FILE = "meta.json"
#: an index of at least this many items is HNSW (``$LABELPILOT_INDEX_HNSW_MIN``); below it, exact search.
#: Exact search reads every vector: at 50k 512-d items p50 96 ms on the busy 2-core machine, HNSW 4 ms
#: (bench/RESULTS.md "Similarity search"), so ~10k items (~20 ms) is where exact stops being cheap.
HNSW_MIN = int(os.environ.get("LABELPILOT_INDEX_HNSW_MIN", "10000") or 10000)
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 96
TOMBSTONE_SHARE = 0.25
MAX_ID_CHARS = 256
INSTALL_HINT = "similarity search needs faiss: pip install 'labelpilot[retrieval]' (faiss-cpu)"


def require_faiss() -> Any:
    """Import faiss with a bounded OpenMP pool (``$LABELPILOT_FAISS_THREADS``, default min(2, cores))."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # no spinning threads on a shared machine
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise LabelpilotError(INSTALL_HINT) from exc
    raw = os.environ.get("LABELPILOT_FAISS_THREADS", "")
    threads = int(raw) if raw.isdigit() and int(raw) > 0 else max(1, min(2, os.cpu_count() or 1))
    faiss.omp_set_num_threads(threads)
    return faiss


def normalise(vectors: Any, dim: int, field: str = "vector") -> np.ndarray:
    """(n, dim) float32 rows of unit length; a wrong shape, NaN/inf or a zero vector is a 422 naming ``field``."""
    try:
        x = np.array(vectors, dtype=np.float32, ndmin=2)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{field}: not a list of numbers", field=field) from exc
    if x.ndim != 2 or x.shape[1] != dim:
        got = x.shape[-1] if x.ndim == 2 else x.shape
        raise InputError(f"{field}: a vector of this index has {dim} numbers, not {got}", field=field)
    if not np.isfinite(x).all():
        raise InputError(f"{field}: NaN or infinite numbers", field=field)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if (norms <= 1e-12).any():
        raise InputError(f"{field}: a zero vector has no direction", field=field)
    return np.ascontiguousarray(x / norms, dtype=np.float32)


def check_id(value: Any, field: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value or len(value) > MAX_ID_CHARS:
        raise InputError(f"{field}: an id is a string of 1 to {MAX_ID_CHARS} characters", field=field)
    return value


@dataclass(frozen=True, slots=True)
class Hit:
    id: str
    score: float
    payload: dict[str, Any]


class VectorIndex:
    """String ids -> unit vectors, searchable by inner product. Thread-safe (one lock per index)."""

    def __init__(self, kind: str, dim: int, *, encoder: str | None = None, hnsw_min: int | None = None) -> None:
        if dim <= 0:
            raise InputError("an index needs a vector size > 0", field="dim")
        self.kind = kind  # "text", "image" or "vector"
        self.dim = int(dim)
        self.encoder = encoder  # name of the model that made the vectors (None: given as numbers)
        self.hnsw_min = HNSW_MIN if hnsw_min is None else max(1, int(hnsw_min))
        self.type = "flat"
        self._labels: dict[str, int] = {}  # string id -> faiss label
        self._ids: dict[int, str] = {}  # faiss label -> string id (live items only)
        self._payloads: dict[int, dict[str, Any]] = {}
        self._tombstones: set[int] = set()
        self._next = 0
        self.lock = threading.RLock()
        self._index = self._new("flat")

    # -- building ---------------------------------------------------------------------------------
    def _new(self, kind: str) -> Any:
        faiss = require_faiss()
        if kind == "hnsw":
            inner = faiss.IndexHNSWFlat(self.dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
            inner.hnsw.efSearch = HNSW_EF_SEARCH
        else:
            inner = faiss.IndexFlatIP(self.dim)
        return faiss.IndexIDMap2(inner)

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, item_id: str) -> bool:
        return item_id in self._labels

    def ids(self) -> list[str]:
        with self.lock:
            return [self._ids[lab] for lab in sorted(self._ids)]

    def add(self, ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[dict[str, Any]] | None = None) -> int:
        """Add (or replace, for a known id) items; ``vectors`` must already be normalised (n, dim)."""
        if len(ids) != len(vectors):
            raise InputError("as many ids as vectors are needed", field="items")
        if len(set(ids)) != len(ids):
            raise InputError("the same id twice in one request", field="items")
        with self.lock:
            self.remove([i for i in ids if i in self._labels])
            labels = np.arange(self._next, self._next + len(ids), dtype=np.int64)
            self._next += len(ids)
            if self.type == "flat" and len(self._ids) + len(ids) >= self.hnsw_min:
                self._rebuild("hnsw")
            self._index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), labels)
            for lab, item_id, payload in zip(labels.tolist(), ids, payloads or [{}] * len(ids), strict=True):
                self._labels[item_id] = lab
                self._ids[lab] = item_id
                if payload:
                    self._payloads[lab] = payload
            return len(ids)

    def remove(self, ids: Sequence[str]) -> list[str]:
        """Remove items; returns the ids that were not in the index."""
        missing: list[str] = []
        with self.lock:
            labels = []
            for item_id in ids:
                lab = self._labels.pop(item_id, None)
                if lab is None:
                    missing.append(item_id)
                    continue
                del self._ids[lab]
                self._payloads.pop(lab, None)
                labels.append(lab)
            if labels and self.type == "flat":
                self._index.remove_ids(np.asarray(labels, dtype=np.int64))
            elif labels:
                self._tombstones.update(labels)
                if len(self._tombstones) > TOMBSTONE_SHARE * self._index.ntotal:
                    self._rebuild("hnsw")
        return missing

    def _rebuild(self, kind: str) -> None:
        """A new faiss index of ``kind`` from the live vectors (drops tombstones)."""
        labels = np.asarray(sorted(self._ids), dtype=np.int64)
        vectors = self._vectors(labels)
        self._index = self._new(kind)
        self.type = kind
        self._tombstones.clear()
        if len(labels):
            self._index.add_with_ids(vectors, labels)

    def _vectors(self, labels: np.ndarray) -> np.ndarray:
        out = np.empty((len(labels), self.dim), dtype=np.float32)
        for row, lab in enumerate(labels.tolist()):
            out[row] = self._index.reconstruct(int(lab))
        return out

    def items(self) -> tuple[list[str], np.ndarray, list[dict[str, Any]]]:
        """Every live item: ids, their vectors (n, dim) and payloads, in insertion order."""
        with self.lock:
            labels = np.asarray(sorted(self._ids), dtype=np.int64)
            return ([self._ids[int(lab)] for lab in labels], self._vectors(labels),
                    [self._payloads.get(int(lab), {}) for lab in labels])

    # -- searching --------------------------------------------------------------------------------
    def vector(self, item_id: str) -> np.ndarray:
        with self.lock:
            lab = self._labels.get(item_id)
            if lab is None:

                raise NotFoundError(f"no item {item_id!r} in this index", field="id")
            return self._index.reconstruct(lab).reshape(1, -1)

    def search(self, queries: np.ndarray, k: int, *, exclude: Sequence[str] = ()) -> list[list[Hit]]:
        """Top-``k`` live items per query row (``exclude``: ids never returned, e.g. the query item)."""
        faiss = require_faiss()
        with self.lock:
            if not self._ids:
                return [[] for _ in range(len(queries))]
            skip = set(self._tombstones) | {self._labels[i] for i in exclude if i in self._labels}
            fetch = min(k + len(exclude), len(self._ids) + len(exclude))
            params = None
            if skip:
                sel = faiss.IDSelectorNot(faiss.IDSelectorBatch(np.asarray(sorted(skip), dtype=np.int64)))
                params = (faiss.SearchParametersHNSW(sel=sel, efSearch=max(HNSW_EF_SEARCH, fetch))
                          if self.type == "hnsw" else faiss.SearchParameters(sel=sel))
            elif self.type == "hnsw":
                params = faiss.SearchParametersHNSW(efSearch=max(HNSW_EF_SEARCH, fetch))
            scores, labels = self._index.search(np.ascontiguousarray(queries, dtype=np.float32), fetch,
                                                params=params)
            out: list[list[Hit]] = []
            for row_s, row_l in zip(scores, labels, strict=True):
                hits = [Hit(self._ids[int(lab)], float(s), self._payloads.get(int(lab), {}))
                        for s, lab in zip(row_s, row_l, strict=True)
                        if lab >= 0 and int(lab) in self._ids and int(lab) not in skip]
                out.append(hits[:k])
            return out

    # -- saving -----------------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "dim": self.dim, "type": self.type, "count": len(self._ids),
                "encoder": self.encoder, "hnsw_min": self.hnsw_min}

    def save(self, directory: Path) -> None:
        faiss = require_faiss()
        directory.mkdir(parents=True, exist_ok=True)
        with self.lock:
            faiss.write_index(self._index, str(directory / INDEX_FILE))
            labels = sorted(self._ids)
            ids = {"labels": labels, "ids": [self._ids[lab] for lab in labels],
                   "payloads": {str(lab): p for lab, p in self._payloads.items()},
                   "tombstones": sorted(self._tombstones), "next": self._next}
            (directory / IDS_FILE).write_text(json.dumps(ids, ensure_ascii=False), encoding="utf-8")
            meta = {"format": FORMAT_VERSION, **self.describe()}
            (directory / META_FILE).write_text(json.dumps(meta, ensure_ascii=False, indent=1), encoding="utf-8")

    @classmethod
    def load(cls, directory: Path) -> VectorIndex:
        faiss = require_faiss()
        meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT_VERSION:
            raise LabelpilotError(f"{directory}: index format {meta.get('format')!r}, this labelpilot reads "
                                  f"{FORMAT_VERSION}")
        ids = json.loads((directory / IDS_FILE).read_text(encoding="utf-8"))
        self = cls(meta["kind"], meta["dim"], encoder=meta.get("encoder"), hnsw_min=meta.get("hnsw_min"))
        self._index = faiss.read_index(str(directory / INDEX_FILE))
        self.type = meta["type"]
        self._ids = {int(lab): i for lab, i in zip(ids["labels"], ids["ids"], strict=True)}
        self._labels = {i: lab for lab, i in self._ids.items()}
        self._payloads = {int(lab): p for lab, p in ids.get("payloads", {}).items()}
        self._tombstones = set(ids.get("tombstones", []))
        self._next = int(ids["next"])
        return self
