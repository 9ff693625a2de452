"""The text-encoder contract, its error type, and the vector cache every encoder shares.

An encoder turns texts into L2-normalised float32 vectors. :class:`CachingEncoder` adds what every backend
needs around its raw ``_encode_batch``: texts de-duplicated within a call, an in-process LRU cache keyed by a
hash of the text (bounded by entries and bytes), batching, and a lock so that concurrent requests neither
run the session twice for the same text nor corrupt the cache. ``functools.lru_cache`` is not used because
it cannot be bounded by bytes nor looked up for a whole batch at once.

:func:`persisting` makes every ``encode`` inside a ``with`` block behave as ``encode(..., persist=True)``: the
seed-003 operator (``labelpilot loop``) predicts the same unlabelled pool round after round, each round a
fresh process, so its pool vectors are worth keeping on disk (a 50k pool is ~35 CPU seconds of encoding on
the 2-core machine, reading it back ~0.5 s). The model code between the caller and the encoder needs no
``persist`` argument for that.
"""

from __future__ import annotations

import contextvars
import hashlib
import itertools
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol, runtime_checkable

import numpy as np

from labelpilot.errors import LabelpilotError

#: Longer texts are cut to this many characters before encoding: the encoder's cost and memory grow with
#: length (a 500-character text costs ~16 ms of CPU, a 40-character one ~1.4 ms), and the opening of a text
#: carries most of what a classifier of the whole needs.
MAX_CHARS = 256
#: A session run gets at most ``batch_size`` texts and about this many characters: activation memory grows
#: with batch x length (64 texts of 500 characters took 640 MB more, 16 of them 106 MB).
MAX_BATCH_CHARS = 3000


_PERSIST: contextvars.ContextVar[bool] = contextvars.ContextVar("labelpilot_encoder_persist", default=False)


@contextmanager
def persisting() -> Iterator[None]:
    """Inside the block, ``encode`` reads and writes the on-disk vector store as with ``persist=True`` (in
    this thread or task; a thread started inside does not inherit it)."""
    token = _PERSIST.set(True)
    try:
        yield
    finally:
        _PERSIST.reset(token)


def persist_requested() -> bool:
    """Whether the caller is inside :func:`persisting` (other per-text caches on disk follow it too)."""
    return _PERSIST.get()


class EncoderUnavailable(LabelpilotError):
    """The text encoder cannot be loaded (not installed, disabled, or a broken model file).

    Callers fall back to what works without it (the TF-IDF model), and ``/setup`` shows the message."""

    status_code = 503


@runtime_checkable
class TextEncoder(Protocol):
    name: str  # e.g. "use-multilingual-v3-int8"; stored with models that used it
    dim: int

    def encode(self, texts: Sequence[str], *, persist: bool = False) -> np.ndarray:
        """(len(texts), dim) float32, each row L2-normalised (an empty text gets a valid vector too).
        ``persist``: also look up and keep the vectors in the on-disk store (training runs)."""
        ...


def text_key(text: str) -> bytes:
    """The cache key of a text: 16 bytes of BLAKE2b (collisions are negligible at any realistic size)."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class VectorCache:
    """A thread-safe LRU map text-hash -> vector, bounded by entry count and by bytes."""

    def __init__(self, max_entries: int = 200_000, max_bytes: int = 128 * 2**20) -> None:
        self.max_entries = max(0, int(max_entries))
        self.max_bytes = max(0, int(max_bytes))
        self._data: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._data)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def get_many(self, keys: Sequence[bytes]) -> list[np.ndarray | None]:
        with self._lock:
            out: list[np.ndarray | None] = []
            for k in keys:
                v = self._data.get(k)
                if v is not None:
                    self._data.move_to_end(k)
                out.append(v)
            found = sum(v is not None for v in out)
            self.hits += found
            self.misses += len(out) - found
            return out

    def put_many(self, keys: Sequence[bytes], vectors: np.ndarray) -> None:
        if self.max_entries == 0 or self.max_bytes == 0:
            return
        with self._lock:
            for k, v in zip(keys, vectors, strict=True):
                old = self._data.pop(k, None)
                if old is not None:
                    self._bytes -= old.nbytes
                row = np.array(v, dtype=np.float32, copy=True)  # own the memory: never a view of a batch
                self._data[k] = row
                self._bytes += row.nbytes
            while self._data and (len(self._data) > self.max_entries or self._bytes > self.max_bytes):
                _, dropped = self._data.popitem(last=False)
                self._bytes -= dropped.nbytes

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._bytes = 0


def l2_normalise(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    np.divide(v, norms, out=v, where=norms > 1e-12)
    return v


class CachingEncoder:
    """Base class: batching, de-duplication and the vector cache around ``_encode_batch``."""

    name: str = "encoder"
    dim: int = 0

    def __init__(self, *, batch_size: int = 32, cache: VectorCache | None = None) -> None:
        self.batch_size = max(1, int(batch_size))
        self.cache = cache if cache is not None else VectorCache()
        self.store: Any = None  # an encoders.store.VectorStore shared between processes, or None
        self.encoded = 0  # texts run through the model (not found in the cache or the store)
        self._run_lock = threading.Lock()

    def _encode_batch(self, texts: list[str]) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def encode(self, texts: Sequence[str], *, persist: bool = False) -> np.ndarray:
        prepared = [_prepare(t) for t in texts]
        out = np.empty((len(prepared), self.dim), dtype=np.float32)
        if not prepared:
            return out
        keys = [text_key(t) for t in prepared]
        cached = self.cache.get_many(keys)
        todo: dict[bytes, list[int]] = {}
        for i, (k, v) in enumerate(zip(keys, cached, strict=True)):
            if v is None:
                todo.setdefault(k, []).append(i)
            else:
                out[i] = v
        store = self.store if persist or _PERSIST.get() else None
        if todo and store is not None:
            found, matrix = store.get_matrix(list(todo))
            if found:
                self.cache.put_many(found, matrix)
                where = [todo.pop(k) for k in found]
                counts = np.fromiter(map(len, where), dtype=np.int64, count=len(where))
                rows = np.fromiter(itertools.chain.from_iterable(where), dtype=np.int64, count=int(counts.sum()))
                out[rows] = np.repeat(matrix, counts, axis=0)
        if todo:
            uniq = list(todo)
            first = [todo[k][0] for k in uniq]
            vectors = self._run([prepared[i] for i in first])
            self.encoded += len(uniq)
            self.cache.put_many(uniq, vectors)
            if store is not None:
                store.put_many(uniq, vectors)
            for k, v in zip(uniq, vectors, strict=True):
                out[todo[k]] = v
        return out

    def _run(self, texts: list[str]) -> np.ndarray:
        """Encode in batches of similar length (less padding), bounded by count and characters."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        batches: list[list[int]] = [[]]
        chars = 0
        for i in order:
            n = len(texts[i]) + 1
            if batches[-1] and (len(batches[-1]) >= self.batch_size or chars + n > MAX_BATCH_CHARS):
                batches.append([])
                chars = 0
            batches[-1].append(i)
            chars += n
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        with self._run_lock:  # one session run at a time: the threads of one run already use the cores
            for batch in batches:
                out[batch] = np.asarray(self._encode_batch([texts[i] for i in batch]), np.float32)
        return l2_normalise(out)


def _prepare(text: object) -> str:
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    text = " ".join(text.split())[:MAX_CHARS]
    return text.encode("utf-8", "replace").decode("utf-8")  # a lone surrogate becomes "?", not an error
