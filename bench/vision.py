"""Benchmark of the vision families (``image-classifier``, ``image-detector``) on the shared data sets.

    .venv/bin/python bench/vision.py                      # both, print only
    .venv/bin/python bench/vision.py --write              # ... and write bench/RESULTS.md "## Vision"
    .venv/bin/python bench/vision.py --task cls           # hymenoptera: train/ -> val/
    .venv/bin/python bench/vision.py --task det           # raccoon: CSV split, 160 train -> 40 test
    .venv/bin/python bench/vision.py --task det --option epochs=8 --option variants=8

Prints val accuracy (classification) / test mAP@0.5 (detection), training time (cold: every image
featurised, the ONNX export of the backbone already cached on disk -- its one-off cost is timed
separately), and per-image predict latency (p50/p90 over single-image ``predict`` calls with the feature
cache cleared, as the server calls the model for one task). Every timing is printed with the load
average (``os.getloadavg``): other processes share the 2 cores.

Hymenoptera's ``train/ants/imageNotFound.gif`` (a placeholder, not an ant) is left out: 244 train images.
"""

from __future__ import annotations

import argparse
import csv
import os
import shlex
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from labelpilot.data.types import Box, Example, Target
from labelpilot.geometry import corners, iou
from labelpilot.schema.types import ControlSpec, LabelSpec, TaskKind

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
SECTION = "## Vision"


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.1f}/{five:.1f}"


