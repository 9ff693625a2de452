"""The core's data types: what goes into a model and what comes out. No I/O, no HTTP.

Coordinates are the core's own: character offsets ``[start, end)`` for spans, and boxes in *relative*
units (0..1 of the image width/height, top-left corner) so that models never care about Label Studio's
percent coordinates or about pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: the file endings read as images (image folders, Pascal VOC folders, seed-003 paths)
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv",
                            ".3gp"})


@dataclass(frozen=True, slots=True)
class Span:
    start: int
    end: int  # exclusive
    label: str
    score: float | None = None
    text: str | None = None


@dataclass(frozen=True, slots=True)
class Box:
    x: float  # left, relative 0..1
    y: float  # top, relative 0..1
    width: float
    height: float
    label: str
    score: float | None = None
    text: str | None = None  # the text inside the box (document models: OCR), for a per-region <TextArea>


@dataclass(slots=True)
class Target:
    """A gold answer: class label keys, spans or boxes (only the one the task kind uses is set)."""

    labels: tuple[str, ...] = ()
    spans: tuple[Span, ...] = ()
    boxes: tuple[Box, ...] = ()


@dataclass(slots=True)
class Example:
    """One item to label. ``text``/``text_pair`` for text kinds, ``image`` (a local path) for images."""

    text: str = ""
    text_pair: str | None = None
    image: str | None = None
    target: Target | None = None
    id: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Prediction:
    """A model's answer for one example.

    ``score`` is the model's confidence in what it proposes (0..1, higher is surer). ``uncertainty``
    orders items for labelling (higher = more worth labelling); strategies may recompute it from
    ``probs`` or ``token_probs``.
    """

    labels: tuple[str, ...] = ()
    probs: dict[str, float] | None = None
    logits: dict[str, float] | None = None  # raw decision scores, when the model has them
    spans: tuple[Span, ...] = ()
    boxes: tuple[Box, ...] = ()
    score: float = 0.0
    uncertainty: float | None = None
    token_probs: Any = None  # NER: per-token marginal max-probabilities (ndarray), for aggregation
    error: str | None = None  # set when this one example could not be predicted


@dataclass(slots=True)
class FitReport:
    """What a training run did, stored with the model version."""

    n_train: int = 0
    n_val: int = 0
    n_examples: int = 0  # labelled examples given to training in all (0: n_train + n_val)
    labels: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    skipped: list[str] = field(default_factory=list)  # reasons for examples left out
    notes: list[str] = field(default_factory=list)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FitReport:
        """The inverse of :meth:`to_dict` (for models that save their report)."""
        return cls(
            n_train=d.get("n_train", 0),
            n_val=d.get("n_val", 0),
            n_examples=d.get("n_examples", 0),
            labels=d.get("labels", []),
            metrics=d.get("metrics", {}),
            seconds=d.get("seconds", 0.0),
            skipped=d.get("skipped", []),
            notes=d.get("notes", []),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_train": self.n_train,
            "n_val": self.n_val,
            "n_examples": self.n_examples or self.n_train + self.n_val,
            "labels": self.labels,
            "metrics": self.metrics,
            "seconds": round(self.seconds, 3),
            "skipped": self.skipped[:100],
            "n_skipped": len(self.skipped),
            "notes": self.notes,
        }
