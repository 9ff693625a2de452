"""``video-frames``: video classification from sampled frames, for ``<Choices>`` on ``<Video>`` (single- and
multi-label), optionally fused with the task's text.

Decoder
    OpenCV (``opencv-python-headless``, already installed for rapidocr's ``ocr`` extra) rather than PyAV.
    Both wrap FFmpeg and are well kept; OpenCV's headless wheel bundles FFmpeg's demuxers/decoders (mp4,
    avi, mkv, webm; H.264, MPEG-4, VP8/9, MJPEG) and its writer, which the tests use to make synthetic
    videos, and it adds no new dependency. PyAV gives finer control (exact PTS seeking, streams of a
    container) that sampling N frames does not need, and would be a second ~30 MB FFmpeg copy in the venv.

Sampling
    ``frames`` (8) frames evenly over the duration: frame ``floor((i + 0.5) * count / N)`` for ``i < N``,
    reached by seeking (``CAP_PROP_POS_FRAMES``), so a long video costs N seeks, not a full decode. A
    container that does not report its frame count is read sequentially, up to ``max_frames``. A frame
    that fails to decode is skipped; fewer than half of the wanted frames decoded is an error.

Limits (media safety, as ``imageio.open_image`` is for images)
    Checked from the container header before any frame is decoded: file size ``max_bytes`` (200 MB; task
    media are also capped by the media fetcher's download limit), duration ``max_seconds`` (2 h), frame
    count ``max_frames`` (432,000 = 2 h at 60 fps), pixels per frame ``max_pixels`` (4096 x 2160). A video
    over a limit, one that cannot be opened, or a corrupt file gets ``Prediction(error=...)`` naming the
    reason; the other videos of the batch are predicted as usual (the server logs the problem and answers
    an empty prediction for that task).

Features
    Each sampled frame goes through the image classifier's pipeline (RGB, resize, normalise, the frozen
    EfficientNet-Lite0 backbone of :mod:`.vision.backbone`, L2-normalised 1280-d); the frame vectors are
    pooled over time by **mean** (what the video shows most of the time) and **max** (something that appears
    in only a few frames) and concatenated (2560-d, L2-normalised). Pooled vectors are cached per file
    content hash like image features.

Text fusion
    When the config has a ``<Text>`` beside the ``<Video>`` (a title, a transcript; ``ControlSpec.pair_key``),
    option ``text`` (``auto``) adds the multilingual text encoder's vector of that text (512-d, weighted by
    ``text_weight``) to the video vector before the head. It is decided at fit time and stored; a model that
    was trained with text and is served where the encoder cannot load uses a zero text vector (logged).

Head
    The image classifier's head, unchanged: logistic regression with ``C`` chosen by cross-validated log loss,
    one multinomial model (single-label) or one binary model per label (multi-label), the same thresholds,
    scores and uncertainties (see :mod:`.vision.classifier`). ``VideoClassifier`` subclasses it and replaces
    only where the features come from.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from labelpilot.data.types import Example, FitReport, Prediction
from labelpilot.encoders import get_encoder
from labelpilot.encoders.base import EncoderUnavailable
from labelpilot.errors import InputError, LabelpilotError, MediaError, TrainingError
from labelpilot.imaging import resize_image, to_array
from labelpilot.models.base import Progress, write_meta
from labelpilot.models.vision import backbone
from labelpilot.models.vision import classifier as image_cls
from labelpilot.models.vision.inputs import CachedFeatures, CacheKey, normalise_rows
from labelpilot.schema.types import ControlSpec, TaskKind

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
META_FILE = image_cls.META_FILE
HEAD_FILE = image_cls.HEAD_FILE

DEFAULTS: dict[str, Any] = {
    **image_cls.DEFAULTS,
    "flip_augment": False,  # N frames per video already; flipped copies double the decode and backbone time
    "frames": 8,
    "max_bytes": 200_000_000,
    "max_seconds": 7200.0,
    "max_frames": 432_000,
    "max_pixels": 4096 * 2160,
    "text": "auto",  # "auto": fuse the task's text when the config has one and the encoder loads; "off"
    "text_weight": 1.0,
}

_cv_lock = threading.Lock()


def _cv2() -> Any:
    try:
        import cv2
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise TrainingError("the video model needs OpenCV: pip install 'labelpilot[video]'") from exc
    with _cv_lock:
        if cv2.getNumThreads() != 1:
            cv2.setNumThreads(1)  # decoding runs beside onnxruntime's threads; no extra OpenCV pool
    return cv2


class _Item(str):
    """A video path that carries the task's text (for fusion) through the image classifier's code paths."""

    text: str | None

    def __new__(cls, path: str, text: str | None = None) -> _Item:
        obj = super().__new__(cls, path)
        obj.text = text
        return obj


def probe(path: str, options: dict[str, Any]) -> dict[str, float]:
    """Header facts of a video (frames, fps, seconds, width, height), after the size check; raises
    :class:`MediaError` for a file that is missing, too large, unreadable or over a limit."""
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise MediaError(f"video file not found: {path}") from exc
    if size > int(options["max_bytes"]):
        raise MediaError(f"{Path(path).name}: video larger than {int(options['max_bytes'])} bytes ({size})")
    if size == 0:
        raise MediaError(f"{Path(path).name}: empty video file")
    cv2 = _cv2()
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    try:
        if not cap.isOpened():
            raise MediaError(f"{Path(path).name}: not a video OpenCV/FFmpeg can open (corrupt or unknown format)")
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
    finally:
        cap.release()
    return _check(path, count, fps, width, height, options)


def _check(path: str, count: int, fps: float, width: int, height: int, options: dict[str, Any]) -> dict[str, float]:
    name = Path(path).name
    if width <= 0 or height <= 0:
        raise MediaError(f"{name}: the video has no readable frame size (corrupt?)")
    if width * height > int(options["max_pixels"]):
        raise MediaError(f"{name}: frames of {width}x{height} are more than {int(options['max_pixels'])} pixels")
    if count > int(options["max_frames"]):
        raise MediaError(f"{name}: {count} frames, more than max_frames={int(options['max_frames'])}")
    seconds = count / fps if fps > 0 and count > 0 else 0.0
    if seconds > float(options["max_seconds"]):
        raise MediaError(f"{name}: {seconds:.0f} s long, more than max_seconds={float(options['max_seconds']):g}")
    return {"frames": float(count), "fps": fps, "seconds": seconds, "width": float(width), "height": float(height)}


def sample_frames(path: str, options: dict[str, Any]) -> list[np.ndarray]:
    """``options["frames"]`` RGB frames (H, W, 3 uint8) evenly over the video (see the module doc)."""
    info = probe(path, options)
    n = max(1, int(options["frames"]))
    cv2 = _cv2()
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    frames: list[np.ndarray] = []
    try:
        count = int(info["frames"])
        if count > 0:
            wanted = sorted({min(count - 1, int((i + 0.5) * count / n)) for i in range(n)})
            for idx in wanted:
                if idx > 0:
                    cap.set(cv2.CAP_PROP_POS_FRAMES, idx)
                ok, frame = cap.read()
                if ok and frame is not None and frame.size:
                    frames.append(frame)
            need = max(1, math.ceil(len(wanted) / 2))
        else:  # no frame count in the header: read through, bounded by max_frames
            every: list[np.ndarray] = []
            limit = int(options["max_frames"])
            while True:
                ok, frame = cap.read()
                if not ok or frame is None:
                    break
                every.append(cv2.resize(frame, (min(frame.shape[1], 448), min(frame.shape[0], 448))))
                if len(every) > limit:
                    raise MediaError(f"{Path(path).name}: more than max_frames={limit} frames")
            if every:
                frames = [every[min(len(every) - 1, int((i + 0.5) * len(every) / n))] for i in range(n)]
            need = 1
    finally:
        cap.release()
    if len(frames) < need:
        raise MediaError(f"{Path(path).name}: only {len(frames)} of {n} sampled frames could be decoded (corrupt?)")
    h, w = frames[0].shape[:2]
    if h * w > int(options["max_pixels"]):
        raise MediaError(f"{Path(path).name}: frames of {w}x{h} are more than {int(options['max_pixels'])} pixels")
    return [cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for f in frames]


class VideoFeatures(CachedFeatures):
    """Pooled (mean + max over sampled frames) backbone features of videos, cached per file content hash,
    plus the fused text vector when the model uses text. Same interface as the image classifier's features."""

    def __init__(self, options: dict[str, Any]) -> None:
        super().__init__(options)
        self.options = options
        self.text_encoder: str | None = None  # set when the model fuses text
        self.text_dim = 0

    @property
    def dim(self) -> int:
        return 2 * backbone.FEATURE_DIM + self.text_dim

    def key(self, flip: bool) -> str:
        q = "|int8" if self.graph is not None else ""
        o = self.options  # the limits too: a video cached under looser limits must not pass stricter ones
        limits = f"{o['max_bytes']}|{o['max_seconds']}|{o['max_frames']}|{o['max_pixels']}"
        return f"video|{self.size}|{self.resize}|{int(o['frames'])}|{'flip' if flip else 'orig'}{q}|{limits}"

    def frames_array(self, path: str, flip: bool) -> np.ndarray:
        from PIL import Image

        out = []
        for rgb in sample_frames(path, self.options):
            img = Image.fromarray(rgb)
            small = resize_image(img, self.size, self.resize)  # type: ignore[arg-type]
            if flip:
                small = small.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            out.append(to_array(small))
        return np.stack(out)

    def _pooled(self, frames: np.ndarray) -> np.ndarray:
        feats = []
        for start in range(0, len(frames), self.batch_size):
            feats.append(self.net(frames[start : start + self.batch_size]))
        f = normalise_rows(np.concatenate(feats))
        v = np.concatenate([f.mean(axis=0), f.max(axis=0)])
        return (v / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float32)

    def _texts(self, texts: list[str]) -> np.ndarray:
        if not self.text_encoder:
            return np.zeros((len(texts), 0), dtype=np.float32)

        try:
            return np.asarray(get_encoder(self.text_encoder).encode(texts), dtype=np.float32)
        except EncoderUnavailable as exc:
            log.warning("video-frames: trained with text, but the encoder is unavailable (%s); text ignored",
                        exc.message)
            return np.zeros((len(texts), self.text_dim), dtype=np.float32)

    def compute(
        self, paths: Sequence[str | None], *, flip: bool = False, cache: bool = True,
        progress: Progress | None = None, total: int = 0, offset: int = 0,
    ) -> tuple[np.ndarray, list[str | None]]:
        """(n, dim) features (zeros where it failed) and per-video error messages (None when fine)."""
        n = len(paths)
        video = np.zeros((n, 2 * backbone.FEATURE_DIM), dtype=np.float32)
        errors: list[str | None] = [None] * n
        for i, path in enumerate(paths):
            if not path:
                errors[i] = "example has no video"
                continue
            key: CacheKey | None = None
            if cache:
                key, hit = self.cached(path, flip)
                if hit is not None:
                    video[i] = hit
                    continue
            try:
                video[i] = self._pooled(self.frames_array(str(path), flip))
                if key is not None:
                    backbone.FEATURES.put(key, video[i].copy())
            except LabelpilotError as exc:
                errors[i] = exc.message
            except Exception as exc:  # a decoder bug must not sink the batch
                errors[i] = f"{type(exc).__name__}: {exc}"
            if progress is not None:
                progress(offset + i + 1, total or n, "video features")
        if not self.text_encoder:
            return video, errors
        texts = [getattr(p, "text", None) or "" for p in paths]
        t = self._texts(texts) * float(self.options["text_weight"])
        both = np.concatenate([video, t], axis=1)
        both /= np.maximum(np.linalg.norm(both, axis=1, keepdims=True), 1e-12)
        both[[i for i, e in enumerate(errors) if e is not None]] = 0.0
        return both.astype(np.float32), errors


