"""``image-detector``: boxes for ``<RectangleLabels>`` on ``<Image>``, trained from the project's own boxes.

Approach (chosen by measurement, see below)
    A CenterNet/TTFNet-style head (:class:`nets.CenterHead`) on the **frozen** pretrained EfficientNet-Lite0
    (ImageNet) feature maps at stride 16 (after block 10, 112 channels) and stride 32 (after block 15,
    320 channels), merged by a two-level FPN into one stride-16 map. Per location the head predicts a
    per-class centre heatmap and the distances to the four box edges. Plain torch, no torchvision.

    Training targets (TTFNet, Liu et al. 2019): each box puts an elliptical Gaussian (sigma = 0.54 x
    side / 6) on its class heatmap at its centre cell; the edge distances are learned at the cells inside
    the box where that Gaussian exceeds 0.05, weighted by the Gaussian (normalised to log(box area) per
    box), with a GIoU loss; the heatmap with CenterNet's penalty-reduced focal loss. Loss = focal + 5 GIoU.

    Because the backbone is frozen, its feature maps are computed once per training image *variant*
    (onnxruntime, batched) and kept in memory in float16; only the small head (0.14 M parameters) is
    trained, for ``epochs`` passes over all variants. Variants: the image, its mirror, and
    ``variants - 2`` random augmentations (random crop of 45-100 % with aspect jitter keeping boxes that
    stay >50 % visible, or zoom-out onto a random grey canvas, each with a random mirror and brightness /
    contrast / saturation jitter). The number of variants per image shrinks with the data
    (``max_variants`` in total, at least 2 per image) to bound memory (~150 kB per variant) and time.
    Images are squashed to ``image_size`` x ``image_size`` (320): relative box coordinates are unchanged
    by a squash, and the detector learns the aspect distortion.

    Decoding: sigmoid heatmap, 3x3 max-pool peak picking, top ``max_detections``, boxes from the edge
    distances, then greedy per-class NMS (IoU ``nms_iou``, numpy) and the score threshold (the control's
    ``model_score_threshold``, else option ``score_threshold``).

Measurements (raccoon: 1 class, CSV split 160 train / 40 test images; 2 cores shared with other jobs,
load 4-12 during these runs; every test image is 2.5 % of the AP, and run-to-run noise is about +-0.04)
    Prototype runs (a scratch script with this head and targets on cached features, trained on 128 of the
    160 training images, "val" = the other 32, mAP@0.5 *without* NMS, which costs it 0.05-0.1):

    ===================================================  ==============  ==============  ====================
    variant                                              val mAP50       test mAP50      time
    ===================================================  ==============  ==============  ====================
    stride-8 head (c3+c4+c5), 2 torch threads            --              --              100 s/epoch: stopped
    stride 16, 1 torch thread, 8 variants, 5 epochs      --              0.79            11 s/epoch
    ... 20 epochs (train AP 1.0: overfitting)            --              0.71
    16 variants, 6 epochs (seeds 0 / 1 / 2)              .93 / .88 / .95 .78 / .75 / .73 230 s + 120 s
    16 variants, 4 / 12 epochs                           .90 / .89       .79 / .75
    16 variants, 96 channels / lr 1e-3 8 epochs          .91 / .91       .78 / .77
    stride-32 input = 1280-d head conv, 6 / 12 epochs    .83 / .82       .81 / .78       +20 % head time
    ===================================================  ==============  ==============  ====================

    This model (decoding with NMS), all 160 training images, default options: test mAP@0.5 0.87-0.91
    without test-time mirroring and **0.93-0.95 with it** (``flip_test``, default on; +0.02 on the
    held-out 32 too), at the price of a second backbone pass (batched with the first). Boxes are roughly
    right rather than tight: median IoU of the matched boxes 0.72, mAP@0.75 ~0.2 (heatmap-weighted box
    voting over 3x3 cells raised it to 0.25 at no mAP@0.5 gain, not adopted). The default
    ``score_threshold`` 0.2 is the F1-best threshold on the 32 held-out *training* images (precision
    0.88, recall 0.85 there), not tuned on the test split. Final figures: ``bench/RESULTS.md`` § Vision.

    Torch threads matter a lot on shared cores: with 2 threads and a load of 7-12 one epoch took 100 s,
    with 1 thread 11 s (OpenMP threads spin when the cores are oversubscribed), hence
    :func:`train_threads`. For serving, the head and its box decoding are exported to ONNX
    (``head.onnx``, 1 MB), so a saved model predicts with onnxruntime only and does not import torch
    (once the backbone export is in the cache).

    Rejected: fine-tuning the whole backbone (1 s per 320 px image forward+backward in torch on this
    machine, i.e. >1 h for 30 epochs on 160 images); ultralytics YOLO from scratch (needs the 6 GB CUDA
    torch stack and torchvision, AGPL-3.0, and its research probe needed ~150 epochs to reach mAP50 0.59
    on a toy set: it could only be an optional heavy extra, not installed here).

Scores
    Each box's ``score`` is its heatmap peak probability. ``Prediction.score`` is the mean score of the
    returned boxes; with no box it is ``1 - best candidate score`` (the confidence that there is nothing
    to label). ``Prediction.uncertainty`` is the closeness to the threshold of the most ambiguous candidate
    (``1 - |s - t| / (t or 1 - t)`` over candidates above ``min_score``, 0 when none), which ranks the
    images whose boxes the model is least sure about first.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image, ImageEnhance

from labelpilot.data.types import Box, Example, FitReport, Prediction
from labelpilot.errors import InputError, LabelpilotError, TrainingError
from labelpilot.geometry import iou_matrix
from labelpilot.imaging import open_image, to_array
from labelpilot.models.base import ModelBase, Progress
from labelpilot.models.vision import backbone
from labelpilot.models.vision.int8 import QUANT_TAPS, graph_taps
from labelpilot.schema.types import ControlSpec, TaskKind

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
META_FILE = "image_detector.json"
HEAD_FILE = "head.pt"
HEAD_ONNX_FILE = "head.onnx"
STRIDE = 16

DEFAULTS: dict[str, Any] = {
    "image_size": 320,  # multiple of 32
    "variants": 16,  # per training image (image, mirror, random augmentations)
    "max_variants": 3000,  # in total, bounds memory (~150 kB per variant) and time for big projects
    "epochs": 6,
    "batch_size": 32,
    "lr": 2e-3,
    "weight_decay": 1e-4,
    "channels": 64,
    "score_threshold": 0.2,  # when the control has no model_score_threshold (F1-best on a raccoon train holdout)
    "nms_iou": 0.5,
    "max_detections": 50,
    "min_score": 0.05,  # candidates below are never considered
    "engine": "auto",  # backbone: "onnx" | "torch"
    "predict_batch": 8,
    "flip_test": True,  # average the outputs of the image and its mirror (2x backbone cost at predict time)
    "max_pixels": 40_000_000,
    "seed": 0,
}


# ------------------------------------------------------- boxes: NMS and AP (IoU: labelpilot.geometry)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float = 0.5, classes: np.ndarray | None = None) -> np.ndarray:
    """Greedy non-maximum suppression (per class when ``classes`` is given). Returns kept indices, best first."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    if classes is not None:
        # offset boxes by class so that boxes of different classes never overlap
        span = float(max(boxes.max(), 1.0)) + 1.0
        boxes = boxes + (np.asarray(classes, dtype=np.float64).reshape(-1, 1) * span)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    suppressed = np.zeros(len(boxes), dtype=bool)
    ious = iou_matrix(boxes, boxes)
    for i in order:
        if suppressed[i]:
            continue
        keep.append(int(i))
        suppressed |= ious[i] > iou
    return np.asarray(keep, dtype=np.int64)


