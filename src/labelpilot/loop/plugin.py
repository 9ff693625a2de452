"""Seed-003 plug-ins: a user's model class with the six methods, used as a labelpilot model unchanged.

The protocol (seed 003)::

    class MyModel:
        def __init__(self): ...
        def split_train_val(self, df_init, df_anno, is_first_train, val_size, random_seed) -> (df_train, df_val)
        def save_model(self, save_dir): ...
        def load_model(self, model_dir) -> "MyModel"
        def train_model(self, df_train, df_val, work_dir, is_first_train, options): ...
        def query_hard_example(self, df_img, work_dir, query_cnt, strategy, options) -> DataFrame

DataFrames have the columns ``sampleId, path, label`` (``df_img``: ``sampleId, path``) and, for text items,
``text`` (the content, already read, so a plug-in need not open the files). ``path`` is absolute (resolved
against the input folder). ``label`` holds ``|``-separated labels for multi-label tasks. ``df_val`` is None
when there is no validation set.

What ``query_hard_example`` returns is read by column name (case-insensitive):

- ``sampleId`` (required);
- the predicted label: ``label`` / ``pred`` / ``prediction`` / ``predicted_label`` (``|`` for several);
- the confidence: ``confidence`` / ``score`` / ``prob`` / ``probability``;
- per-class probabilities: ``prob_<label>`` or a column named exactly like a label;
- the hard-example flag: ``hard_example`` / ``is_hard_example`` / ``hard`` / ``isHardExample`` / ``difficult``.

When the flag column is there, the plug-in's own choice of hard examples is kept; otherwise labelpilot's
strategy picks them from the probabilities (or the confidence). Plug-ins are found as ``package.module:Class``
or by name in the entry-point group ``labelpilot.plugins``. pandas is needed only here and is imported lazily.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from labelpilot import plugins
from labelpilot.data.types import Example, FitReport, Prediction
from labelpilot.errors import InputError, TrainingError
from labelpilot.schema.types import ControlSpec, TaskKind

PLUGIN_GROUP = plugins.SEED003_PLUGINS
PLUGIN_PREFIX = "plugin:"
METHODS = ("split_train_val", "save_model", "load_model", "train_model", "query_hard_example")
_LABEL_COLS = ("label", "pred", "prediction", "predicted_label", "labels")
_CONF_COLS = ("confidence", "score", "prob", "probability")
_HARD_COLS = ("hard_example", "is_hard_example", "hard", "ishardexample", "difficult", "hard_sample")


def require_pandas() -> Any:
    try:
        import pandas as pd
    except ImportError:
        raise InputError(
            "seed-003 plug-ins exchange pandas DataFrames, and pandas is not installed: "
            "pip install pandas (or: pip install 'labelpilot[plugins]')",
            field="model",
        ) from None
    return pd


def load_object(ref: str) -> Any:
    """``package.module:Class`` or ``path/to/file.py:Class`` -> the object, or an entry point of group
    ``labelpilot.plugins`` (both through :mod:`labelpilot.plugins`)."""
    if ":" in ref:
        try:
            return plugins.import_object(ref, files=True)
        except (ImportError, AttributeError) as exc:
            raise InputError(f"cannot import model {ref!r}: {exc}", field="model") from None
    try:
        return plugins.load_named(PLUGIN_GROUP, ref)
    except plugins.PluginNotFound:
        raise InputError(
            f"no plug-in {ref!r} (neither package.module:Class nor a {PLUGIN_GROUP} entry point)"
        ) from None


def is_plugin_class(obj: Any) -> bool:
    return inspect.isclass(obj) and all(callable(getattr(obj, m, None)) for m in METHODS)


def _frame(examples: Sequence[Example], with_labels: bool) -> Any:
    pd = require_pandas()
    data: dict[str, list[Any]] = {
        "sampleId": [e.id for e in examples],
        "path": [e.meta.get("abs_path") or e.meta.get("path") or e.image or "" for e in examples],
    }
    if with_labels:
        # span tasks (loop/span_round.py) put the label cell, Label Studio span JSON, into meta["label_json"]
        data["label"] = [e.meta.get("label_json") or ("|".join(e.target.labels) if e.target else "") for e in examples]
    if any(e.image is None for e in examples):
        data["text"] = [e.text if e.image is None else "" for e in examples]
    return pd.DataFrame(data)


def hard_flag(value: Any) -> bool:
    """A plug-in's hard-example cell read as a flag (1/true/yes/y/t)."""
    return str(value).strip().lower() in ("1", "true", "yes", "y", "t", "1.0")


