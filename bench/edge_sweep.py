"""Sweep of onnxruntime quantization choices for the raccoon detector's taps graph (issue 15, bench/RESULTS.md
"Edge"): one detector is trained (and kept under ``--work``), then each choice writes its int8 graph into a copy of
the model folder and is measured there.

    .venv/bin/python bench/edge_sweep.py --data /work/shared/data --seed 0                 # every choice
    .venv/bin/python bench/edge_sweep.py --data /work/shared/data --seed 1 --only base,pct_excl_stem
    .venv/bin/python bench/edge_sweep.py --data /work/shared/data --seed 2 --only excl_stem --refit

Per choice: graph size and CPU latency (batch 1, median of 30 interleaved runs) against fp32, test mAP@0.5 of the
whole detector (40 held-out images, 44 raccoons: one box is ~2.3 points, so this figure is coarse), and the
relative L2 error of the two feature maps (c4, c5) against fp32 on the same 40 test images (a finer measure of
how much the quantization changes what the head sees). Calibration: every second training image, at most 64.

``--refit``: also train a fresh head (same seed, so the same initialisation and augmentations) on the int8
graph's features of the training images and report its test mAP@0.5 (``map_int8_refit``): does a head fitted on
the features it will see at run time recover what quantization loses?
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from labelpilot.models.vision import backbone
from labelpilot.models.vision.detector import ImageDetector
from labelpilot.models.vision.int8 import QUANT_TAPS, _graphs
from labelpilot.quantize import _guarded, calibration_arrays, fp32_taps_graph, latency_ms, quality, quantize_graph
from labelpilot.schema import make_label_config, parse_label_config
from vision import raccoon

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def choices(convs: list[str]) -> dict[str, dict[str, Any]]:
    """name -> keyword arguments of ``labelpilot.quantize.quantize_graph`` (static QDQ throughout)."""
    return {
        "base": {},  # the export's default: per-channel int8 weights, uint8 activations, MinMax
        "excl_stem": {"exclude": convs[:1]},
        "pct_excl_stem": {"calibrate_method": "Percentile", "exclude": convs[:1]},
        "pct99999": {"calibrate_method": "Percentile"},
        "entropy": {"calibrate_method": "Entropy"},
        "tensor_w": {"per_channel": False},
        "sym_act_int8": {"activation_type": "QInt8", "act_symmetric": True},
        "reduce_range": {"reduce_range": True},
        "conv_only": {"op_types": ["Conv"]},
        "excl_last2conv": {"exclude": convs[-2:]},
        "excl_stem_last1": {"exclude": convs[:1] + convs[-1:]},
        "calib_moving_avg": {"extra": {"CalibMovingAverage": True}},
        # the first MBConv block(s) after the stem kept fp32 (per-tensor SQNR shows the error enters there)
        "excl_block0": {"exclude": convs[:1] + [c for c in convs if "blocks.0/" in c]},
        "excl_block1": {"exclude": convs[:1] + [c for c in convs if "blocks.0/" in c or "blocks.1/" in c]},
    }


def refit_head(control: Any, seed: int, folder: Path, train: list[Any], held: list[Any], before: float
               ) -> dict[str, Any]:
    """A fresh head of the same seed trained on the int8 taps graph in ``folder`` (saved under ``folder/refit``)."""
    t = time.perf_counter()
    model = ImageDetector(control, seed=seed)
    model.taps_graph_ = folder / QUANT_TAPS
    model.fit(train)
    seconds = time.perf_counter() - t
    model.save(folder / "refit")
    _, after = quality(model, held)
    return {"map_int8_refit": round(after, 4), "refit_points": round(100 * (after - before), 2),
            "refit_s": round(seconds, 1), "refit_load": round(os.getloadavg()[0], 1)}


def guard_row(fp32: bytes, mdir: Path, work: Path, calib: list[Any], val: list[Any], held: list[Any], control: Any,
              before: float, tolerance: float) -> dict[str, Any]:
    """``labelpilot.quantize._guarded`` (the ``--keep-fp32 auto`` path) on this detector, then its test mAP."""
    d = work / "v-guard"
    shutil.rmtree(d, ignore_errors=True)
    shutil.copytree(mdir, d)
    t = time.perf_counter()
    choice, _, record = _guarded(fp32, d / QUANT_TAPS, calib, lambda: ImageDetector.load(d, control),
                                 ImageDetector.load(mdir, control), val, tolerance)
    seconds = time.perf_counter() - t
    _graphs.clear()
    _, after = quality(ImageDetector.load(d, control), held)
    lf, li = latency_ms([fp32, d / QUANT_TAPS], int(ImageDetector.load(d, control).options["image_size"]), 30)
    return {"choice": f"guard:{choice}", "guard": record, "size_ratio": round((d / QUANT_TAPS).stat().st_size /
            len(fp32), 3), "latency_ratio": round(li / lf, 3), "ms_fp32": lf, "ms_int8": li,
            "map_fp32": round(before, 4), "map_int8": round(after, 4), "points": round(100 * (after - before), 2),
            "guard_s": round(seconds, 1), "load": round(os.getloadavg()[0], 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", default="", help="comma-separated choice names (default: all)")
    ap.add_argument("--refit", action="store_true", help="also re-fit the head on each choice's int8 features")
    ap.add_argument("--guard", type=float, default=None, metavar="POINTS",
                    help="also run the export's accuracy guard (--keep-fp32 auto) with this tolerance, its validation "
                         "set = the training images not used for calibration (the test split stays out)")
    ap.add_argument("--work", type=Path, default=Path(__file__).resolve().parent / "out")
    args = ap.parse_args()
    import onnx

    train, held = raccoon(args.data / "raccoon_detection")
    control = parse_label_config(make_label_config(["raccoon"], kind="rectangles")).controls[0]
    work = args.work / f"sweep-seed{args.seed}"
    mdir = work / "model"
    if not any(mdir.glob("*.json")):
        t = time.perf_counter()
        model = ImageDetector(control, seed=args.seed)
        model.fit(train)
        model.save(mdir)
        print(f"trained seed {args.seed} in {time.perf_counter() - t:.0f} s", flush=True)
    fp32_model = ImageDetector.load(mdir, control)
    size = int(fp32_model.options["image_size"])
    fp32 = fp32_taps_graph(size)
    _, before = quality(fp32_model, held)
    print(f"fp32 test mAP@0.5 {before:.4f}", flush=True)
    test = np.stack(calibration_arrays([ex.image for ex in held if ex.image], fp32_model.options, 100))
    ref = backbone.ort_session(fp32).run(None, {"x": test})
    calib = calibration_arrays([ex.image for ex in train if ex.image][::2], fp32_model.options, 64)
    convs = [n.name for n in onnx.load_from_string(fp32).graph.node if n.op_type == "Conv"]
    only = {s for s in args.only.split(",") if s}
    rows = []
    for name, kw in choices(convs).items():
        if only and name not in only:
            continue
        d = work / f"v-{name}"
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(mdir, d)
        t = time.perf_counter()
        quantize_graph(fp32, d / QUANT_TAPS, method="static", calibration=calib, **kw)
        seconds = time.perf_counter() - t
        _graphs.clear()
        _, after = quality(ImageDetector.load(d, control), held)
        out = backbone.ort_session(d / QUANT_TAPS).run(None, {"x": test})
        err = [float(np.linalg.norm(o - r) / np.linalg.norm(r)) for o, r in zip(out, ref, strict=True)]
        lf, li = latency_ms([fp32, d / QUANT_TAPS], size, 30)
        row = {"choice": name, "size_ratio": round((d / QUANT_TAPS).stat().st_size / len(fp32), 3),
               "latency_ratio": round(li / lf, 3), "ms_fp32": lf, "ms_int8": li, "map_fp32": round(before, 4),
               "map_int8": round(after, 4), "points": round(100 * (after - before), 2), "err_c4": round(err[0], 4),
               "err_c5": round(err[1], 4), "quantize_s": round(seconds, 1), "load": round(os.getloadavg()[0], 1)}
        if args.refit:
            row.update(refit_head(control, args.seed, d, train, held, before))
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.guard is not None:
        rows.append(guard_row(fp32, mdir, work, calib, [ex for ex in train if ex.image][1::2], held, control, before,
                              args.guard))
        print(json.dumps(rows[-1]), flush=True)
    (work / "sweep.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
