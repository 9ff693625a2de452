"""What the vision families read from their examples: which examples can train them, and the frozen backbone's
cached features of image files.

:func:`annotated_images` is the first step of every vision family's training-data collection (the image
classifier's labels, the detector's boxes, the video classifier through the image classifier). The backbone
and the per-content feature cache are shared by :class:`CachedFeatures`; :class:`ImageFeatures` is the image
classifier's (and the image retrieval index's) features, ``models.video.VideoFeatures`` the video family's.
Moved out of :mod:`.classifier` and :mod:`.video` (issue 12), where each kept its own copy.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from labelpilot.data.types import Example
from labelpilot.errors import LabelpilotError
from labelpilot.imaging import load_array, open_image, resize_image, to_array
from labelpilot.models.base import Progress
from labelpilot.models.vision import backbone
from labelpilot.models.vision.int8 import graph_features

#: a feature-cache key: (file content digest, what was computed from it)
CacheKey = tuple[str, str]


def annotated_images(examples: Iterable[Example], skipped: list[str]) -> Iterator[tuple[str, Example]]:
    """The examples with an image and an annotation, each with the name a note gives it (``example 7``); the
    others are noted in ``skipped`` (``<name>: no image`` / ``<name>: no annotation``), in order."""
    for ex in examples:
        where = f"example {ex.id}" if ex.id is not None else "an example"
        if not ex.image:
            skipped.append(f"{where}: no image")
            continue
        if ex.target is None:
            skipped.append(f"{where}: no annotation")
            continue
        yield where, ex


def normalise_rows(x: np.ndarray) -> np.ndarray:
    """Each row of ``x`` scaled to unit L2 norm (float32; an all-zero row stays zero)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


class CachedFeatures:
    """The pooled backbone (the model folder's quantized graph when there is one) and the process-wide feature
    cache, shared by the image and video features; a subclass says what it computes (:meth:`key`)."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.size = int(options["image_size"])
        self.resize = str(options["resize"])
        self.engine = str(options["engine"])
        self.batch_size = max(1, int(options["batch_size"]))
        self.graph: Path | None = None  # a quantized backbone graph in the model folder (export --quantize)
        self._net: backbone.PooledFeatures | None = None

    @property
    def net(self) -> backbone.PooledFeatures:
        if self._net is None:
            if self.graph is not None:
                self._net = graph_features(self.graph)  # type: ignore[assignment]
            else:
                self._net = backbone.pooled_features(self.size, self.engine)
        return self._net  # type: ignore[return-value]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_net": None}  # the backbone session is per process (rebuilt on first use)

    def key(self, flip: bool) -> str:
        """What this computes from a file, for the cache key (all settings that change the result)."""
        raise NotImplementedError

    def cached(self, path: str, flip: bool) -> tuple[CacheKey | None, np.ndarray | None]:
        """The cache key of ``path``'s features (None when the file cannot be digested) and the cached features
        (None when not cached yet)."""
        digest = backbone.file_digest(path)
        if digest is None:
            return None, None
        key = (digest, self.key(flip))
        return key, backbone.FEATURES.get(key)


class ImageFeatures(CachedFeatures):
    """Computes (cached) L2-normalised backbone features for image paths."""

    def __init__(self, options: dict[str, Any]) -> None:
        super().__init__(options)
        self.max_pixels = int(options["max_pixels"])

    def key(self, flip: bool) -> str:
        return f"cls|{self.size}|{self.resize}|{'flip' if flip else 'orig'}" + ("|int8" if self.graph else "")

    def _array(self, path: str, flip: bool) -> np.ndarray:
        if not flip:
            return load_array(path, self.size, self.resize, max_pixels=self.max_pixels)[0]  # type: ignore[arg-type]
        img = open_image(path, max_pixels=self.max_pixels, min_side=self.size).image
        out = resize_image(img, self.size, self.resize).transpose(0)  # type: ignore[arg-type]  # FLIP_LEFT_RIGHT
        img.close()
        return to_array(out)

    def compute(
        self, paths: Sequence[str | None], *, flip: bool = False, cache: bool = True,
        progress: Progress | None = None, total: int = 0, offset: int = 0,
    ) -> tuple[np.ndarray, list[str | None]]:
        """(n, 1280) features (zeros where it failed) and per-path error messages (None when fine)."""
        n = len(paths)
        out = np.zeros((n, backbone.FEATURE_DIM), dtype=np.float32)
        errors: list[str | None] = [None] * n
        keys: list[CacheKey | None] = [None] * n
        todo: list[int] = []
        for i, path in enumerate(paths):
            if not path:
                errors[i] = "example has no image"
                continue
            if cache:
                keys[i], hit = self.cached(path, flip)
                if hit is not None:
                    out[i] = hit
                    continue
            todo.append(i)
        done = n - len(todo)
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start : start + self.batch_size]
            arrays, ok = [], []
            for i in chunk:
                try:
                    arrays.append(self._array(paths[i], flip))  # type: ignore[arg-type]
                    ok.append(i)
                except LabelpilotError as exc:
                    errors[i] = exc.message
                except Exception as exc:  # a decoder bug must not sink the batch
                    errors[i] = f"{type(exc).__name__}: {exc}"
            if arrays:
                feats = normalise_rows(self.net(np.stack(arrays)))
                for row, i in enumerate(ok):
                    out[i] = feats[row]
                    if keys[i] is not None:
                        backbone.FEATURES.put(keys[i], feats[row].copy())  # type: ignore[arg-type]
            done += len(chunk)
            if progress is not None:
                progress(offset + done, total or n, "image features")
        return out, errors