def _corners(boxes: Sequence[Box]) -> np.ndarray:
    return np.array([[b.x, b.y, b.x + b.width, b.y + b.height] for b in boxes], dtype=np.float64).reshape(-1, 4)


def average_precision(
    predictions: Sequence[Sequence[Box]], truths: Sequence[Sequence[Box]], iou: float = 0.5
) -> dict[str, float]:
    """VOC-style (all-point interpolated) AP per label at ``iou``, plus ``"mAP"`` over labels with truths.

    ``predictions[i]`` / ``truths[i]`` are the boxes of image ``i`` (predicted boxes need a score).
    """
    labels = sorted({b.label for t in truths for b in t})
    out: dict[str, float] = {}
    for label in labels:
        gts = [_corners([b for b in t if b.label == label]) for t in truths]
        npos = sum(len(g) for g in gts)
        dets = [(b.score or 0.0, i, b) for i, p in enumerate(predictions) for b in p if b.label == label]
        dets.sort(key=lambda d: -d[0])
        used = [np.zeros(len(g), dtype=bool) for g in gts]
        tp = np.zeros(len(dets))
        for k, (_, i, b) in enumerate(dets):
            g = gts[i]
            if len(g) == 0:
                continue
            overlaps = iou_matrix(_corners([b]), g)[0]
            j = int(np.argmax(overlaps))
            if overlaps[j] >= iou and not used[i][j]:
                tp[k] = 1
                used[i][j] = True
        ctp = np.cumsum(tp)
        cfp = np.cumsum(1 - tp)
        recall = ctp / max(npos, 1)
        precision = ctp / np.maximum(ctp + cfp, 1e-12)
        mrec = np.concatenate([[0.0], recall, [1.0]])
        mpre = np.concatenate([[0.0], precision, [0.0]])
        mpre = np.maximum.accumulate(mpre[::-1])[::-1]
        idx = np.where(mrec[1:] != mrec[:-1])[0]
        out[label] = float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]))
    out["mAP"] = float(np.mean([out[lab] for lab in labels])) if labels else 0.0
    return out


# ------------------------------------------------------------------------------ augmentation


