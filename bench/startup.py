"""CLI start-up and a small operator round, wall time, old and new code interleaved.

    python bench/startup.py --before /work/main/src --after src --runs 5

Each command runs ``--runs`` times per tree, alternating trees so both see the same machine load; prints best
and median seconds. The small round: 40 inline labels, 12 unlabelled texts (tests/test_operator_fixes.py's
data), text-linear, default strategy. (hyperfine is not installed on the bench machine; this is its
best-of-N / median in 40 lines.)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def small_input(root: Path) -> Path:
    sys.path.insert(0, str(ROOT))
    from tests.test_operator_fixes import forty_labels

    return forty_labels(root)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", required=True, help="src folder of the old code")
    ap.add_argument("--after", required=True, help="src folder of the new code")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    exe = str(Path(sys.executable).parent / "labelpilot")
    work = Path(tempfile.mkdtemp(prefix="startup-"))
    inp = small_input(work)
    commands = {
        "--version": ["--version"],
        "--help": ["--help"],
        "loop round (40 labels, 12 pool)": ["loop", "--input-dir", str(inp), "--output-dir", str(work / "out"),
                                            "--query-cnt", "3"],
    }
    trees = {"before": str(Path(args.before).resolve()), "after": str(Path(args.after).resolve())}
    print(f"load average at start: {os.getloadavg()}")
    for name, argv in commands.items():
        times: dict[str, list[float]] = {t: [] for t in trees}
        for _ in range(args.runs):
            for tree, src in trees.items():
                t0 = time.perf_counter()
                subprocess.run([exe, *argv], capture_output=True, check=True, env={**os.environ, "PYTHONPATH": src})
                times[tree].append(time.perf_counter() - t0)
        for tree, ts in times.items():
            print(f"{name:34s} {tree:6s} best {min(ts):5.2f} s  median {statistics.median(ts):5.2f} s")
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
