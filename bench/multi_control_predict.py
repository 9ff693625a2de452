"""What serving every control costs: batch predict and the ``/v1`` answer for a one-control bundle (sentiment
``<Choices>``) and a two-control bundle (the same + NER ``<Labels>``), trained here on synthetic sentences.

    PYTHONPATH=src .venv/bin/python bench/multi_control_predict.py [--rows 20000] [--workers 1]

Prints rows/s of ``batch.predict_file`` (CSV in, CSV out, in this process with ``--workers 1``) and the
median time of ``/v1``'s ``_predict_items`` for 100 instances (no HTTP: the work a request does in the
prediction lane). A bundle with two controls runs two models, so its cost is about the sum of both.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import tempfile
import time
from pathlib import Path

from labelpilot.batch import predict_file
from labelpilot.jobs.training import train_bundle
from labelpilot.models.bundle import Bundle
from labelpilot.registry import Registry
from labelpilot.server.serving import _predict_items

CHOICES = ('<Choices name="sentiment" toName="text" choice="single">'
           '<Choice value="Positive"/><Choice value="Negative"/></Choices>')
LABELS = '<Labels name="ner" toName="text"><Label value="Traveller"/><Label value="Destination"/></Labels>'
PEOPLE = ["Alice", "Bob", "Carol", "David", "Emma", "Frank", "Grace", "Henry"]
CITIES = ["Paris", "Berlin", "London", "Madrid", "Rome", "Vienna", "Lisbon"]
GOOD = ["loved the trip to", "had a wonderful time in", "was very happy in", "enjoyed every day in"]
BAD = ["hated the trip to", "had an awful time in", "was very unhappy in", "regretted going to"]


def sentence(i: int) -> tuple[str, bool, str, str]:
    per, loc = PEOPLE[i % len(PEOPLE)], CITIES[(i * 3) % len(CITIES)]
    positive = i % 2 == 0
    return f"{per} {(GOOD if positive else BAD)[(i // 2) % 4]} {loc}", positive, per, loc


def tasks(n: int, with_spans: bool) -> list[dict]:
    out = []
    for i in range(n):
        text, positive, per, loc = sentence(i)
        result = [{"from_name": "sentiment", "to_name": "text", "type": "choices",
                   "value": {"choices": ["Positive" if positive else "Negative"]}}]
        if with_spans:
            for word, label in ((per, "Traveller"), (loc, "Destination")):
                s = text.index(word)
                result.append({"from_name": "ner", "to_name": "text", "type": "labels",
                               "value": {"start": s, "end": s + len(word), "labels": [label]}})
        out.append({"id": i + 1, "data": {"text": text}, "annotations": [{"id": i + 1, "result": result}]})
    return out


def train(with_spans: bool) -> Bundle:
    config = f'<View><Text name="text" value="$text"/>{CHOICES}{LABELS if with_spans else ""}</View>'
    bundle, _ = train_bundle(config, tasks(64, with_spans), options={"sentiment": {"encoder": False}})
    return bundle


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lp-multi-"))
    data = work / "in.csv"
    with data.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "text"])
        w.writerows([i, sentence(i * 7 + 1)[0]] for i in range(args.rows))
    registry = Registry(work / "registry")
    instances = [{"id": str(i), "text": sentence(i)[0]} for i in range(100)]
    for name, with_spans in (("one-control", False), ("two-controls", True)):
        bundle = train(with_spans)
        registry.register(name, bundle)
        t0 = time.perf_counter()
        stats = predict_file(registry, name, data, work / f"{name}.csv", workers=args.workers)
        seconds = time.perf_counter() - t0
        _predict_items(bundle, instances, 10_000)  # warm
        times = []
        for _ in range(15):
            t = time.perf_counter()
            _predict_items(bundle, instances, 10_000)
            times.append(time.perf_counter() - t)
        print(f"{name}: batch predict {stats.predicted} rows in {seconds:.2f} s = {stats.predicted / seconds:,.0f} "
              f"rows/s; /v1 100 instances p50 {statistics.median(times) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
