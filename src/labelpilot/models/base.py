"""The model contract every model family implements, and the lookup of families by name.

The contract is sklearn-shaped (constructor stores parameters, learned state ends in ``_``) and
covers seed 003's six methods: ``__init__`` (init), ``fit`` (train_model), ``predict`` + a strategy
(query_hard_example), ``save``/``load`` (save_model/load_model); splitting lives in ``labelpilot.loop``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from labelpilot.data.types import Example, FitReport, Prediction
from labelpilot.errors import InputError, NotFoundError, TrainingError
from labelpilot.schema.types import ControlSpec, TaskKind

#: progress(done, total, message) -- called by long-running fits; may be None.
Progress = Callable[[int, int, str], None]


@runtime_checkable
class Model(Protocol):
    """A model for one control of a label schema."""

    name: ClassVar[str]  # registry key of the family, e.g. "text-linear"
    kinds: ClassVar[frozenset[TaskKind]]  # which task kinds it can serve

    control: ControlSpec

    def fit(
        self,
        examples: Sequence[Example],
        *,
        val: Sequence[Example] | None = None,
        progress: Progress | None = None,
    ) -> FitReport:
        """Learn from labelled examples; early-stop on ``val`` when given."""
        ...

    def predict(self, examples: Sequence[Example]) -> list[Prediction]:
        """One prediction per example, in order; a failing example gets ``Prediction(error=...)``."""
        ...

    def embed(self, examples: Sequence[Example]) -> np.ndarray | None:
        """Vectors (n, d) for diversity strategies, or None when the family has none."""
        ...

    @property
    def is_fitted(self) -> bool: ...

    def save(self, directory: Path) -> None:
        """Write everything needed to predict and to resume training into ``directory``."""
        ...

    @classmethod
    def load(cls, directory: Path, control: ControlSpec) -> Model: ...


def merge_options(family: str, defaults: Mapping[str, Any], options: Mapping[str, Any]) -> dict[str, Any]:
    """A family's options: ``defaults`` overridden by ``options``; an option the family does not know is a
    clear 4xx (:class:`InputError` on ``options``), never silently ignored."""
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise InputError(f"unknown {family} options: {unknown}; known: {sorted(defaults)}", field="options")
    return {**defaults, **options}


def saved_options(meta: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The options stored in a saved model's metadata that this version still knows."""
    return {k: v for k, v in (meta.get("options") or {}).items() if k in defaults}


def write_meta(directory: Path, name: str, meta: dict[str, Any]) -> None:
    """A model's JSON metadata file (what ``read_meta`` checks at load time)."""
    (Path(directory) / name).write_text(json.dumps(meta, ensure_ascii=False, indent=1), encoding="utf-8")


def read_meta(directory: Path, name: str, family: str, format_version: int, required: tuple[str, ...] = ()) -> dict:
    """Load a model's metadata, refusing a folder that does not hold this family's model or holds a newer
    format than this version reads."""
    d = Path(directory)
    if not (d / name).is_file() or not all((d / r).is_file() for r in required):
        raise NotFoundError(f"no {family} model in {d}", field="directory")
    meta = json.loads((d / name).read_text(encoding="utf-8"))
    if meta.get("family") != family or int(meta.get("format_version", 0)) > format_version:
        raise NotFoundError(f"{d} holds a {meta.get('family')!r} model this version cannot read")
    return meta


_BUILTIN: dict[str, str] = {
    "text-linear": "labelpilot.models.text_linear:TextLinearModel",
    "ner-crf": "labelpilot.models.ner_crf:NerCrfModel",
    "keywords": "labelpilot.models.keywords:KeywordModel",
    "image-classifier": "labelpilot.models.vision.classifier:ImageClassifier",
    "image-detector": "labelpilot.models.vision.detector:ImageDetector",
    "doc-fields": "labelpilot.models.document:DocumentFieldModel",
    "video-frames": "labelpilot.models.video:VideoClassifier",
}

#: Families that need an optional extra, and the command that installs it.
EXTRAS: dict[str, str] = {
    "image-classifier": "pip install 'labelpilot[vision]'",
    "image-detector": "pip install 'labelpilot[vision]'",
    "doc-fields": "pip install 'labelpilot[ocr]'",
    "video-frames": "pip install 'labelpilot[vision,video]'",
}

#: Which family serves a task kind when the user does not choose one.
DEFAULT_FAMILY: dict[TaskKind, str] = {
    TaskKind.TEXT_CHOICES: "text-linear",
    TaskKind.TEXT_TAXONOMY: "text-linear",
    TaskKind.TEXT_SPANS: "ner-crf",
    TaskKind.IMAGE_CHOICES: "image-classifier",
    TaskKind.IMAGE_BOXES: "image-detector",
    TaskKind.VIDEO_CHOICES: "video-frames",
}

#: The family for document images: chosen for a <RectangleLabels> with a per-region <TextArea> on the same
#: image (the OCR template), or by ``model_family="doc-fields"`` on the control, or by extra_params families.
DOCUMENT_FAMILY = "doc-fields"

#: A <Labels> control whose only label has predicted_values="keyword" is pre-labelled by keyword extraction.
KEYWORD_VALUE = "keyword"


def _load_object(ref: str) -> Any:
    module_name, _, attr = ref.partition(":")
    module = __import__(module_name, fromlist=[attr])
    return getattr(module, attr)


def families() -> dict[str, str]:
    """All known model families: built-ins plus ``labelpilot.models`` entry points."""
    found = dict(_BUILTIN)
    for ep in entry_points(group="labelpilot.models"):
        found.setdefault(ep.name, ep.value)
    return found


def get_family(name: str) -> type[Model]:
    """A family by registered name, or by ``package.module:Class`` for one that is not registered."""
    refs = families()
    if name not in refs and ":" in name:
        refs = {name: name}
    if name not in refs:
        raise NotFoundError(f"unknown model family {name!r}; known: {sorted(refs)}", field="family")
    try:
        return _load_object(refs[name])
    except ImportError as exc:
        hint = EXTRAS.get(name, "check the installation")
        raise TrainingError(f"model family {name!r} cannot be loaded ({exc}); {hint}", field="family") from exc


def family_for(control: ControlSpec, preferred: str | None = None) -> type[Model] | None:
    """The family that serves ``control``, or None when none is available: ``preferred`` (extra_params
    ``families``) or the control's ``model_family="..."`` attribute when that family serves the control's
    kind, else the default for the kind."""
    preferred = preferred or control.attrs.get("model_family")
    if preferred:
        cls = get_family(preferred)
        if control.kind in cls.kinds:
            return cls
    if control.kind is TaskKind.IMAGE_BOXES and control.transcription:
        return get_family(DOCUMENT_FAMILY)  # Label Studio's OCR template: boxes + per-region text
    if control.kind is TaskKind.TEXT_SPANS and all(KEYWORD_VALUE in lab.predicted_values for lab in control.labels):
        return get_family("keywords")
    name = DEFAULT_FAMILY.get(control.kind)
    return get_family(name) if name else None


def can_predict_untrained(model: Model) -> bool:
    """A model that can pre-label before any annotation: keyword extraction, or a family whose
    ``zero_shot_ready()`` says a pretrained resource maps onto this control's labels."""
    if model.is_fitted:
        return True
    ready = getattr(model, "zero_shot_ready", None)
    return bool(ready and ready())
