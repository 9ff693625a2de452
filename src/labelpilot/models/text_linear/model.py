"""The ``text-linear`` family class: options, targets, prediction and persistence.

Features, training and calibration are mixins from :mod:`.features`, :mod:`.training` and :mod:`.calibration`;
the family's design is described in :mod:`labelpilot.models.text_linear`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from labelpilot.data.types import Example, FitReport, Prediction
from labelpilot.encoders import EncoderUnavailable
from labelpilot.errors import InputError, NotFoundError, TrainingError
from labelpilot.models import encoder_hooks
from labelpilot.models.base import ModelBase, read_meta, saved_options, saved_report
from labelpilot.models.text_linear.calibration import _Calibration, _row_scaled, _sigmoid, _softmax
from labelpilot.models.text_linear.features import _GROUP_BITS, _N_GROUPS, _Featurizer, _KeyIndex
from labelpilot.models.text_linear.training import _Training
from labelpilot.schema.types import TAXONOMY_SEP, ControlSpec, TaskKind

__all__ = ["TextLinearModel"]

_FORMAT_VERSION = 1
_META_FILE = "text_linear.json"
_ARRAYS_FILE = "text_linear.npz"

_DEFAULTS: dict[str, Any] = {
    "C": 0.15,  # LinearSVC regularisation (smaller = stronger)
    # liblinear passes; None: 10 below 20,000 examples, else 3 (TNEWS 53k: same accuracy as 5 or 10,
    # training CPU 18 -> 12 s)
    "max_iter": None,
    "nb_alpha": 0.3,  # Complement NB smoothing
    "use_nb": True,  # mix Complement NB into single-label models
    "char_ngrams": (1, 3),
    "word_ngrams": (1, 2),
    "use_words": True,  # word n-grams (jieba for CJK text)
    "use_pair": True,  # features of Example.text_pair
    "pair_char_ngrams": (1, 3),
    "pair_words": False,  # word n-grams of text_pair too (TNEWS keywords: no gain, +40% featurizing time)
    "pair_word_ngrams": (1, 1),
    "pair_segments": True,  # delimiter-separated segments of text_pair as whole tokens
    "jieba_hmm": False,  # HMM new-word discovery: same TNEWS accuracy, 30% slower segmentation
    "min_df": None,  # None: 1 below 10,000 training texts, else 2
    "max_features": None,  # None: min(2M, 25M / n_classes) most frequent features
    "holdout": 0.1,  # held-out fraction when no val is given and the set is large
    "max_holdout": 5000,
    "cv_max_n": 3000,  # at most this many examples: k-fold out-of-fold scores instead of one slice
    "cv_folds": 5,
    #: folds from 500 examples on: each fold is big enough, and 4 fits instead of 6 keep a retrain on 1,000
    #: annotations near 0.5 s (a warm trainer's budget is 1 s)
    "cv_folds_large": 3,
    "refit": True,  # refit on everything after the held-out slice (when within time_budget)
    "time_budget": 27.0,  # seconds in all; the refit is skipped (with a note) when it would not fit
    "output_parent": False,  # taxonomy: also propose the ancestors that are label keys
    "embed_dim": 64,
    "embed_features": 20000,
    "seed": 0,
    # the text encoder (labelpilot.encoders), when it loads: zero-shot from label names before training,
    # a few-shot head mixed with the TF-IDF model after (models/text_zeroshot.py, models/text_fewshot.py)
    "encoder": True,
    # the head must pay for its serving cost (an encoder pass per new text, ~1-4 ms): with every label
    # annotated and >= 1,000 held-out predictions, a head that adds less than this much held-out accuracy
    # is dropped and the model serves TF-IDF alone (TNEWS 53k: +0.0 points for 5x the /predict latency)
    "encoder_min_gain": 0.005,
    "label_descriptions": None,  # {label key: description} for zero-shot, besides <Choice hint="...">
    # multi-label per-label thresholds: "gain" maximises tp - fp on held-out predictions (a proposed label
    # saves the annotator a click when right and costs one when wrong; never below 0.5), "f1" maximises F1
    "threshold_rule": "gain",
}



class TextLinearModel(_Featurizer, _Training, _Calibration, ModelBase):
    """Character + word n-gram TF-IDF with a calibrated linear classifier (family doc:
    :mod:`labelpilot.models.text_linear`).

    Options are also attributes (``model.C``), sklearn-style; :meth:`get_options` reads them back."""

    name: ClassVar[str] = "text-linear"
    kinds: ClassVar[frozenset[TaskKind]] = frozenset({TaskKind.TEXT_CHOICES, TaskKind.TEXT_TAXONOMY})
    DEFAULTS: ClassVar[dict[str, Any]] = _DEFAULTS
    TRANSIENT: ClassVar[tuple[str, ...]] = ("_zero_shot",)
    OPTION_TYPES: ClassVar[dict[str, tuple[type, ...]]] = {
        "max_iter": (int, type(None)), "min_df": (int, float, type(None)), "max_features": (int, type(None)),
        "label_descriptions": (dict, type(None))}
    META_FILE: ClassVar[str] = _META_FILE
    FORMAT_VERSION: ClassVar[int] = _FORMAT_VERSION

    def __init__(self, control: ControlSpec, **options: Any) -> None:
        super().__init__(control, **options)
        for key, value in self.options.items():
            setattr(self, key, value)
        if self.threshold_rule not in ("gain", "f1"):
            raise InputError(f"text-linear option threshold_rule must be 'gain' or 'f1', got {self.threshold_rule!r}",
                             field="threshold_rule")
        # learned state
        self.classes_: list[str] | None = None
        self.multilabel_: bool = False
        self.vocab_: np.ndarray | None = None  # sorted uint64 keys
        self.idf_: np.ndarray | None = None
        self.col_group_: np.ndarray | None = None
        self.weights_: np.ndarray | None = None  # (n_features, n_classes) float32, calibrated SVC logits
        self.nb_weights_: np.ndarray | None = None  # (n_features, n_classes) float32, Complement NB scores
        self.nb_scale_: float = 0.0  # weight of the NB scores after scaling each row to unit spread
        self.svc_spread_: float = 0.0  # SVC logits are divided by (1 + svc_spread_ * their row spread)
        self.bias_: np.ndarray | None = None  # (n_classes,)
        self.thresholds_: np.ndarray | None = None  # multi-label: tuned per-label thresholds
        self.calibration_: dict[str, Any] = {}
        self.embed_cols_: np.ndarray | None = None
        self.embed_components_: np.ndarray | None = None
        self.report_: FitReport | None = None
        self.fewshot_: Any = None  # text_fewshot.FewShotHead when the encoder was used
        self._fewshot_inputs: dict[str, Any] | None = None  # what _fit leaves for the few-shot head
        self._zero_shot: Any = None  # text_zeroshot.ZeroShot, built on first use
        self._single: tuple[str, list[Example]] | None = None  # _fit saw one label only: it and the examples
        self._control_cache: tuple[ControlSpec, np.ndarray, np.ndarray] | None = None
        self._index: _KeyIndex | None = None  # built from vocab_ on first use

    # -- parameters ---------------------------------------------------------------------------

    def get_options(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in _DEFAULTS}

    @property
    def is_fitted(self) -> bool:
        return self.weights_ is not None or self.fewshot_ is not None  # the head alone: one label annotated


    # -- targets ------------------------------------------------------------------------------

    def _targets(self, examples: Sequence[Example]) -> tuple[list[int], list[tuple[str, ...]], list[str]]:
        """Usable example indices, their label tuples, and reasons for the skipped ones."""
        known = set(self.control.label_keys)
        taxonomy = self.control.kind == TaskKind.TEXT_TAXONOMY
        keep: list[int] = []
        labels: list[tuple[str, ...]] = []
        skipped: list[str] = []
        for i, ex in enumerate(examples):
            ident = ex.id if ex.id is not None else f"#{i}"
            if ex.target is None or not ex.target.labels:
                skipped.append(f"{ident}: no label for control {self.control.name!r}")
                continue
            labs = tuple(dict.fromkeys(ex.target.labels))
            unknown = [lab for lab in labs if lab not in known]
            if unknown:
                skipped.append(f"{ident}: label(s) {unknown} not in control {self.control.name!r}")
                continue
            if taxonomy and len(labs) > 1:  # keep the deepest selections: drop ancestors of others
                labs = tuple(a for a in labs if not any(b != a and b.startswith(a + TAXONOMY_SEP) for b in labs))
            keep.append(i)
            labels.append(labs)
        return keep, labels, skipped


    # -- prediction ---------------------------------------------------------------------------

    def _logits(self, examples: Sequence[Example]) -> np.ndarray:
        assert self.weights_ is not None and self.bias_ is not None
        raw = self._raw(examples)
        rows, cols, tf = self._lookup(raw)
        if raw.n == 1:  # fast path: no sparse matrix
            assert self.idf_ is not None and self.col_group_ is not None
            data = (1.0 + np.log(tf.astype(np.float64))) * self.idf_[cols]
            groups = self.col_group_[cols]
            norms = np.sqrt(np.bincount(groups, weights=data * data, minlength=_N_GROUPS))
            data /= norms[groups]
            data32 = data.astype(np.float32)
            z = (data32 @ self.weights_[cols] + self.bias_)[None, :]
            if self.svc_spread_:
                z /= 1.0 + self.svc_spread_ * z.std(axis=1, keepdims=True)
            if self.nb_weights_ is not None:
                z += self.nb_scale_ * _row_scaled((data32 @ self.nb_weights_[cols])[None, :].astype(np.float64))
            return z
        x = self._assemble(raw.n, rows, cols, tf, np.float32)
        z = np.asarray(x @ self.weights_, dtype=np.float64) + self.bias_
        if self.svc_spread_:
            z /= 1.0 + self.svc_spread_ * z.std(axis=1, keepdims=True)
        if self.nb_weights_ is not None:
            z += self.nb_scale_ * _row_scaled(np.asarray(x @ self.nb_weights_, dtype=np.float64))
        return z

    def _control_view(self) -> tuple[np.ndarray, np.ndarray]:
        """(thresholds, allowed) for the current control: per-label thresholds with the control's
        overrides (``LabelSpec.score_threshold``, then ``ControlSpec.score_threshold``), and which known
        classes the control still has (a model loaded for an edited config never proposes a removed label)."""
        assert self.classes_ is not None
        cached = self._control_cache
        if cached is not None and cached[0] is self.control:
            return cached[1], cached[2]
        k = len(self.classes_)
        thr = self.thresholds_.astype(np.float64).copy() if self.thresholds_ is not None else np.full(k, 0.5)
        allowed = np.ones(k, dtype=bool)
        for j, key in enumerate(self.classes_):
            lab = self.control.label(key)
            allowed[j] = lab is not None
            if lab is not None and lab.score_threshold is not None:
                thr[j] = float(lab.score_threshold)
            elif self.control.score_threshold is not None:
                thr[j] = float(self.control.score_threshold)
        if not allowed.any():  # a control with none of the model's labels: propose them anyway
            allowed[:] = True
        self._control_cache = (self.control, thr, allowed)
        return thr, allowed

    def predict_proba(self, examples: Sequence[Example]) -> np.ndarray:
        """(n, n_classes) probabilities: softmax (single-label) or per-label sigmoid (multi-label)."""
        if not self.is_fitted:
            raise NotFoundError("text-linear model is not fitted", field=self.control.name)
        if self.weights_ is None:  # the encoder head alone (one label annotated)
            try:
                return self.fewshot_.combine(None, examples)
            except EncoderUnavailable as exc:
                raise NotFoundError(f"text-linear model needs the text encoder: {exc.message}",
                                    field=self.control.name) from exc
        z = self._logits(examples)
        if self.multilabel_:
            return _sigmoid(z)
        p = _softmax(z)
        return self.fewshot_.combine(p, examples) if self.fewshot_ is not None else p

    def zero_shot_ready(self) -> bool:
        """True when an untrained model can pre-label from its label names (the encoder loads and the names
        mean something): see models/text_zeroshot.py."""
        return encoder_hooks.zero_shot(self) is not None

    def predict(self, examples: Sequence[Example]) -> list[Prediction]:
        if not self.is_fitted:
            zero_shot = encoder_hooks.zero_shot(self)
            if zero_shot is None:
                raise NotFoundError("text-linear model is not fitted", field=self.control.name)
            return zero_shot.predict(examples)
        if not examples:
            return []
        try:
            return self._to_predictions(self.predict_proba(examples))
        except Exception:  # find the failing example(s); the others still get predictions
            out: list[Prediction] = []
            for ex in examples:
                try:
                    out.extend(self._to_predictions(self.predict_proba([ex])))
                except Exception as err:
                    out.append(Prediction(error=f"{type(err).__name__}: {err}"))
            return out

    def _to_predictions(self, probs: np.ndarray) -> list[Prediction]:
        assert self.classes_ is not None
        classes = self.classes_
        out: list[Prediction] = []
        thr, allowed = self._control_view()
        if self.multilabel_:
            chosen = (probs >= thr) & allowed
            # 1 at the threshold, 0 at 0 or 1: the distance is scaled by the room on its side
            room = np.where(probs >= thr, 1.0 - thr, thr)
            closeness = 1.0 - np.abs(probs - thr) / np.maximum(room, 1e-9)
            unc = closeness.mean(axis=1)
            for i in range(probs.shape[0]):
                row = probs[i]
                idx = np.flatnonzero(chosen[i])
                idx = idx[np.argsort(-row[idx], kind="stable")]
                labels = self._with_parents([classes[j] for j in idx])
                score = float(row[idx].mean()) if idx.shape[0] else float(1.0 - row.max())
                out.append(
                    Prediction(
                        labels=labels,
                        probs=dict(zip(classes, row.tolist(), strict=True)),
                        score=score,
                        uncertainty=float(unc[i]),
                    )
                )
            return out
        ranked = probs if allowed.all() else np.where(allowed, probs, 0.0)
        top2 = np.argsort(-ranked, axis=1, kind="stable")[:, :2]
        for i in range(probs.shape[0]):
            row = probs[i]
            best = int(top2[i, 0])
            second = float(ranked[i, top2[i, 1]]) if top2.shape[1] > 1 else 0.0
            out.append(
                Prediction(
                    labels=self._with_parents([classes[best]]),
                    probs=dict(zip(classes, row.tolist(), strict=True)),
                    score=float(row[best]),
                    uncertainty=float(1.0 - (row[best] - second)),
                )
            )
        return out

    def _with_parents(self, labels: list[str]) -> tuple[str, ...]:
        if not (self.output_parent and self.control.kind == TaskKind.TEXT_TAXONOMY):
            return tuple(labels)
        keys = set(self.control.label_keys)
        out = list(labels)
        for lab in labels:
            parts = lab.split(TAXONOMY_SEP)
            for depth in range(len(parts) - 1, 0, -1):
                parent = TAXONOMY_SEP.join(parts[:depth])
                if parent in keys and parent not in out:
                    out.append(parent)
        return tuple(out)

    def embed(self, examples: Sequence[Example]) -> np.ndarray | None:
        if not self.is_fitted or self.embed_cols_ is None or self.embed_components_ is None:
            return None
        x = self._transform(examples, np.float32)
        v = np.asarray(x[:, self.embed_cols_] @ self.embed_components_, dtype=np.float32)
        norms = np.linalg.norm(v, axis=1, keepdims=True)
        np.divide(v, norms, out=v, where=norms > 0)
        return v

    # -- persistence --------------------------------------------------------------------------

    def save(self, directory: Path) -> None:
        if not self.is_fitted:
            raise TrainingError("cannot save an unfitted text-linear model", field=self.control.name)
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {}
        if self.weights_ is not None:  # else the encoder head alone
            arrays.update(vocab=self.vocab_, idf=self.idf_, weights=self.weights_.astype(np.float16), bias=self.bias_)
        if self.nb_weights_ is not None:
            arrays["nb_weights"] = self.nb_weights_.astype(np.float16)
        if self.thresholds_ is not None:
            arrays["thresholds"] = self.thresholds_
        if self.embed_cols_ is not None and self.embed_components_ is not None:
            arrays["embed_cols"] = self.embed_cols_
            arrays["embed_components"] = self.embed_components_
        fewshot_meta = None
        if self.fewshot_ is not None:
            fs_arrays, fewshot_meta = self.fewshot_.to_saved()
            arrays.update(fs_arrays)
        tmp = directory / (_ARRAYS_FILE + ".tmp.npz")
        np.savez(tmp, **arrays)
        tmp.replace(directory / _ARRAYS_FILE)
        self.save_meta(
            directory,
            classes=self.classes_,
            multilabel=self.multilabel_,
            nb_scale=self.nb_scale_,
            svc_spread=self.svc_spread_,
            calibration=self.calibration_,
            fewshot=fewshot_meta,
            report=self.report_.to_dict() if self.report_ is not None else None,
        )

    @classmethod
    def load(cls, directory: Path, control: ControlSpec) -> TextLinearModel:
        directory = Path(directory)
        meta = read_meta(directory, _META_FILE, cls.name, _FORMAT_VERSION)
        if "options" not in meta:  # saved before the model contract (ModelBase) called them options
            meta["options"] = meta.get("params")
        model = cls(control, **saved_options(meta, _DEFAULTS))
        with np.load(directory / _ARRAYS_FILE, allow_pickle=False) as z:
            if "weights" in z:
                model.vocab_ = z["vocab"]
                model.idf_ = z["idf"]
                model.col_group_ = (model.vocab_ & _GROUP_BITS).astype(np.uint8)
                model.weights_ = np.ascontiguousarray(z["weights"], dtype=np.float32)
                model.bias_ = z["bias"]
            if "nb_weights" in z:
                model.nb_weights_ = np.ascontiguousarray(z["nb_weights"], dtype=np.float32)
            model.thresholds_ = z.get("thresholds")
            if "embed_cols" in z:
                model.embed_cols_ = z["embed_cols"]
                model.embed_components_ = z["embed_components"]
            model.fewshot_ = encoder_hooks.load_head(z, meta.get("fewshot"))
        model.classes_ = list(meta["classes"])
        model.multilabel_ = bool(meta["multilabel"])
        model.nb_scale_ = float(meta.get("nb_scale", 0.0))
        model.svc_spread_ = float(meta.get("svc_spread", 0.0))
        model.calibration_ = meta.get("calibration") or {}
        model.report_ = saved_report(meta)
        return model
