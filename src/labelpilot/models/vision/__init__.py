"""Vision model families: ``image-classifier`` and ``image-detector``.

Importing this package (or its modules) does not import torch; a model imports it when it first needs it
(training, the torch engine, or the first ONNX export of the backbone).
"""

from __future__ import annotations

from typing import Any

FAMILIES = {
    "image-classifier": "labelpilot.models.vision.classifier:ImageClassifier",
    "image-detector": "labelpilot.models.vision.detector:ImageDetector",
}

__all__ = ["FAMILIES", "ImageClassifier", "ImageDetector"]


def __getattr__(name: str) -> Any:
    if name == "ImageClassifier":
        # lazy: PEP 562: Pillow and the families' code only when a vision family is used
        from labelpilot.models.vision.classifier import ImageClassifier

        return ImageClassifier
    if name == "ImageDetector":
        # lazy: PEP 562: Pillow and the families' code only when a vision family is used
        from labelpilot.models.vision.detector import ImageDetector

        return ImageDetector
    raise AttributeError(name)