def augment(
    img: Image.Image, boxes: np.ndarray, rng: np.random.Generator, size: int, mode: str = "random"
) -> tuple[Image.Image, np.ndarray]:
    """One training variant: ``(size x size image, boxes)``. ``boxes``: (n, 5) relative x1, y1, x2, y2, class.

    ``mode``: ``plain``, ``mirror`` or ``random`` (crop or zoom-out, random mirror, colour jitter).
    """
    b = boxes.astype(np.float32).copy()
    mirror = mode == "mirror"
    if mode == "random":
        r = rng.random()
        width, height = img.size
        if r < 0.45:
            for _ in range(20):
                s = rng.uniform(0.45, 1.0)
                ar = rng.uniform(0.7, 1.4)
                cw, ch = min(1.0, s * math.sqrt(ar)), min(1.0, s / math.sqrt(ar))
                cx, cy = rng.uniform(0, 1 - cw), rng.uniform(0, 1 - ch)
                nb = b.copy()
                nb[:, [0, 2]] = np.clip((nb[:, [0, 2]] - cx) / cw, 0, 1)
                nb[:, [1, 3]] = np.clip((nb[:, [1, 3]] - cy) / ch, 0, 1)
                before = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
                after = (nb[:, 2] - nb[:, 0]) * (nb[:, 3] - nb[:, 1]) * cw * ch
                keep = after > 0.5 * before
                partial = (after > 0) & ~keep  # a box cut in half would teach wrong edges: try again
                if not partial.any() and (keep.any() or len(b) == 0):
                    box = (int(cx * width), int(cy * height), max(int(cx * width) + 1, int((cx + cw) * width)),
                           max(int(cy * height) + 1, int((cy + ch) * height)))
                    img = img.crop(box)
                    b = nb[keep]
                    break
        elif r < 0.7:
            z = rng.uniform(1.1, 1.8)
            nw, nh = int(width * z), int(height * z)
            ox, oy = int(rng.integers(0, nw - width + 1)), int(rng.integers(0, nh - height + 1))
            fill = tuple(int(v) for v in rng.integers(90, 170, 3))
            canvas = Image.new("RGB", (nw, nh), fill)  # type: ignore[arg-type]
            canvas.paste(img, (ox, oy))
            img = canvas
            b[:, [0, 2]] = (b[:, [0, 2]] * width + ox) / nw
            b[:, [1, 3]] = (b[:, [1, 3]] * height + oy) / nh
        mirror = rng.random() < 0.5
    if mirror:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        x1 = 1.0 - b[:, 2]
        b[:, 2] = 1.0 - b[:, 0]
        b[:, 0] = x1
    img = img.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
    if mode == "random":
        for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
            img = enhancer(img).enhance(float(rng.uniform(0.7, 1.3)))
    return img, b


