"""Cost of the dashboard's /v1 traffic ring (server/traffic.py): what one observation adds to every /v1 request,
what reading the charts' series costs, and the ring's memory.

    PYTHONPATH=src .venv/bin/python bench/ui_traffic.py

Figures go to bench/RESULTS.md (section *Dashboard*).
"""

from __future__ import annotations

import os
import random
import sys
import threading
import time
import tracemalloc

from labelpilot.server.traffic import TrafficRing


def per_call(fn, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def main() -> None:
    rng = random.Random(0)
    latencies = [rng.lognormvariate(-5, 1) for _ in range(10_000)]
    tracemalloc.start()
    ring = TrafficRing()
    size = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    it = iter(latencies * 100)
    observe = per_call(lambda: ring.observe(next(it), error=False), 200_000)
    # four threads at once (the prediction lane's threads all feed the one lock)
    def worker() -> None:
        for x in latencies:
            ring.observe(x)
    threads = [threading.Thread(target=worker) for _ in range(4)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    contended = (time.perf_counter() - t0) / (4 * len(latencies))
    series = per_call(lambda: ring.series(last=90), 200)
    totals = per_call(lambda: ring.totals(last=30), 200)
    load = os.getloadavg()[0]
    print(f"python {sys.version.split()[0]}, load (1 min) {load:.1f}")
    print(f"ring of {ring.slots} buckets: {size / 1024:.0f} KiB (tracemalloc, at creation; it never grows)")
    print(f"observe(): {observe * 1e6:.2f} µs per call; 4 threads at once: {contended * 1e6:.2f} µs per call")
    print(f"series(last=90) (one /ui/api/traffic answer): {series * 1e3:.2f} ms; "
          f"totals(last=30): {totals * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
