"""Compressed (int8) export: ``labelpilot export NAME --quantize int8``.

What is quantized
    The vision families run a frozen EfficientNet-Lite0 backbone as an ONNX graph (``models/vision/backbone``)
    and a small numpy head. ``image-classifier`` and ``video-frames`` export the backbone's fp32 graph into
    the model folder as ``backbone-int8.onnx`` after onnxruntime's quantization; their ``load`` uses that
    graph when it is there, so ``serve-model`` (and ``models import``) serve the compressed model with no
    other change. EfficientNet-Lite was designed for integer inference (ReLU6, no squeeze-excite), which is
    why static quantization keeps its accuracy.
    The detector (its backbone taps + a conv head) and the text families are not quantized here: text-linear
    is TF-IDF + a linear head (no ONNX graph; its encoder already ships int8), ner-crf is a CRF; the export
    says so in the manifest instead of silently copying them.

Method
    ``static`` (the default; needs ``--calibration``): QDQ format, per-channel int8 weights, uint8 activations
    calibrated by min/max over the given images or videos (a folder, or any labelled file ``train`` reads; at
    most ``calib_images``, 64, spread over the list), preprocessed exactly as the model does. ``dynamic``
    (``--method dynamic``, no calibration): ``quantize_dynamic`` of the weights only, activations quantized per
    batch at run time; it turns convolutions into ``ConvInteger``, which onnxruntime runs far slower than fp32
    (measured: 996 ms against 58 ms per 224-px image for this backbone), so it is never chosen silently.

``--keep-fp32 none|stem|block0|block1|boundary|auto``
    ``stem`` keeps only the first convolution in fp32: same size (28 %) and latency as all-int8, a lower error of
    the feature maps (sweep of onnxruntime's choices in bench/RESULTS.md "Edge"). ``block0`` / ``block1`` also
    keep the first one / two MBConv blocks after it fp32: per-tensor SQNR of the int8 graph against fp32
    (``onnxruntime.quantization.qdq_loss_debug``) showed the error enters there (53 dB after the stem, 32 dB
    after block 0, ~20 dB from then on), and those blocks hold few weights, so the size stays 28.2-28.3 % while
    the feature maps' error drops from 12.2 to 8.6 / 7.1 % (latency 47 / 54 % of fp32 instead of 47 %).
    ``block1`` is the detector's default (2026-12-03, five trainings: mAP@0.5 within 0.33 points of fp32 on
    each; bench/RESULTS.md "Edge").
    ``auto`` is an accuracy guard: with labelled validation data (``--guard-data``, never the test split) it
    quantizes with ``stem``, ``block0``, ``block1`` in that order and keeps the first whose metric on that data
    drops by at most ``--guard-tolerance`` points (default 1) against fp32; with none, the one with the
    smallest drop. The manifest's ``guard`` names every trial, its drop and the choice.
    ``boundary`` keeps the stem convolution and the last three nodes before each graph output in fp32 (the rest
    int8), at 40 % of the fp32 size instead of 28 %. It is an option, not the default, because it did not hold
    up: on one trained raccoon detector it gave mAP@0.5 0.963 against 0.964 fp32 (all-int8: 0.936-0.941 whatever the
    calibration: 64 or 160 images, MinMax or entropy), on a second training run 0.910 against 0.936 fp32 --
    the same 2.6-2.8 point drop (about one of the 44 test boxes) as all-int8. See bench/RESULTS.md.
    Re-fitting the detector's head on the int8 graph's features of the training images was measured too
    (``bench/edge_sweep.py --refit``) and is not part of the export: over five trainings it did not help (mean
    -0.1 points against the fp32-trained head on the same int8 graph, worst case -3.3 against -2.3 points) and
    costs a second training (bench/RESULTS.md "Edge").

What the manifest records (``manifest.json`` -> ``quantization``)
    The graph sizes (fp32 and int8 bytes and their ratio), the CPU latency of one image through each graph
    (median of ``latency_runs``, 40, runs at batch 1, the two graphs' runs interleaved; onnxruntime with the
    project's thread settings), and with ``--eval-data`` the accuracy (mAP@0.5 for boxes) of the whole model
    before and after on those labelled examples.
"""

