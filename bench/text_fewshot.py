"""Text encoder benchmark: zero-shot and few-shot accuracy of ``text-linear`` with and without the encoder,
fit times, and the encoder's own speed and memory.

    PYTHONPATH=src .venv/bin/python bench/text_fewshot.py                 # everything (a few minutes)
    PYTHONPATH=src .venv/bin/python bench/text_fewshot.py --only speed    # encoder speed/memory only

Datasets (../shared/data): TNEWS (train pool, 1,000 dev texts), TREC (train pool, the 500 test questions),
SST-2 (train pool, the 872 dev sentences). The zero-shot templates and temperature were tuned on samples of
TNEWS *train* and TREC *train*; SST-2 was held out of all tuning (and TNEWS dev / TREC test were never used
for it). Per-class samples are drawn with a fixed seed; "first N" trains on the first N rows of the train
file, the order a project meets them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from labelpilot.data.types import Example, Target
from labelpilot.encoders import get_encoder
from labelpilot.models.text_linear import TextLinearModel
from labelpilot.schema import parse_label_config
from textdata import label_config, load  # a sibling: bench/ is on sys.path when run as a script

EVAL = {"tnews": "dev", "trec": "test", "sst2": "dev"}
SHOTS = (5, 10, 20, 50, 200)


def examples(texts: list[str], labels: list[str] | None = None) -> list[Example]:
    if labels is None:
        return [Example(text=t) for t in texts]
    return [Example(text=t, target=Target(labels=(lab,))) for t, lab in zip(texts, labels, strict=True)]


def accuracy(model: TextLinearModel, texts: list[str], gold: list[str]) -> float:
    preds = model.predict(examples(texts))
    return float(np.mean([bool(p.labels) and p.labels[0] == g for p, g in zip(preds, gold, strict=True)]))


def per_class(texts: list[str], labels: list[str], n: int, rng: np.random.Generator) -> list[int]:
    out: list[int] = []
    for lab in sorted(set(labels)):
        idx = [i for i, v in enumerate(labels) if v == lab]
        out.extend(rng.permutation(idx)[:n].tolist())
    return sorted(out)


def fit(control, texts, labels, encoder: bool) -> tuple[TextLinearModel, float, dict]:
    model = TextLinearModel(control, encoder=encoder)
    t0, c0 = time.perf_counter(), time.process_time()
    report = model.fit(examples(texts, labels))
    report.metrics["cpu_s"] = time.process_time() - c0  # all threads; closer to an idle machine's wall time
    return model, time.perf_counter() - t0, report.metrics


def run_dataset(name: str, n_eval: int, rows: list[dict]) -> None:
    rng = np.random.default_rng(0)
    pool_t, pool_y = load(name, "train")
    ev_t, ev_y = load(name, EVAL[name])
    pick = rng.permutation(len(ev_t))[:n_eval]
    ev_t, ev_y = [ev_t[i] for i in pick], [ev_y[i] for i in pick]
    get_encoder().encode(ev_t)  # fill the cache: the timings below are of the models, not of encoding
    for hints in (False, True):
        control = parse_label_config(label_config(name, hints)).controls[0]
        zs = TextLinearModel(control)
        acc = accuracy(zs, ev_t, ev_y) if zs.zero_shot_ready() else 0.0
        rows.append({"dataset": name, "setting": "zero-shot, names" + (" + hints" if hints else ""),
                     "n": 0, "encoder": True, "accuracy": acc})
        print(rows[-1], flush=True)
    control = parse_label_config(label_config(name, True)).controls[0]
    settings = [(f"{n}/class", per_class(pool_t, pool_y, n, rng)) for n in SHOTS]
    settings += [(f"first {n}", list(range(n))) for n in (50, 200)]
    for label, idx in settings:
        tr_t, tr_y = [pool_t[i] for i in idx], [pool_y[i] for i in idx]
        if len(set(tr_y)) < 2:
            continue
        for enc in (False, True):
            model, secs, metrics = fit(control, tr_t, tr_y, enc)
            rows.append({"dataset": name, "setting": label, "n": len(idx), "encoder": enc,
                         "accuracy": accuracy(model, ev_t, ev_y), "fit_s": round(secs, 3),
                         "mix": metrics.get("encoder_mix")})
            print(rows[-1], flush=True)


def fit_times(rows: list[dict]) -> None:
    pool_t, pool_y = load("tnews", "train")
    control = parse_label_config(label_config("tnews", True)).controls[0]
    enc = get_encoder()
    for n in (20, 200, 1000):
        tr_t, tr_y = pool_t[20000 : 20000 + n], pool_y[20000 : 20000 + n]
        t0 = time.perf_counter()
        enc.encode(tr_t)
        first = time.perf_counter() - t0
        fit(control, tr_t, tr_y, False)  # once for imports and jieba's dictionary
        _, base, m_base = fit(control, tr_t, tr_y, False)
        _, cached, m_cached = fit(control, tr_t, tr_y, True)
        rows.append({"fit_n": n, "tfidf_s": round(base, 3), "tfidf_cpu_s": round(m_base["cpu_s"], 3),
                     "mixed_cached_s": round(cached, 3), "mixed_cached_cpu_s": round(m_cached["cpu_s"], 3),
                     "encode_uncached_s": round(first, 3)})
        print(rows[-1], flush=True)


def predict_cpu(rows: list[dict]) -> None:
    """CPU ms of text-linear's predict (the work behind /predict, without HTTP) for 1 and 100 texts never seen
    and 100 cached, with the mixed model (1,000 TNEWS examples) and with the TF-IDF model alone."""
    pool_t, pool_y = load("tnews", "train")
    control = parse_label_config(label_config("tnews", True)).controls[0]
    fresh = iter(pool_t[30000:])
    for enc in (True, False):
        model, _, _ = fit(control, pool_t[:1000], pool_y[:1000], enc)
        model.predict(examples([next(fresh)]))

        def cpu_ms(texts: list[str], _m=model) -> float:
            c = time.process_time()
            _m.predict(examples(texts))
            return (time.process_time() - c) * 1000

        one = [cpu_ms([next(fresh)]) for _ in range(200)]
        batches = [[next(fresh) for _ in range(100)] for _ in range(10)]
        first = [cpu_ms(b) for b in batches]
        again = [cpu_ms(b) for b in batches]
        rows.append({"predict_cpu_ms": "mixed" if enc else "tfidf", "1_new_p50": round(float(np.median(one)), 2),
                     "100_new_p50": round(float(np.median(first)), 1),
                     "100_cached_p50": round(float(np.median(again)), 1)})
        print(rows[-1], flush=True)


SPEED = r"""
import json, time
def hwm():
    return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM')) / 1024
