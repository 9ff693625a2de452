"""The image-detector's frozen backbone taps (EfficientNet-Lite0 stride-16 and stride-32 features), shared
per (image size, engine) by all detectors of the process; ONNX when available, else torch.

Split out of :mod:`labelpilot.models.vision.detector` (issue #12).
"""

from __future__ import annotations

import logging
import threading
from typing import Any, ClassVar

import numpy as np

from labelpilot.models.vision import backbone

log = logging.getLogger("labelpilot.models.vision.detector")  # the module it was split from


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
