"""Which model a round of the seed-003 operator trains, and from where: resolve ``--model`` (a family name, a
``package.module:Class`` ref or a seed-003 plug-in), load the previous round's model (a registry version or a
saved folder) and build a fresh model through the model contract.

Split out of :mod:`labelpilot.loop.runner` (issue 12: ``run_loop`` was one 289-line function) so the round
itself reads as a sequence of named steps; :func:`prepare_model` is the "which model" step. The accept step
(:mod:`labelpilot.loop.accept`) reuses the loaders and the fresh-copy factory.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labelpilot.errors import InputError, ModelOptionsError, NotFoundError
from labelpilot.loop import files
from labelpilot.loop import history as round_history
from labelpilot.loop.plugin import PluginModel, is_plugin_class, load_object
from labelpilot.models.base import Model, build_model, families, family_for, get_family, option_names
from labelpilot.models.bundle import MANIFEST, Bundle
from labelpilot.registry import Registry, parse_model_ref
from labelpilot.schema import ControlSpec, LabelSchema, TaskKind, make_label_config, parse_label_config
from labelpilot.training import TIME_BUDGET, without_time_budget

#: ``options`` keys the loop itself reads; everything else goes to the model family's constructor.
LOOP_OPTIONS = ("strategy_params", "dedupe", "family", "refit")


def _open_registry(registry: Registry | str | Path | None) -> Registry | None:
    if registry is None or isinstance(registry, Registry):
        return registry
    return Registry(Path(registry))


def _load_bundle_dir(path: Path, hint: Any = None) -> tuple[LabelSchema, ControlSpec, Model]:
    """Load a saved bundle's first model. ``hint``: the ``model=`` the caller gave (a class or a ref), used
    for families that are not registered under ``labelpilot.models``."""
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise NotFoundError(f"{path} holds no saved model ({MANIFEST} missing)", field="model_id")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    schema = parse_label_config(manifest["label_config"])
    name, entry = next(iter(manifest["controls"].items()))
    control = schema.control(name)
    if entry["family"] == PluginModel.name:
        return schema, control, PluginModel.load(path / entry["dir"], control)
    if entry["family"] not in families() and hint is not None:
        cls = load_object(hint) if isinstance(hint, str) else hint
        if getattr(cls, "name", None) == entry["family"]:
            return schema, control, cls.load(path / entry["dir"], control)
    bundle = Bundle.load(path)
    return schema, control, bundle.models[name]


def _load_previous(
    model_id: str, reg: Registry | None, hint: Any = None
) -> tuple[LabelSchema, ControlSpec, Model, str, list[dict[str, Any]]]:
    """(schema, control, model, parent ref, history of earlier rounds, oldest first)."""
    if reg is not None and not Path(model_id).is_dir():
        name, version = parse_model_ref(model_id)
        mv = reg.get(name, version)
        schema, control, model = _load_bundle_dir(mv.path, hint)
        return schema, control, model, f"{mv.name}@{mv.version}", round_history.from_registry(reg, mv)
    path = Path(model_id)
    if path.is_dir():
        schema, control, model = _load_bundle_dir(path, hint)
        return schema, control, model, str(path), round_history.from_folder(path)
    raise InputError(
        f"model_id {model_id!r} is neither a folder with a saved model nor usable without a registry "
        "(pass registry= / --registry to load NAME@VERSION)",
        field="model_id",
    )


#: Training options of seed 003's demo (``epochs``, ``batch_size``, ``lr``, ``lrf``) are meant for neural plug-ins;
#: a family that has no such parameter ignores them (noted in the report) instead of failing the round.
SEED003_GENERIC_OPTIONS = frozenset({"epochs", "batch_size", "lr", "lrf"})


def _build_model(
    cls: type, control: ControlSpec, options: dict[str, Any], seed: int, ignored: list[str] | None = None
) -> Model:
    """A fresh model of family ``cls`` through the model contract (``models.base.build_model``): seed 003's
    generic training options the family does not take are dropped (noted in ``ignored``), ``random_state``
    defaults to the round's seed where the family has one, anything else unknown is a ModelOptionsError."""
    known = option_names(cls, control)
    options = dict(options)
    for key in sorted(SEED003_GENERIC_OPTIONS & set(options) - known):
        options.pop(key)
        if ignored is not None:
            ignored.append(key)
    if "random_state" in known and "random_state" not in options:
        options["random_state"] = seed
    try:
        return build_model(cls, control, options)
    except ModelOptionsError as exc:
        raise ModelOptionsError(f"{exc.message} (loop options: {', '.join(LOOP_OPTIONS)})", option=exc.option,
                                valid=exc.valid, family=exc.family) from None


def _resolve_model_ref(model: Any, control: ControlSpec, options: dict[str, Any]) -> tuple[str, Any]:
    """("family"|"plugin", class) for a family name, a ``package.module:Class`` ref or a class."""
    if model is None:
        family = options.pop("family", None)
        if family:
            return "family", get_family(family)
        cls = family_for(control)
        if cls is None:
            if control.kind in (TaskKind.IMAGE_CHOICES, TaskKind.IMAGE_BOXES):
                raise InputError("image models not available yet: give --model a seed-003 plug-in for images")
            raise InputError(f"no model family serves {control.kind} yet", field="model")
        return "family", cls
    if isinstance(model, str):
        if model in families():
            return "family", get_family(model)
        obj = load_object(model)
    else:
        obj = model
    if is_plugin_class(obj):
        return "plugin", obj
    if inspect.isclass(obj) and callable(getattr(obj, "fit", None)) and callable(getattr(obj, "predict", None)):
        return "family", obj
    raise InputError(
        f"{model!r} is neither a model family (fit/predict/save/load) nor a seed-003 plug-in "
        f"(methods {', '.join(('__init__', 'split_train_val', 'save_model', 'load_model', 'train_model'))}, "
        "query_hard_example)",
        field="model",
    )



