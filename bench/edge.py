"""Compressed models for the edge (issue 15 §9): int8 against fp32 for the hymenoptera classifier and the
raccoon detector, through the real ``labelpilot export --quantize int8`` path.

    .venv/bin/python bench/edge.py                 # both, print only
    .venv/bin/python bench/edge.py --write         # ... and write bench/RESULTS.md "## Edge: int8 export"
    .venv/bin/python bench/edge.py --task cls      # hymenoptera only (det: raccoon only)

For each model: train it (hymenoptera train/ -> image-classifier; raccoon CSV train split -> image-detector),
register it, export it with ``quantize="int8"`` calibrated on (up to 64 of) its **training** images, with the
held-out images (hymenoptera val/, raccoon CSV test split) as ``eval_data``. Reported: the backbone graph's
size fp32 -> int8, its CPU latency at batch 1 (median of 20 runs, onnxruntime with the project's 2 threads),
the whole model's predict latency per image (p50 over single-image calls, feature cache cleared) loaded from
the fp32 and the int8 export, and accuracy / mAP@0.5 before and after on the held-out images. The load average
is printed with every timing (other jobs share the 2 cores). A data set that is absent is skipped with the reason.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from labelpilot.batch import export_model, read_export
from labelpilot.data.types import Example, FitReport
from labelpilot.models.bundle import Bundle
from labelpilot.registry import Registry
from labelpilot.schema import make_label_config, parse_label_config
from vision import hymenoptera, raccoon

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
SECTION = "## Edge: int8 export (issue 15)"
TARGETS = "targets: int8 size <= 30 % of fp32, CPU latency <= 70 %, accuracy / mAP@0.5 within 1 point"


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.1f}/{five:.1f}"


def predict_p50(folders: list[Path], examples: list[Example], n: int = 40) -> list[float]:
    """p50 ms of single-image ``predict`` calls (feature cache cleared) for each exported model, interleaved."""
    from labelpilot.models.vision import backbone

    models = [next(iter(read_export(f)[1].models.values())) for f in folders]
    for model in models:
        model.predict(examples[:1])
    times: list[list[float]] = [[] for _ in models]
    for ex in examples[:n]:
        for k, model in enumerate(models):
            backbone.FEATURES.clear()
            t = time.perf_counter()
            model.predict([ex])
            times[k].append((time.perf_counter() - t) * 1000)
    return [statistics.median(t) for t in times]


def _link_folder(root: Path, files: list[str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for f in files:
        (root / Path(f).name).symlink_to(f)
    return root


def run(task: str, data: Path, work: Path, lines: list[str], keep_fp32: str | None = None) -> None:
    reg = Registry(work / "reg")
    if task == "cls":
        root = data / "hymenoptera"
        if not root.is_dir():
            lines.append(f"- hymenoptera skipped: `{root}` missing")
            print(lines[-1])
            return
        train, held = hymenoptera(root)
        schema = parse_label_config(make_label_config(["ants", "bees"], kind="image-choices"))
        from labelpilot.models.vision.classifier import ImageClassifier

        model: Any = ImageClassifier(schema.controls[0])
        calib, evals, metric, name = root / "train", root / "val", "accuracy", "hymenoptera"
    else:
        root = data / "raccoon_detection"
        if not root.is_dir():
            lines.append(f"- raccoon skipped: `{root}` missing")
            print(lines[-1])
            return
        train, held = raccoon(root)
        schema = parse_label_config(make_label_config(["raccoon"], kind="rectangles"))
        from labelpilot.models.vision.detector import ImageDetector

        model = ImageDetector(schema.controls[0], seed=0)
        # calibration: training images only; eval: the test split's VOC files next to an images/ folder
        calib = _link_folder(work / "calib", [ex.image for ex in train if ex.image][::2])
        ann = _link_folder(work / "test" / "annotations",
                           [str(root / "annotations" / (Path(ex.image).stem + ".xml")) for ex in held if ex.image])
        (work / "test" / "images").symlink_to(root / "images")
        evals, metric, name = ann, "map50", "raccoon"
    t = time.perf_counter()
    before = load()
    report: FitReport = model.fit(train)
    print(f"{name}: trained on {report.n_train} in {time.perf_counter() - t:.0f} s ({before} -> {load()})")
    reg.register(name, Bundle(schema, {schema.controls[0].name: model}), report=report)
    fp32_dir = export_model(reg, name, work / "fp32")
    t = time.perf_counter()
    int8_dir = export_model(reg, name, work / "int8", quantize="int8", calibration=calib, eval_data=evals,
                             keep_fp32=keep_fp32)
    t_export = time.perf_counter() - t
    info = json.loads((int8_dir / "manifest.json").read_text())["quantization"]["controls"][schema.controls[0].name]
    print(json.dumps(info, indent=1))
    lat_load = load()
    p_fp32, p_int8 = predict_p50([fp32_dir, int8_dir], held)
    after_load = load()
    b, a = info[f"{metric}_fp32"], info[f"{metric}_int8"]
    size_ok = "met" if info["size_ratio"] <= 0.30 else "NOT met"
    lat_ok = "met" if info["latency_ratio"] <= 0.70 else "NOT met"
    acc_ok = "met" if b - a <= 0.01 else "NOT met"
    lines += [
        f"- **{name}** ({info['family']}, trained on {report.n_train}, evaluated on {info['n_eval']} held-out images; "
        f"static QDQ calibrated on {info['calibration_inputs']} training images"
        + (f", kept fp32: {len(info['kept_fp32'])} node(s)" if info.get("kept_fp32") else "")
        + f", export {t_export:.0f} s):",
        f"  backbone graph **{info['graph_bytes_fp32'] / 1e6:.1f} MB -> {info['graph_bytes_int8'] / 1e6:.1f} MB "
        f"({100 * info['size_ratio']:.0f} %, {size_ok})**; graph latency batch 1 **{info['latency_ms_fp32']:.1f} -> "
        f"{info['latency_ms_int8']:.1f} ms ({100 * info['latency_ratio']:.0f} %, {lat_ok})** ({lat_load});",
        f"  whole-model predict p50 per image {p_fp32:.1f} ms fp32 -> {p_int8:.1f} ms int8 ({lat_load} -> "
        f"{after_load}); {metric} **{b:.3f} -> {a:.3f}** ({100 * (a - b):+.1f} points, {acc_ok})."
        + (f" {info['note']}." if info.get("note") else ""),
    ]
    print("\n".join(lines[-3:]))


def write_section(lines: list[str], command: str) -> None:
    text = RESULTS.read_text(encoding="utf-8")
    stamp = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    body = f"{SECTION}\n\n`{command}` ({stamp} UTC, 2 cores shared with other jobs; {TARGETS})\n\n" + "\n".join(
        lines) + "\n"
    if SECTION in text:
        start = text.index(SECTION)
        # up to the next section or the section's first hand-written "###" subsection (the sweeps), kept
        ends = [i for i in (text.find("\n## ", start + len(SECTION)), text.find("\n### ", start)) if i >= 0]
        nxt = min(ends) if ends else -1
        text = text[:start] + body + ("\n" + text[nxt + 1 :] if nxt >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + body
    RESULTS.write_text(text, encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--task", choices=["cls", "det", "both"], default="both")
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--keep-fp32", choices=["none", "stem", "boundary"], default=None)
    args = ap.parse_args()
    lines: list[str] = []
    for task in (["cls", "det"] if args.task == "both" else [args.task]):
        with tempfile.TemporaryDirectory(prefix=f"lp-edge-{task}-") as tmp:
            run(task, args.data, Path(tmp), lines, args.keep_fp32)
    if args.write:
        write_section(lines, "python bench/edge.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
