"""The model contract every model family implements, and the lookup of families by name.

The contract is sklearn-shaped (constructor stores parameters, learned state ends in ``_``) and
covers seed 003's six methods: ``__init__`` (init), ``fit`` (train_model), ``predict`` + a strategy
(query_hard_example), ``save``/``load`` (save_model/load_model); splitting lives in ``labelpilot.loop``.

:class:`ModelBase` is the one implementation of the parts every family shares: options are the constructor's
keywords, declared once per family as ``DEFAULTS`` (types inferred from the defaults, ``OPTION_TYPES`` where a
default is ``None`` or an option takes several types); an unknown option or a value of the wrong type is a
:class:`~labelpilot.errors.ModelOptionsError` (a 422 naming the option and the valid ones) at every door;
metadata is saved and checked through :func:`write_meta` / :func:`read_meta`. Capabilities only some families
have are small ``runtime_checkable`` protocols (:class:`Embeds`, :class:`PredictsUntrained`,
:class:`TokenMarginals`), tested with ``isinstance``, rather than methods that return None.
``labelpilot.testing.check_model`` checks a family against all of this; ``tests/test_model_contract.py`` runs
it over every registered family.
"""

from __future__ import annotations

import difflib
import json
import logging
import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self, runtime_checkable

import numpy as np

from labelpilot import plugins
from labelpilot.data.types import Example, FitReport, Prediction
from labelpilot.errors import ModelOptionsError, NotFoundError, TrainingError
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

    @property
    def is_fitted(self) -> bool: ...

    def save(self, directory: Path) -> None:
        """Write everything needed to predict and to resume training into ``directory``."""
        ...

    @classmethod
    def load(cls, directory: Path, control: ControlSpec) -> Model: ...


@runtime_checkable
class Embeds(Protocol):
    """A model that gives vectors for diversity strategies (k-center, clustering, BADGE...)."""

    def embed(self, examples: Sequence[Example]) -> np.ndarray | None:
        """Vectors (n, d), one row per example in order; None only while the model has no vector space yet
        (text-linear before its first fit)."""
        ...


@runtime_checkable
class PredictsUntrained(Protocol):
    """A model that may pre-label before any annotation (zero-shot from label names or a pretrained resource)."""

    def zero_shot_ready(self) -> bool:
        """True when an unfitted model of this control can predict (its labels map onto what it knows)."""
        ...


@runtime_checkable
class TokenMarginals(Protocol):
    """A sequence tagger that exposes per-token marginals (for entropy-based span strategies)."""

    def marginals(self, text: str) -> tuple[Any, list[str], list[str], np.ndarray, float]:
        """(token offsets, tag names, Viterbi tags, marginals (n_tokens, n_tags), log P(y*|x))."""
        ...


#: how an error names each expected type (``_is``: a bool is never accepted as an int or a number)
_TYPE_NAMES: dict[type, str] = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
                                 list: "a list", tuple: "a list", dict: "an object", type(None): "null"}


def _is(value: Any, kind: type) -> bool:
    if kind is bool:
        return isinstance(value, bool | np.bool_)
    if kind is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_)
    if kind is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)
    if kind in (list, tuple):
        return isinstance(value, list | tuple)
    return isinstance(value, kind)


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    if isinstance(value, np.generic):
        return value.item()
    return value


def _closest(name: str, valid: Sequence[str]) -> str | None:
    """The valid option ``name`` was probably meant to be: same letters in another case, the longest valid name
    it starts with (``Cee`` -> ``C``), or the closest spelling."""
    lower = {v.lower(): v for v in valid}
    key = name.lower()
    if key in lower:
        return lower[key]
    prefixes = [v for v in valid if key.startswith(v.lower())]
    if prefixes:
        return max(prefixes, key=len)
    close = difflib.get_close_matches(key, list(lower), 1, cutoff=0.6)
    return lower[close[0]] if close else None


