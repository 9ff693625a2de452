"""Wall time of one whole ``labelpilot loop`` CLI round (start-up, reading, training, selection, writing) on a big
pool, because the seed-003 operator is run as a command once per round and its user waits for all of it.

- ``--task text``: TNEWS (../shared/data/tnews): ``--n-label`` labelled rows, ``--n-pool`` unlabelled rows, text-linear;
- ``--task ner``: CLUENER (../shared/data/cluener2020): labels as Label Studio span JSON, ner-crf, span strategy.

    nice -n 5 .venv/bin/python bench/loop_round.py --task text --n-label 2000 --n-pool 50000
    nice -n 5 .venv/bin/python bench/loop_round.py --task ner --n-label 1000 --n-pool 10000 --token-budget 2000

Prints the CLI's wall time, the round's own step times (``report.json`` ``seconds``) and the load average, and
writes them to ``bench/results/loop_round_<task>.json``. ``--profile`` runs the round in-process under cProfile
and prints the top functions by cumulative time instead.

``--rounds N`` runs N operator rounds in a row, as an operator does: round 1 is ``--is-first-train``; each
later round labels the previous round's hard examples (their gold labels go to ``input_added_label.csv``,
they leave ``input_unlabel.csv``) and runs ``--not-first-train`` into the same ``--output-dir``. The first
round is the cold one: ``LABELPILOT_CACHE_DIR`` is a fresh temporary folder (nothing cached: no vector
store; the encoder model is read from where it is installed through ``LABELPILOT_ENCODER_PATH``), unless
``--keep-cache`` is given; later rounds are the steady state (a new process, the same pool, new labels).
"""

from __future__ import annotations

import argparse
import cProfile
import csv
import json
import os
import pstats
import random
import resource
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


def label_hard(inp: Path, out: Path, gold: dict[str, str]) -> None:
    """The operator labels the round's hard examples: they move from input_unlabel.csv to input_added_label.csv."""
    rep = json.loads((out / "report.json").read_text(encoding="utf-8"))
    hard = set(rep["hard_examples"])
    with (inp / "input_unlabel.csv").open(encoding="utf-8", newline="") as fh:
        pool = list(csv.reader(fh))[1:]
    added_path = inp / "input_added_label.csv"
    added: list[list[str]] = []
    if added_path.exists():
        with added_path.open(encoding="utf-8", newline="") as fh:
            added = list(csv.reader(fh))[1:]
    added += [[sid, text, gold[sid]] for sid, text in pool if sid in hard]
    write(added_path, ["sampleId", "text", "label"], added)
    write(inp / "input_unlabel.csv", ["sampleId", "text"], [r for r in pool if r[0] not in hard])


def _gold(task: str, n_label: int, n_pool: int, seed: int) -> dict[str, str]:
    if task == "text":
        texts, labels = load("tnews", "train")
        rows = list(zip(texts, labels, strict=True))
    else:
        rows = _cluener_rows()
    idx = random.Random(seed).sample(range(len(rows)), min(len(rows), n_label + n_pool))
    return {f"u{i}": rows[i][1] for i in idx[n_label:]}


def _environment(root: Path, keep_cache: bool) -> dict[str, str]:
    env = dict(os.environ)
    if keep_cache:
        return env
    from labelpilot.encoders.use import find_model  # lazy: the bench's own import of the encoder's file finder

    try:
        env["LABELPILOT_ENCODER_PATH"] = str(find_model())
    except Exception as exc:  # no encoder installed: the round runs TF-IDF only, as the product would
        print(f"no text encoder ({exc}); the rounds run without it")
    env["LABELPILOT_CACHE_DIR"] = str(root / "cache")
    return env


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", choices=("text", "ner"), default="text")
    ap.add_argument("--n-label", type=int, default=2000)
    ap.add_argument("--n-pool", type=int, default=50000)
    ap.add_argument("--query-cnt", type=int, default=100)
    ap.add_argument("--token-budget", type=int, default=None)
    ap.add_argument("--strategy", default="default")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=1, help="repeat round 1 (each into a fresh output folder)")
    ap.add_argument("--rounds", type=int, default=1, help="operator rounds in a row (see the module doc)")
    ap.add_argument("--keep-cache", action="store_true", help="use the usual cache folder (not a fresh one)")
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
        stats = pstats.Stats(prof)
        stats.sort_stats("cumulative").print_stats(35)
        stats.sort_stats("tottime").print_stats(30)
        return
    env = _environment(root, args.keep_cache)
    gold = _gold(args.task, args.n_label, args.n_pool, args.seed) if args.rounds > 1 else {}
    runs = []
    for r in range(max(args.repeats, args.rounds)):
        steady = args.rounds > 1 and r > 0
        out = root / ("out" if args.rounds > 1 else f"out{r}")
        if steady:
            label_hard(inp, out, gold)
        t0 = time.perf_counter()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.run([*cli, "--output-dir", str(out), *(["--not-first-train"] if steady else [])],
                              capture_output=True, text=True, check=False, env=env)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        if proc.returncode != 0:
            sys.exit(f"labelpilot loop failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        rep = json.loads((out / "report.json").read_text(encoding="utf-8"))
        runs.append({"round": r + 1 if args.rounds > 1 else 1, "steady_state": steady, "wall_s": round(wall, 2),
                     "process_cpu_s": round(cpu, 2),
                     "seconds": rep["seconds"], "cpu_seconds": rep["cpu_seconds"],
                     "n_labels": rep["training"]["n_labels"], "pool": rep["split"]["pool"],
                     "quality": rep["training"]["quality"].get("score"), "strategy": rep["strategy"]["used"],
                     "query_cnt": rep["strategy"]["query_cnt"], "tokens": rep["strategy"].get("tokens"),
                     "load_average": list(os.getloadavg())})
        print(json.dumps(runs[-1]), flush=True)
    result = {"task": args.task, "n_label": args.n_label, "n_pool": args.n_pool, "token_budget": args.token_budget,
              "fresh_cache": not args.keep_cache, "runs": runs}
    dest = REPO / "bench" / "results" / f"loop_round_{args.task}.json"
    dest.write_text(json.dumps(result, indent=1), encoding="utf-8")
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
