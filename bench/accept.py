"""``labelpilot loop accept`` on shared data: the estimated accuracy of the accepted model labels against their
true accuracy, and how many labels are accepted (coverage), for several targets and seeds.

Protocol per (dataset, seed): a random ``--n-label`` rows of the train split are ``input_label.csv``, another
``--n-pool`` rows ``input_unlabel.csv``. Round 1 of ``labelpilot loop`` (``run_loop``), then ``run_accept`` for
each target. With ``--rounds 2`` the round's hard examples are labelled from the truth into
``input_added_label.csv`` (removed from the pool) and a second round runs before accepting, so the held-out
rows (``input_label.csv`` only) differ from the pool the strategy has skimmed.

    .venv/bin/python bench/accept.py --dataset sst2 --seeds 0 1 2
    .venv/bin/python bench/accept.py --dataset tnews --n-label 2000 --n-pool 4000 --targets 0.9 0.95

Prints one row per run (Markdown) and writes them as JSON to ``bench/results/accept_<dataset>.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from labelpilot.loop import run_loop
from labelpilot.loop.accept import FINAL_LABEL_FILE, run_accept
from textdata import load


def write(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


def one(dataset: str, seed: int, args: argparse.Namespace, root: Path) -> list[dict]:
    texts, labels = load(dataset, "train")
    rng = random.Random(seed)
    idx = rng.sample(range(len(texts)), args.n_label + args.n_pool)
    lab, pool = idx[: args.n_label], idx[args.n_label:]
    inp = root / "input"
    inp.mkdir(parents=True)
    write(inp / "input_label.csv", ["sampleId", "text", "label"], [[f"l{i}", texts[i], labels[i]] for i in lab])
    truth = {f"u{i}": labels[i] for i in pool}
    text_of = {f"u{i}": texts[i] for i in pool}
    write(inp / "input_unlabel.csv", ["sampleId", "text"], [[s, text_of[s]] for s in truth])
    options = json.loads(args.options)
    t0 = time.perf_counter()
    res = run_loop(inp, root / "out", query_cnt=args.query_cnt, options=options, random_seed=seed)
    added: list[str] = []
    for _ in range(args.rounds - 1):  # humans label the hard examples; the next round trains on them
        added += res.hard_ids
        write(inp / "input_added_label.csv", ["sampleId", "text", "label"], [[s, text_of[s], truth[s]] for s in added])
        write(inp / "input_unlabel.csv", ["sampleId", "text"], [[s, text_of[s]] for s in truth if s not in added])
        res = run_loop(inp, root / "out", query_cnt=args.query_cnt, options=options, random_seed=seed,
                       is_first_train=False)
    t_loop = time.perf_counter() - t0
    out = []
    for target in args.targets:
        t0 = time.perf_counter()
        acc = run_accept(inp, root / "out", target_accuracy=target, final_dir=root / f"final-{target}",
                         lower_bound=args.lower_bound)
        t_acc = time.perf_counter() - t0
        with (root / f"final-{target}" / FINAL_LABEL_FILE).open(encoding="utf-8", newline="") as fh:
            model = [r for r in csv.DictReader(fh) if r["source"] == "model"]
        est = acc.report["estimated_accuracy"]
        true_acc = sum(truth[r["sampleId"]] == r["label"] for r in model) / len(model) if model else None
        with (root / "out" / "predictions.csv").open(encoding="utf-8", newline="") as fh:
            preds = list(csv.DictReader(fh))
        pool_acc = sum(truth[r["sampleId"]] == r["label"] for r in preds) / len(preds)
        inside = None if true_acc is None or est["low"] is None else est["low"] <= true_acc <= est["high"]
        out.append({
            "dataset": dataset, "seed": seed, "rounds": args.rounds, "lower_bound": args.lower_bound,
            "n_label": args.n_label,
            "n_added": len(added), "n_pool": len(preds), "target": target,
            "threshold": acc.report["threshold"], "accepted": acc.report["counts"]["accepted"],
            "coverage": acc.report["counts"]["coverage"], "held_out_n": est["n"],
            "estimate": est["accuracy"], "low": est["low"], "high": est["high"], "true": true_acc,
            "inside": inside, "pool_accuracy": pool_acc, "loop_s": round(t_loop, 1), "accept_s": round(t_acc, 1),
            "load": [round(x, 1) for x in os.getloadavg()],
        })
    return out


def fmt(x: float | None, pct: bool = True) -> str:
    return "–" if x is None else (f"{100 * x:.1f}" if pct else f"{x:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="sst2", choices=["sst2", "tnews", "trec"])
    ap.add_argument("--n-label", type=int, default=1000)
    ap.add_argument("--n-pool", type=int, default=3000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--targets", type=float, nargs="+", default=[0.9, 0.95])
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--query-cnt", type=int, default=100)
    ap.add_argument("--options", default='{"encoder": false}', help="model options (JSON) for the loop")
    ap.add_argument("--lower-bound", action="store_true", help="accept's --lower-bound rule")
    ap.add_argument("--tag", default="", help="suffix of the results file (e.g. encoder)")
    args = ap.parse_args()
    rows = []
    print("| dataset | seed | rounds | target | threshold | accepted / pool (coverage) | held-out n | estimate "
          "[95 % CI] | true | inside | pool accuracy | loop s / accept s | load |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for seed in args.seeds:
        with tempfile.TemporaryDirectory(prefix="bench-accept-") as tmp:
            for r in one(args.dataset, seed, args, Path(tmp)):
                rows.append(r)
                thr = "none" if r["threshold"] is None else f"{r['threshold']:.3f}"
                print(f"| {r['dataset']} | {r['seed']} | {r['rounds']} | {r['target']} | {thr} | {r['accepted']} / "
                      f"{r['n_pool']} ({fmt(r['coverage'])} %) | {r['held_out_n']} | {fmt(r['estimate'])} "
                      f"[{fmt(r['low'])}, {fmt(r['high'])}] | {fmt(r['true'])} | {r['inside']} | "
                      f"{fmt(r['pool_accuracy'])} | {r['loop_s']} / {r['accept_s']} | {r['load'][0]} |", flush=True)
    inside = [r["inside"] for r in rows if r["inside"] is not None]
    print(f"\ntrue accuracy inside the interval: {sum(inside)} of {len(inside)} runs")
    res_dir = Path(__file__).resolve().parent / "results"
    res_dir.mkdir(exist_ok=True)
    suffix = (f"_r{args.rounds}" if args.rounds > 1 else "") + (f"_{args.tag}" if args.tag else "")
    (res_dir / f"accept_{args.dataset}{suffix}.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