class ModelBase:
    """What every model family shares: construction from declared options, ``get_options``, metadata.

    A family declares ``name``, ``kinds``, ``DEFAULTS`` (option -> default; the constructor's keywords), and
    ``OPTION_TYPES`` for options whose default does not say the type (``None``, or ``"auto"`` beside booleans).
    ``META_FILE`` / ``FORMAT_VERSION`` name its metadata file. It keeps its own ``fit``/``predict``/``save``/
    ``load``; ``save_meta`` and ``load_meta`` write and check the metadata in one way for all (``from_saved``,
    :func:`saved_report` and ``warn_unknown_labels`` are the steps every ``load`` shares).
    """

    name: ClassVar[str]
    kinds: ClassVar[frozenset[TaskKind]]
    DEFAULTS: ClassVar[Mapping[str, Any]] = {}
    OPTION_TYPES: ClassVar[Mapping[str, tuple[type, ...]]] = {}
    META_FILE: ClassVar[str] = ""
    FORMAT_VERSION: ClassVar[int] = 1
    #: attributes rebuilt on first use that must not be pickled (e.g. a zero-shot model holding the process's
    #: text encoder, with its locks and onnxruntime session); they come back as None
    TRANSIENT: ClassVar[tuple[str, ...]] = ()

    def __init__(self, control: ControlSpec, **options: Any) -> None:
        self.control = control
        self.options: dict[str, Any] = self.check_options(options)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for name in self.TRANSIENT:
            if name in state:
                state[name] = None
        return state

    # -- options ----------------------------------------------------------------------------------------

    @classmethod
    def option_defaults(cls) -> dict[str, Any]:
        """Every option of the family and its default."""
        return dict(cls.DEFAULTS)

    @classmethod
    def option_types(cls, option: str) -> tuple[type, ...] | None:
        """The types ``option`` accepts (None: any value, the family checks it)."""
        if option in cls.OPTION_TYPES:
            return tuple(cls.OPTION_TYPES[option])
        default = cls.DEFAULTS[option]
        if default is None:
            return None
        if isinstance(default, bool):
            return (bool,)
        if isinstance(default, numbers.Integral):
            return (int,)
        if isinstance(default, numbers.Real):
            return (float,)
        if isinstance(default, list | tuple):
            return (list,)
        return (type(default),)

    @classmethod
    def check_options(cls, options: Mapping[str, Any] | None) -> dict[str, Any]:
        """``DEFAULTS`` overridden by ``options``, each checked: an unknown option or a value of the wrong type
        is a :class:`ModelOptionsError` naming it and listing the valid options. Lists become tuples where the
        default is a tuple (options arrive as JSON)."""
        options = dict(options or {})
        valid = sorted(cls.DEFAULTS)
        unknown = sorted(set(options) - set(cls.DEFAULTS), key=str)
        if unknown:
            hints = [f"{m!r} for {u!r}" for u in unknown if (m := _closest(str(u), valid))]
            hint = f"; did you mean {', '.join(hints)}?" if hints else ""
            raise ModelOptionsError(
                f"unknown {cls.name} options: {unknown}; known: {valid} "
                f"(an unknown option is refused, never ignored{hint})",
                option=str(unknown[0]) if len(unknown) == 1 else None, valid=valid, family=cls.name)
        out = cls.option_defaults()
        for key, value in options.items():
            kinds = cls.option_types(key)
            if kinds is not None and not any(_is(value, k) for k in kinds):
                wanted = " or ".join(dict.fromkeys(_TYPE_NAMES.get(k, k.__name__) for k in kinds))
                raise ModelOptionsError(
                    f"{cls.name} option {key!r} must be {wanted}, got {value!r} ({type(value).__name__}); "
                    f"known options: {valid}", option=key, valid=valid, family=cls.name)
            if isinstance(cls.DEFAULTS[key], tuple) and isinstance(value, list):
                value = tuple(value)
            out[key] = value
        return out

    @classmethod
    def create(cls, control: ControlSpec, options: Mapping[str, Any] | None = None) -> Self:
        """A fresh, unfitted model of ``control`` with ``options`` (checked: :meth:`check_options`)."""
        return cls(control, **dict(options or {}))

    def get_options(self) -> dict[str, Any]:
        """The model's options (every declared one), enough to construct an unfitted copy."""
        return dict(self.options)

    def get_params(self) -> dict[str, Any]:
        """sklearn's name for :meth:`get_options`."""
        return self.get_options()

    # -- metadata ---------------------------------------------------------------------------------------

    def save_meta(self, directory: Path, **fields: Any) -> None:
        """Write the metadata file: family, format version, control, options, and the family's ``fields``."""
        options = {k: _jsonable(v) for k, v in self.get_options().items()}
        meta = {"family": self.name, "format_version": self.FORMAT_VERSION, "control": self.control.name,
                "options": options, **fields}
        write_meta(directory, self.META_FILE, meta)

    @classmethod
    def load_meta(cls, directory: Path, required: tuple[str, ...] = ()) -> tuple[dict[str, Any], dict[str, Any]]:
        """(metadata, options) of a saved model; options this version no longer knows are dropped."""
        meta = read_meta(directory, cls.META_FILE, cls.name, cls.FORMAT_VERSION, required)
        return meta, cls.check_options(saved_options(meta, cls.DEFAULTS))

    @classmethod
    def from_saved(cls, directory: Path, control: ControlSpec, required: tuple[str, ...] = ()) -> tuple[Self, dict]:
        """A fresh model of ``control`` with a saved model's options, and that model's metadata
        (:meth:`load_meta`): the first step of every family's ``load``."""
        meta, options = cls.load_meta(directory, required)
        return cls(control, **options), meta

    def warn_unknown_labels(self, labels: Iterable[str], logger: logging.Logger, consequence: str = "") -> None:
        """Log (on the family's ``logger``) the labels of a loaded model that its control no longer has."""
        missing = set(labels) - set(self.control.label_keys)
        if missing:
            logger.warning("%s: labels %s of the saved model are not in the control%s", self.name, sorted(missing),
                           consequence)


