"""/health and /predict while the server does heavy work (issue 11, item 4).

    .venv/bin/python bench/health_under_load.py [--data ../shared/data] [--annotations 100000] [--text-mb 10]

One `labelpilot serve` on 127.0.0.1 with a trained text-linear project (TNEWS, or a built-in set without
../shared/data). While each of three heavy jobs runs, /health is polled every 50 ms on a new connection (as
Label Studio does, 1 s timeout) and a one-task /predict every 100 ms on a kept-alive one:
  (a) an ANNOTATIONS_CREATED webhook with 100,000 annotations;
  (b) a /predict with one 10 MB text (the server runs with LABELPILOT_MAX_TEXT_CHARS raised so that it is
      served; by default such a text is refused with 413 in milliseconds);
  (c) a training job (START_TRAINING; it trains on the annotations stored in (a)).
Prints a table and writes bench/out/health_under_load.json.
"""

from __future__ import annotations

import argparse
import gc
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchutil import wait_healthy
from load_wrk import LP, UID, prepare, training_rows, warm_up

ROOT = Path(__file__).resolve().parents[1]
PROJECT = {"id": 1, "created_at": "2023-11-14T22:13:20Z"}


def post(port: int, path: str, body: bytes, timeout: float = 300) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


class Probe:
    """Background pollers: /health (new connection each call, 1 s timeout) and a one-task /predict."""

    def __init__(self, port: int, predict_body: bytes) -> None:
        self.port = port
        self.predict_body = predict_body
        self.health: list[float] = []
        self.health_failures = 0
        self.predict: list[float] = []
        self.predict_errors: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._poll_health), threading.Thread(target=self._poll_predict)]

    def _poll_health(self) -> None:
        while not self._stop.is_set():
            t0 = time.perf_counter()
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
                conn.request("GET", "/health")
                ok = conn.getresponse().status == 200
                conn.close()
            except OSError:
                ok = False
            self.health.append(time.perf_counter() - t0)
            self.health_failures += not ok
            time.sleep(0.05)

    def _poll_predict(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        while not self._stop.is_set():
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/predict", body=self.predict_body, headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                data = resp.read()
                if resp.status != 200 or not json.loads(data)["results"][0]["result"]:
                    self.predict_errors.append(f"{resp.status} {data[:200]!r}")
            except (OSError, http.client.HTTPException) as exc:
                self.predict_errors.append(type(exc).__name__)
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            self.predict.append(time.perf_counter() - t0)
            time.sleep(0.1)

    def run(self, work: Callable[[], Any]) -> dict[str, Any]:
        gc.collect()
        gc.freeze()  # the benchmark's own big objects must not pause its pollers (the server is measured)
        load_before = os.getloadavg()
        for t in self._threads:
            t.start()
        t0 = time.perf_counter()
        try:
            detail = work()
        finally:
            took = time.perf_counter() - t0
            time.sleep(0.3)
            self._stop.set()
            for t in self._threads:
                t.join(30)
        return {"seconds": round(took, 1), "work": detail, "health": summary(self.health),
                "health_failures": self.health_failures, "predict": summary(self.predict),
                "predict_errors": len(self.predict_errors), "predict_error_samples": self.predict_errors[:3],
                "load_before": load_before, "load_after": os.getloadavg()}


def summary(values: list[float]) -> dict[str, float]:
    v = sorted(values)
    if not v:
        return {"n": 0}
    at = lambda p: round(v[min(len(v) - 1, round(p / 100 * (len(v) - 1)))] * 1e3, 1)  # noqa: E731
    return {"n": len(v), "p50_ms": at(50), "p99_ms": at(99), "max_ms": round(v[-1] * 1e3, 1)}


def bulk_event(rows: list[tuple[str, str]], n: int) -> bytes:
    anns = [
        {"id": 10_000_000 + i, "task": {"id": 10_000_000 + i, "data": {"sentence": rows[i % len(rows)][0]}},
         "result": [{"from_name": "label", "to_name": "sentence", "type": "choices",
                     "value": {"choices": [rows[i % len(rows)][1]]}}], "was_cancelled": False}
        for i in range(n)
    ]
    return json.dumps({"action": "ANNOTATIONS_CREATED", "annotations": anns, "project": PROJECT},
                      ensure_ascii=False).encode()


def training_done(port: int, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", f"/training?project={UID}")
        jobs = json.loads(conn.getresponse().read())["jobs"]
        conn.close()
        if jobs and jobs[0]["state"] not in ("queued", "running"):
            return {"state": jobs[0]["state"], "version": jobs[0]["version"], "error": jobs[0]["error"]}
        time.sleep(0.5)
    return {"state": "still running", "timeout_s": timeout}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--annotations", type=int, default=100_000)
    ap.add_argument("--text-mb", type=float, default=10.0)
    ap.add_argument("--train-limit", type=int, default=5000)
    ap.add_argument("--train-timeout", type=float, default=300)
    ap.add_argument("--phases", default="abc", help="which of (a), (b), (c) to run")
    args = ap.parse_args()
    work_dir = Path(tempfile.mkdtemp(prefix="lp-health-"))
    data_dir, config, _ = prepare(work_dir, args.data, args.train_limit)
    rows = training_rows(args.data, 60_000)
    one = json.dumps({"tasks": [{"id": 1, "data": {"sentence": rows[0][0]}}], "project": UID,
                      "label_config": config}, ensure_ascii=False).encode()
    port = 9900 + os.getpid() % 90
    size = int(args.text_mb * 1_000_000)  # UTF-8 bytes of the big text
    base = "".join(r[0] for r in rows[:2000]).encode()
    text = (base * (size // len(base) + 1))[:size].decode(errors="ignore")
    chars = len(text)
    env = {**os.environ, "LABELPILOT_RETRAIN_EVERY": "0", "LABELPILOT_MAX_TEXT_CHARS": str(chars + 1)}
    proc = subprocess.Popen(
        [str(LP), "serve", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir),
         "--log-level", "warning"],
        env=env, stdout=(work_dir / "server.log").open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    results: dict[str, Any] = {"annotations": args.annotations, "text_chars": chars}
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc, timeout=60)
        warm_up(f"http://127.0.0.1:{port}", one.decode())
        bulk = bulk_event(rows, args.annotations)

        def do_bulk() -> dict[str, Any]:
            status, data = post(port, "/webhook", bulk)
            return {"status": status, "body_mb": round(len(bulk) / 1e6, 1), "answer": json.loads(data)}

        if "a" in args.phases:
            results["a_bulk_webhook"] = Probe(port, one).run(do_bulk)
            print("a", json.dumps(results["a_bulk_webhook"]), flush=True)
        big = json.dumps({"tasks": [{"id": 2, "data": {"sentence": text}}], "project": UID,
                          "label_config": config}, ensure_ascii=False).encode()

        def do_big() -> dict[str, Any]:
            status, data = post(port, "/predict", big)
            return {"status": status, "body_mb": round(len(big) / 1e6, 1), "answer": data[:300].decode()}

        if "b" in args.phases:
            results["b_10mb_predict"] = Probe(port, one).run(do_big)
            print("b", json.dumps(results["b_10mb_predict"]), flush=True)

        def do_train() -> dict[str, Any]:
            status, _ = post(port, "/webhook", json.dumps({"action": "START_TRAINING", "project": PROJECT}).encode())
            return {"status": status, **training_done(port, args.train_timeout)}

        if "c" in args.phases:
            results["c_training"] = Probe(port, one).run(do_train)
            print("c", json.dumps(results["c_training"]), flush=True)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    (ROOT / "bench" / "out").mkdir(exist_ok=True)
    (ROOT / "bench" / "out" / "health_under_load.json").write_text(json.dumps(results, indent=1))
    for key in ("a_bulk_webhook", "b_10mb_predict", "c_training"):
        if key not in results:
            continue
        r = results[key]
        print(f"{key:16} {r['seconds']:6.1f} s  /health n={r['health']['n']} p50 {r['health'].get('p50_ms')} "
              f"p99 {r['health'].get('p99_ms')} max {r['health'].get('max_ms')} ms fail {r['health_failures']}  "
              f"/predict n={r['predict']['n']} p99 {r['predict'].get('p99_ms')} ms errors {r['predict_errors']}  "
              f"load {r['load_before'][0]:.1f}->{r['load_after'][0]:.1f}")


if __name__ == "__main__":
    sys.exit(main())
