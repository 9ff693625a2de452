"""Recent `/v1` traffic for the dashboard: an in-memory ring of per-10-second buckets.

Prometheus histograms (``server/metrics.py``) are cumulative since start-up; a chart of requests/s and latency
percentiles *over time* needs per-interval figures, and the dashboard must draw them without a Prometheus
server. So every predict-service request that ``Metrics.observe_model`` times is also counted here.

Memory is bounded: ``slots`` buckets (default 360 = one hour of 10-s buckets), each a request count, an error
count and a fixed log-spaced latency histogram (``_N_BINS`` integers, ~10 % relative resolution from 0.1 ms to
~2 min). A bucket is reused when the ring comes round to it, so nothing grows with traffic or uptime.
Percentiles are read from the histogram (the geometric middle of the bin holding the rank), which is exact to
the bin width: good enough for a chart, and O(1) per request under one lock.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

BUCKET_SECONDS = 10
DEFAULT_SLOTS = 360
_MIN_SECONDS = 1e-4
_GROWTH = 1.1  # each bin is 10 % wider than the one before
_N_BINS = 150  # 1e-4 * 1.1**150 ≈ 160 s; slower requests land in the last bin
_LOG_GROWTH = math.log(_GROWTH)


def _bin(seconds: float) -> int:
    if seconds <= _MIN_SECONDS:
        return 0
    return min(_N_BINS - 1, 1 + int(math.log(seconds / _MIN_SECONDS) / _LOG_GROWTH))


def _bin_middle(i: int) -> float:
    """A representative latency of bin ``i`` (bin 0 holds everything up to 0.1 ms)."""
    if i == 0:
        return _MIN_SECONDS
    lo = _MIN_SECONDS * _GROWTH ** (i - 1)
    return lo * math.sqrt(_GROWTH)


class _Bucket:
    __slots__ = ("errors", "hist", "requests", "start")

    def __init__(self) -> None:
        self.start = -1  # the bucket's start (seconds since the epoch, a multiple of BUCKET_SECONDS)
        self.requests = 0
        self.errors = 0
        self.hist = [0] * _N_BINS

    def reset(self, start: int) -> None:
        self.start = start
        self.requests = 0
        self.errors = 0
        self.hist = [0] * _N_BINS


def _percentile(hist: list[int], total: int, q: float) -> float | None:
    if total <= 0:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for i, n in enumerate(hist):
        seen += n
        if seen >= rank:
            return _bin_middle(i)
    return _bin_middle(_N_BINS - 1)


class TrafficRing:
    """Per-10-s request counts, errors and latency histograms of the last ``slots`` buckets."""

    def __init__(self, slots: int = DEFAULT_SLOTS, clock: Callable[[], float] = time.time) -> None:
        if slots < 1:
            raise ValueError("slots must be at least 1")
        self.slots = slots
        self._clock = clock
        self._ring = [_Bucket() for _ in range(slots)]
        self._lock = threading.Lock()

    def _bucket_for(self, now: float) -> _Bucket:
        start = int(now // BUCKET_SECONDS) * BUCKET_SECONDS
        bucket = self._ring[(start // BUCKET_SECONDS) % self.slots]
        if bucket.start != start:
            bucket.reset(start)
        return bucket

    def observe(self, seconds: float, *, error: bool = False) -> None:
        """One request that took ``seconds`` (``error``: it was answered with an error status)."""
        with self._lock:
            bucket = self._bucket_for(self._clock())
            bucket.requests += 1
            bucket.errors += int(error)
            bucket.hist[_bin(seconds)] += 1

    def series(self, last: int | None = None) -> list[dict[str, Any]]:
        """The last ``last`` buckets (all slots by default), oldest first, empty ones included (zeros), so a
        chart's time axis has no gaps. Latencies are in milliseconds, None for a bucket without requests."""
        n = self.slots if last is None else max(1, min(int(last), self.slots))
        now_start = int(self._clock() // BUCKET_SECONDS) * BUCKET_SECONDS
        out: list[dict[str, Any]] = []
        with self._lock:
            for k in range(n - 1, -1, -1):
                start = now_start - k * BUCKET_SECONDS
                bucket = self._ring[(start // BUCKET_SECONDS) % self.slots]
                if bucket.start == start:
                    requests, errors, hist = bucket.requests, bucket.errors, list(bucket.hist)
                else:
                    requests, errors, hist = 0, 0, None
                row: dict[str, Any] = {"t": start, "requests": requests, "errors": errors,
                                       "rps": round(requests / BUCKET_SECONDS, 3)}
                for name, q in (("p50_ms", 0.5), ("p95_ms", 0.95), ("p99_ms", 0.99)):
                    value = _percentile(hist, requests, q) if hist else None
                    row[name] = None if value is None else round(value * 1000, 3)
                out.append(row)
        return out

    def totals(self, last: int | None = None) -> dict[str, Any]:
        """Requests, errors and latency percentiles over the last ``last`` buckets together."""
        n = self.slots if last is None else max(1, min(int(last), self.slots))
        now_start = int(self._clock() // BUCKET_SECONDS) * BUCKET_SECONDS
        hist = [0] * _N_BINS
        requests = errors = 0
        with self._lock:
            for k in range(n):
                start = now_start - k * BUCKET_SECONDS
                bucket = self._ring[(start // BUCKET_SECONDS) % self.slots]
                if bucket.start == start:
                    requests += bucket.requests
                    errors += bucket.errors
                    hist = [a + b for a, b in zip(hist, bucket.hist, strict=True)]
        out: dict[str, Any] = {"requests": requests, "errors": errors, "seconds": n * BUCKET_SECONDS}
        for name, q in (("p50_ms", 0.5), ("p95_ms", 0.95), ("p99_ms", 0.99)):
            value = _percentile(hist, requests, q)
            out[name] = None if value is None else round(value * 1000, 3)
        return out
