"""In-process replays of `labelpilot bench prelabel`'s single-label text streams, over many task orders.

    PYTHONPATH=src .venv/bin/python bench/text_stream.py stream --datasets trec,sst2 --seeds 0-9
    PYTHONPATH=src .venv/bin/python bench/text_stream.py early --datasets tnews --seeds 0-5
    PYTHONPATH=src .venv/bin/python bench/text_stream.py first10 --datasets tnews --seeds 0-999
    PYTHONPATH=src .venv/bin/python bench/text_stream.py speed      # fit at 1,000 / predict one text, both heads
    ... --old     # the few-shot head as before: no centroids, prior worth 1 row, no mix shrinkage

``stream``: zero-shot until the first model, retrain after 1, 2, 5, then every 10 annotations, each model
serving from the next task on (the bench's schedule without its waiting: a retrain is always done in time);
accuracy per window of tasks. ``early``: the models after 0 (zero-shot), 1, 2, 5, 10, 20, 50 annotations
of an order, scored on tasks 51-200 of that order (150 texts none of them saw), so "an early model is not
worse than zero-shot" is judged on more than the bench's 10 tasks. ``first10``: zero-shot accuracy over the
first 10 tasks of each order (the bench's pool reordered by the seed): how noisy the tasks 1-10 window is.
``speed``: text-linear fit on 1,000 TNEWS annotations (vectors cached, 3 repetitions) and one-task
predict p50 (300 new texts, model on 200), with the head as it is and as before, alternating in one process.
The task orders are ``labelpilot.prelabel.datasets.load(name, root, 200, seed)``; seed 0 is the bench's.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import labelpilot.models.text_fewshot as fs
from labelpilot.data.types import Example, Target
from labelpilot.models.text_linear import TextLinearModel
from labelpilot.prelabel import datasets as dsets
from labelpilot.schema import parse_label_config
from labelpilot.testing.corpora import SIZES, default_data_root, load_text_dataset

WINDOWS = ((1, 10), (11, 50), (51, 100), (101, 200), (1, 200))
EARLY = (0, 1, 2, 5, 10, 20, 50)


def _retrains(n: int) -> bool:
    return n in (1, 2, 5) or (n >= 10 and n % 10 == 0)


def _order(name: str, root: Path, seed: int):
    ds = dsets.load(name, root, 200, seed=seed)
    control = parse_label_config(ds.label_config).controls[0]
    texts = [t["data"]["text"] for t in ds.tasks]
    gold = [g[0]["value"]["choices"][0] for g in ds.gold]
    return control, texts, gold


def _fit(control, texts: list[str], gold: list[str]) -> TextLinearModel:
    model = TextLinearModel(control)
    if texts:
        model.fit([Example(text=t, target=Target(labels=(g,))) for t, g in zip(texts, gold, strict=True)])
    return model


def _accuracy(model: TextLinearModel, texts: list[str], gold: list[str]) -> np.ndarray:
    preds = model.predict([Example(text=t) for t in texts])
    return np.array([bool(p.labels) and p.labels[0] == g for p, g in zip(preds, gold, strict=True)], float)


def stream(name: str, root: Path, seed: int) -> dict[str, float]:
    control, texts, gold = _order(name, root, seed)
    model, correct = _fit(control, [], []), []
    for i in range(len(texts)):
        correct.append(_accuracy(model, [texts[i]], [gold[i]])[0])
        if _retrains(i + 1):
            model = _fit(control, texts[: i + 1], gold[: i + 1])
    c = np.array(correct)
    return {f"{a}-{b}": float(c[a - 1 : b].mean()) for a, b in WINDOWS}


def early(name: str, root: Path, seed: int) -> dict[str, float]:
    control, texts, gold = _order(name, root, seed)
    return {f"n={n}": float(_accuracy(_fit(control, texts[:n], gold[:n]), texts[50:], gold[50:]).mean())
            for n in EARLY}


def first10(name: str, root: Path, seeds: list[int]) -> None:
    data = load_text_dataset(name, root, SIZES[name])
    control = _order(name, root, 0)[0]
    labels = [dsets.NAMES.get(name, {}).get(lab, lab) for lab in data.labels]
    ok = _accuracy(_fit(control, [], []), data.texts, [labels[int(y)] for y in data.y])
    f10 = np.array([ok[np.random.default_rng(s).permutation(len(ok))[:10]].mean() for s in seeds])
    print(f"{name}: zero-shot on the whole {len(ok)}-text pool {ok.mean():.3f}; first 10 tasks over {len(seeds)} "
          f"orders: mean {f10.mean():.3f}, sd {f10.std():.3f}, share >= 0.30 {(f10 >= 0.3 - 1e-9).mean():.2f}; "
          f"seed {seeds[0]}: {f10[0]:.1f}")


def speed(root: Path) -> None:
    import time  # lazy: only this mode times anything

    control, texts, gold = _order("tnews", root, 0)
    ds = dsets.load("tnews", root, 1900, seed=3)
    texts = [t["data"]["text"] for t in ds.tasks]
    gold = [g[0]["value"]["choices"][0] for g in ds.gold]
    _fit(control, texts[:1000], gold[:1000])  # the vectors cached
    heads = {"new": (True, fs.PRIOR_ROWS, fs.MIX_PRIOR_ROWS), "old": (False, 1.0, 0.0)}
    slot = 0
    for _rep in range(3):
        for tag, cfg in heads.items():
            fs.CENTROIDS, fs.PRIOR_ROWS, fs.MIX_PRIOR_ROWS = cfg
            c0, t0 = time.process_time(), time.perf_counter()
            _fit(control, texts[:1000], gold[:1000])
            fit_wall, fit_cpu = time.perf_counter() - t0, time.process_time() - c0
            model = _fit(control, texts[:200], gold[:200])
            probe = texts[1000 + 150 * slot : 1150 + 150 * slot]  # texts the encoder has not seen yet
            slot += 1
            ms = []
            for t in probe:
                t1 = time.perf_counter()
                model.predict([Example(text=t)])
                ms.append((time.perf_counter() - t1) * 1000)
            print(f"{tag}: fit 1,000 {fit_wall:.2f} s wall / {fit_cpu:.2f} s CPU; one-task predict p50 "
                  f"{np.median(ms):.2f} ms", flush=True)


def _seeds(spec: str) -> list[int]:
    if "-" in spec:
        lo, hi = spec.split("-")
        return list(range(int(lo), int(hi) + 1))
    return [int(s) for s in spec.split(",")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=("stream", "early", "first10", "speed"))
    ap.add_argument("--datasets", default="tnews")
    ap.add_argument("--seeds", default="0-4")
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--old", action="store_true", help="the head before centroids and the stronger priors")
    args = ap.parse_args()
    if args.old:
        fs.CENTROIDS, fs.PRIOR_ROWS, fs.MIX_PRIOR_ROWS = False, 1.0, 0.0
    root = args.data or default_data_root()
    seeds = _seeds(args.seeds)
    if args.mode == "speed":
        speed(root)
        return
    for name in args.datasets.split(","):
        if args.mode == "first10":
            first10(name, root, seeds)
            continue
        rows = [(stream if args.mode == "stream" else early)(name, root, s) for s in seeds]
        for s, row in zip(seeds, rows, strict=True):
            print(name, s, " ".join(f"{k} {v:.2f}" for k, v in row.items()), flush=True)
        print(name, f"mean over {len(seeds)} orders:", " ".join(f"{k} {np.mean([r[k] for r in rows]):.3f}"
                                                            for k in rows[0]))


if __name__ == "__main__":
    main()
