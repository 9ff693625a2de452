"""``image-classifier``: pretrained EfficientNet-Lite0 features + a logistic-regression head, for ``<Choices>`` on
``<Image>`` (single- and multi-label).

Features
    The backbone (ImageNet-1k EfficientNet-Lite0, frozen) turns each image into its global-average-pooled
    1280-d penultimate activation, L2-normalised. Images are opened by :func:`labelpilot.imaging.open_image`
    (size limits, EXIF orientation, any mode -> RGB), resized (option ``resize``: ``center_crop`` -- the
    ImageNet evaluation crop, default -- or ``squash`` / ``letterbox``) to ``image_size`` (224), and run in
    batches of ``batch_size`` through onnxruntime (or torch, see :mod:`.backbone`) by
    :class:`.inputs.ImageFeatures`. Features are cached per file content hash for the life of the process,
    so the active-learning loop's repeated fits and pool predictions compute each image once. With
    ``flip_augment`` (default on) the horizontally flipped image's features are added to the training set
    (they are cached as well).

    Measured on hymenoptera (ants/bees, 244 train / 153 val; 2 cores shared with other jobs): val
    accuracy 0.948, log loss 0.110, ECE 0.042; training 24-38 s cold (load 2-8); predict p50 13-33 ms
    per image with onnxruntime against 190-300 ms with the eager torch backbone on the same machine, so
    ONNX is the default engine. Variants tried (center crop / squash, raw / L2-normalised features,
    C 0.1-1000, with / without flipped copies): val accuracy 0.922-0.954, i.e. within a few images (one
    is 0.65 %); center crop gives the best log loss (0.109 against 0.17 for squash).

Head and calibration
    scikit-learn ``LogisticRegression`` (lbfgs). Single-label: one multinomial model over the label keys
    seen in training (at least two). Multi-label: one binary model per label; a label that is always (or
    never) present gets a constant probability (its training frequency). ``C`` is chosen from ``Cs`` by
    stratified k-fold **log loss** on out-of-fold probabilities (so the chosen model is the best calibrated
    one, not only the most accurate); the out-of-fold accuracy / log loss / expected calibration error are
    reported in ``FitReport.metrics`` (``cv_*``), and on ``val`` when it is given (``val_*``).

Predictions
    Single-label: ``labels`` = the most probable label, ``probs`` over the trained labels, ``score`` = its
    probability, ``uncertainty`` = 1 - score (least confidence). A ``model_score_threshold`` on the
    control leaves ``labels`` empty below it (``probs`` stay, for active learning). Multi-label: every
    label whose probability reaches its threshold (the ``<Choice>``'s ``model_score_threshold``, else the
    control's, else option ``threshold`` = 0.5); ``score`` = mean over labels of ``max(p, 1 - p)``
    (the confidence in the whole yes/no vector), ``uncertainty`` = mean closeness to the thresholds.
    An image that cannot be read gets ``Prediction(error=...)``; the rest of the batch is unaffected.

``embed`` returns the L2-normalised features (zeros for unreadable images), for diversity sampling.
Saved state: ``image_classifier.json`` (options, labels, report) + ``head.npz`` (coefficients; loaded
with ``allow_pickle=False``). The backbone is not copied into the model directory: it is the pinned
pretrained wheel, and its id is saved and checked.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from labelpilot.data.types import Example, FitReport, Prediction
from labelpilot.errors import InputError, TrainingError
from labelpilot.models.base import ModelBase, Progress, saved_report
from labelpilot.models.vision import backbone
from labelpilot.models.vision.inputs import ImageFeatures, annotated_images
from labelpilot.models.vision.int8 import QUANT_GRAPH
from labelpilot.schema.types import ControlSpec, TaskKind

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
META_FILE = "image_classifier.json"
HEAD_FILE = "head.npz"

DEFAULTS: dict[str, Any] = {
    "image_size": 224,
    "resize": "center_crop",  # "squash" | "letterbox"
    "engine": "auto",  # "onnx" | "torch"
    "batch_size": 16,
    "flip_augment": True,
    "C": None,  # None: chosen from Cs by cross-validated log loss
    "Cs": [3.0, 30.0, 300.0],  # on L2-normalised features; larger C = weaker regularisation
    "cv_folds": 4,
    "threshold": 0.5,  # multi-label decision threshold when the schema gives none
    "max_pixels": 40_000_000,
    "max_iter": 2000,
    "seed": 0,
}


def expected_calibration_error(probs: np.ndarray, correct: np.ndarray, bins: int = 10) -> float:
    """ECE of confidences ``probs`` (n,) against 0/1 ``correct`` (n,), equal-width bins."""
    if len(probs) == 0:
        return 0.0
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(probs, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            total += m.mean() * abs(float(probs[m].mean()) - float(correct[m].mean()))
    return float(total)


class ImageClassifier(ModelBase):
    """EfficientNet-Lite0 features + logistic regression for one ``<Choices>`` on ``<Image>`` (see module doc)."""

    name: ClassVar[str] = "image-classifier"
    kinds: ClassVar[frozenset[TaskKind]] = frozenset({TaskKind.IMAGE_CHOICES})
    DEFAULTS: ClassVar[dict[str, Any]] = DEFAULTS
    OPTION_TYPES: ClassVar[dict[str, tuple[type, ...]]] = {"C": (float, type(None))}
    META_FILE: ClassVar[str] = META_FILE
    FORMAT_VERSION: ClassVar[int] = FORMAT_VERSION

    def __init__(self, control: ControlSpec, **options: Any) -> None:
        super().__init__(control, **options)
        if self.options["resize"] not in ("center_crop", "squash", "letterbox"):
            raise InputError("resize must be center_crop, squash or letterbox", field="resize")
        self.multi_label_: bool = bool(control.multiple)
        self.labels_: list[str] | None = None
        self.coef_: np.ndarray | None = None  # (k, 1280): k = n labels (multi-label / multinomial) or 1 (binary)
        self.intercept_: np.ndarray | None = None
        self.constant_: np.ndarray | None = None  # multi-label: fixed probability per label, NaN when learned
        self.report_: FitReport | None = None
        self._features: ImageFeatures = ImageFeatures(self.options)

    # ------------------------------------------------------------------ state

    @property
    def is_fitted(self) -> bool:
        return self.coef_ is not None and self.labels_ is not None

    def _thresholds(self) -> np.ndarray:
        assert self.labels_ is not None
        default = self.control.score_threshold if self.control.score_threshold is not None else float(
            self.options["threshold"])
        out = []
        for key in self.labels_:
            spec = self.control.label(key)
            out.append(spec.score_threshold if spec is not None and spec.score_threshold is not None else default)
        return np.asarray(out, dtype=np.float64)

    # ------------------------------------------------------------------ training

    def _collect(self, examples: Sequence[Example], known: set[str]) -> tuple[list[str], list[tuple[str, ...]],
                                                                           list[str]]:
        paths: list[str] = []
        targets: list[tuple[str, ...]] = []
        skipped: list[str] = []
        for where, ex in annotated_images(examples, skipped):
            assert ex.image is not None and ex.target is not None
            labels = tuple(dict.fromkeys(lab for lab in ex.target.labels if lab in known))
            dropped = [lab for lab in ex.target.labels if lab not in known]
            if dropped:
                skipped.append(f"{where}: labels {dropped} are not in the control (ignored)")
            if not labels and not self.multi_label_:
                skipped.append(f"{where}: no label of the control")
                continue
            if not self.multi_label_ and len(labels) > 1:
                skipped.append(f"{where}: {len(labels)} labels for a single-choice control; the first is used")
                labels = labels[:1]
            paths.append(ex.image)
            targets.append(labels)
        return paths, targets, skipped

    def _lr(self, C: float) -> Any:
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=C, max_iter=int(self.options["max_iter"]), random_state=int(self.options["seed"]))

    def _fit_single(self, X: np.ndarray, y: np.ndarray, C: float) -> tuple[np.ndarray, np.ndarray]:
        clf = self._lr(C).fit(X, y)
        return clf.coef_.astype(np.float32), clf.intercept_.astype(np.float32)

    @staticmethod
    def _softmax_or_sigmoid(scores: np.ndarray, n_classes: int) -> np.ndarray:
        if n_classes == 2 and scores.shape[1] == 1:
            p1 = 1.0 / (1.0 + np.exp(-scores[:, 0]))
            return np.stack([1.0 - p1, p1], axis=1)
        z = scores - scores.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def _proba(self, X: np.ndarray) -> np.ndarray:
        assert self.coef_ is not None and self.intercept_ is not None and self.labels_ is not None
        scores = X @ self.coef_.T + self.intercept_
        if not self.multi_label_:
            return self._softmax_or_sigmoid(scores, len(self.labels_))
        p = 1.0 / (1.0 + np.exp(-scores))
        if self.constant_ is not None:
            fixed = ~np.isnan(self.constant_)
            p[:, fixed] = self.constant_[fixed]
        return p

    def _cv_splits(self, y: np.ndarray, folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
        from sklearn.model_selection import StratifiedKFold

        skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=int(self.options["seed"]))
        return list(skf.split(np.zeros(len(y)), y))

    def _choose_c_single(
        self, X: np.ndarray, Xf: np.ndarray | None, y: np.ndarray, metrics: dict[str, float]
    ) -> float:
        if self.options["C"] is not None:
            return float(self.options["C"])
        counts = np.bincount(y)
        folds = min(int(self.options["cv_folds"]), int(counts.min()))
        Cs = [float(c) for c in self.options["Cs"]]
        if folds < 2 or len(Cs) == 0:
            return Cs[len(Cs) // 2] if Cs else 1.0
        splits = self._cv_splits(y, folds)
        best: tuple[float, float, np.ndarray] | None = None
        for C in Cs:
            oof = np.zeros((len(y), len(counts)))
            for tr, te in splits:
                Xtr, ytr = X[tr], y[tr]
                if Xf is not None:
                    Xtr, ytr = np.vstack([Xtr, Xf[tr]]), np.concatenate([ytr, ytr])
                if len(np.unique(ytr)) < len(counts):
                    continue
                clf = self._lr(C).fit(Xtr, ytr)
                oof[te] = clf.predict_proba(X[te])
            p_true = np.clip(oof[np.arange(len(y)), y], 1e-12, 1.0)
            loss = float(-np.mean(np.log(p_true)))
            if best is None or loss < best[1]:
                best = (C, loss, oof)
        assert best is not None
        C, loss, oof = best
        conf = oof.max(axis=1)
        correct = (oof.argmax(axis=1) == y).astype(np.float64)
        metrics.update({"cv_accuracy": float(correct.mean()), "cv_log_loss": loss,
                        "cv_ece": expected_calibration_error(conf, correct), "C": C, "cv_folds": float(folds)})
        return C

    def fit(
        self,
        examples: Sequence[Example],
        *,
        val: Sequence[Example] | None = None,
        progress: Progress | None = None,
    ) -> FitReport:
        t0 = time.perf_counter()
        known = set(self.control.label_keys)
        paths, targets, skipped = self._collect(examples, known)
        flip = bool(self.options["flip_augment"])
        total = len(paths) * (2 if flip else 1)
        X, errors = self._features.compute(paths, progress=progress, total=total)
        keep = [i for i, e in enumerate(errors) if e is None]
        for i, e in enumerate(errors):
            if e is not None:
                skipped.append(f"{paths[i]}: {e}")
        X = X[keep]
        paths = [paths[i] for i in keep]
        targets = [targets[i] for i in keep]
        Xf = None
        if flip and paths:
            Xf, _ = self._features.compute(paths, flip=True, progress=progress, total=total, offset=len(paths))
        if not paths:
            raise TrainingError("no usable image examples to train on")
        metrics: dict[str, float] = {}
        notes: list[str] = [f"backbone efficientnet-lite0 via {self._features.net.engine}"]
        if not self.multi_label_:
            labels = [k for k in self.control.label_keys if any(t and t[0] == k for t in targets)]
            if len(labels) < 2:
                raise TrainingError(f"need at least two different labels to train, got {labels}")
            index = {k: i for i, k in enumerate(labels)}
            y = np.array([index[t[0]] for t in targets], dtype=np.int64)
            C = self._choose_c_single(X, Xf, y, metrics)
            Xa, ya = (np.vstack([X, Xf]), np.concatenate([y, y])) if Xf is not None else (X, y)
            self.labels_ = labels
            self.coef_, self.intercept_ = self._fit_single(Xa, ya, C)
            self.constant_ = None
        else:
            labels = list(self.control.label_keys)
            Y = np.array([[k in t for k in labels] for t in targets], dtype=np.int64)
            C = float(self.options["C"]) if self.options["C"] is not None else self._choose_c_multi(X, Xf, Y, metrics)
            coef = np.zeros((len(labels), X.shape[1]), dtype=np.float32)
            inter = np.zeros(len(labels), dtype=np.float32)
            const = np.full(len(labels), np.nan)
            for j in range(len(labels)):
                yj = Y[:, j]
                if yj.min() == yj.max():
                    const[j] = float(yj.mean())
                    continue
                Xa, ya = (np.vstack([X, Xf]), np.concatenate([yj, yj])) if Xf is not None else (X, yj)
                c, b = self._fit_single(Xa, ya, C)
                coef[j], inter[j] = c[0], b[0]
            self.labels_, self.coef_, self.intercept_ = labels, coef, inter
            self.constant_ = const if np.isfinite(const).any() else None
            if self.constant_ is not None:
                fixed = [labels[j] for j in range(len(labels)) if np.isfinite(const[j])]
                notes.append(f"labels always or never present in training (constant probability): {fixed}")
        n_val = 0
        if val:
            n_val = self._score_val(val, metrics)
        self.report_ = FitReport(
            n_train=len(paths), n_val=n_val, labels=list(self.labels_), metrics=metrics,
            seconds=time.perf_counter() - t0, skipped=skipped, notes=notes,
        )
        return self.report_

    def _choose_c_multi(self, X: np.ndarray, Xf: np.ndarray | None, Y: np.ndarray,
                        metrics: dict[str, float]) -> float:
        from sklearn.model_selection import KFold

        Cs = [float(c) for c in self.options["Cs"]]
        folds = min(int(self.options["cv_folds"]), len(Y))
        if folds < 2 or not Cs:
            return Cs[len(Cs) // 2] if Cs else 1.0
        splits = list(KFold(folds, shuffle=True, random_state=int(self.options["seed"])).split(X))
        best: tuple[float, float] | None = None
        for C in Cs:
            losses = []
            for j in range(Y.shape[1]):
                for tr, te in splits:
                    ytr = Y[tr, j]
                    if ytr.min() == ytr.max():
                        p = np.full(len(te), float(ytr.mean()))
                    else:
                        Xtr = np.vstack([X[tr], Xf[tr]]) if Xf is not None else X[tr]
                        yy = np.concatenate([ytr, ytr]) if Xf is not None else ytr
                        p = self._lr(C).fit(Xtr, yy).predict_proba(X[te])[:, 1]
                    p = np.clip(p, 1e-6, 1 - 1e-6)
                    yt = Y[te, j]
                    losses.append(-np.sum(yt * np.log(p) + (1 - yt) * np.log(1 - p)))
            loss = float(np.sum(losses) / Y.size)
            if best is None or loss < best[1]:
                best = (C, loss)
        assert best is not None
        metrics.update({"C": best[0], "cv_log_loss": best[1], "cv_folds": float(folds)})
        return best[0]

    def _score_val(self, val: Sequence[Example], metrics: dict[str, float]) -> int:
        assert self.labels_ is not None
        paths, targets, _ = self._collect(val, set(self.labels_))
        X, errors = self._features.compute(paths)
        keep = [i for i, e in enumerate(errors) if e is None]
        if not keep:
            return 0
        P = self._proba(X[keep])
        targets = [targets[i] for i in keep]
        if not self.multi_label_:
            index = {k: i for i, k in enumerate(self.labels_)}
            y = np.array([index.get(t[0], -1) for t in targets])
            correct = (P.argmax(axis=1) == y).astype(np.float64)
            p_true = np.clip(np.where(y >= 0, P[np.arange(len(y)), np.maximum(y, 0)], 1e-12), 1e-12, 1.0)
            metrics.update({"val_accuracy": float(correct.mean()), "val_log_loss": float(-np.mean(np.log(p_true))),
                            "val_ece": expected_calibration_error(P.max(axis=1), correct)})
        else:
            Y = np.array([[k in t for k in self.labels_] for t in targets], dtype=bool)
            thresholds = self._thresholds()[None, :]
            pred = thresholds <= P
            tp = float((pred & Y).sum())
            fp = float((pred & ~Y).sum())
            fn = float((~pred & Y).sum())
            prec = tp / (tp + fp) if tp + fp else 0.0
            rec = tp / (tp + fn) if tp + fn else 0.0
            metrics.update({"val_micro_f1": 2 * prec * rec / (prec + rec) if prec + rec else 0.0,
                            "val_exact_match": float((pred == Y).all(axis=1).mean())})
        return len(keep)

    # ------------------------------------------------------------------ inference

    def _prediction(self, p: np.ndarray) -> Prediction:
        assert self.labels_ is not None
        probs = {k: float(v) for k, v in zip(self.labels_, p, strict=True)}
        if not self.multi_label_:
            best = int(np.argmax(p))
            score = float(p[best])
            threshold = self.control.score_threshold
            chosen = (self.labels_[best],) if threshold is None or score >= threshold else ()
            return Prediction(labels=chosen, probs=probs, score=score, uncertainty=1.0 - score)
        t = self._thresholds()
        chosen = tuple(k for k, v, th in zip(self.labels_, p, t, strict=True) if v >= th)
        score = float(np.mean(np.maximum(p, 1.0 - p))) if len(p) else 0.0
        span = np.where(p < t, t, 1.0 - t)
        closeness = 1.0 - np.abs(p - t) / np.maximum(span, 1e-12)
        return Prediction(labels=chosen, probs=probs, score=score, uncertainty=float(np.mean(closeness)))

    def predict(self, examples: Sequence[Example]) -> list[Prediction]:
        if not self.is_fitted:
            return [Prediction(error="the image-classifier model is not trained yet") for _ in examples]
        X, errors = self._features.compute([ex.image for ex in examples])
        P = self._proba(X)
        out = []
        for i, err in enumerate(errors):
            out.append(Prediction(error=err) if err is not None else self._prediction(P[i]))
        return out

    def predict_proba(self, examples: Sequence[Example]) -> np.ndarray:
        """(n, n_labels) probabilities in ``labels_`` order (NaN rows for unreadable images)."""
        if not self.is_fitted:
            raise TrainingError("the image-classifier model is not trained yet")
        X, errors = self._features.compute([ex.image for ex in examples])
        P = self._proba(X)
        P[[i for i, e in enumerate(errors) if e is not None]] = np.nan
        return P

    def embed(self, examples: Sequence[Example]) -> np.ndarray:
        X, _ = self._features.compute([ex.image for ex in examples])
        return X

    # ------------------------------------------------------------------ persistence

    def save(self, directory: Path) -> None:
        if not self.is_fitted:
            raise TrainingError("cannot save an unfitted image-classifier model")
        assert self.coef_ is not None and self.intercept_ is not None
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        arrays = {"coef": self.coef_, "intercept": self.intercept_}
        if self.constant_ is not None:
            arrays["constant"] = self.constant_
        np.savez(d / HEAD_FILE, **arrays)
        self.save_meta(d, labels=self.labels_, multi_label=self.multi_label_,
                       backbone=backbone.saved_meta(),
                       report=self.report_.to_dict() if self.report_ else None)

    @classmethod
    def load(cls, directory: Path, control: ControlSpec) -> ImageClassifier:
        d = Path(directory)
        model, meta = cls.from_saved(d, control, required=(HEAD_FILE,))
        backbone.warn_other_weights(meta, cls.name)
        model._restore_head(d, meta)
        model.warn_unknown_labels(model.labels_ or [], log)
        return model

    def _restore_head(self, d: Path, meta: dict[str, Any]) -> None:
        """The learned state ``save`` wrote to ``d`` (with its metadata ``meta``), and the folder's quantized
        backbone when there is one."""
        with np.load(d / HEAD_FILE, allow_pickle=False) as z:
            self.coef_ = np.asarray(z["coef"], dtype=np.float32)
            self.intercept_ = np.asarray(z["intercept"], dtype=np.float32)
            self.constant_ = np.asarray(z["constant"], dtype=np.float64) if "constant" in z.files else None
        self.labels_ = list(meta.get("labels") or [])
        self.multi_label_ = bool(meta.get("multi_label", self.control.multiple))
        if (d / QUANT_GRAPH).is_file():
            self._features.graph = d / QUANT_GRAPH
        self.report_ = saved_report(meta)
