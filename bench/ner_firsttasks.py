"""Spans from the first task: play the first N tasks of a data set in order, as an annotator would.

    PYTHONPATH=src .venv/bin/python bench/ner_firsttasks.py                  # all four configs
    PYTHONPATH=src .venv/bin/python bench/ner_firsttasks.py --dataset cluener --tasks 200 --every 10
    PYTHONPATH=/work/main/src .venv/bin/python bench/ner_firsttasks.py     # the same against another tree
    PYTHONPATH=src .venv/bin/python bench/ner_firsttasks.py --dataset cluener --order bench --schedule 1,2,5 --lag 2

``--order bench`` plays the tasks ``labelpilot bench prelabel`` plays (the first N of the training split
shuffled with seed 0, :func:`labelpilot.prelabel.datasets.load`) and adds that command's effort count
(``saved_http``, :mod:`labelpilot.prelabel.metrics`); ``--schedule 1,2,5`` retrains at those annotation
counts and then every ``--every`` (the server's schedule); ``--lag K`` lets each new model serve only from
K tasks after the annotation that triggered it (a retrain slower than K annotations), so the gap between
this in-process figure and the HTTP one can be split into "other tasks" and "older models".

For each task: the current model pre-labels it (zero-shot before the first training), the pre-label is
compared with the gold spans, the task joins the annotated pool, and every ``--every`` annotations the
``ner-crf`` model is retrained on the whole pool (in process: this measures the model, not the server;
``labelpilot bench prelabel`` measures the server). Reported per window of tasks (1-10, 11-50, 51-100,
101-200): entity-level micro P/R/F1 (exact start/end/label) and **effort saved** = 1 - (edits with the
pre-labels) / (edits from scratch), where from scratch every gold span is one insertion, and with
pre-labels each exact match costs nothing, each pre-label overlapping a still unmatched gold span costs
one fix (label or boundary), every other pre-label one deletion, every gold span left one insertion.
Configs: ``cluener`` (10 types), ``weibo`` (8 types, PER/ORG/LOC/GPE x NAM/NOM), ``conll`` (English
PER/LOC/ORG/MISC), ``seed001`` (the seed-001 config ``地名 人名 组织 时间 产品 价格 天气`` over CLUENER texts,
gold name -> 人名, address -> 地名, company/organization/government -> 组织; the other labels have no gold
there, so any 时间/价格 pre-label counts as a false positive).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from labelpilot.data.bio import read_conll, read_weibo
from labelpilot.data.cluener import read_cluener
from labelpilot.data.types import Example, Span, Target
from labelpilot.metrics import span_prf
from labelpilot.models.ner_crf import NerCrfModel
from labelpilot.prelabel import datasets as bench_datasets
from labelpilot.prelabel.metrics import score_spans
from labelpilot.schema.types import ControlSpec, LabelSpec, TaskKind

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
WINDOWS = ((1, 10), (11, 50), (51, 100), (101, 200))
SEED001 = ("地名", "人名", "组织", "时间", "产品", "价格", "天气")
SEED001_MAP = {"name": "人名", "address": "地名", "company": "组织", "organization": "组织", "government": "组织"}


def control(labels: list[str]) -> ControlSpec:
    return ControlSpec(
        name="label", type="Labels", to_name="text", object_type="Text", value_key="text",
        kind=TaskKind.TEXT_SPANS, labels=tuple(LabelSpec(value=lab) for lab in labels),
    )  # fmt: skip


def load_bench_order(name: str, data: Path, n: int) -> tuple[list[Example], list[str]]:
    """The tasks and labels of ``labelpilot bench prelabel`` (same order, same label list)."""
    ds = bench_datasets.load({"conll": "conll2003"}.get(name, name), data, n)
    exs = []
    for task, gold in zip(ds.tasks, ds.gold, strict=True):
        spans = tuple(Span(r["value"]["start"], r["value"]["end"], r["value"]["labels"][0]) for r in gold)
        exs.append(Example(text=task["data"]["text"], target=Target(spans=spans), id=task["id"]))
    return exs, list(ds.labels)


def _regions(spans: list[Span]) -> list[dict]:
    return [{"type": "labels", "value": {"start": s.start, "end": s.end, "labels": [s.label]}} for s in spans]


def load(name: str, data: Path, n: int) -> tuple[list[Example], list[str]]:
    if name in ("cluener", "seed001"):
        exs = read_cluener(data / "cluener2020" / "train.json")[:n]
    elif name == "weibo":
        exs = read_weibo(data / "weibo_ner" / "weiboNER_2nd_conll.train")[:n]
    elif name == "conll":
        exs = [e for e in read_conll(data / "conll2003" / "eng.train") if e.text and "DOCSTART" not in e.text][:n]
    else:
        raise SystemExit(f"unknown dataset {name!r}")
    if name == "seed001":
        mapped = []
        for ex in exs:
            spans = tuple(Span(s.start, s.end, SEED001_MAP[s.label]) for s in ex.target.spans if s.label in SEED001_MAP)
            mapped.append(Example(text=ex.text, target=Target(spans=spans), id=ex.id))
        return mapped, list(SEED001)
    labels = sorted({s.label for ex in exs for s in ex.target.spans})
    if name == "cluener":  # all 10 types, as a CLUENER project would declare them
        labels = sorted({*labels, "address", "book", "company", "game", "government", "movie", "name",
                         "organization", "position", "scene"})  # fmt: skip
    return exs, labels


def edits(gold: list[Span], pred: list[Span]) -> int:
    g = {(s.start, s.end, s.label) for s in gold}
    p = {(s.start, s.end, s.label) for s in pred}
    left_g = [x for x in g if x not in p]
    n = 0
    for s, e, _ in (x for x in p if x not in g):
        hit = next((x for x in left_g if s < x[1] and x[0] < e), None)
        if hit is not None:
            left_g.remove(hit)
        n += 1  # a fix or a deletion: one edit either way
    return n + len(left_g)


def _due(n: int, args: argparse.Namespace, last: int) -> bool:
    if args.schedule is None:
        return n % args.every == 0
    return n in args.schedule or n - last >= args.every


def play(name: str, args: argparse.Namespace) -> dict:
    exs, labels = (load_bench_order if args.order == "bench" else load)(name, args.data, args.tasks)
    options = json.loads(args.options)
    model = NerCrfModel(control(labels), **options)
    golds, preds, fit_s, http = [], [], [], []
    version = "untrained"
    waiting: list[tuple[int, NerCrfModel]] = []  # (first task index it serves, model) under --lag
    last = 0
    for i, ex in enumerate(exs):
        while waiting and waiting[0][0] <= i:
            model = waiting.pop(0)[1]
        (p,) = model.predict([Example(text=ex.text)])
        if p.error and i == 0:
            version = "no pre-label"
        elif i == 0:
            version = "zero-shot"
        golds.append(list(ex.target.spans))
        preds.append([Span(s.start, s.end, s.label, score=s.score) for s in p.spans])
        http.append(score_spans(_regions(preds[-1]), _regions(golds[-1])))
        if _due(i + 1, args, last) and i + 1 < len(exs):
            last = i + 1
            new = NerCrfModel(control(labels), **options) if args.lag else model
            t0 = time.perf_counter()
            try:
                new.fit(exs[: i + 1])
                if args.lag:
                    waiting.append((i + 1 + args.lag, new))
            except Exception as exc:  # e.g. no span yet
                print(f"[{name}] fit after {i + 1} failed: {exc}", file=sys.stderr)
            fit_s.append(time.perf_counter() - t0)
    rows = {}
    for a, b in (*WINDOWS, (1, len(exs))):
        g, p = golds[a - 1 : b], preds[a - 1 : b]
        if not g:
            continue
        m = span_prf(g, p)
        scratch = sum(len(x) for x in g)
        used = sum(edits(x, y) for x, y in zip(g, p, strict=True))
        w_with = sum(t.edits_with for t in http[a - 1 : b])
        rows[f"{a}-{b}"] = {
            "p": m["precision"], "r": m["recall"], "f1": m["f1"],
            "saved": 1 - used / scratch if scratch else 0.0, "gold": scratch,
            "saved_http": 1 - w_with / scratch if scratch else 0.0,
        }  # fmt: skip
    by_threshold = {}
    for t in getattr(args, "thresholds", None) or []:  # the same pre-labels, spans scored below t dropped
        kept = [[x for x in p if x.score is None or x.score >= t] for p in preds]
        by_threshold[str(t)] = {}
        for a, b in (*WINDOWS, (1, len(exs))):
            g, p = golds[a - 1 : b], kept[a - 1 : b]
            if not g:
                continue
            m = span_prf(g, [[Span(x.start, x.end, x.label) for x in y] for y in p])
            scratch = sum(len(x) for x in g)
            w_with = sum(score_spans(_regions(y), _regions(x)).edits_with for x, y in zip(g, p, strict=True))
            by_threshold[str(t)][f"{a}-{b}"] = {"f1": m["f1"], "p": m["precision"], "r": m["recall"],
                                                 "saved_http": 1 - w_with / scratch if scratch else 0.0}
    fits = sorted(fit_s)
    return {
        "dataset": name, "task1": version, "windows": rows, "by_threshold": by_threshold,
        "fit_s_median": fits[len(fits) // 2] if fits else None, "fit_s_max": fits[-1] if fits else None,
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", action="append", choices=("cluener", "weibo", "conll", "seed001"))
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--tasks", type=int, default=200)
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--options", default="{}", help="ner-crf options as JSON")
    ap.add_argument("--order", choices=("file", "bench"), default="file", help="file order or bench prelabel's")
    ap.add_argument("--schedule", type=lambda v: {int(x) for x in v.split(",") if x}, default=None,
                    help="retrain at these annotation counts, then every --every (the server's rule)")
    ap.add_argument("--lag", type=int, default=0, help="a new model serves from this many tasks later")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--thresholds", type=lambda v: [float(x) for x in v.split(",") if x], default=None,
                    help="also score the same pre-labels with spans below each score dropped (e.g. 0.3,0.5,0.7)")
    args = ap.parse_args()
    out = []
    for name in args.dataset or ["cluener", "weibo", "conll", "seed001"]:
        res = play(name, args)
        out.append(res)
        print(f"[{name}] task 1: {res['task1']}; fit median {res['fit_s_median']:.2f}s max {res['fit_s_max']:.2f}s; "
              f"load {res['load']}")  # fmt: skip
        for win, r in res["windows"].items():
            print(f"  {win:>8}: P {r['p']:.3f} R {r['r']:.3f} F1 {r['f1']:.3f} saved {r['saved']:+.1%} "
                  f"(bench count {r['saved_http']:+.1%}; {r['gold']} spans)")  # fmt: skip
        for t, wins in res["by_threshold"].items():
            print(f"  spans scored >= {t}: " + "; ".join(
                f"{w} F1 {r['f1']:.3f} saved {r['saved_http']:+.1%}" for w, r in wins.items()))
        sys.stdout.flush()
    if args.json:
        args.json.write_text(json.dumps(out, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