def make_targets(boxes: np.ndarray, n_classes: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TTFNet targets on the stride-16 grid: heatmap (C, H, W), box corners in pixels (4, H, W), weights (H, W)."""
    g = size // STRIDE
    heat = np.zeros((n_classes, g, g), dtype=np.float32)
    reg = np.zeros((4, g, g), dtype=np.float32)
    weight = np.zeros((g, g), dtype=np.float32)
    if len(boxes) == 0:
        return heat, reg, weight
    order = np.argsort(-(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))  # small boxes win
    ys, xs = np.mgrid[0:g, 0:g].astype(np.float32)
    for x1, y1, x2, y2, c in boxes[order]:
        w, h = (x2 - x1) * g, (y2 - y1) * g
        if w <= 0 or h <= 0:
            continue
        cx = min(int((x1 + x2) / 2 * g), g - 1)
        cy = min(int((y1 + y2) / 2 * g), g - 1)
        sx, sy = max(0.54 * w / 6, 0.3), max(0.54 * h / 6, 0.3)
        gauss = np.exp(-((xs - cx) ** 2 / (2 * sx * sx) + (ys - cy) ** 2 / (2 * sy * sy)))
        heat[int(c)] = np.maximum(heat[int(c)], gauss)
        inside = (xs + 0.5 >= x1 * g) & (xs + 0.5 <= x2 * g) & (ys + 0.5 >= y1 * g) & (ys + 0.5 <= y2 * g)
        mask = (gauss > 0.05) & inside
        if not mask.any():
            mask = np.zeros_like(inside)
            mask[cy, cx] = True
        wts = gauss * mask
        wts = wts / wts.sum() * math.log(max(w * h * STRIDE * STRIDE, 2.0))
        reg[:, mask] = np.array([x1 * size, y1 * size, x2 * size, y2 * size], dtype=np.float32)[:, None]
        weight[mask] = wts[mask]
    return heat, reg, weight


# ------------------------------------------------------------------------------ backbone taps


class _Taps:
    """Frozen backbone: (N, 3, S, S) -> (stride-16 (N, 112, S/16, S/16), stride-32 (N, 320, S/32, S/32))."""

    _shared: ClassVar[dict[tuple[int, str], _Taps]] = {}
    _lock = threading.Lock()

    def __init__(self, size: int, engine: str) -> None:
        if engine == "auto":
            engine = "onnx" if backbone.onnx_available() else "torch"
        self.size, self.engine = size, engine
        self._session: Any = None
        self._module: Any = None
        self._run_lock = threading.Lock()
        if engine == "onnx":
            try:
                data = backbone.cached_onnx(f"lite0-taps16-32-{size}", self._export)
                self._session = backbone.ort_session(data)
                return
            except Exception as exc:
                log.warning("image-detector: ONNX backbone unavailable (%s); using torch", exc)
                self.engine = "torch"
        self._module = self._torch_module()

    @staticmethod
    def _torch_module() -> Any:
        backbone.require_torch()
        from labelpilot.models.vision.nets import TapsNet  # lazy: nets defines torch modules (torch, the vision extra)

        return TapsNet(backbone.efficientnet()).eval()

    def _export(self) -> bytes:
        torch = backbone.require_torch()
        sample = torch.zeros(1, 3, self.size, self.size)
        return backbone.export_onnx(self._torch_module(), sample, ["x"], ["c4", "c5"])

    @classmethod
    def get(cls, size: int, engine: str) -> _Taps:
        with cls._lock:
            key = (size, engine)
            if key not in cls._shared:
                cls._shared[key] = cls(size, engine)
            return cls._shared[key]

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self._session is not None:
            c4, c5 = self._session.run(None, {"x": batch})
            return c4, c5
        torch = backbone.require_torch()
        with self._run_lock, torch.inference_mode():
            c4, c5 = self._module(torch.from_numpy(batch))
            return c4.numpy(), c5.numpy()


def train_threads() -> int:
    """Torch threads for training: ``$LABELPILOT_TORCH_THREADS``, else 1 when the cores are already busy
    (load average >= cores - 0.5: OpenMP threads then spin and one epoch took 9x longer), else up to 2."""
    env = os.environ.get("LABELPILOT_TORCH_THREADS")
    if env and env.isascii() and env.isdigit() and int(env) > 0:
        return int(env)
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = 0.0
    return 1 if load >= cores - 0.5 else max(1, min(2, cores))


# ---------------------------------------------------------------------------------- the model


class ImageDetector(ModelBase):
    """Frozen EfficientNet-Lite0 + a trained CenterNet-style head for one ``<RectangleLabels>`` (see module doc)."""

    name: ClassVar[str] = "image-detector"
    kinds: ClassVar[frozenset[TaskKind]] = frozenset({TaskKind.IMAGE_BOXES})
    DEFAULTS: ClassVar[dict[str, Any]] = DEFAULTS
    META_FILE: ClassVar[str] = META_FILE
    FORMAT_VERSION: ClassVar[int] = FORMAT_VERSION

    def __init__(self, control: ControlSpec, **options: Any) -> None:
        super().__init__(control, **options)
        size = int(self.options["image_size"])
        if size < 64 or size % 32:
            raise InputError("image_size must be a multiple of 32 and at least 64", field="image_size")
        self.labels_: list[str] | None = None
        self.head_: Any = None  # nets.CenterHead after fit (or load without onnxruntime)
        self.head_state_: bytes | None = None  # the head's saved torch state (head.pt) when loaded
        self.head_onnx_: bytes | None = None  # the head (+ box decoding) exported to ONNX
        self.report_: FitReport | None = None
        self._head_lock = threading.Lock()
        self._head_session: Any = None
        self.taps_graph_: Path | None = None  # a quantized backbone graph in the model folder (export --quantize)

    @property
    def is_fitted(self) -> bool:
        return self.labels_ is not None and (
            self.head_ is not None or self.head_onnx_ is not None or self.head_state_ is not None
        )

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_head_lock"] = None
        state["_head_session"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._head_lock = threading.Lock()

    @property
    def threshold(self) -> float:
        t = self.control.score_threshold
        return float(t) if t is not None else float(self.options["score_threshold"])

    def _taps(self) -> _Taps:
        if self.taps_graph_ is not None:

            return graph_taps(self.taps_graph_)  # type: ignore[return-value]
        return _Taps.get(int(self.options["image_size"]), str(self.options["engine"]))

    def _new_head(self, n_classes: int) -> Any:
        backbone.require_torch()
        # lazy: nets defines torch modules (torch, the vision extra)
        from labelpilot.models.vision.nets import CenterHead

        return CenterHead(n_classes, channels=int(self.options["channels"]), stride=STRIDE)

    # ------------------------------------------------------------------ training data

    def _collect(self, examples: Sequence[Example], known: list[str]) -> tuple[list[str], list[np.ndarray],
                                                                             list[str]]:
        index = {k: i for i, k in enumerate(known)}
        paths, boxes, skipped = [], [], []
        for ex in examples:
            where = f"example {ex.id}" if ex.id is not None else "an example"
            if not ex.image:
                skipped.append(f"{where}: no image")
                continue
            if ex.target is None:
                skipped.append(f"{where}: no annotation")
                continue
            rows = []
            for b in ex.target.boxes:
                if b.label not in index:
                    skipped.append(f"{where}: box label {b.label!r} is not in the control (box ignored)")
                    continue
                x1, y1 = min(max(b.x, 0.0), 1.0), min(max(b.y, 0.0), 1.0)
                x2, y2 = min(max(b.x + b.width, 0.0), 1.0), min(max(b.y + b.height, 0.0), 1.0)
                if x2 - x1 < 1e-4 or y2 - y1 < 1e-4:
                    skipped.append(f"{where}: empty or out-of-image box ignored")
                    continue
                rows.append((x1, y1, x2, y2, index[b.label]))
            if ex.target.boxes and not rows:  # not a negative: its boxes just could not be used
                skipped.append(f"{where}: none of its boxes is usable; example left out")
                continue
            paths.append(ex.image)
            boxes.append(np.array(rows, dtype=np.float32).reshape(-1, 5))
        return paths, boxes, skipped

    def _variants(
        self, paths: list[str], boxes: list[np.ndarray], n_classes: int, progress: Progress | None, total: int
    ) -> tuple[dict[str, np.ndarray], list[str]]:
        size = int(self.options["image_size"])
        per_image = max(2, min(int(self.options["variants"]), int(self.options["max_variants"]) // max(1, len(paths))))
        taps = self._taps()
        rng = np.random.default_rng(int(self.options["seed"]))
        c4s, c5s, heats, regs, weights = [], [], [], [], []
        skipped: list[str] = []
        pending: list[np.ndarray] = []
        pending_targets: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        done = 0

        def flush() -> None:
            if not pending:
                return
            c4, c5 = taps(np.stack(pending))
            c4s.append(c4.astype(np.float16))
            c5s.append(c5.astype(np.float16))
            for h, r, w in pending_targets:
                heats.append(h)
                regs.append(r)
                weights.append(w)
            pending.clear()
            pending_targets.clear()

        for path, bx in zip(paths, boxes, strict=True):
            try:
                img = open_image(path, max_pixels=int(self.options["max_pixels"]), min_side=size).image
            except LabelpilotError as exc:
                skipped.append(f"{os.path.basename(path)}: {exc.message}")
                done += per_image
                continue
            for k in range(per_image):
                mode = "plain" if k == 0 else "mirror" if k == 1 else "random"
                var_img, var_boxes = augment(img, bx, rng, size, mode)
                pending.append(to_array(var_img))
                pending_targets.append(make_targets(var_boxes, n_classes, size))
                if len(pending) >= 16:
                    flush()
            img.close()
            done += per_image
            if progress is not None:
                progress(done, total, "detector features")
        flush()
        if not c4s:
            return {}, skipped
        data = {
            "c4": np.concatenate(c4s), "c5": np.concatenate(c5s),
            "heat": np.stack(heats), "reg": np.stack(regs), "weight": np.stack(weights),
        }
        return data, skipped

    # ------------------------------------------------------------------ training

    def fit(
        self,
        examples: Sequence[Example],
        *,
        val: Sequence[Example] | None = None,
        progress: Progress | None = None,
    ) -> FitReport:
        t0 = time.perf_counter()
        known = list(self.control.label_keys)
        paths, boxes, skipped = self._collect(examples, known)
        present = sorted({int(c) for b in boxes for c in b[:, 4]})
        if not present:
            raise TrainingError("no usable boxes to train the image-detector on")
        labels = [known[i] for i in present]
        remap = {old: new for new, old in enumerate(present)}
        boxes = [np.concatenate([b[:, :4], np.array([[remap[int(c)]] for c in b[:, 4]], np.float32).reshape(-1, 1)],
                                axis=1) for b in boxes]
        torch = backbone.require_torch()
        threads = train_threads()
        previous_threads = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return self._fit(torch, t0, paths, boxes, labels, skipped, threads, val, progress)
        finally:
            torch.set_num_threads(previous_threads)

    def _fit(
        self,
        torch: Any,
        t0: float,
        paths: list[str],
        boxes: list[np.ndarray],
        labels: list[str],
        skipped: list[str],
        threads: int,
        val: Sequence[Example] | None,
        progress: Progress | None,
    ) -> FitReport:
        torch.manual_seed(int(self.options["seed"]))
        per_image = max(2, min(int(self.options["variants"]), int(self.options["max_variants"]) // max(1, len(paths))))
        epochs = max(1, int(self.options["epochs"]))
        bs = max(2, int(self.options["batch_size"]))
        n_var = per_image * len(paths)
        steps_per_epoch = math.ceil(n_var / bs)
        total = n_var + epochs * steps_per_epoch
        t_feat = time.perf_counter()
        data, bad = self._variants(paths, boxes, len(labels), progress, total)
        skipped.extend(bad)
        if not data:
            raise TrainingError("no readable training images for the image-detector")
        t_feat = time.perf_counter() - t_feat
        head = self._new_head(len(labels))
        head.train()
        c4 = torch.from_numpy(data["c4"])
        c5 = torch.from_numpy(data["c5"])
        heat = torch.from_numpy(data["heat"])
        reg = torch.from_numpy(data["reg"])
        weight = torch.from_numpy(data["weight"])
        n = len(c4)
        steps_per_epoch = math.ceil(n / bs)
        opt = torch.optim.AdamW(head.parameters(), lr=float(self.options["lr"]),
                                weight_decay=float(self.options["weight_decay"]))
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=float(self.options["lr"]),
                                                    total_steps=epochs * steps_per_epoch, pct_start=0.15)
        grid = _grid(torch, int(self.options["image_size"]))
        gen = torch.Generator().manual_seed(int(self.options["seed"]))
        losses = []
        t_head = time.perf_counter()
        for epoch in range(epochs):
            perm = torch.randperm(n, generator=gen)
            running = 0.0
            for step in range(steps_per_epoch):
                idx = perm[step * bs : (step + 1) * bs]
                if len(idx) < 2:  # BatchNorm needs two samples
                    continue
                logits, ltrb = head(c4[idx].float(), c5[idx].float())
                loss = _focal_loss(torch, logits, heat[idx]) + 5.0 * _giou_loss(torch, _decode(torch, ltrb, grid),
                                                                                   reg[idx], weight[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                running += float(loss.item())
                if progress is not None:
                    progress(n_var + epoch * steps_per_epoch + step + 1, total, f"detector epoch {epoch + 1}/{epochs}")
            losses.append(running / steps_per_epoch)
        t_head = time.perf_counter() - t_head
        head.eval()
        self.head_, self.labels_ = head, labels
        self.head_state_ = None
        self._head_session = None
        self.head_onnx_ = self._export_head() if backbone.onnx_available() else None
        metrics: dict[str, float] = {"train_loss": losses[-1], "variants_per_image": float(per_image),
                                     "feature_seconds": t_feat, "head_seconds": t_head}
        n_val = 0
        if val:
            n_val = self._score_val(val, metrics)
        notes = [f"backbone efficientnet-lite0 (frozen) via {self._taps().engine}; head trained with "
                 f"{threads} torch thread(s); {n} variants x {epochs} epochs"]
        self.report_ = FitReport(n_train=len(paths), n_val=n_val, labels=list(labels), metrics=metrics,
                                 seconds=time.perf_counter() - t0, skipped=skipped, notes=notes)
        return self.report_

    def _score_val(self, val: Sequence[Example], metrics: dict[str, float]) -> int:
        usable = [ex for ex in val if ex.image and ex.target is not None]
        if not usable:
            return 0
        preds = self.predict(usable, threshold=float(self.options["min_score"]))
        pairs = [(p, ex) for p, ex in zip(preds, usable, strict=True) if p.error is None]
        ap = average_precision([p.boxes for p, _ in pairs], [ex.target.boxes for _, ex in pairs])  # type: ignore[union-attr]
        metrics["val_map50"] = ap["mAP"]
        for k, v in ap.items():
            if k != "mAP":
                metrics[f"val_ap50/{k}"] = v
        return len(pairs)

    # ------------------------------------------------------------------ inference

    def _load_batch(self, examples: Sequence[Example]) -> tuple[list[int], list[np.ndarray], dict[int, str]]:
        size = int(self.options["image_size"])
        ok, arrays, errors = [], [], {}
        for i, ex in enumerate(examples):
            try:
                if not ex.image:
                    raise InputError("example has no image")
                img = open_image(ex.image, max_pixels=int(self.options["max_pixels"]), min_side=size).image
                arrays.append(to_array(img.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)))
                img.close()
                ok.append(i)
            except LabelpilotError as exc:
                errors[i] = exc.message
            except Exception as exc:
                errors[i] = f"{type(exc).__name__}: {exc}"
        return ok, arrays, errors

    def raw_outputs(self, batch: np.ndarray, flip_test: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Heatmap probabilities (N, C, g, g) and box corners relative to the image (N, 4, g, g).

        With ``flip_test`` (default: option ``flip_test``) the mirrored images go through the same batch and
        their outputs, mirrored back, are averaged with the originals'.
        """
        flip = bool(self.options["flip_test"]) if flip_test is None else flip_test
        n = len(batch)
        if flip:
            batch = np.concatenate([batch, batch[:, :, :, ::-1]])
        c4, c5 = self._taps()(batch)
        session = self._session()
        if session is not None:
            heat, corners = session.run(None, {"c4": np.asarray(c4, dtype=np.float32),
                                               "c5": np.asarray(c5, dtype=np.float32)})
        else:
            torch = backbone.require_torch()
            module = self._torch_head()
            with self._head_lock, torch.inference_mode():
                heat_t, corners_t = module(torch.from_numpy(np.asarray(c4)), torch.from_numpy(np.asarray(c5)))
                heat, corners = heat_t.numpy(), corners_t.numpy()
        if flip:
            heat_m = heat[n:, :, :, ::-1]
            corners_m = corners[n:, :, :, ::-1]
            unflipped = np.stack(
                [1.0 - corners_m[:, 2], corners_m[:, 1], 1.0 - corners_m[:, 0], corners_m[:, 3]], axis=1
            )
            heat = (heat[:n] + heat_m) / 2.0
            corners = (corners[:n] + unflipped) / 2.0
        return heat, corners

    def _torch_head(self) -> Any:
        """The head wrapped with sigmoid + box decoding (what the ONNX export holds)."""
        torch = backbone.require_torch()
        if self.head_ is None:
            if self.head_state_ is None:
                raise TrainingError("the image-detector model is not trained yet")
            import io

            head = self._new_head(len(self.labels_ or []))
            head.load_state_dict(torch.load(io.BytesIO(self.head_state_), map_location="cpu", weights_only=True))
            head.eval()
            self.head_ = head
        # lazy: nets defines torch modules (torch, the vision extra)
        from labelpilot.models.vision.nets import DecodedHead

        return DecodedHead(self.head_, int(self.options["image_size"])).eval()

    def _export_head(self) -> bytes | None:
        torch = backbone.require_torch()
        size = int(self.options["image_size"])
        g4, g5 = size // STRIDE, size // (2 * STRIDE)
        sample = (torch.zeros(1, 112, g4, g4), torch.zeros(1, 320, g5, g5))
        try:
            return backbone.export_onnx(self._torch_head(), sample, ["c4", "c5"], ["heat", "corners"])
        except Exception as exc:
            log.warning("image-detector: ONNX export of the head failed (%s); predicting with torch", exc)
            return None

    def _session(self) -> Any:
        if self._head_session is None and self.head_onnx_ is not None and backbone.onnx_available():
            with self._head_lock:
                if self._head_session is None:
                    try:
                        self._head_session = backbone.ort_session(self.head_onnx_)
                    except Exception as exc:
                        log.warning("image-detector: cannot open the ONNX head (%s); predicting with torch", exc)
                        self.head_onnx_ = None
        return self._head_session

    def _boxes_of(self, heat: np.ndarray, corners: np.ndarray, threshold: float) -> Prediction:
        assert self.labels_ is not None
        g = heat.shape[1]
        padded = np.pad(heat, ((0, 0), (1, 1), (1, 1)), constant_values=-1.0)
        neigh = np.max(np.stack([padded[:, dy : dy + g, dx : dx + g] for dy in range(3) for dx in range(3)]), axis=0)
        peaks = np.where(heat >= neigh, heat, 0.0).reshape(-1)
        k = min(int(self.options["max_detections"]), peaks.size)
        top = np.argpartition(-peaks, k - 1)[:k] if k < peaks.size else np.arange(peaks.size)
        min_score = float(self.options["min_score"])
        top = top[peaks[top] >= min_score]
        top = top[np.argsort(-peaks[top], kind="stable")]
        cls_idx, cell = np.divmod(top, g * g)
        cand = np.clip(corners.reshape(4, -1)[:, cell].T, 0.0, 1.0)
        scores = peaks[top]
        valid = (cand[:, 2] - cand[:, 0] > 1e-4) & (cand[:, 3] - cand[:, 1] > 1e-4)
        cand, scores, cls_idx = cand[valid], scores[valid], cls_idx[valid]
        keep = nms(cand, scores, float(self.options["nms_iou"]), cls_idx)
        cand, scores, cls_idx = cand[keep], scores[keep], cls_idx[keep]
        t = self.threshold
        span = np.where(scores < t, t, 1.0 - t)
        closeness = 1.0 - np.abs(scores - t) / np.maximum(span, 1e-12)
        uncertainty = float(closeness.max()) if len(scores) else 0.0
        chosen = scores >= threshold
        out = tuple(
            Box(float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1]), self.labels_[int(ci)], float(s))
            for b, s, ci in zip(cand[chosen], scores[chosen], cls_idx[chosen], strict=True)
        )
        nothing = 1.0 - float(scores.max()) if len(scores) else 1.0
        score = float(np.mean([b.score or 0.0 for b in out])) if out else nothing
        return Prediction(boxes=out, score=score, uncertainty=uncertainty)

    def predict(self, examples: Sequence[Example], *, threshold: float | None = None) -> list[Prediction]:
        """One prediction per example; boxes below ``threshold`` (default: :attr:`threshold`) are dropped."""
        if not self.is_fitted:
            return [Prediction(error="the image-detector model is not trained yet") for _ in examples]
        thr = self.threshold if threshold is None else float(threshold)
        out: list[Prediction | None] = [None] * len(examples)
        step = max(1, int(self.options["predict_batch"]))
        for start in range(0, len(examples), step):
            chunk = examples[start : start + step]
            ok, arrays, errors = self._load_batch(chunk)
            for i, msg in errors.items():
                out[start + i] = Prediction(error=msg)
            if arrays:
                heat, corners = self.raw_outputs(np.stack(arrays))
                for row, i in enumerate(ok):
                    out[start + i] = self._boxes_of(heat[row], corners[row], thr)
        return [p if p is not None else Prediction(error="not predicted") for p in out]

    def embed(self, examples: Sequence[Example]) -> np.ndarray:
        """Global-average-pooled stride-32 backbone features, L2-normalised (n, 320); zeros when unreadable."""
        out = np.zeros((len(examples), 320), dtype=np.float32)
        ok, arrays, _ = self._load_batch(examples)
        if arrays:
            _, c5 = self._taps()(np.stack(arrays))
            v = np.asarray(c5, dtype=np.float32).mean(axis=(2, 3))
            v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
            out[ok] = v
        return out

    # ------------------------------------------------------------------ persistence

    def save(self, directory: Path) -> None:
        if not self.is_fitted:
            raise TrainingError("cannot save an unfitted image-detector model")
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        if self.head_ is not None:
            torch = backbone.require_torch()
            torch.save({k: v.detach().cpu() for k, v in self.head_.state_dict().items()}, d / HEAD_FILE)
        elif self.head_state_ is not None:
            (d / HEAD_FILE).write_bytes(self.head_state_)
        if self.head_onnx_ is not None:
            (d / HEAD_ONNX_FILE).write_bytes(self.head_onnx_)
        self.save_meta(d, labels=self.labels_,
                       backbone={"name": "efficientnet-lite0", "weights": _weights_id_or_none(), "taps": [10, 15]},
                       report=self.report_.to_dict() if self.report_ else None)

    @classmethod
    def load(cls, directory: Path, control: ControlSpec) -> ImageDetector:
        d = Path(directory)
        meta, options = cls.load_meta(d, required=(HEAD_FILE,))
        model = cls(control, **options)
        model.labels_ = list(meta.get("labels") or [])
        model.head_state_ = (d / HEAD_FILE).read_bytes()

        if (d / QUANT_TAPS).is_file():
            model.taps_graph_ = d / QUANT_TAPS
        if (d / HEAD_ONNX_FILE).is_file() and backbone.onnx_available():
            model.head_onnx_ = (d / HEAD_ONNX_FILE).read_bytes()
        else:
            model._torch_head()  # fails now, not at the first prediction, if the state is unreadable
        rep = meta.get("report")
        if rep:
            model.report_ = FitReport.from_dict(rep)
        saved = (meta.get("backbone") or {}).get("weights")
        current = _weights_id_or_none()
        if saved and current and saved != current:
            log.warning("image-detector: saved with backbone weights %s, running %s", saved, current)
        missing = set(model.labels_) - set(control.label_keys)
        if missing:
            log.warning("image-detector: labels %s of the saved model are not in the control", sorted(missing))
        return model


