"""Load benchmark of the predict service: QPS and p50/p99 at 1, 8 and 32 concurrent clients on loopback.

    .venv/bin/python bench/load.py [--data ../shared/data] [--workers 2] [--duration 15]

Trains a text-linear model on TNEWS (or on a small built-in set when ../shared/data is missing), exports
it, starts `labelpilot serve-model` with the production settings (several uvicorn workers, access log off,
bearer token on) and drives it with wrk (Debian package `wrk`; install it with apt) using a Lua script that
sends the seed-004 request shape. Results go to bench/out/load.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from benchutil import run_wrk, wait_healthy, wrk_script

ROOT = Path(__file__).resolve().parents[1]
LP = ROOT / ".venv" / "bin" / "labelpilot"



def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--duration", type=int, default=15)
    ap.add_argument("--train-limit", type=int, default=20000)
    args = ap.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed (apt-get install wrk)")
    work = Path(tempfile.mkdtemp(prefix="lp-load-"))
    tnews = args.data / "tnews" / "train.json"
    rows = []
    if tnews.exists():
        for line in tnews.open(encoding="utf-8"):
            r = json.loads(line)
            rows.append({"text": r["sentence"], "label": r["label_desc"]})
            if len(rows) >= args.train_limit:
                break
    else:
        rows = [{"text": f"sample {i} {'good' if i % 2 else 'bad'}", "label": "pos" if i % 2 else "neg"}
                for i in range(400)]
    with (work / "train.jsonl").open("w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    subprocess.run([str(LP), "train", str(work / "train.jsonl"), "--name", "bench", "--data-dir", str(work / "dd")],
                   check=True, capture_output=True)
    subprocess.run([str(LP), "export", "bench", str(work / "exp"), "--data-dir", str(work / "dd")], check=True,
                   capture_output=True)
    bodies = work / "bodies.txt"
    with bodies.open("w", encoding="utf-8") as fh:
        for i, r in enumerate(rows[:500]):
            fh.write(json.dumps({"id": str(i), "first_sequence": r["text"]}, ensure_ascii=False) + "\n")
    lua = wrk_script(work / "bench.lua", bodies, {"Authorization": "Bearer bench-token"})
    port = 9400 + os.getpid() % 400
    env = {**os.environ, "LABELPILOT_API_TOKENS": "bench-token"}
    proc = subprocess.Popen([str(LP), "serve-model", str(work / "exp"), "--port", str(port), "--workers",
                             str(args.workers)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    results = {}
    try:
        wait_healthy(url, proc)
        for c in (1, 8, 32):
            threads = 1  # the load generator shares the 2 cores with the server: keep it to one thread
            r = run_wrk(lua, url + "/v1/models/bench/predict", threads, c, args.duration)
            n, errors, p50, p99 = r["requests"], r["non_2xx"], r["p50_ms"], r["p99_ms"]
            results[c] = {"requests": n, "non_2xx": errors, "socket_errors": r["socket_errors"], "qps": r["rps"],
                          "p50_ms": p50, "p99_ms": p99}
            print(f"{c:>3} clients: {r['rps']:8.1f} req/s  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  non-2xx {errors}")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    out = {"workers": args.workers, "train_rows": len(rows), "duration_s": args.duration, "results": results,
           "load_before": os.getloadavg()}
    (ROOT / "bench" / "out").mkdir(exist_ok=True)
    (ROOT / "bench" / "out" / "load.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
