"""Batch prediction throughput and memory: `labelpilot predict` over a large CSV.

    .venv/bin/python bench/batch_predict.py [--rows 1000000] [--data ../shared/data]

Builds a CSV of N rows (TNEWS sentences repeated, or synthetic text without ../shared/data), trains a
text-linear model, runs `labelpilot predict` under /usr/bin/time and reports rows/s and the peak RSS of
the command and its worker processes. Constant memory means the peak does not grow with N: run it with
--rows 100000 and --rows 1000000 and compare.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

from benchutil import batch_input

ROOT = Path(__file__).resolve().parents[1]
LP = ROOT / ".venv" / "bin" / "labelpilot"


def peak_rss_mb(pid_tree_log: str) -> float:
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", pid_tree_log)
    return int(m[1]) / 1024 if m else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--workers", type=int, default=0)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lp-batch-"))
    big = batch_input(args.data, work, args.rows, LP, "batchbench")
    cmd = ["/usr/bin/time", "-v", str(LP), "predict", "batchbench", str(big), "-o", str(work / "out.csv"),
           "--id-col", "id", "--data-dir", str(work / "dd")]
    if args.workers:
        cmd += ["--workers", str(args.workers)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(proc.stdout + proc.stderr)
    out_rows = sum(1 for _ in (work / "out.csv").open(encoding="utf-8")) - 1
    result = {
        "rows": args.rows, "written": out_rows, "seconds": round(seconds, 1),
        "rows_per_s_wall": round(args.rows / seconds), "peak_rss_mb_largest_process": round(peak_rss_mb(proc.stderr)),
        "cli_line": proc.stdout.strip().splitlines()[-1], "load": os.getloadavg(),
    }
    print(json.dumps(result, indent=1, ensure_ascii=False))
    (ROOT / "bench" / "out").mkdir(exist_ok=True)
    (ROOT / "bench" / "out" / f"batch_predict_{args.rows}.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