# ------------------------------------------------------------------------------ torch helpers


def _grid(torch: Any, size: int) -> tuple[Any, Any]:
    g = size // STRIDE
    ys, xs = torch.meshgrid(torch.arange(g, dtype=torch.float32), torch.arange(g, dtype=torch.float32), indexing="ij")
    return (xs + 0.5) * STRIDE, (ys + 0.5) * STRIDE


def _decode(torch: Any, ltrb: Any, grid: tuple[Any, Any]) -> Any:
    cx, cy = grid
    return torch.stack([cx - ltrb[:, 0], cy - ltrb[:, 1], cx + ltrb[:, 2], cy + ltrb[:, 3]], dim=1)


def _focal_loss(torch: Any, logits: Any, target: Any) -> Any:
    """CenterNet's penalty-reduced pixel focal loss (alpha 2, beta 4), normalised by the number of centres."""
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    pos = target.eq(1).float()
    pos_loss = torch.log(p) * (1 - p) ** 2 * pos
    neg_loss = torch.log(1 - p) * p**2 * (1 - target) ** 4 * (1 - pos)
    return -(pos_loss.sum() + neg_loss.sum()) / pos.sum().clamp(min=1.0)


def _giou_loss(torch: Any, pred: Any, target: Any, weight: Any) -> Any:
    mask = weight > 0
    if not bool(mask.any()):
        return pred.sum() * 0.0
    p = pred.permute(0, 2, 3, 1)[mask]
    t = target.permute(0, 2, 3, 1)[mask]
    w = weight[mask]
    ix1, iy1 = torch.max(p[:, 0], t[:, 0]), torch.max(p[:, 1], t[:, 1])
    ix2, iy2 = torch.min(p[:, 2], t[:, 2]), torch.min(p[:, 3], t[:, 3])
    inter = (ix2 - ix1).clamp(min=0) * (iy2 - iy1).clamp(min=0)
    area_p = (p[:, 2] - p[:, 0]).clamp(min=0) * (p[:, 3] - p[:, 1]).clamp(min=0)
    area_t = (t[:, 2] - t[:, 0]) * (t[:, 3] - t[:, 1])
    union = (area_p + area_t - inter).clamp(min=1e-6)
    iou = inter / union
    ex1, ey1 = torch.min(p[:, 0], t[:, 0]), torch.min(p[:, 1], t[:, 1])
    ex2, ey2 = torch.max(p[:, 2], t[:, 2]), torch.max(p[:, 3], t[:, 3])
    enclose = ((ex2 - ex1) * (ey2 - ey1)).clamp(min=1e-6)
    giou = iou - (enclose - union) / enclose
    return ((1 - giou) * w).sum() / w.sum().clamp(min=1e-6)


def _weights_id_or_none() -> str | None:
    try:
        return backbone.weights_id()
    except Exception:
        return None
