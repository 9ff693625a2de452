"""TNEWS benchmark of the ``text-linear`` model family.

    .venv/bin/python bench/tnews.py                # sentence only
    .venv/bin/python bench/tnews.py --keywords     # keywords as text_pair
    .venv/bin/python bench/tnews.py --limit 5000   # first 5,000 training rows only

Trains on ``tnews/train.json`` and evaluates on ``tnews/dev.json`` (``--data`` defaults to ``../shared/data``
next to the repository). Prints accuracy, macro-F1, training seconds, prediction latency and throughput,
the saved model's size and the RSS of a fresh process that loads it and predicts one text.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

from labelpilot.data.types import Example, Target
from labelpilot.models.text_linear import TextLinearModel
from labelpilot.schema.types import ControlSpec, LabelSpec, TaskKind

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"


def read_rows(path: Path, limit: int | None = None) -> list[dict]:
    rows = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                rows.append(json.loads(line))
                if limit is not None and len(rows) >= limit:
                    break
    return rows


def tnews_control(data_dir: Path) -> ControlSpec:
    labels = [json.loads(line)["label_desc"] for line in (data_dir / "labels.json").open(encoding="utf-8")]
    return ControlSpec(
        name="category",
        type="Choices",
        to_name="text",
        object_type="Text",
        value_key="sentence",
        kind=TaskKind.TEXT_CHOICES,
        labels=tuple(LabelSpec(value=v) for v in labels),
        pair_key="keywords",
    )


def to_examples(rows: list[dict], keywords: bool) -> list[Example]:
    return [
        Example(
            text=r["sentence"],
            text_pair=(r.get("keywords") or None) if keywords else None,
            target=Target(labels=(r["label_desc"],)),
            id=str(i),
        )
        for i, r in enumerate(rows)
    ]


def rss_of_fresh_process(model_dir: Path, control_json: str, text: str) -> float:
    """RSS (MB) of a new Python process after importing, loading the model and predicting once."""
    code = textwrap.dedent(
        f"""
        import json
        from pathlib import Path
        from labelpilot.data.types import Example
        from labelpilot.models.text_linear import TextLinearModel
        from labelpilot.schema.types import ControlSpec, LabelSpec, TaskKind
        c = json.loads({control_json!r})
        control = ControlSpec(name=c["name"], type="Choices", to_name="text", object_type="Text",
                              value_key="sentence", kind=TaskKind.TEXT_CHOICES,
                              labels=tuple(LabelSpec(value=v) for v in c["labels"]))
        model = TextLinearModel.load(Path({str(model_dir)!r}), control)
        model.predict([Example(text={text!r})])
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                print(int(line.split()[1]) / 1024)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="directory holding tnews/ (default: %(default)s)")
    ap.add_argument("--keywords", action="store_true", help="use the keywords field as text_pair")
    ap.add_argument("--limit", type=int, default=None, help="use only the first N training rows")
    ap.add_argument("--dev-limit", type=int, default=None, help="use only the first N dev rows")
    ap.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help='model option, e.g. --option C=0.2 --option "char_ngrams=[1,4]"',
    )
    ap.add_argument("--no-rss", action="store_true", help="skip the fresh-process RSS measurement")
    args = ap.parse_args()

    data_dir = args.data / "tnews"
    missing = [p for p in ("train.json", "dev.json", "labels.json") if not (data_dir / p).exists()]
    if missing:
        print(
            f"TNEWS data not found: {data_dir} lacks {', '.join(missing)}.\n"
            "Put the CLUE TNEWS files there (see ../shared/data/SOURCES.md section 1) or pass --data DIR.",
            file=sys.stderr,
        )
        return 2

    options = {}
    for item in args.option:
        key, _, value = item.partition("=")
        options[key] = json.loads(value)

    control = tnews_control(data_dir)
    train = to_examples(read_rows(data_dir / "train.json", args.limit), args.keywords)
    dev = to_examples(read_rows(data_dir / "dev.json", args.dev_limit), args.keywords)
    load = os.getloadavg()
    print(f"train {len(train)} rows, dev {len(dev)} rows, keywords={args.keywords}, options={options}")
    print(f"load average before training: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cpus")

    model = TextLinearModel(control, **options)
    t0, c0 = time.perf_counter(), time.process_time()
    report = model.fit(train)
    train_seconds, train_cpu = time.perf_counter() - t0, time.process_time() - c0
    metrics = {k: round(v, 4) for k, v in report.metrics.items()}
    print(f"train: {train_seconds:.1f}s wall, {train_cpu:.1f}s cpu; n_train {report.n_train}, n_val {report.n_val}")
    print(f"held-out metrics {metrics}; notes {report.notes}")

    t0 = time.perf_counter()
    preds = model.predict(dev)
    dev_seconds = time.perf_counter() - t0
    gold = [ex.target.labels[0] for ex in dev if ex.target is not None]
    guess = [p.labels[0] if p.labels else "" for p in preds]
    accuracy = float(np.mean([g == p for g, p in zip(gold, guess, strict=True)]))
    names = sorted(set(gold))
    f1s = []
    for name in names:
        tp = sum(1 for g, p in zip(gold, guess, strict=True) if g == p == name)
        n_true = sum(1 for g in gold if g == name)
        n_pred = sum(1 for p in guess if p == name)
        f1s.append(2 * tp / (n_true + n_pred) if n_true + n_pred else 0.0)
    macro_f1 = float(np.mean(f1s))

    # throughput on 10k texts (dev repeated if shorter) and single-text latency
    batch = (dev * (10000 // max(len(dev), 1) + 1))[:10000]
    t0, c0 = time.perf_counter(), time.process_time()
    model.predict(batch)
    batch_seconds, batch_cpu = time.perf_counter() - t0, time.process_time() - c0
    singles = []
    for ex in dev[:500]:
        t1 = time.perf_counter()
        model.predict([ex])
        singles.append(time.perf_counter() - t1)
    singles_ms = np.array(singles) * 1000

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        model.save(model_dir)
        size_mb = sum(f.stat().st_size for f in model_dir.iterdir()) / 2**20
        rss = None
        if not args.no_rss:
            control_json = json.dumps({"name": control.name, "labels": control.label_keys})
            rss = rss_of_fresh_process(model_dir, control_json, dev[0].text)

    load = os.getloadavg()
    print(f"dev accuracy {accuracy:.4f}  macro-F1 {macro_f1:.4f}  ({len(dev)} rows)")
    print(
        f"train seconds {train_seconds:.1f} wall / {train_cpu:.1f} cpu  "
        f"(n_features {int(report.metrics.get('n_features', 0))})"
    )
    print(
        f"predict dev: {len(dev) / dev_seconds:,.0f} texts/s; 10k batch: {batch_seconds:.2f}s wall = "
        f"{10000 / batch_seconds:,.0f} texts/s ({batch_cpu:.2f}s cpu = {10000 / batch_cpu:,.0f} texts/s of cpu)"
    )
    print(f"single text: p50 {np.percentile(singles_ms, 50):.3f} ms, p95 {np.percentile(singles_ms, 95):.3f} ms")
    print(f"model size {size_mb:.1f} MB" + (f"; fresh-process RSS after load+predict {rss:.0f} MB" if rss else ""))
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