from __future__ import annotations

import functools
import logging
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from labelpilot.errors import InputError, LabelpilotError
from labelpilot.imaging import load_array
from labelpilot.models.base import get_family
from labelpilot.models.bundle import MANIFEST
from labelpilot.models.video import VideoFeatures
from labelpilot.models.vision import backbone
from labelpilot.models.vision.detector import _Taps, average_precision
from labelpilot.models.vision.int8 import QUANT_GRAPH, QUANT_TAPS
from labelpilot.models.vision.nets import Pooled
from labelpilot.schema import parse_label_config

log = logging.getLogger(__name__)

QUANTIZABLE = ("image-classifier", "video-frames", "image-detector")
#: ``--keep-fp32`` -> (first convolutions, nodes before each output) left in fp32. ``stem``: the first conv sees
#: raw pixels; keeping it fp32 lowers the feature maps' error against fp32 from 12.8 to 12.2 % at the same size
#: and latency (bench/edge_sweep.py). The detector's default is ``block1`` (below); the others' ``none``.
KEEP_FP32: dict[str, tuple[int, int]] = {"none": (0, 0), "stem": (1, 0), "boundary": (1, 3)}
#: ``--keep-fp32 block0|block1``: the stem and the first one / two MBConv blocks kept fp32. Per-tensor SQNR
#: (bench/RESULTS.md "Edge", 2026-12-03) shows most of the int8 error enters in those blocks, at 8 % of the
#: weights' bytes' worth of nothing: size 28.2-28.3 % like ``stem``, feature error 12.2 -> 8.6 / 7.1 %.
BLOCKS_FP32: dict[str, int] = {"block0": 1, "block1": 2}
#: ``--keep-fp32 auto``: the candidates the accuracy guard tries, in this order (all at ~28 % size; each next
#: one has a lower feature error and a higher latency), stopping at the first within the tolerance.
GUARD_ORDER = ("stem", "block0", "block1")
KEEP_CHOICES = (*KEEP_FP32, *BLOCKS_FP32, "auto")
METHODS = ("static", "dynamic")


def fp32_graph(size: int) -> bytes:
    """The fp32 pooled-feature backbone graph the vision models run (from the ONNX cache, else exported)."""

    def build() -> bytes:
        torch = backbone.require_torch()
        return backbone.export_onnx(Pooled(backbone.efficientnet()).eval(), torch.zeros(1, 3, size, size), ["x"],
                                    ["f"])

    got = backbone.cached_onnx(f"lite0-pooled-{size}", build)
    return got if isinstance(got, bytes) else Path(got).read_bytes()


def fp32_taps_graph(size: int) -> bytes:
    """The detector's fp32 taps graph (from the ONNX cache, else exported)."""

    taps = _Taps.__new__(_Taps)
    taps.size = size
    got = backbone.cached_onnx(f"lite0-taps16-32-{size}", taps._export)
    return got if isinstance(got, bytes) else Path(got).read_bytes()


