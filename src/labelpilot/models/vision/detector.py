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
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from labelpilot.data.types import Box, Example, FitReport, Prediction
from labelpilot.errors import InputError, LabelpilotError, TrainingError
from labelpilot.imaging import open_image, to_array
from labelpilot.models.base import ModelBase, Progress, saved_report
from labelpilot.models.vision import backbone
from labelpilot.models.vision.boxes import average_precision, nms
from labelpilot.models.vision.detector_taps import _Taps
from labelpilot.models.vision.detector_train import (
    STRIDE,
    augment,
    collect_boxes,
    make_targets,
    make_variants,
    train_head,
    train_threads,
)
from labelpilot.models.vision.int8 import QUANT_TAPS, graph_taps
from labelpilot.schema.types import ControlSpec, TaskKind

# re-exported: these lived here before the split (issue #12) and are imported from here
__all__ = ["STRIDE", "ImageDetector", "_Taps", "augment", "average_precision", "make_targets", "nms",
           "train_threads"]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
META_FILE = "image_detector.json"
HEAD_FILE = "head.pt"
HEAD_ONNX_FILE = "head.onnx"

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

    def _variants(
        self, paths: list[str], boxes: list[np.ndarray], n_classes: int, progress: Progress | None, total: int
    ) -> tuple[dict[str, np.ndarray], list[str]]:
        return make_variants(self._taps(), paths, boxes, n_classes, self.options, progress, total)

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
        paths, boxes, skipped = collect_boxes(examples, known)
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
        losses, n, t_head = train_head(torch, head, data, self.options, progress, n_var, total)
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
                       backbone=backbone.saved_meta(taps=[10, 15]),
                       report=self.report_.to_dict() if self.report_ else None)

    @classmethod
    def load(cls, directory: Path, control: ControlSpec) -> ImageDetector:
        d = Path(directory)
        model, meta = cls.from_saved(d, control, required=(HEAD_FILE,))
        model.labels_ = list(meta.get("labels") or [])
        model.head_state_ = (d / HEAD_FILE).read_bytes()

        if (d / QUANT_TAPS).is_file():
            model.taps_graph_ = d / QUANT_TAPS
        if (d / HEAD_ONNX_FILE).is_file() and backbone.onnx_available():
            model.head_onnx_ = (d / HEAD_ONNX_FILE).read_bytes()
        else:
            model._torch_head()  # fails now, not at the first prediction, if the state is unreadable
        model.report_ = saved_report(meta)
        backbone.warn_other_weights(meta, cls.name)
        model.warn_unknown_labels(model.labels_, log)
        return model