class VideoClassifier(image_cls.ImageClassifier):
    """Sampled-frame features pooled over time + the image classifier's head, for ``<Choices>`` on ``<Video>``."""

    name: ClassVar[str] = "video-frames"
    kinds: ClassVar[frozenset[TaskKind]] = frozenset({TaskKind.VIDEO_CHOICES})
    DEFAULTS: ClassVar[dict[str, Any]] = DEFAULTS
    FORMAT_VERSION: ClassVar[int] = FORMAT_VERSION

    def __init__(self, control: ControlSpec, **options: Any) -> None:
        super().__init__(control, **options)  # the contract's option check, the head's state
        if self.options["text"] not in ("auto", "off"):
            raise InputError("text must be auto or off", field="text")
        if int(self.options["frames"]) < 1 or int(self.options["frames"]) > 64:
            raise InputError("frames must be between 1 and 64", field="frames")
        self._features = VideoFeatures(self.options)  # type: ignore[assignment]

    # the image classifier's code reads ``ex.image``; here each path carries the example's text with it
    @staticmethod
    def _item(ex: Example) -> _Item | None:
        return _Item(ex.image, ex.text_pair or ex.text or None) if ex.image else None

    def _collect(self, examples: Sequence[Example], known: set[str]) -> tuple[list[str], list[tuple[str, ...]],
                                                                           list[str]]:
        # the image classifier's rules, with each kept path carrying its example's text
        by_path: dict[str, list[_Item]] = {}
        for ex in examples:
            item = self._item(ex)
            if item is not None:
                by_path.setdefault(str(item), []).append(item)
        paths, targets, skipped = super()._collect(examples, known)
        return [by_path[str(p)].pop(0) if by_path.get(str(p)) else p for p in paths], targets, skipped

    def _use_text(self, examples: Sequence[Example]) -> None:
        f: VideoFeatures = self._features  # type: ignore[assignment]
        f.text_encoder, f.text_dim = None, 0
        if self.options["text"] == "off" or not self.control.pair_key:
            return
        if not any(ex.text_pair or ex.text for ex in examples):
            return

        try:
            enc = get_encoder()
        except EncoderUnavailable as exc:
            log.info("video-frames: text not fused (%s)", exc.message)
            return
        f.text_encoder, f.text_dim = enc.name, int(enc.dim)

    def fit(
        self,
        examples: Sequence[Example],
        *,
        val: Sequence[Example] | None = None,
        progress: Progress | None = None,
    ) -> FitReport:
        self._use_text(examples)
        report = super().fit(examples, val=val, progress=progress)
        f: VideoFeatures = self._features  # type: ignore[assignment]
        report.notes[0] = (f"{int(self.options['frames'])} frames per video, efficientnet-lite0 via {f.net.engine}, "
                           f"mean+max over time" + (f", fused with text ({f.text_encoder})" if f.text_encoder else ""))
        return report

    def predict(self, examples: Sequence[Example]) -> list[Prediction]:
        if not self.is_fitted:
            return [Prediction(error="the video-frames model is not trained yet") for _ in examples]
        X, errors = self._features.compute([self._item(ex) for ex in examples])
        P = self._proba(X)
        return [Prediction(error=e) if e is not None else self._prediction(P[i]) for i, e in enumerate(errors)]

    def predict_proba(self, examples: Sequence[Example]) -> np.ndarray:
        if not self.is_fitted:
            raise TrainingError("the video-frames model is not trained yet")
        X, errors = self._features.compute([self._item(ex) for ex in examples])
        P = self._proba(X)
        P[[i for i, e in enumerate(errors) if e is not None]] = np.nan
        return P

    def embed(self, examples: Sequence[Example]) -> np.ndarray | None:
        X, _ = self._features.compute([self._item(ex) for ex in examples])
        return X

    def save(self, directory: Path) -> None:
        super().save(directory)
        d = Path(directory)
        meta = json.loads((d / META_FILE).read_text(encoding="utf-8"))
        f: VideoFeatures = self._features  # type: ignore[assignment]
        meta.update({"format_version": FORMAT_VERSION, "text_encoder": f.text_encoder, "text_dim": f.text_dim})
        write_meta(d, META_FILE, meta)

    @classmethod
    def load(cls, directory: Path, control: ControlSpec) -> VideoClassifier:
        d = Path(directory)
        model, meta = cls.from_saved(d, control, required=(HEAD_FILE,))
        f: VideoFeatures = model._features  # type: ignore[assignment]
        f.text_encoder, f.text_dim = meta.get("text_encoder"), int(meta.get("text_dim") or 0)
        model._restore_head(d, meta)
        return model
