"""Quantized (int8) backbone graphs in a model folder, loaded and run like the fp32 backbone.

``labelpilot export --quantize int8`` (:mod:`labelpilot.quantize`) writes them; the image classifier, the video
model and the detector load them from here when their folder has one, so the families never import the export
code above them.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from labelpilot.models.vision import backbone

QUANT_GRAPH = "backbone-int8.onnx"  # image-classifier, video-frames: the pooled-feature backbone
QUANT_TAPS = "taps-int8.onnx"  # image-detector: the backbone's stride-16/32 feature maps

_lock = threading.Lock()
_graphs: dict[str, GraphFeatures] = {}


class GraphFeatures:
    """A backbone ONNX graph from a model folder, run like ``backbone.PooledFeatures`` ((N, 3, S, S) -> (N, 1280))."""

    engine = "onnx-int8"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._session = backbone.ort_session(self.path)
        self._input = self._session.get_inputs()[0].name

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        return np.asarray(self._session.run(None, {self._input: batch})[0], dtype=np.float32)


class GraphTaps(GraphFeatures):
    """The detector's quantized taps graph: (N, 3, S, S) -> (c4, c5) like ``detector._Taps``."""

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[override]
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        c4, c5 = self._session.run(None, {self._input: batch})
        return c4, c5


def graph_features(path: Path) -> GraphFeatures:
    """One session per graph file per process."""
    key = str(Path(path).resolve())
    with _lock:
        if key not in _graphs:
            _graphs[key] = GraphFeatures(Path(path))
        return _graphs[key]


def graph_taps(path: Path) -> GraphTaps:
    key = "taps|" + str(Path(path).resolve())
    with _lock:
        if key not in _graphs:
            _graphs[key] = GraphTaps(Path(path))
        return _graphs[key]  # type: ignore[return-value]


def forget(path: Path) -> None:
    """Drop the cached sessions of a graph file that was rewritten (the export's accuracy guard)."""
    resolved = str(Path(path).resolve())
    with _lock:
        for key in (resolved, "taps|" + resolved):
            _graphs.pop(key, None)