def _value(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


def _options(pairs: list[str]) -> dict[str, Any]:
    out = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        out[key.strip()] = _value(value.strip())
    return out


def _latency(predict: Any, examples: list[Example], clear: Any, n: int) -> tuple[float, float]:
    times = []
    predict(examples[:1])  # warm-up (session creation, first allocation)
    for ex in examples[:n]:
        clear()
        t = time.perf_counter()
        pred = predict([ex])[0]
        times.append((time.perf_counter() - t) * 1000)
        if pred.error:
            print("  predict error:", pred.error)
    times.sort()
    return statistics.median(times), times[int(0.9 * (len(times) - 1))]


# ------------------------------------------------------------------------------------ classification


def hymenoptera(root: Path) -> tuple[list[Example], list[Example]]:
    def read(split: str) -> list[Example]:
        out = []
        for label in ("ants", "bees"):
            for p in sorted((root / split / label).iterdir()):
                if p.name == "imageNotFound.gif":
                    continue
                out.append(Example(image=str(p), target=Target(labels=(label,)), id=f"{split}/{label}/{p.name}"))
        return out

    return read("train"), read("val")


def bench_classifier(data: Path, options: dict[str, Any], lines: list[str], compare_engines: bool = False) -> None:
    from labelpilot.models.vision import backbone
    from labelpilot.models.vision.classifier import ImageClassifier

    root = data / "hymenoptera"
    if not root.is_dir():
        print(f"skip classification: {root} missing")
        lines.append(f"- classification skipped: `{root}` missing")
        return
    train, val = hymenoptera(root)
    control = ControlSpec(name="insect", type="Choices", to_name="image", object_type="Image", value_key="image",
                          kind=TaskKind.IMAGE_CHOICES, labels=(LabelSpec("ants"), LabelSpec("bees")))
    model = ImageClassifier(control, **options)
    t = time.perf_counter()
    net = backbone.pooled_features(int(model.options["image_size"]), str(model.options["engine"]))
    t_backbone = time.perf_counter() - t
    backbone.FEATURES.clear()
    before = load()
    t = time.perf_counter()
    report = model.fit(train, val=val)
    t_fit = time.perf_counter() - t
    after = load()
    m = report.metrics
    print(f"hymenoptera: train {report.n_train} / val {report.n_val} images, engine {net.engine}, options {options}")
    print(f"  val accuracy {m['val_accuracy']:.4f}  log loss {m['val_log_loss']:.4f}  ECE {m['val_ece']:.4f}  "
          f"(cv accuracy {m.get('cv_accuracy', float('nan')):.4f}, C={m.get('C')})")
    print(f"  fit {t_fit:.1f} s ({before} -> {after}); backbone load/export {t_backbone:.1f} s")
    with tempfile.TemporaryDirectory() as tmp:
        model.save(Path(tmp))
        served = ImageClassifier.load(Path(tmp), control)
    lat_before = load()
    p50, p90 = _latency(served.predict, val, backbone.FEATURES.clear, 60)
    print(f"  predict per image p50 {p50:.1f} ms  p90 {p90:.1f} ms ({lat_before} -> {load()})")
    engines = ""
    if compare_engines:
        with tempfile.TemporaryDirectory() as tmp:
            model.save(Path(tmp))
            eager = ImageClassifier.load(Path(tmp), control)
        eager.options["engine"] = "torch"
        eager._features = type(eager._features)(eager.options)
        t_before = load()
        t50, t90 = _latency(eager.predict, val, backbone.FEATURES.clear, 20)
        print(f"  same model, eager torch backbone: p50 {t50:.1f} ms  p90 {t90:.1f} ms ({t_before} -> {load()})")
        engines = f" Eager torch instead of onnxruntime: p50 {t50:.1f} ms, p90 {t90:.1f} ms ({t_before})."
    lines += [
        f"- **hymenoptera** (ants/bees, train {report.n_train} -> val {report.n_val}), "
        f"options `{options or 'default'}`, backbone via {net.engine}:",
        f"  val accuracy **{m['val_accuracy']:.3f}**, log loss {m['val_log_loss']:.3f}, ECE {m['val_ece']:.3f} "
        f"(chosen C={m.get('C')}, cv accuracy {m.get('cv_accuracy', float('nan')):.3f});",
        f"  training **{t_fit:.1f} s** cold ({before} -> {after}); predict p50 **{p50:.1f} ms**, p90 {p90:.1f} ms "
        f"per image ({lat_before}).{engines}",
    ]


# ----------------------------------------------------------------------------------------- detection


def raccoon(root: Path) -> tuple[list[Example], list[Example]]:
    def read(name: str) -> list[Example]:
        rows: dict[str, list[Box]] = defaultdict(list)
        with open(root / "data" / f"{name}_labels.csv", newline="") as fh:
            for r in csv.DictReader(fh):
                w, h = float(r["width"]), float(r["height"])
                x1, y1, x2, y2 = (float(r[k]) for k in ("xmin", "ymin", "xmax", "ymax"))
                rows[r["filename"]].append(Box(x1 / w, y1 / h, (x2 - x1) / w, (y2 - y1) / h, r["class"]))
        return [Example(image=str(root / "images" / f), target=Target(boxes=tuple(b)), id=f) for f, b in
                sorted(rows.items())]

    return read("train"), read("test")


def bench_detector(data: Path, options: dict[str, Any], lines: list[str]) -> None:
    from labelpilot.models.vision.detector import ImageDetector, average_precision

    root = data / "raccoon_detection"
    if not root.is_dir():
        print(f"skip detection: {root} missing")
        lines.append(f"- detection skipped: `{root}` missing")
        return
    train, test = raccoon(root)
    control = ControlSpec(name="label", type="RectangleLabels", to_name="image", object_type="Image",
                          value_key="image", kind=TaskKind.IMAGE_BOXES, labels=(LabelSpec("raccoon"),))
    model = ImageDetector(control, **options)
    t = time.perf_counter()
    model._taps()  # the one-off ONNX export (cached on disk afterwards)
    t_backbone = time.perf_counter() - t
    before = load()
    t = time.perf_counter()
    report = model.fit(train)
    t_fit = time.perf_counter() - t
    after = load()
    m = report.metrics
    preds = model.predict(test, threshold=float(model.options["min_score"]))
    ap = average_precision([p.boxes for p in preds], [ex.target.boxes for ex in test])["mAP"]  # type: ignore[union-attr]
    ap75 = average_precision([p.boxes for p in preds], [ex.target.boxes for ex in test], iou=0.75)["mAP"]  # type: ignore[union-attr]
    thr = model.threshold
    kept = [[b for b in p.boxes if (b.score or 0) >= thr] for p in preds]
    tp = sum(1 for p, ex in zip(kept, test, strict=True) for g in ex.target.boxes  # type: ignore[union-attr]
             if any(_iou(g, b) >= 0.5 for b in p))
    n_gt = sum(len(ex.target.boxes) for ex in test)  # type: ignore[union-attr]
    n_pred = sum(len(p) for p in kept)
    print(f"raccoon: train {report.n_train} -> test {len(test)} images, {report.notes[0]}, options {options}")
    print(f"  test mAP@0.5 {ap:.4f}  mAP@0.75 {ap75:.4f}; at threshold {thr}: {n_pred} boxes, "
          f"recall {tp / n_gt:.3f}")
    print(f"  fit {t_fit:.1f} s (features {m['feature_seconds']:.1f} s, head {m['head_seconds']:.1f} s; "
          f"{before} -> {after}); backbone load/export {t_backbone:.1f} s")
    with tempfile.TemporaryDirectory() as tmp:
        model.save(Path(tmp))
        served = ImageDetector.load(Path(tmp), control)
    lat_before = load()
    p50, p90 = _latency(served.predict, test, lambda: None, 40)
    print(f"  predict per image p50 {p50:.1f} ms  p90 {p90:.1f} ms ({lat_before} -> {load()})")
    other = not bool(served.options["flip_test"])
    served.options["flip_test"] = other
    alt = served.predict(test, threshold=float(served.options["min_score"]))
    ap_alt = average_precision([p.boxes for p in alt], [ex.target.boxes for ex in test])["mAP"]  # type: ignore[union-attr]
    alt_before = load()
    a50, a90 = _latency(served.predict, test, lambda: None, 40)
    print(f"  with flip_test={other}: test mAP@0.5 {ap_alt:.4f}, predict p50 {a50:.1f} ms  p90 {a90:.1f} ms "
          f"({alt_before} -> {load()})")
    lines += [
        f"- **raccoon** (train {report.n_train} -> test {len(test)} images, CSV split), options "
        f"`{options or 'default'}`, {report.notes[0]}:",
        f"  test mAP@0.5 **{ap:.3f}** (mAP@0.75 {ap75:.3f}); at the default threshold {thr}: {n_pred} boxes for "
        f"{n_gt} raccoons, recall@IoU0.5 {tp / n_gt:.3f};",
        f"  training **{t_fit:.0f} s** (features {m['feature_seconds']:.0f} s + head {m['head_seconds']:.0f} s; "
        f"{before} -> {after}); predict p50 **{p50:.1f} ms**, p90 {p90:.1f} ms per image ({lat_before});",
        f"  same model with flip_test={other}: test mAP@0.5 {ap_alt:.3f}, predict p50 {a50:.1f} ms, p90 {a90:.1f} ms "
        f"({alt_before}).",
    ]


def _iou(a: Box, b: Box) -> float:
    return iou(corners(a.x, a.y, a.width, a.height), corners(b.x, b.y, b.width, b.height))


# ------------------------------------------------------------------------------------------- results


NOTES = [
    "",
    "Targets: hymenoptera val accuracy >= 0.92 with training <= 2 min; raccoon test mAP@0.5 >= 0.6 (stretch 0.8)",
    "with training <= 20 min; predict p50 <= 50 ms (classification) / <= 150 ms (detection) per image.",
    "",
    "- Classifier: frozen EfficientNet-Lite0 (ImageNet) pooled 1280-d features (224 px centre crop, plus the",
    "  mirrored image for training) + logistic regression, C chosen by 4-fold log loss. Earlier variants",
    "  (squash vs centre crop, raw vs L2-normalised features, C 0.1-1000) all scored 0.92-0.95 val accuracy.",
    "- Detector: CenterNet/TTFNet-style head (0.14 M parameters) on the frozen stride-16/32 feature maps, trained",
    "  on 16 cached augmented variants per image for 6 epochs; test-time mirroring on by default. The experiment",
    "  table (stride 8 vs 16, epochs, width, seeds, 1280-d features) is in the module docstring of",
    "  `labelpilot/models/vision/detector.py`; run-to-run spread of test mAP@0.5 seen: 0.87-0.95.",
    "- Eager torch on these shared cores is erratic (2 OpenMP threads spin when the load exceeds the core count),",
    "  so the backbones run in onnxruntime (exported once, cached under `$LABELPILOT_CACHE_DIR`) and the",
    "  detector head is trained with 1 torch thread when the machine is busy.",
]


def write_section(lines: list[str], command: str) -> None:
    """Replace (or append) the ``## Vision`` section of bench/RESULTS.md, leaving other sections alone."""
    stamp = time.strftime("%Y-%m-%d %H:%M")
    body = [SECTION, "", f"`{command}` ({stamp}, {os.cpu_count()} cores shared with other jobs)", "", *lines, *NOTES,
            ""]
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.is_file() else "# Benchmark results\n\n"
    out, skipping, replaced = [], False, False
    for line in text.splitlines():
        if line.strip() == SECTION:
            skipping, replaced = True, True
            out.extend(body)
            continue
        if skipping and line.startswith("## "):
            skipping = False
        if not skipping:
            out.append(line)
    if not replaced:
        if out and out[-1].strip():
            out.append("")
        out.extend(body)
    RESULTS.write_text("\n".join(out).rstrip() + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", choices=["cls", "det", "all"], default="all")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data directory")
    ap.add_argument("--option", action="append", default=[], help="model option key=value (repeatable)")
    ap.add_argument("--write", action="store_true", help=f"write the results into {RESULTS.name} ({SECTION})")
    ap.add_argument("--compare-engines", action="store_true", help="also time the classifier with eager torch")
    ap.add_argument("--seeds", type=int, default=1, help="detector: train this many times (seeds 0..n-1)")
    args = ap.parse_args(argv)
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    options = _options(args.option)
    lines: list[str] = []
    if args.task in ("cls", "all"):
        bench_classifier(args.data, options, lines, args.compare_engines)
    if args.task in ("det", "all"):
        for seed in range(args.seeds):
            bench_detector(args.data, {**options, "seed": seed} if args.seeds > 1 else options, lines)
    if args.write:
        command = "python bench/vision.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None
                                                                                 else sys.argv[1:]))
        write_section(lines, command.strip())
        print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
