"""Where the detector's int8 error enters (issue 15, bench/RESULTS.md "Edge"): per-tensor SQNR of the int8 taps
graph against fp32, and the feature error / size / latency of keeping the first blocks fp32.

    .venv/bin/python bench/edge_layers.py --data /work/shared/data            # SQNR table + --keep-fp32 choices

Calibration: every 2nd raccoon training image (at most 64, as ``bench/edge.py``); measured on the *other* training
images (16 for the per-tensor table, 24 for the choices), so the test split plays no part in picking a choice.
The per-tensor table uses ``onnxruntime.quantization.qdq_loss_debug``: each intermediate tensor of the fp32 graph
against the same tensor of the int8 graph (``xmodel`` SQNR in dB; higher is better).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from labelpilot.models.vision import backbone
from labelpilot.quantize import (
    KEEP_CHOICES,
    calibration_arrays,
    fp32_taps_graph,
    kept_nodes,
    latency_ms,
    quantize_graph,
)
from vision import raccoon

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
OPTIONS = {"image_size": 320, "resize": "squash", "max_pixels": 40_000_000}  # the detector's defaults


class _Reader:
    """The ``CalibrationDataReader`` protocol ``collect_activations`` iterates: one (1, 3, S, S) input at a time."""

    def __init__(self, arrays: list[np.ndarray]) -> None:
        self._it = iter({"x": a[None].astype(np.float32)} for a in arrays)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self._it


def sqnr_table(fp32: bytes, calib: list[np.ndarray], val: list[np.ndarray]) -> list[tuple[str, str, float]]:
    """(tensor, producing op, SQNR dB of int8 against fp32) in graph order, stem fp32 (``--keep-fp32 stem``)."""
    import onnx
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        compute_activation_error,
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )

    with tempfile.TemporaryDirectory(prefix="lp-layers-") as tmp:
        f, q = Path(tmp) / "f.onnx", Path(tmp) / "q.onnx"
        f.write_bytes(fp32)
        quantize_graph(fp32, q, method="static", calibration=calib, exclude=kept_nodes(fp32, "stem"))
        modify_model_output_intermediate_tensors(str(f), str(Path(tmp) / "fa.onnx"))
        modify_model_output_intermediate_tensors(str(q), str(Path(tmp) / "qa.onnx"))
        fa = collect_activations(str(Path(tmp) / "fa.onnx"), _Reader(val))  # type: ignore[arg-type]
        qa = collect_activations(str(Path(tmp) / "qa.onnx"), _Reader(val))  # type: ignore[arg-type]
        err = compute_activation_error(create_activation_matching(qa, fa))
    nodes = onnx.load_from_string(fp32).graph.node
    producer = {o: n.op_type for n in nodes for o in n.output}
    order = {o: i for i, n in enumerate(nodes) for o in n.output}
    rows = [(name, producer.get(name, "?"), round(e.get("xmodel_err", float("nan")), 1)) for name, e in err.items()]
    return sorted(rows, key=lambda r: order.get(r[0], len(order)))


def choice_rows(fp32: bytes, calib: list[np.ndarray], val: np.ndarray) -> list[dict[str, Any]]:
    """Per fixed ``--keep-fp32`` choice: size and latency ratio against fp32, relative L2 error of c4 / c5."""
    ref = backbone.ort_session(fp32).run(None, {"x": val})
    rows = []
    with tempfile.TemporaryDirectory(prefix="lp-keep-") as tmp:
        for keep in (k for k in KEEP_CHOICES if k != "auto"):
            dst = Path(tmp) / f"{keep}.onnx"
            quantize_graph(fp32, dst, method="static", calibration=calib, exclude=kept_nodes(fp32, keep))
            out = backbone.ort_session(dst).run(None, {"x": val})
            err = [float(np.linalg.norm(o - r) / np.linalg.norm(r)) for o, r in zip(out, ref, strict=True)]
            lf, li = latency_ms([fp32, dst], int(OPTIONS["image_size"]), 30)
            rows.append({"keep_fp32": keep, "size_ratio": round(dst.stat().st_size / len(fp32), 3),
                         "latency_ratio": round(li / lf, 3), "err_c4": round(err[0], 4), "err_c5": round(err[1], 4),
                         "load": round(os.getloadavg()[0], 1)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = ap.parse_args()
    train, _ = raccoon(args.data / "raccoon_detection")
    paths = [ex.image for ex in train if ex.image]
    calib = calibration_arrays(paths[::2], OPTIONS, 64)
    fp32 = fp32_taps_graph(int(OPTIONS["image_size"]))
    for name, op, db in sqnr_table(fp32, calib, calibration_arrays(paths[1::2], OPTIONS, 16)):
        print(f"{db:6.1f} dB  {op:6s} {name}")
    for row in choice_rows(fp32, calib, np.stack(calibration_arrays(paths[1::2], OPTIONS, 24))):
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
