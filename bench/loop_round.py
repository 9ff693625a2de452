"""Wall time of one whole ``labelpilot loop`` CLI round (start-up, reading, training, selection, writing) on a big
pool, because the seed-003 operator is run as a command once per round and its user waits for all of it.

- ``--task text``: TNEWS (../shared/data/tnews): ``--n-label`` labelled rows, ``--n-pool`` unlabelled rows, text-linear;
- ``--task ner``: CLUENER (../shared/data/cluener2020): labels as Label Studio span JSON, ner-crf, span strategy.

    nice -n 5 .venv/bin/python bench/loop_round.py --task text --n-label 2000 --n-pool 50000
    nice -n 5 .venv/bin/python bench/loop_round.py --task ner --n-label 1000 --n-pool 10000 --token-budget 2000

Prints the CLI's wall time, the round's own step times (``report.json`` ``seconds``) and the load average, and
writes them to ``bench/results/loop_round_<task>.json``. ``--profile`` runs the round in-process under cProfile
and prints the top functions by cumulative time instead.
"""

from __future__ import annotations

import argparse
import cProfile
import csv
import json
import os
import pstats
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from textdata import DEFAULT_DATA, load

REPO = Path(__file__).resolve().parents[1]


def write(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


def _cluener_rows() -> list[tuple[str, str]]:
    """(text, Label Studio span JSON) per CLUENER train row."""
    out = []
    for line in (DEFAULT_DATA / "cluener2020" / "train.json").open(encoding="utf-8"):
        if not line.strip():
            continue
        row = json.loads(line)
        spans = []
        for typ, mentions in (row.get("label") or {}).items():
            for _mention, pairs in mentions.items():
                for s, e in pairs:
                    spans.append({"start": s, "end": e + 1, "labels": [typ]})
        out.append((row["text"], json.dumps(spans, ensure_ascii=False)))
    return out


def build(inp: Path, task: str, n_label: int, n_pool: int, seed: int) -> None:
    if task == "text":
        texts, labels = load("tnews", "train")
        rows = list(zip(texts, labels, strict=True))
    else:
        rows = _cluener_rows()
    rng = random.Random(seed)
    idx = rng.sample(range(len(rows)), min(len(rows), n_label + n_pool))
    lab, pool = idx[:n_label], idx[n_label:]
    inp.mkdir(parents=True, exist_ok=True)
    write(inp / "input_label.csv", ["sampleId", "text", "label"], [[f"l{i}", *rows[i]] for i in lab])
    write(inp / "input_unlabel.csv", ["sampleId", "text"], [[f"u{i}", rows[i][0]] for i in pool])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", choices=("text", "ner"), default="text")
    ap.add_argument("--n-label", type=int, default=2000)
    ap.add_argument("--n-pool", type=int, default=50000)
    ap.add_argument("--query-cnt", type=int, default=100)
    ap.add_argument("--token-budget", type=int, default=None)
    ap.add_argument("--strategy", default="default")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="loop-round-"))
    inp = root / "input"
    build(inp, args.task, args.n_label, args.n_pool, args.seed)
    cli = [str(Path(sys.executable).parent / "labelpilot"), "loop", "--input-dir", str(inp),
           "--query-cnt", str(args.query_cnt), "--strategy", args.strategy]
    if args.task == "ner":
        cli += ["--task", "ner"]
    if args.token_budget:
        cli += ["--token-budget", str(args.token_budget)]
    if args.profile:
        from labelpilot.loop.cli import loop_app  # lazy: only the profiling mode runs the CLI in-process

        prof = cProfile.Profile()
        prof.enable()
        try:
            loop_app([*cli[2:], "--output-dir", str(root / "out-prof")], standalone_mode=False)
        finally:
            prof.disable()
        pstats.Stats(prof).sort_stats("cumulative").print_stats(35)
        return
    runs = []
    for r in range(args.repeats):
        out = root / f"out{r}"
        t0 = time.perf_counter()
        proc = subprocess.run([*cli, "--output-dir", str(out)], capture_output=True, text=True, check=False)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            sys.exit(f"labelpilot loop failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        rep = json.loads((out / "report.json").read_text(encoding="utf-8"))
        runs.append({"wall_s": round(wall, 2), "seconds": rep["seconds"], "cpu_seconds": rep["cpu_seconds"],
                     "quality": rep["training"]["quality"].get("score"), "strategy": rep["strategy"]["used"],
                     "query_cnt": rep["strategy"]["query_cnt"], "tokens": rep["strategy"].get("tokens"),
                     "load_average": list(os.getloadavg())})
        print(json.dumps(runs[-1]))
    result = {"task": args.task, "n_label": args.n_label, "n_pool": args.n_pool, "token_budget": args.token_budget,
              "runs": runs}
    dest = REPO / "bench" / "results" / f"loop_round_{args.task}.json"
    dest.write_text(json.dumps(result, indent=1), encoding="utf-8")
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
