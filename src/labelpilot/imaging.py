"""Opening task images safely, and turning them into model input arrays. Pillow + numpy only (no torch).

It sits below the models (it was ``models/vision/imageio.py``) because OCR (:mod:`labelpilot.ocr`) opens page
images through it too, and the OCR layer must not import from the model families.

:func:`open_image` is the one door every vision model goes through:

- the pixel count is checked from the header, **before** any pixel is decoded: more than ``max_pixels``
  (default 40 MP) is refused; Pillow's own :class:`PIL.Image.DecompressionBombError` is caught too;
- a truncated or corrupt file (e.g. a JPEG cut short) is an error, never a half-grey image (as long as
  nobody set Pillow's process-wide ``ImageFile.LOAD_TRUNCATED_IMAGES``; this module never does);
- EXIF orientation is applied (browsers, and so Label Studio's canvas, show images upright, and the
  annotators' relative box coordinates refer to that upright image);
- any mode becomes RGB: alpha (RGBA, LA, palette with transparency) is composited over white, 16-bit and
  float grayscale are rescaled, CMYK / palette / 1-bit are converted;
- for large JPEGs the decoder's draft mode is used when the caller only needs a small image
  (``min_side``), which makes decoding a 12 MP photo for a 224 px model several times faster.

Every failure raises :class:`labelpilot.errors.MediaError`, so that a caller can give that one task an
empty prediction and go on with the others.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from labelpilot.errors import MediaError

DEFAULT_MAX_PIXELS = 40_000_000

#: Input normalisation of the EfficientNet-Lite weights (TF-Lite style: pixels scaled to [-1, 1]).
MEAN = 0.5
STD = 0.5

Resize = Literal["squash", "center_crop", "letterbox"]


@dataclass(frozen=True, slots=True)
class LoadedImage:
    """An upright RGB image and the size (width, height) of the full-resolution upright original."""

    image: Image.Image
    size: tuple[int, int]

    def __iter__(self) -> Iterator[Any]:  # allows ``img, size = open_image(path)``
        yield self.image
        yield self.size


def _describe(path: str | os.PathLike[str]) -> str:
    return os.path.basename(os.fspath(path)) or os.fspath(path)


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
        if mode == "RGB":
            return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float32)
        lo, hi = float(np.min(arr)), float(np.max(arr))
        scaled = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        return Image.fromarray(np.clip(scaled, 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def open_image(
    path: str | os.PathLike[str],
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int | None = None,
) -> LoadedImage:
    """Open ``path`` as an upright RGB image. Raises :class:`MediaError` for anything unusable.

    ``min_side``: the caller will shrink the image so that its shorter side is about this many pixels;
    JPEG decoding may then use draft mode (a power-of-two reduction that keeps both sides >= ``min_side``).
    The returned ``size`` is always the full-resolution upright size.
    """
    name = _describe(path)
    if path is None or not os.fspath(path):
        raise MediaError("no image path given")
    p = Path(path)
    if not p.is_file():
        raise MediaError(f"image file not found: {name}")
    try:
        img = Image.open(p)
        try:
            width, height = img.size
            if width <= 0 or height <= 0:
                raise MediaError(f"{name}: image has an empty size {width}x{height}")
            if width * height > max_pixels:
                raise MediaError(
                    f"{name}: image is {width}x{height} = {width * height / 1e6:.1f} MP, more than the "
                    f"{max_pixels / 1e6:.0f} MP allowed (decompression-bomb guard)"
                )
            try:
                orientation = int(img.getexif().get(0x0112, 1))
            except Exception:
                orientation = 1
            swapped = orientation in (5, 6, 7, 8)
            size = (height, width) if swapped else (width, height)
            if min_side and img.format == "JPEG" and min(width, height) >= 2 * min_side:
                img.draft("RGB", (min_side, min_side))
            img.load()
            if orientation != 1:
                try:
                    img = ImageOps.exif_transpose(img) or img
                except Exception:  # broken EXIF block: keep the pixels as stored
                    size = (width, height)
            rgb = _to_rgb(img)
            if rgb is not img:
                img.close()
            return LoadedImage(rgb, size)
        except BaseException:
            img.close()
            raise
    except MediaError:
        raise
    except Image.DecompressionBombError as exc:
        raise MediaError(f"{name}: image too large (decompression-bomb guard): {exc}") from exc
    except UnidentifiedImageError as exc:
        raise MediaError(f"{name}: not an image Pillow can read") from exc
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError, Image.DecompressionBombWarning) as exc:
        msg = str(exc) or type(exc).__name__
        if "truncated" in msg.lower():
            raise MediaError(f"{name}: image file is truncated or corrupt ({msg})") from exc
        raise MediaError(f"{name}: cannot decode image ({msg})") from exc


def resize_image(img: Image.Image, size: int | tuple[int, int], mode: Resize = "squash") -> Image.Image:
    """Resize to ``size`` (square int, or (width, height)).

    ``squash`` ignores the aspect ratio (relative box coordinates stay valid unchanged); ``center_crop``
    resizes the shorter side to ``size / 0.875`` and crops the centre (ImageNet evaluation style);
    ``letterbox`` keeps the aspect ratio and pads with grey.
    """
    tw, th = (size, size) if isinstance(size, int) else size
    if mode == "squash":
        return img.resize((tw, th), Image.Resampling.BILINEAR, reducing_gap=3.0)
    w, h = img.size
    if mode == "center_crop":
        scale = max(tw, th) / 0.875 / min(w, h)
        nw, nh = max(tw, round(w * scale)), max(th, round(h * scale))
        big = img.resize((nw, nh), Image.Resampling.BILINEAR, reducing_gap=3.0)
        left, top = (nw - tw) // 2, (nh - th) // 2
        return big.crop((left, top, left + tw, top + th))
    if mode == "letterbox":
        scale = min(tw / w, th / h)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        canvas = Image.new("RGB", (tw, th), (128, 128, 128))
        small = img.resize((nw, nh), Image.Resampling.BILINEAR, reducing_gap=3.0)
        canvas.paste(small, ((tw - nw) // 2, (th - nh) // 2))
        return canvas
    raise ValueError(f"unknown resize mode {mode!r}")


def to_array(img: Image.Image) -> np.ndarray:
    """RGB image -> float32 (3, H, W) normalised for the EfficientNet-Lite backbone."""
    arr = np.asarray(img, dtype=np.float32) * (1.0 / 255.0)
    arr = (arr - MEAN) / STD
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def load_array(
    path: str | os.PathLike[str],
    size: int | tuple[int, int],
    mode: Resize = "squash",
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[np.ndarray, tuple[int, int]]:
    """Open, resize and normalise in one call: ``(array (3, H, W), original (width, height))``."""
    side = size if isinstance(size, int) else min(size)
    loaded = open_image(path, max_pixels=max_pixels, min_side=side)
    arr = to_array(resize_image(loaded.image, size, mode))
    loaded.image.close()
    return arr, loaded.size
