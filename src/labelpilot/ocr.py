"""OCR of page images with rapidocr (PP-OCR det + rec models shipped inside the wheel; onnxruntime, CPU).

A page becomes an :class:`OcrPage`: its full-resolution size and the text lines found, each with its
axis-aligned box in pixels, the recognition confidence and, when the engine gives them, per-word boxes.

Settings (see ``../shared/research/offline-models.md``): detection runs on the page scaled so that its
*longer* side is at most ``det_side`` pixels (960 by default; rapidocr's own default upscales small images
and is 2x slower on A4), recognition on crops of the full-resolution page, and the 180-degree line
classifier is off by default (it costs ~0.4 s per page and only helps upside-down lines).

With ``orient=True`` the page's orientation (0/90/180/270) is detected first (:mod:`labelpilot.orientation`,
~0.1 s) and a turned page is OCR'd upright: the :class:`OcrPage` then describes the *upright* page (its
size and line boxes) and records the turn in ``rotation``; :meth:`OcrPage.to_original` maps a box back onto
the image as stored (which is what Label Studio shows and what annotations refer to).
``ORT_DISABLE_TELEMETRY=1`` is always set (otherwise onnxruntime looks up a telemetry host).

Results are cached, because a page is OCR'd when it is pre-labelled and again at every training round:
in memory (the last 256 pages) and on disk under ``$LABELPILOT_CACHE_DIR/ocr`` (default
``~/.cache/labelpilot/ocr``), keyed by the SHA-1 of the image bytes and the OCR settings
(the orientation step included), one small JSON file
per page. Images are decoded with labelpilot's own loader (EXIF orientation, decompression-bomb guard), so
rapidocr never opens a path or URL itself.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from labelpilot import config
from labelpilot.config import ort_threads
from labelpilot.errors import MediaError, TrainingError
from labelpilot.orientation import box_from_original, box_to_original, detect, upright

log = logging.getLogger(__name__)

INSTALL_HINT = "document models need rapidocr: pip install 'labelpilot[ocr]'"
FORMAT = 1


@dataclass(frozen=True, slots=True)
class Word:
    text: str
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels


@dataclass(frozen=True, slots=True)
class OcrLine:
    text: str
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels of the upright full-size page
    score: float
    words: tuple[Word, ...] = ()

    @property
    def height(self) -> float:
        return max(1.0, self.box[3] - self.box[1])


@dataclass(frozen=True, slots=True)
class OcrPage:
    width: int
    height: int
    lines: tuple[OcrLine, ...] = field(default=())
    seconds: float = 0.0
    rotation: int = 0  # how far the stored image's text was turned clockwise; width/height are the upright page's

    @property
    def original_size(self) -> tuple[int, int]:
        """(width, height) of the image as stored."""
        return (self.height, self.width) if self.rotation in (90, 270) else (self.width, self.height)

    def to_original(self, box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        """A box in pixels of the upright page mapped onto the image as stored."""
        return box_to_original(box, self.rotation, self.width, self.height)

    def from_original(self, box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        """A box in pixels of the image as stored mapped onto the upright page."""
        return box_from_original(box, self.rotation, self.width, self.height)

    @property
    def text(self) -> str:
        return "\n".join(line.text for line in self.lines)

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, **asdict(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OcrPage:
        lines = tuple(
            OcrLine(
                text=ln["text"],
                box=tuple(ln["box"]),
                score=float(ln["score"]),
                words=tuple(Word(w["text"], tuple(w["box"])) for w in ln.get("words") or ()),
            )
            for ln in data.get("lines") or ()
        )
        return cls(
            int(data["width"]),
            int(data["height"]),
            lines,
            float(data.get("seconds", 0.0)),
            int(data.get("rotation", 0)),
        )


@dataclass(frozen=True)
class OcrSettings:
    det_side: int = 960
    use_cls: bool = False
    text_score: float = 0.5
    word_boxes: bool = True
    orient: bool = False  # detect and undo page rotation (0/90/180/270) before OCR

    def key(self) -> str:
        base = f"d{self.det_side}-c{int(self.use_cls)}-t{self.text_score}-w{int(self.word_boxes)}"
        return base + "-o1" if self.orient else base


def cache_dir() -> Path:
    return config.cache_dir("ocr")


def rapidocr_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("rapidocr") is not None


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rapidocr")
    except PackageNotFoundError:
        return "none"


def _quad_box(quad: Any) -> tuple[float, float, float, float]:
    pts = np.asarray(quad, dtype=np.float32).reshape(-1, 2)
    return (float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max()))


class OcrEngine:
    """One rapidocr engine per process and settings (thread-safe; calls are serialised)."""

    _engines: ClassVar[dict[OcrSettings, OcrEngine]] = {}
    _lock = threading.Lock()

    def __init__(self, settings: OcrSettings) -> None:
        self.settings = settings
        self._engine: Any = None
        self._run_lock = threading.Lock()
        self._memory: OrderedDict[str, OcrPage] = OrderedDict()

    @classmethod
    def get(cls, settings: OcrSettings | None = None) -> OcrEngine:
        settings = settings or OcrSettings()
        with cls._lock:
            if settings not in cls._engines:
                cls._engines[settings] = cls(settings)
            return cls._engines[settings]

    def _rapid(self) -> Any:
        if self._engine is None:
            os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
            try:
                from rapidocr import RapidOCR
            except ImportError as exc:
                raise TrainingError(INSTALL_HINT) from exc
            s = self.settings
            logging.getLogger("RapidOCR").setLevel(logging.ERROR)
            self._engine = RapidOCR(
                params={
                    "Global.log_level": "error",
                    "Global.use_cls": s.use_cls,
                    "Global.text_score": s.text_score,
                    "Det.limit_type": "max",
                    "Det.limit_side_len": s.det_side,
                    "EngineConfig.onnxruntime.intra_op_num_threads": ort_threads(),
                    "EngineConfig.onnxruntime.inter_op_num_threads": 1,
                }
            )
        return self._engine

    def warm_up(self) -> None:
        """Load the OCR models and run them once on a small drawn line (about 1-2 s), so the first real
        page does not pay for onnxruntime's first-run allocations."""
        from PIL import Image, ImageDraw, ImageFont

        # an A4-shaped page with a few lines, so detection runs at the shape real pages have
        img = Image.new("RGB", (1240, 1754), "white")
        draw = ImageDraw.Draw(img)
        try:
            font: Any = ImageFont.load_default(size=30)
        except TypeError:  # Pillow < 10.1
            font = ImageFont.load_default()
        for i in range(8):
            draw.text((100 + 40 * (i % 3), 120 + 110 * i), f"Field {i}: value 2024-03-0{i} warm-up", font=font, fill=0)
        if self.settings.orient:
            detect(img)
        with self._run_lock:
            engine = self._rapid()
            try:
                engine(img, return_word_box=self.settings.word_boxes)
            except Exception as exc:  # warming is best effort
                log.info("ocr warm-up failed: %s", exc)

    def _cache_path(self, digest: str) -> Path:
        return cache_dir() / f"{digest[:2]}" / f"{digest}-{self.settings.key()}-r{_version()}.json"

    def page(self, path: str | os.PathLike[str], *, cache: bool = True) -> OcrPage:
        """OCR one image file. Raises :class:`MediaError` when it is not a readable image."""
        p = Path(path)
        try:
            data = p.read_bytes()
        except OSError as exc:
            raise MediaError(f"cannot read image {p.name}: {exc.strerror or exc}") from exc
        digest = hashlib.sha1(data).hexdigest()
        if cache:
            hit = self._memory.get(digest)
            if hit is not None:
                self._memory.move_to_end(digest)
                return hit
            cp = self._cache_path(digest)
            if cp.is_file():
                try:
                    page = OcrPage.from_json(json.loads(cp.read_text(encoding="utf-8")))
                    self._remember(digest, page)
                    return page
                except (OSError, ValueError, KeyError, TypeError) as exc:
                    log.info("ocr: ignoring unreadable cache file %s (%s)", cp, exc)
        page = self._run(p)
        if cache:
            self._remember(digest, page)
            self._store(digest, page)
        return page

    def _remember(self, digest: str, page: OcrPage) -> None:
        self._memory[digest] = page
        while len(self._memory) > 256:
            self._memory.popitem(last=False)

    def _store(self, digest: str, page: OcrPage) -> None:
        path = self._cache_path(digest)
        try:
            config.write_cache_file(path, json.dumps(page.to_json(), ensure_ascii=False).encode("utf-8"))
        except OSError as exc:
            log.info("ocr: cannot cache in %s (%s)", path.parent, exc)

    def _run(self, path: Path) -> OcrPage:
        import time

        from labelpilot.imaging import open_image  # lazy: Pillow (ocr/vision extras), not needed to import ocr

        loaded = open_image(path)
        img = loaded.image
        t0 = time.perf_counter()
        rotation = 0
        if self.settings.orient:
            rotation = detect(img).angle
            img = upright(img, rotation)
        width, height = img.size
        with self._run_lock:
            engine = self._rapid()
            try:
                out = engine(img, return_word_box=self.settings.word_boxes)
            except Exception as exc:  # rapidocr raises plain exceptions on degenerate images
                log.warning("ocr failed on %s: %s", path.name, exc)
                return OcrPage(width, height, (), time.perf_counter() - t0, rotation)
        seconds = time.perf_counter() - t0
        boxes = getattr(out, "boxes", None)
        texts = getattr(out, "txts", None)
        scores = getattr(out, "scores", None)
        if boxes is None or texts is None:
            return OcrPage(width, height, (), seconds, rotation)
        words_all = getattr(out, "word_results", None) or ()
        lines = []
        for i, (quad, text, score) in enumerate(zip(boxes, texts, scores or [1.0] * len(texts), strict=False)):
            text = str(text).strip()
            if not text:
                continue
            words: tuple[Word, ...] = ()
            if i < len(words_all) and words_all[i]:
                try:
                    words = tuple(Word(str(w[0]), _quad_box(w[2])) for w in words_all[i] if w and str(w[0]).strip())
                except (TypeError, ValueError, IndexError):
                    words = ()
            lines.append(OcrLine(text, _quad_box(quad), float(score), words))
        lines.sort(key=lambda ln: (round(ln.box[1] / max(8.0, ln.height * 0.5)), ln.box[0]))
        return OcrPage(width, height, tuple(lines), seconds, rotation)