class PluginModel:
    """Adapts a seed-003 plug-in instance to labelpilot's model contract.

    The loop sets :attr:`work_dir`, :attr:`is_first_train`, :attr:`options`, :attr:`query_cnt` and
    :attr:`strategy` before calling ``fit``/``predict``; ``predict`` keeps the plug-in's hard-example flags in
    :attr:`hard_flags_` (sampleId -> bool) when it returned any.
    """

    name: ClassVar[str] = "plugin"
    kinds: ClassVar[frozenset[TaskKind]] = frozenset(
        {TaskKind.TEXT_CHOICES, TaskKind.TEXT_TAXONOMY, TaskKind.IMAGE_CHOICES}
    )

    def __init__(self, control: ControlSpec, plugin: Any, ref: str) -> None:
        self.control = control
        self.plugin = plugin
        self.ref = ref
        self.work_dir: Path = Path(".")
        self.is_first_train = True
        self.options: dict[str, Any] = {}
        self.query_cnt = 0
        self.strategy = "LeastConfidence"
        self.hard_flags_: dict[str, bool] | None = None
        self._fitted = False

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def create(cls, control: ControlSpec, ref: str, plugin_cls: Any, options: dict[str, Any]) -> PluginModel:
        try:
            params = inspect.signature(plugin_cls).parameters
            instance = plugin_cls(options=options) if "options" in params else plugin_cls()
        except Exception as exc:
            raise TrainingError(f"plug-in {ref}: __init__ failed: {type(exc).__name__}: {exc}") from exc
        return cls(control, instance, ref)

    @property
    def family(self) -> str:
        return PLUGIN_PREFIX + self.ref

    @property
    def is_fitted(self) -> bool:
        return self._fitted

    # -- seed-003 split -------------------------------------------------------------------------
    def split(
        self, init: Sequence[Example], added: Sequence[Example], is_first_train: bool, val_size: float, seed: int
    ) -> tuple[list[Example], list[Example] | None]:
        """Call the plug-in's ``split_train_val`` and map its frames back to examples by sampleId."""
        df_init, df_anno = _frame(init, True), _frame(added, True)
        try:
            df_train, df_val = self.plugin.split_train_val(df_init, df_anno, is_first_train, val_size, seed)
        except Exception as exc:
            raise TrainingError(f"plug-in {self.ref}: split_train_val failed: {type(exc).__name__}: {exc}") from exc
        by_id = {e.id: e for e in [*init, *added]}

        def back(df: Any, what: str) -> list[Example]:
            if "sampleId" not in df.columns:
                raise TrainingError(f"plug-in {self.ref}: split_train_val's {what} has no sampleId column")
            out = []
            for sid in df["sampleId"].astype(str):
                if sid not in by_id:
                    raise TrainingError(f"plug-in {self.ref}: split_train_val's {what} has unknown sampleId {sid!r}")
                out.append(by_id[sid])
            return out

        train = back(df_train, "df_train")
        val = back(df_val, "df_val") if df_val is not None and len(df_val) else None
        return train, val

    # -- contract --------------------------------------------------------------------------------
    def fit(
        self, examples: Sequence[Example], *, val: Sequence[Example] | None = None, progress: Any = None
    ) -> FitReport:
        import time

        t0 = time.perf_counter()
        df_train = _frame(examples, True)
        df_val = _frame(val, True) if val else None
        self.work_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.plugin.train_model(df_train, df_val, str(self.work_dir), self.is_first_train, dict(self.options))
        except Exception as exc:
            raise TrainingError(f"plug-in {self.ref}: train_model failed: {type(exc).__name__}: {exc}") from exc
        self._fitted = True
        labels = sorted({lab for e in examples if e.target for lab in e.target.labels})
        return FitReport(
            n_train=len(examples),
            n_val=len(val or ()),
            labels=labels,
            seconds=time.perf_counter() - t0,
            notes=[f"trained by plug-in {self.ref}"],
        )

    def predict(self, examples: Sequence[Example]) -> list[Prediction]:
        df_img = _frame(examples, False)
        try:
            out = self.plugin.query_hard_example(
                df_img, str(self.work_dir), self.query_cnt, self.strategy, dict(self.options)
            )
        except Exception as exc:
            raise TrainingError(f"plug-in {self.ref}: query_hard_example failed: {type(exc).__name__}: {exc}") from exc
        return self._read_output(out, examples)

    def _output_columns(self, out: Any) -> dict[str, Any]:
        """query_hard_example's DataFrame's columns by lower-case name (it must have ``sampleId``)."""
        if out is None or not hasattr(out, "columns"):
            raise TrainingError(f"plug-in {self.ref}: query_hard_example must return a pandas DataFrame")
        cols = {str(c).lower(): c for c in out.columns}
        if "sampleid" not in cols:
            raise TrainingError(f"plug-in {self.ref}: query_hard_example's DataFrame has no sampleId column")
        return cols

    def _read_output(self, out: Any, examples: Sequence[Example]) -> list[Prediction]:
        cols = self._output_columns(out)
        label_col = next((cols[c] for c in _LABEL_COLS if c in cols), None)
        conf_col = next((cols[c] for c in _CONF_COLS if c in cols), None)
        hard_col = next((cols[c] for c in _HARD_COLS if c in cols), None)
        keys = self.control.label_keys
        prob_cols: dict[str, Any] = {}
        for k in keys:
            for cand in (f"prob_{k}", k):
                if cand in out.columns and cand != label_col:
                    prob_cols[k] = cand
                    break
        records: dict[str, Prediction] = {}
        flags: dict[str, bool] = {}
        for rec in out.to_dict("records"):
            sid = str(rec[cols["sampleid"]])
            labels: tuple[str, ...] = ()
            if label_col is not None and rec[label_col] is not None and str(rec[label_col]) not in ("", "nan"):
                labels = tuple(p for p in str(rec[label_col]).split("|") if p)
            probs = {k: float(rec[c]) for k, c in prob_cols.items()} if prob_cols else None
            conf = float(rec[conf_col]) if conf_col is not None and rec[conf_col] is not None else None
            if probs is None and conf is not None and labels:
                probs = _spread(labels, conf, keys, self.control.multiple)
            if conf is None:
                conf = max(probs.values()) if probs else 0.0
            records[sid] = Prediction(labels=labels, probs=probs, score=float(np.nan_to_num(conf)))
            if hard_col is not None:
                flags[sid] = hard_flag(rec[hard_col])
        self.hard_flags_ = flags if hard_col is not None else None
        return [records.get(str(e.id)) or Prediction(error="the plug-in returned no prediction") for e in examples]

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        try:
            self.plugin.save_model(str(directory))
        except Exception as exc:
            raise TrainingError(f"plug-in {self.ref}: save_model failed: {type(exc).__name__}: {exc}") from exc
        (directory / "labelpilot_plugin.json").write_text(json.dumps({"ref": self.ref}), encoding="utf-8")

    @classmethod
    def load_from(cls, directory: Path, control: ControlSpec, ref: str | None = None) -> PluginModel:
        meta = directory / "labelpilot_plugin.json"
        if ref is None:
            if not meta.is_file():
                raise InputError(f"{directory} holds no seed-003 plug-in model", field="model_id")
            ref = json.loads(meta.read_text(encoding="utf-8"))["ref"]
        plugin_cls = load_object(ref)
        instance = PluginModel.create(control, ref, plugin_cls, {})
        try:
            loaded = instance.plugin.load_model(str(directory))
        except Exception as exc:
            raise TrainingError(f"plug-in {ref}: load_model failed: {type(exc).__name__}: {exc}") from exc
        if loaded is not None:
            instance.plugin = loaded
        instance._fitted = True
        return instance

    @classmethod
    def load(cls, directory: Path, control: ControlSpec) -> PluginModel:
        return cls.load_from(directory, control)


def _spread(labels: tuple[str, ...], conf: float, keys: list[str], multiple: bool) -> dict[str, float]:
    """Probabilities from a label and its confidence only: the rest of the mass shared by the others."""
    if multiple:
        return {k: (conf if k in labels else 0.0) for k in keys}
    rest = (1.0 - conf) / max(len(keys) - 1, 1)
    return {k: (conf if k == labels[0] else rest) for k in keys}