def _check_known_labels(rows: Sequence[files.SeedRow], control: ControlSpec) -> None:
    known = set(control.label_keys)
    for r in rows:
        bad = [lab for lab in r.labels if lab not in known]
        if bad:
            raise InputError(
                f"{r.where}: label(s) {', '.join(map(repr, bad))} unknown to the model "
                f"(it knows {', '.join(control.label_keys)})",
                field=r.file,
            )
        if len(r.labels) > 1 and not control.multiple:
            raise InputError(f"{r.where}: several labels, but the model is single-label", field=r.file)



def _factory(model: Any, control: ControlSpec, seed: int) -> Any:
    """A maker of fresh unfitted copies of ``model`` (for the loop's cross-validation), or None."""
    if isinstance(model, PluginModel) or not callable(getattr(model, "get_params", None)):
        return None
    params = {k: v for k, v in model.get_params().items() if k != "control"}
    return lambda: _build_model(type(model), control, params, seed)


def _without_time_budget(model: Any, control: ControlSpec, opts: dict[str, Any], seed: int, refit: bool) -> Any:
    """The round's final model holds every label: a family with a training ``time_budget`` gets an unlimited one
    unless the caller set it (``training.without_time_budget``, the rule file training follows too). Only the
    parameters are copied; such a family trains from scratch on every fit."""
    if not refit or TIME_BUDGET in opts or isinstance(model, PluginModel):
        return model
    if not callable(getattr(model, "get_params", None)):
        return model
    params = {k: v for k, v in model.get_params().items() if k not in ("control", TIME_BUDGET)}
    lifted = without_time_budget(type(model), control, params)
    if TIME_BUDGET not in lifted:
        return model
    return _build_model(type(model), control, lifted, seed)



@dataclass
class StartingModel:
    """What a round starts from: the label schema, the control it trains, the model to fit, the previous
    round's model (None on a fresh start), its ref (``NAME@VERSION`` or folder; None on a fresh start), the
    earlier rounds' history (oldest first) and the seed-003 generic options the family ignored."""

    schema: LabelSchema
    control: ControlSpec
    model: Model
    previous: Model | None = None
    parent_ref: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)


def prepare_model(
    labelled: Sequence[files.SeedRow],
    *,
    is_image: bool,
    multi: bool,
    model_id: str | None,
    reg: Registry | None,
    model: Any,
    opts: dict[str, Any],
    seed: int,
    refit: bool,
) -> StartingModel:
    """The model of the round: the saved one of ``model_id`` (rebuilt when model options are given), or a
    fresh one of ``model`` (default: the family serving the task) for a schema made from the labels.
    ``opts`` are the model options (the loop's own keys already taken out; ``family`` is consumed here)."""
    ignored: list[str] = []
    if model_id:
        schema, control, loaded, parent_ref, history = _load_previous(model_id, reg, model)
        _check_known_labels(labelled, control)
        kind, cls = ("plugin", None) if isinstance(loaded, PluginModel) else ("family", type(loaded))
        model_opts = {k: v for k, v in opts.items() if k != "family"}
        if kind == "family" and model_opts:
            params = loaded.get_params() if hasattr(loaded, "get_params") else {}
            params = {k: v for k, v in params.items() if k != "control"}
            the_model: Model = _build_model(cls, control, {**params, **model_opts}, seed, ignored)  # type: ignore[arg-type]
        else:
            the_model = loaded
            if isinstance(the_model, PluginModel):
                the_model.options = model_opts
        start = StartingModel(schema, control, the_model, loaded, parent_ref, history, ignored)
    else:
        labels = sorted({lab for r in labelled for lab in r.labels})
        if len(labels) < 2 and not multi:
            raise InputError(
                f"the labelled data has a single label ({', '.join(labels)}); at least two are needed",
                field=files.LABEL_FILE,
            )
        kind_name = "image-choices" if is_image else "choices"
        schema = parse_label_config(make_label_config(labels, kind=kind_name, multiple=multi))
        control = schema.controls[0]
        kind, cls = _resolve_model_ref(model, control, opts)
        if kind == "plugin":
            ref = model if isinstance(model, str) else f"{cls.__module__}:{cls.__qualname__}"
            the_model = PluginModel.create(control, ref, cls, opts)  # type: ignore[assignment]
            the_model.options = dict(opts)
        else:
            the_model = _build_model(cls, control, opts, seed, ignored)
        start = StartingModel(schema, control, the_model, ignored=ignored)
    start.model = _without_time_budget(start.model, control, opts, seed, refit)
    if is_image and not isinstance(start.model, PluginModel) and TaskKind.IMAGE_CHOICES not in start.model.kinds:
        raise InputError("image models not available yet: give --model a seed-003 plug-in for images")
    return start
