"""Distributed batch prediction: `labelpilot predict --cluster local:2` against the local path, same input.

    .venv/bin/python bench/batch_cluster.py [--rows 1000000] [--workers 2] [--data ../shared/data]

Builds a CSV of N rows (TNEWS sentences repeated with their row id, or synthetic text without
../shared/data), trains text-linear on TNEWS train, then runs `labelpilot predict` twice — local worker
processes (`--workers N`) and a Dask LocalCluster of N workers (`--cluster local:N`) — and reports wall time,
rows/s, whether the two outputs are byte-identical (SHA-256), and the peak RSS of the client and of each
worker process (psutil, sampled every 0.2 s over the whole process tree).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import psutil

from benchutil import batch_input
from labelpilot.encoders.use import file_sha256

ROOT = Path(__file__).resolve().parents[1]
LP = Path(os.environ.get("LABELPILOT_BIN", ROOT / ".venv" / "bin" / "labelpilot"))


def run_sampled(cmd: list[str]) -> dict:
    """Run ``cmd``; peak RSS (MB) per process of its tree, the command's own first."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "COLUMNS": "200"})
    peaks: dict[int, tuple[str, float]] = {}
    done = threading.Event()

    def sample() -> None:
        root = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                for p in [root, *root.children(recursive=True)]:
                    try:
                        rss = p.memory_info().rss / 2**20
                        name = " ".join(p.cmdline()[1:3])[:60]
                    except psutil.Error:
                        continue
                    old = peaks.get(p.pid, ("", 0.0))[1]
                    peaks[p.pid] = (name, max(old, rss))
            except psutil.Error:
                pass
            done.wait(0.2)

    t = threading.Thread(target=sample, daemon=True)
    t0 = time.perf_counter()
    t.start()
    out, _ = proc.communicate()
    seconds = time.perf_counter() - t0
    done.set()
    t.join()
    if proc.returncode != 0:
        raise SystemExit(out)
    client = peaks.pop(proc.pid, ("", float("nan")))[1]
    others = sorted((round(rss) for _, rss in peaks.values() if rss > 50), reverse=True)
    return {"seconds": round(seconds, 1), "client_peak_mb": round(client), "worker_peaks_mb": others,
            "cli_line": out.strip().splitlines()[-1]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("LABELPILOT_SHARED_DATA",
                                                                      ROOT.parent / "shared" / "data")))
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lp-cluster-"))
    big = batch_input(args.data, work, args.rows, LP, "clusterbench")
    base = [str(LP), "predict", "clusterbench", str(big), "--id-col", "id", "--data-dir", str(work / "dd")]
    local = run_sampled([*base, "-o", str(work / "local.csv"), "--workers", str(args.workers)])
    cluster = run_sampled([*base, "-o", str(work / "cluster.csv"), "--cluster", f"local:{args.workers}"])
    same = file_sha256(work / "local.csv") == file_sha256(work / "cluster.csv")
    result = {
        "rows": args.rows, "workers": args.workers, "identical_output": same,
        "local": local | {"rows_per_s": round(args.rows / local["seconds"])},
        "cluster": cluster | {"rows_per_s": round(args.rows / cluster["seconds"])},
        "load_after": [round(x, 2) for x in os.getloadavg()], "cpus": os.cpu_count(),
    }
    print(json.dumps(result, indent=1, ensure_ascii=False))
    (ROOT / "bench" / "out").mkdir(exist_ok=True)
    (ROOT / "bench" / "out" / f"batch_cluster_{args.rows}.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