def calibration_arrays(paths: Sequence[str], options: dict[str, Any], limit: int) -> list[np.ndarray]:
    """Model inputs (3, S, S) for calibration, preprocessed as the model does (videos: their sampled frames)."""

    size, resize = int(options["image_size"]), str(options.get("resize", "squash"))  # the detector squashes
    out: list[np.ndarray] = []
    step = max(1, len(paths) // max(1, limit))  # spread over the list (a folder's paths come sorted by class)
    for path in [*paths[::step], *(p for i, p in enumerate(paths) if i % step)]:
        if len(out) >= limit:
            break
        try:
            if "frames" in options:

                out.extend(VideoFeatures(options).frames_array(path, False))
            else:
                out.append(load_array(path, size, resize, max_pixels=int(options["max_pixels"]))[0])  # type: ignore[arg-type]
        except LabelpilotError as exc:
            log.info("quantize: calibration input %s skipped (%s)", path, exc.message)
    return out[:limit]


class _Reader:
    """onnxruntime's ``CalibrationDataReader`` protocol over a list of arrays."""

    def __init__(self, arrays: list[np.ndarray], input_name: str = "x") -> None:
        self._it: Iterator[dict[str, np.ndarray]] = iter({input_name: a[None].astype(np.float32)} for a in arrays)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:  # pragma: no cover - not used by MinMax calibration
        pass


def quantize_graph(fp32: bytes, dst: Path, *, method: str, calibration: list[np.ndarray] | None = None,
                   calibrate_method: str = "MinMax", exclude: Sequence[str] = (), per_channel: bool = True,
                   activation_type: str = "QUInt8", act_symmetric: bool = False, reduce_range: bool = False,
                   op_types: Sequence[str] | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Write the int8 version of the ``fp32`` graph to ``dst``.

    The keyword choices past ``exclude`` map one to one onto ``quantize_static``'s (``activation_type`` names a
    ``QuantType``, ``act_symmetric`` is ``ActivationSymmetric``, ``extra`` adds ``extra_options``); the defaults
    are what the export uses (bench/RESULTS.md "Edge" has the sweep over them)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in METHODS:
        raise InputError(f"unknown quantization method {method!r}; one of {list(METHODS)}", field="method")
    with tempfile.TemporaryDirectory(prefix="lp-quant-") as tmp:
        src = Path(tmp) / "fp32.onnx"
        src.write_bytes(fp32)
        pre = Path(tmp) / "pre.onnx"
        try:
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        except Exception as exc:  # pre-processing is an optimisation; quantize the graph as it is
            log.info("quantize: pre-processing skipped (%s)", exc)
            pre = src
        if method == "dynamic":
            quantize_dynamic(str(pre), str(dst), weight_type=QuantType.QInt8)
            return dst
        if not calibration:
            raise InputError("static quantization needs calibration images (--calibration)", field="calibration")

        class Reader(_Reader, CalibrationDataReader):
            pass

        from onnxruntime.quantization import CalibrationMethod

        quantize_static(
            str(pre), str(dst), Reader(calibration), quant_format=QuantFormat.QDQ, per_channel=per_channel,
            calibrate_method=getattr(CalibrationMethod, calibrate_method), nodes_to_exclude=list(exclude),
            weight_type=QuantType.QInt8, activation_type=getattr(QuantType, activation_type),
            reduce_range=reduce_range, op_types_to_quantize=list(op_types) if op_types else None,
            extra_options={"ActivationSymmetric": act_symmetric, "WeightSymmetric": True, **(extra or {})},
        )
    return dst


def boundary_nodes(fp32: bytes, first: int = 1, last: int = 1) -> list[str]:
    """Names of the first ``first`` Conv nodes and of the ``last`` nodes before each graph output (kept fp32:
    the stem sees raw pixels, the nodes at the outputs give the head its feature maps)."""
    import onnx

    graph = onnx.load_from_string(fp32).graph
    convs = [n.name for n in graph.node if n.op_type == "Conv"][:first]
    producer = {o: n for n in graph.node for o in n.output}
    tail: list[str] = []
    for out in graph.output:
        node = producer.get(out.name)
        for _ in range(last):
            if node is None:
                break
            tail.append(node.name)
            node = next((producer[i] for i in node.input if i in producer), None)
    return [*convs, *tail]


def kept_nodes(fp32: bytes, keep: str) -> list[str]:
    """The node names ``--keep-fp32 keep`` leaves in fp32 (``none``: none)."""
    if keep in BLOCKS_FP32:
        import onnx

        convs = [n.name for n in onnx.load_from_string(fp32).graph.node if n.op_type == "Conv"]
        blocks = tuple(f"blocks.{k}/" for k in range(BLOCKS_FP32[keep]))
        return [convs[0], *(c for c in convs[1:] if any(b in c for b in blocks))]
    return boundary_nodes(fp32, *KEEP_FP32[keep]) if keep != "none" else []


def _guarded(fp32: bytes, target: Path, arrays: list[np.ndarray], load: Any, fp32_model: Any,
             guard: Sequence[Any], tolerance: float) -> tuple[str, list[str], dict[str, Any]]:
    """``--keep-fp32 auto``: quantize with each of ``GUARD_ORDER`` until the metric on the ``guard`` examples
    (a validation split, never the test split) drops by at most ``tolerance`` points against fp32; with none
    within it, the candidate with the smallest drop (the latest on a tie). Leaves that choice's graph in
    ``target``; returns (choice, its fp32 nodes, the guard's record for the manifest)."""
    from labelpilot.models.vision.int8 import forget  # lazy: only the guard reloads a rewritten graph

    metric, before = quality(fp32_model, guard)
    trials: list[dict[str, Any]] = []
    for keep in GUARD_ORDER:
        exclude = kept_nodes(fp32, keep)
        quantize_graph(fp32, target, method="static", calibration=arrays, exclude=exclude)
        forget(target)
        _, after = quality(load(), guard)
        trials.append({"keep_fp32": keep, f"{metric}_int8": round(after, 4),
                       "drop_points": round(100 * (before - after), 2)})
        if trials[-1]["drop_points"] <= tolerance:
            break
    best = min(reversed(trials), key=lambda t: t["drop_points"])
    record = {"n_guard": len(guard), f"{metric}_fp32": round(before, 4), "tolerance_points": tolerance,
              "trials": trials, "choice": best["keep_fp32"], "passed": best["drop_points"] <= tolerance}
    if best is not trials[-1]:  # none passed and an earlier one was the best: write that graph again
        quantize_graph(fp32, target, method="static", calibration=arrays, exclude=kept_nodes(fp32, best["keep_fp32"]))
        forget(target)
    return best["keep_fp32"], kept_nodes(fp32, best["keep_fp32"]), record


def latency_ms(graphs: Sequence[bytes | Path], size: int, runs: int = 40) -> list[float]:
    """Median ms of one (1, 3, S, S) input through each graph on the CPU, the graphs' runs interleaved (so a
    change of load on shared cores hits them alike), after 3 warm-up runs each."""

    sessions = [backbone.ort_session(g) for g in graphs]
    names = [s.get_inputs()[0].name for s in sessions]
    x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    for s, name in zip(sessions, names, strict=True):
        for _ in range(3):
            s.run(None, {name: x})
    times: list[list[float]] = [[] for _ in sessions]
    for _ in range(max(1, runs)):
        for k, (s, name) in enumerate(zip(sessions, names, strict=True)):
            t0 = time.perf_counter()
            s.run(None, {name: x})
            times[k].append((time.perf_counter() - t0) * 1000)
    return [round(statistics.median(t), 3) for t in times]


def quality(model: Any, examples: Sequence[Any]) -> tuple[str, float]:
    """The metric the family is judged by on labelled examples: mAP@0.5 for boxes, accuracy otherwise."""
    if getattr(model, "name", "") == "image-detector":

        # every detection down to min_score, ranked: mAP is a property of the ranking, not of one threshold
        preds = model.predict(list(examples), threshold=float(model.options["min_score"]))
        truths = [ex.target.boxes if ex.target else () for ex in examples]
        return "map50", float(average_precision([p.boxes for p in preds], truths, 0.5).get("mAP", 0.0))
    return "accuracy", accuracy(model, examples)


def accuracy(model: Any, examples: Sequence[Any]) -> float:
    """Share of examples whose predicted label set equals the gold one (unreadable media count as wrong)."""
    if not examples:
        return float("nan")
    preds = model.predict(list(examples))
    gold = [tuple(sorted(ex.target.labels)) if ex.target else () for ex in examples]
    return float(np.mean([tuple(sorted(p.labels)) == g and p.error is None for p, g in zip(preds, gold,
                                                                                          strict=True)]))


def quantize_bundle(
    model_dir: Path,
    *,
    method: str | None = None,
    calibration: Sequence[str] = (),
    eval_examples: Sequence[Any] = (),
    calib_images: int = 64,
    latency_runs: int = 40,
    keep_fp32: str | None = None,
    guard_examples: Sequence[Any] = (),
    guard_tolerance: float = 1.0,
) -> dict[str, Any]:
    """Quantize every quantizable control model inside an exported bundle folder (in place); the manifest entry."""
    import json


    bundle_manifest = json.loads((model_dir / MANIFEST).read_text(encoding="utf-8"))
    schema = parse_label_config(bundle_manifest["label_config"])
    out: dict[str, Any] = {"dtype": "int8", "controls": {}}
    for name, entry in bundle_manifest["controls"].items():
        family = entry["family"]
        if family not in QUANTIZABLE:
            out["controls"][name] = {"family": family, "quantized": False,
                                     "reason": f"{family} has no ONNX graph to quantize (copied as it is)"}
            continue
        control = schema.control(name)
        cls = get_family(family)
        cdir = model_dir / entry["dir"]
        fp32_model = cls.load(cdir, control)
        options = fp32_model.options
        size = int(options["image_size"])
        how = method or "static"
        if how == "static" and not calibration:
            raise InputError("int8 static quantization needs calibration images or videos (--calibration); "
                             "--method dynamic needs none but is many times slower for convolutions",
                             field="calibration")
        arrays = calibration_arrays(list(calibration), options, calib_images) if how == "static" else None
        if how == "static" and not arrays:
            raise InputError("no calibration image could be read", field="calibration")
        detector = family == "image-detector"
        fp32 = fp32_taps_graph(size) if detector else fp32_graph(size)
        target = cdir / (QUANT_TAPS if detector else QUANT_GRAPH)
        t0 = time.perf_counter()
        if keep_fp32 not in (None, *KEEP_CHOICES):
            raise InputError(f"--keep-fp32 {keep_fp32!r}: one of {list(KEEP_CHOICES)}", field="keep_fp32")
        keep = keep_fp32 or ("block1" if detector else "none")
        guard: dict[str, Any] | None = None
        if keep == "auto":
            if how != "static" or not guard_examples:
                raise InputError("--keep-fp32 auto needs static quantization and labelled validation data "
                                 "(--guard-data, not the test split)", field="guard_data")
            keep, exclude, guard = _guarded(fp32, target, arrays or [], functools.partial(cls.load, cdir, control),
                                            fp32_model, guard_examples, guard_tolerance)
        else:
            exclude = kept_nodes(fp32, keep) if how == "static" else []
            quantize_graph(fp32, target, method=how, calibration=arrays, exclude=exclude)
        info: dict[str, Any] = {
            "family": family, "quantized": True, "graph": target.name, "method": how,
            "format": "QDQ" if how == "static" else "dynamic", "calibration_inputs": len(arrays or ()),
            "seconds": round(time.perf_counter() - t0, 2),
            "graph_bytes_fp32": len(fp32), "graph_bytes_int8": target.stat().st_size,
        }
        if exclude:
            info["kept_fp32"] = exclude
            info["keep_fp32"] = keep
        if guard is not None:
            info["guard"] = guard
        if detector:
            info["note"] = "the backbone is int8; the small detection head stays fp32"
        info["size_ratio"] = round(info["graph_bytes_int8"] / info["graph_bytes_fp32"], 4)
        info["latency_ms_fp32"], info["latency_ms_int8"] = latency_ms([fp32, target], size, latency_runs)
        info["latency_ratio"] = round(info["latency_ms_int8"] / max(info["latency_ms_fp32"], 1e-9), 4)
        if eval_examples:
            int8_model = cls.load(cdir, control)
            info["n_eval"] = len(eval_examples)
            metric, before = quality(fp32_model, eval_examples)
            _, after = quality(int8_model, eval_examples)
            info[f"{metric}_fp32"], info[f"{metric}_int8"] = round(before, 4), round(after, 4)
        out["controls"][name] = info
    return out