def option_names(cls: type, control: ControlSpec) -> set[str]:
    """The options a family class takes: a :class:`ModelBase` family's declared ones; for a class outside the
    contract (a test-local or third-party one), what ``get_params()`` of a default instance names."""
    if issubclass(cls, ModelBase):
        return set(cls.DEFAULTS)
    get_params = getattr(cls, "get_params", None)
    return set(cls(control).get_params()) if callable(get_params) else set()


def validate_options(cls: type, control: ControlSpec, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """``options`` checked against family ``cls`` without building a model (:class:`ModelOptionsError` when one
    is unknown or of the wrong type); for a :class:`ModelBase` family, completed with the defaults."""
    if issubclass(cls, ModelBase):
        return cls.check_options(options)
    options = dict(options or {})
    known = sorted(option_names(cls, control))
    unknown = sorted(set(options) - set(known), key=str)
    if unknown:
        family = getattr(cls, "name", cls.__name__)
        raise ModelOptionsError(f"unknown {family} options: {unknown}; known: {known}",
                                option=str(unknown[0]) if len(unknown) == 1 else None, valid=known, family=family)
    return options


def build_model(cls: type, control: ControlSpec, options: Mapping[str, Any] | None = None) -> Model:
    """A fresh model of family ``cls`` for ``control``: every door (Label Studio jobs, file training, the loop)
    constructs through this, so an unknown option is the same :class:`ModelOptionsError` everywhere."""
    if issubclass(cls, ModelBase):
        return cls.create(control, options)
    return cls(control, **validate_options(cls, control, options))


def saved_options(meta: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The options stored in a saved model's metadata that this version still knows."""
    return {k: v for k, v in (meta.get("options") or {}).items() if k in defaults}


def saved_report(meta: Mapping[str, Any]) -> FitReport | None:
    """The fit report stored in a saved model's metadata (None when it has none)."""
    rep = meta.get("report")
    return FitReport.from_dict(rep) if rep else None


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


def families() -> dict[str, str]:
    """All known model families: built-ins plus ``labelpilot.models`` entry points (:mod:`labelpilot.plugins`)."""
    return plugins.with_entry_points(plugins.MODEL_FAMILIES, _BUILTIN)


def get_family(name: str, *, allow_import: bool = False) -> type[Model]:
    """A family by registered name (built-in or a ``labelpilot.models`` entry point).

    ``allow_import=True`` also takes a ``package.module:Class`` reference to an unregistered family. Only trusted
    callers pass it (a saved bundle's manifest, the operator's own command line): a name that arrives in a
    request — a label config's ``model_family``, extra_params ``families`` — must never make the server import a
    module of its choosing, so it is looked up among registered families only.
    """
    refs = families()
    if name not in refs and ":" in name:
        if not allow_import:
            raise NotFoundError(
                f"model family {name!r} is not registered; a family from a package must be installed with a "
                f"'labelpilot.models' entry point (known: {sorted(refs)})",
                field="family",
            )
        refs = {name: name}
    if name not in refs:
        raise NotFoundError(f"unknown model family {name!r}; known: {sorted(refs)}", field="family")
    try:
        return plugins.import_object(refs[name])
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
    """A model that can pre-label before any annotation: keyword extraction (fitted from the start), or a
    :class:`PredictsUntrained` family whose ``zero_shot_ready()`` says a pretrained resource maps onto this
    control's labels."""
    if model.is_fitted:
        return True
    return isinstance(model, PredictsUntrained) and bool(model.zero_shot_ready())

def options_for(options: dict[str, Any] | None, control: str, family: str) -> dict[str, Any]:
    """Model options from extra_params: ``{"C": 2}`` applies to every control; ``{"<control name>": {...}}``
    or ``{"<family>": {...}}`` to one (a control name wins over a family name)."""
    if not options:
        return {}
    if all(isinstance(v, dict) for v in options.values()):
        return dict(options.get(control) or options.get(family) or {})
    return dict(options)