import numpy as np, onnxruntime
from labelpilot.models import text_linear
before = hwm()
t0 = time.perf_counter()
from labelpilot.encoders import get_encoder
enc = get_encoder()
load = time.perf_counter() - t0
texts = [f"这是第{i}条测试新闻：球队在主场以{i}比一获胜 match report number {i}" for i in range(3000)]
out = {"load_s": round(load, 2)}
pos = 0
for b in (1, 64, 100):
    times = []
    for _ in range(8 if b > 1 else 50):
        batch = texts[pos : pos + b]; pos += b
        t = time.perf_counter(); enc.encode(batch); times.append(time.perf_counter() - t)
    out[f"ms_per_text_b{b}"] = round(float(np.median(times)) / b * 1000, 2)
t = time.perf_counter(); enc.encode(texts[:100]); out["ms_100_cached"] = round((time.perf_counter() - t) * 1000, 2)
out["rss_added_mb"] = round(hwm() - before, 1)
print(json.dumps(out))
"""


def speed(rows: list[dict]) -> None:
    done = subprocess.run([sys.executable, "-c", SPEED], capture_output=True, text=True, check=True)
    rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(rows[-1], flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", choices=["speed", "accuracy", "fit", "predict"], default=None)
    ap.add_argument("--eval", type=int, default=1000)
    ap.add_argument("--datasets", default="tnews,trec,sst2")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    rows: list[dict] = []
    print("load average", Path("/proc/loadavg").read_text().strip())
    if args.only in (None, "speed"):
        speed(rows)
    if args.only in (None, "accuracy"):
        for name in args.datasets.split(","):
            run_dataset(name, args.eval, rows)
    if args.only in (None, "fit"):
        fit_times(rows)
    if args.only in (None, "predict"):
        predict_cpu(rows)
    print("load average", Path("/proc/loadavg").read_text().strip())
    if args.out:
        args.out.write_text(json.dumps(rows, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
