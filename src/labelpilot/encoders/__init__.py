"""Text encoders: multilingual sentence vectors for the model families that want them.

``get_encoder()`` returns the process-wide encoder (loaded once, warm, with its vector cache) or raises
:class:`EncoderUnavailable`; ``encoder_problem()`` gives the reason as text (for ``/setup`` warnings) or None.
The failure is remembered, so a missing model costs one look-up per process, not one per request.

``$LABELPILOT_ENCODER``: ``use-multilingual`` (default) or ``none`` (off: every family behaves as without an
encoder). ``$LABELPILOT_ENCODER_PATH``: the model file. ``$LABELPILOT_ENCODER_CACHE_MB`` (default 128):
the bound of the in-process vector cache.
"""

from __future__ import annotations

import os
import threading

from labelpilot.encoders.base import (
    EncoderUnavailable,
    TextEncoder,
    VectorCache,
    persist_requested,
    persisting,
    text_key,
)
from labelpilot.encoders.use import UseMultilingualEncoder

__all__ = [
    "EncoderUnavailable", "TextEncoder", "VectorCache", "encoder_problem", "get_encoder", "persist_requested",
    "persisting", "text_key",
]

DEFAULT = "use-multilingual"
_OFF = {"none", "off", "false", "0", ""}

_lock = threading.Lock()
_loaded: dict[str, TextEncoder | EncoderUnavailable] = {}
_pid = os.getpid()


def configured() -> str:
    return os.environ.get("LABELPILOT_ENCODER", DEFAULT).strip().lower()


def _cache() -> VectorCache:
    raw = os.environ.get("LABELPILOT_ENCODER_CACHE_MB", "128")
    mb = int(raw) if raw.isdigit() else 128
    return VectorCache(max_entries=max(1, mb) * 2000, max_bytes=mb * 2**20)


def _build(name: str) -> TextEncoder:
    if name in _OFF:
        raise EncoderUnavailable("the text encoder is switched off (LABELPILOT_ENCODER=none)", field="encoder")
    if name in {DEFAULT, "use", "use-multilingual-v3-int8"}:
        return UseMultilingualEncoder(cache=_cache())
    raise EncoderUnavailable(f"unknown text encoder LABELPILOT_ENCODER={name!r}; known: {DEFAULT}, none",
                             field="encoder")


def get_encoder(name: str | None = None) -> TextEncoder:
    """The encoder named by ``name`` or ``$LABELPILOT_ENCODER``, loaded once per process (a forked child
    loads its own: an onnxruntime session and its thread pool are not fork-safe)."""
    global _pid
    if _pid != os.getpid():
        with _lock:
            _loaded.clear()
            _pid = os.getpid()
    key = (name or configured()).strip().lower()
    found = _loaded.get(key)
    if found is None:
        with _lock:
            found = _loaded.get(key)
            if found is None:
                try:
                    found = _build(key)
                except EncoderUnavailable as exc:
                    found = exc
                _loaded[key] = found
    if isinstance(found, EncoderUnavailable):
        raise found
    return found


def encoder_problem(name: str | None = None) -> str | None:
    """Why the encoder cannot be used, or None when it loads (this loads it)."""
    try:
        get_encoder(name)
    except EncoderUnavailable as exc:
        return exc.message
    return None


def reset() -> None:
    """Forget loaded encoders and remembered failures (tests; after installing the model)."""
    with _lock:
        _loaded.clear()
