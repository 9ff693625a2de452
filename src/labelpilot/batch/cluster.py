"""Batch prediction on a Dask distributed cluster (``labelpilot predict --cluster ADDRESS``).

Why Dask distributed, not Ray: it is pure Python (BSD-3), ~10 MB with its dependencies against Ray's
~200 MB of native wheels, its scheduler and workers start as plain processes (``dask scheduler`` /
``dask worker ADDRESS`` on every machine, or a :class:`distributed.LocalCluster` for one machine), and the
futures API is all this needs: the work is embarrassingly parallel chunks of rows, not actors or a DAG.

How it runs:
- this process (the client) reads the input and cuts it into chunks exactly as the local path does
  (:class:`labelpilot.batch.predict._Reader`), submits each chunk to the cluster with a bounded number in
  flight (constant memory whatever the input size), and writes the results *in input order* through the
  same formatter and atomic writer (a temporary file renamed at the end): the output is the local path's,
  row for row and byte for byte;
- every worker process loads the model folder once (:func:`_worker_bundle`, cached per process and per
  folder state) — so the folder, and media files for image models, must be at the same path on every worker
  (a shared volume); the client sends only rows and the folder's path, never a credential;
- a chunk that fails on a worker fails the run with an error naming the chunk's first input line, and no
  output file is left behind.

``--cluster local:N`` starts a throw-away LocalCluster of N single-threaded worker processes on loopback.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from labelpilot.data.types import Example, Prediction
from labelpilot.errors import InputError
from labelpilot.models.bundle import MANIFEST, Bundle

_LOADED: dict[tuple[str, int], Bundle] = {}
_LOCK = threading.Lock()

Emit = Callable[[dict[str, list[Prediction]], list[dict[str, Any]]], None]


def _worker_bundle(bundle_dir: str) -> Bundle:
    """The model, loaded once per worker process (and again only when its manifest changes)."""
    # lazy: batch.inputs imports every family; a worker pays it once, on its first chunk
    from labelpilot.batch.inputs import load_folder

    stamp = (Path(bundle_dir) / MANIFEST).stat().st_mtime_ns
    key = (bundle_dir, stamp)
    with _LOCK:
        if key not in _LOADED:
            os.environ.setdefault("OMP_NUM_THREADS", "1")
            _LOADED.clear()
            _LOADED[key] = load_folder(Path(bundle_dir))
        return _LOADED[key]


def predict_chunk(bundle_dir: str, examples: dict[str, list[Example]]) -> dict[str, list[Prediction]]:
    """Run on a worker: every control's predictions for one chunk."""
    bundle = _worker_bundle(bundle_dir)
    return {name: bundle.models[name].predict(exs) for name, exs in examples.items()}


def _import_distributed() -> Any:
    try:
        # lazy: an optional extra (labelpilot[cluster]); the local path never needs it
        import distributed
    except ImportError as exc:
        raise InputError("--cluster needs Dask distributed: pip install 'labelpilot[cluster]'",
                         field="cluster") from exc
    return distributed


@contextmanager
def connect(address: str, *, timeout: float = 20.0) -> Iterator[Any]:
    """A :class:`distributed.Client` for ``tcp://host:port`` (an existing scheduler) or ``local:N`` (a
    LocalCluster of N worker processes on loopback, closed afterwards)."""
    distributed = _import_distributed()
    if address.startswith("local:"):
        try:
            n = int(address.split(":", 1)[1])
        except ValueError:
            n = 0
        if n < 1:
            raise InputError(f"--cluster {address!r}: local:N needs a number of workers N >= 1", field="cluster")
        with distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                                      dashboard_address=None, silence_logs=40) as cluster, \
                distributed.Client(cluster) as client:
            yield client
        return
    if "://" not in address:
        raise InputError(f"--cluster {address!r}: give a scheduler address like tcp://10.0.0.5:8786 or local:N",
                         field="cluster")
    try:
        client = distributed.Client(address, timeout=timeout)
    except (OSError, TimeoutError) as exc:
        raise InputError(f"--cluster {address}: cannot reach the Dask scheduler ({exc})", field="cluster") from exc
    try:
        if not client.scheduler_info().get("workers"):
            try:
                client.wait_for_workers(1, timeout=timeout)
            except TimeoutError as exc:
                raise InputError(f"--cluster {address}: no worker joined the scheduler within {timeout:g} s",
                                 field="cluster") from exc
        yield client
    finally:
        client.close()


def run_on_cluster(client: Any, bundle_dir: Path, batches: Iterator[tuple[dict[str, list[Example]], list[dict]]],
                   emit: Emit) -> None:
    """Submit every chunk, at most two per worker in flight, and emit the results in input order."""
    in_flight = max(2, 2 * len(client.scheduler_info().get("workers", {})))
    pending: list[tuple[Any, list[dict[str, Any]], int]] = []
    where = str(bundle_dir.resolve())

    def drain_one() -> None:
        fut, meta, first = pending.pop(0)
        try:
            preds = fut.result()
        except Exception as exc:
            raise InputError(f"rows {first + 1}-{first + len(meta)} (good rows, in input order) failed on the "
                             f"cluster: {type(exc).__name__}: {exc}", field="cluster") from exc
        emit(preds, meta)

    first = 0
    for exs, meta in batches:
        pending.append((client.submit(predict_chunk, where, exs, pure=False), meta, first))
        first += len(meta)
        if len(pending) >= in_flight:
            drain_one()
    while pending:
        drain_one()
