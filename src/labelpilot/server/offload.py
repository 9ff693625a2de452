"""Work that must not run on the event loop: model predictions and bulk webhook storage.

Each kind of work has its own *lane*: a small thread pool plus a bounded number of waiting jobs. When a lane
is full the request is refused at once with ``503`` and ``Retry-After`` (JSON body), instead of queueing
without end. ``/health`` only needs the event loop, so it answers while every lane is busy.

Why not ``anyio.to_thread`` / ``run_in_threadpool``: their capacity limiter queues waiting callers without a
bound and shares one pool between all kinds of work, so a burst of bulk webhooks would delay predictions and
nothing would ever be refused. A lane is ~40 lines on top of :class:`concurrent.futures.ThreadPoolExecutor`.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

from fastapi import FastAPI, Request

from labelpilot.config import Settings
from labelpilot.errors import LabelpilotError
from labelpilot.server.responses import JSON

log = logging.getLogger("labelpilot.server")

T = TypeVar("T")


def freeze_heap() -> None:
    """Move every object alive now (a freshly loaded and warmed model: jieba's dictionary, vocabularies,
    millions of objects) out of reach of the cyclic garbage collector.

    Without this, each full (generation 2) collection walks the whole model: 200-430 ms with a TNEWS model,
    every few seconds under load, during which no thread runs; that was the p99 of /predict under 32
    clients (issue 11, item 12; bench/RESULTS.md "Load"). Reference counting still frees frozen objects;
    only reference cycles in a model that is later replaced stay until the process ends."""
    gc.collect()
    gc.freeze()


_paused = 0
_paused_lock = threading.Lock()


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a bulk body is parsed and stored (reference counting still frees).

    Parsing 100,000 annotations makes ~600,000 tracked objects, and each full collection meanwhile walks all
    of them: 0.3-0.8 s pauses of every thread, the event loop's too (measured, bench/RESULTS.md "Load").
    Nested and concurrent uses are counted; the collector is back on when the last one ends."""
    global _paused
    with _paused_lock:
        _paused += 1
        gc.disable()
    try:
        yield
    finally:
        with _paused_lock:
            _paused -= 1
            if _paused == 0:
                gc.enable()


class Busy(LabelpilotError):
    """A lane is full, or the work ran past its time budget: try again later."""

    status_code = 503

    def __init__(self, message: str, *, retry_after: int = 5, field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.retry_after = retry_after


class _Expired(Exception):
    """A lane job's time budget passed (raised into the waiting request, turned into :class:`Busy`)."""


def _expire(waiter: asyncio.Future[Any]) -> None:
    if not waiter.done():
        waiter.set_exception(_Expired())


class Lane:
    """A thread pool that runs at most ``threads`` jobs and lets at most ``max_queued`` more wait."""

    def __init__(self, name: str, threads: int, max_queued: int, env: str) -> None:
        self.name = name
        self.threads = threads
        self.max_queued = max_queued
        self.env = env  # the setting that raises the bound, named in the 503
        self.inflight = 0  # running + waiting; touched only on the event loop thread
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=f"labelpilot-{name}")

    async def run(self, fn: Callable[..., T], *args: Any, timeout: float | None = None) -> T:
        """Run ``fn(*args)`` in the lane; raises :class:`Busy` when the lane is full or ``timeout`` passes.

        A job that overruns its budget cannot be stopped (threads cannot be killed); it keeps its slot until
        it ends, so overrunning jobs fill the lane and later requests get 503 rather than piling up.

        The job's end wakes the event loop ONCE: one ``call_soon_threadsafe`` frees the slot and hands over
        the result (``asyncio.wrap_future`` plus a done callback for the slot, as before, woke it twice, and
        ``asyncio.wait_for`` added a task and more loop rounds). Each wake-up from a worker thread is a
        system call made while holding the interpreter lock; on a loaded 2-core machine the woken thread
        can preempt the job's thread, which then holds the lock while it waits for a core (py-spy --gil put
        ~17 % of the GIL-held time of a one-task /predict in that callback, bench/RESULTS.md "HTTP cost")."""
        if self.inflight >= self.threads + self.max_queued:
            raise Busy(
                f"the server is busy: {self.inflight} {self.name} jobs are running or waiting "
                f"(raise {self.env} to queue more)"
            )
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[T] = loop.create_future()

        def finished(cfut: Future[T]) -> None:  # on the loop: free the slot, then wake the request
            self.inflight -= 1
            if waiter.done():  # the request gave up (timeout, or the client went away)
                return
            if cfut.cancelled():  # the lane was shut down before the job started
                waiter.cancel()
                return
            exc = cfut.exception()
            if exc is not None:
                waiter.set_exception(exc)
            else:
                waiter.set_result(cfut.result())

        cfut = self._pool.submit(functools.partial(fn, *args))
        self.inflight += 1
        cfut.add_done_callback(lambda f: loop.call_soon_threadsafe(finished, f))
        timer = None if timeout is None else loop.call_later(timeout, _expire, waiter)
        try:
            return await waiter
        except _Expired as exc:
            raise Busy(f"the {self.name} work took longer than its {timeout:.0f} s budget", retry_after=30) from exc
        finally:
            if timer is not None:
                timer.cancel()
            cfut.cancel()  # a job still waiting for a thread when the request gives up never runs (no-op once started)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class Lanes:
    """The server's lanes: ``model`` (predictions) and ``events`` (storing webhook annotations)."""

    def __init__(self, settings: Settings) -> None:
        self.model = Lane("prediction", settings.model_threads, settings.max_queued, "LABELPILOT_MAX_QUEUED")
        # one thread: SQLite takes one writer at a time anyway
        self.events = Lane("webhook", 1, settings.max_queued_events, "LABELPILOT_MAX_QUEUED_EVENTS")

    def shutdown(self) -> None:
        self.model.shutdown()
        self.events.shutdown()


def install(app: FastAPI) -> None:
    """The 503 of a full lane carries ``Retry-After`` (a more specific handler than LabelpilotError's)."""

    @app.exception_handler(Busy)
    async def _busy(request: Request, exc: Busy) -> JSON:
        body = {"status": 503, **exc.to_dict()}
        return JSON(body, status_code=503, headers={"Retry-After": str(exc.retry_after)})
