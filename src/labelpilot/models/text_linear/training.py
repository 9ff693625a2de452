"""text-linear training: held-out scores (val, k-fold or a stratified slice), the SVC / Complement NB fits and
folding the calibration into one weight matrix (the embedding projection is fitted in :mod:`.features`).
"""

from __future__ import annotations

import importlib
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from labelpilot.data.types import Example, FitReport
from labelpilot.errors import TrainingError
from labelpilot.models import encoder_hooks
from labelpilot.models.base import Progress

# learned state (everything fit sets), copied from the instance that trained
_LEARNED = (
    "classes_",
    "multilabel_",
    "vocab_",
    "idf_",
    "col_group_",
    "weights_",
    "nb_weights_",
    "nb_scale_",
    "svc_spread_",
    "bias_",
    "thresholds_",
    "calibration_",
    "embed_cols_",
    "embed_components_",
    "report_",
    "fewshot_",
)




@dataclass
class _Heldout:
    """Where :meth:`_Training._fit` gets its calibration data: held-out ``scores`` and targets ``y``, a note for
    the report, the model fitted without the held-out part (``final``; None: refit on everything), how many
    examples the metrics and the model see, and what the few-shot head needs to know about the split."""

    scores: dict[str, Any] | None
    y: np.ndarray | None
    note: str
    final: dict[str, Any] | None
    n_eval: int
    n_final: int
    heldout: dict[str, Any]


class _Training:
    """The training half of :class:`~labelpilot.models.text_linear.model.TextLinearModel` (a mixin)."""

    def fit(
        self,
        examples: Sequence[Example],
        *,
        val: Sequence[Example] | None = None,
        progress: Progress | None = None,
    ) -> FitReport:
        # import everything fit uses *before* limiting threads: threadpoolctl only reaches the BLAS
        # libraries loaded at that moment
        for module in ("scipy.linalg", "scipy.optimize", "sklearn.svm", "sklearn.utils.extmath"):
            importlib.import_module(module)
        from threadpoolctl import threadpool_limits

        # train a fresh instance and adopt its state at the end: a failed fit leaves this model as it was,
        # and predictions made meanwhile use the old state
        fresh = type(self)(self.control, **self.get_params())
        # BLAS threads only fight each other (and other processes) over small dense steps here
        with threadpool_limits(limits=1), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # liblinear's ConvergenceWarning at the capped max_iter
            try:
                report = fresh._fit(examples, val, progress)
                encoder_hooks.after_fit(fresh, report)
            except TrainingError:
                single, fresh._single = fresh._single, None
                head_only = encoder_hooks.fit_head_only(fresh, single[1], single[0]) if single else None
                if head_only is None:
                    raise
                report = head_only
        for attr in _LEARNED:
            setattr(self, attr, getattr(fresh, attr))
        self._index = None
        self._control_cache = None
        return report

    def _fit(self, examples: Sequence[Example], val: Sequence[Example] | None, progress: Progress | None) -> FitReport:
        t0 = time.perf_counter()
        total_steps = 6

        stage_seconds: dict[str, float] = {}
        last = [t0, "start"]

        def step(done: int, message: str) -> None:
            now = time.perf_counter()
            stage_seconds[str(last[1])] = stage_seconds.get(str(last[1]), 0.0) + now - float(last[0])
            last[:] = [now, message.split(" ")[0]]
            if progress is not None:
                progress(done, total_steps, message)

        step(0, "checking labels")
        keep, skipped, classes, multilabel, y = self._fit_targets(examples)
        cls_idx = {c: i for i, c in enumerate(classes)}
        n, k = len(keep), len(classes)

        train_examples = [examples[i] for i in keep]
        step(1, f"featurizing {n} texts")
        x = self._build_vocab(self._raw(train_examples), k)
        if x.shape[1] == 0:
            raise TrainingError(
                f"no text features for control {self.control.name!r}: all {n} training texts are empty",
                field=self.control.name,
            )
        val_x, val_y, good, n_val_skipped = self._val_matrix(val, cls_idx, k, multilabel)

        notes: list[str] = []
        rng = np.random.default_rng(int(self.seed))
        step(2, "fitting on the training part")
        ho = self._heldout_scores(x, y, k, multilabel, rng, t0, notes, val, val_x, val_y, good)
        cal_scores, cal_y, eval_note, final = ho.scores, ho.y, ho.note, ho.final
        n_eval, n_final, heldout = ho.n_eval, ho.n_final, ho.heldout
        step(3, "calibrating")
        self.multilabel_ = multilabel
        self.classes_ = classes
        metrics = self._calibrate(cal_scores, cal_y, k, multilabel)
        held_probs = getattr(self, "_heldout_probs", None)
        self._fewshot_inputs = {"train": train_examples, "y": y, "probs": held_probs, **heldout}
        if final is None:
            step(4, f"refitting on all {n} examples")
            final = self._fit_core(x, y, k, multilabel)
            n_final = n
        self._fold_weights(final, k, multilabel)
        step(5, "fitting the embedding")
        self._fit_embedding(x, rng)
        notes.append(eval_note)
        step(6, "done")
        stage_seconds.pop("start", None)
        notes.append("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in stage_seconds.items() if v >= 0.05))
        if n_val_skipped:
            notes.append(f"{n_val_skipped} validation example(s) without a usable label were ignored")
        report = FitReport(
            n_train=n_final,
            n_val=n_eval,
            labels=list(classes),
            metrics=metrics,
            seconds=time.perf_counter() - t0,
            skipped=skipped,
            notes=notes,
        )
        report.metrics["n_features"] = float(self.vocab_.shape[0]) if self.vocab_ is not None else 0.0
        if hasattr(report, "n_examples"):  # usable labelled examples given in all (train + val)
            report.n_examples = n + (int(val_x.shape[0]) if val_x is not None else 0)
        self.report_ = report
        return report

    def _fit_targets(
        self, examples: Sequence[Example]
    ) -> tuple[list[int], list[str], list[str], bool, np.ndarray]:
        """The usable examples, the skipped ones, the classes (control order), whether the data is
        multi-label, and the target array (class index, or an (n, k) 0/1 matrix); TrainingError without 2 labels."""
        keep, labels, skipped = self._targets(examples)
        if not keep:
            raise TrainingError(
                f"no usable training examples for control {self.control.name!r} "
                f"({len(skipped)} skipped, e.g. {skipped[:3]})",
                field=self.control.name,
            )
        order = {k: i for i, k in enumerate(self.control.label_keys)}
        classes = sorted({lab for labs in labels for lab in labs}, key=order.__getitem__)
        if len(classes) < 2:
            self._single = (classes[0], [examples[i] for i in keep])  # fit() may train the encoder head alone
            raise TrainingError(
                f"control {self.control.name!r} needs examples of at least 2 different labels to train; "
                f"got {len(keep)} example(s), all labelled {classes}",
                field=self.control.name,
            )
        multilabel = bool(self.control.multiple) or any(len(labs) > 1 for labs in labels)
        cls_idx = {c: i for i, c in enumerate(classes)}
        n, k = len(keep), len(classes)
        if multilabel:
            y: np.ndarray = np.zeros((n, k), dtype=np.int8)
            for r, labs in enumerate(labels):
                y[r, [cls_idx[lab] for lab in labs]] = 1
        else:
            y = np.array([cls_idx[labs[0]] for labs in labels], dtype=np.int64)
        return keep, skipped, classes, multilabel, y

    def _val_matrix(
        self, val: Sequence[Example] | None, cls_idx: dict[str, int], k: int, multilabel: bool
    ) -> tuple[sp.csr_matrix | None, np.ndarray | None, list[int], int]:
        """The given validation set as features and targets (examples with a label the training data lacks are
        left out), the indices of those kept, and how many were left out."""
        val_x = val_y = None
        good: list[int] = []
        n_val_skipped = 0
        if val is not None:
            vkeep, vlabels, _ = self._targets(val)
            good = [j for j, labs in zip(vkeep, vlabels, strict=True) if all(lab in cls_idx for lab in labs)]
            n_val_skipped = len(val) - len(good)
            vlab = {j: labs for j, labs in zip(vkeep, vlabels, strict=True)}
            if good:
                val_x = self._transform([val[j] for j in good], np.float64)
                if multilabel:
                    val_y = np.zeros((len(good), k), dtype=np.int8)
                    for r, j in enumerate(good):
                        val_y[r, [cls_idx[lab] for lab in vlab[j]]] = 1
                else:
                    val_y = np.array([cls_idx[vlab[j][0]] for j in good], dtype=np.int64)
        return val_x, val_y, good, n_val_skipped

    def _heldout_scores(
        self,
        x: sp.csr_matrix,
        y: np.ndarray,
        k: int,
        multilabel: bool,
        rng: np.random.Generator,
        t0: float,
        notes: list[str],
        val: Sequence[Example] | None,
        val_x: sp.csr_matrix | None,
        val_y: np.ndarray | None,
        good: list[int],
    ) -> _Heldout:
        """Held-out scores to calibrate on: the given ``val``, else k-fold out-of-fold scores for small sets, else
        a stratified slice (then ``final`` stays None, asking for a refit on everything, when the time budget
        allows; the decision is noted in ``notes``)."""
        n = x.shape[0]
        if val_x is not None:
            fitted = self._fit_core(x, y, k, multilabel)
            given = list(val or ())  # val_x is built from val
            return _Heldout(self._scores(fitted, val_x, k, multilabel), val_y,
                            f"metrics on the {val_x.shape[0]} given validation examples", fitted,
                            int(val_x.shape[0]), n, {"val": [given[j] for j in good], "val_y": val_y})
        if n <= int(self.cv_max_n):
            folds = self._folds(y, multilabel, rng)
            return _Heldout(*self._oof_scores(x, y, k, multilabel, folds),
                            f"metrics from {len(folds)}-fold out-of-fold predictions", None,
                            n if folds else 0, n, {"rows": np.arange(n) if folds else None})
        ho = self._holdout(y, multilabel, rng)
        tr = np.setdiff1d(np.arange(n), ho)
        t_fit = time.perf_counter()
        fitted = self._fit_core(x[tr], y[tr], k, multilabel)
        fit_seconds = time.perf_counter() - t_fit
        out = _Heldout(self._scores(fitted, x[ho], k, multilabel), y[ho],
                       f"metrics on a held-out slice of {ho.shape[0]} examples", fitted,
                       int(ho.shape[0]), int(tr.shape[0]), {"rows": ho})
        elapsed = time.perf_counter() - t0
        estimate = fit_seconds * n / max(tr.shape[0], 1) * 1.1 + 1.0
        if not self.refit:
            notes.append("model trained without the held-out slice (refit=False)")
        elif elapsed + estimate > float(self.time_budget):
            notes.append(
                f"refit on all examples skipped: {elapsed:.1f}s spent, about {estimate:.1f}s more "
                f"needed, time_budget={self.time_budget}s; the held-out slice is not in the model"
            )
        else:
            out.final = None
        return out

    def _folds(self, y: np.ndarray, multilabel: bool, rng: np.random.Generator) -> list[np.ndarray]:
        n = y.shape[0]
        n_folds = min(int(self.cv_folds if n < 500 else self.cv_folds_large), n)
        if n_folds < 2:
            return []
        fold_of = np.empty(n, dtype=np.int64)
        if multilabel:
            fold_of[rng.permutation(n)] = np.arange(n) % n_folds
        else:  # stratified: deal each class's examples round-robin over the folds
            offset = 0
            for c in np.unique(y):
                idx = rng.permutation(np.flatnonzero(y == c))
                fold_of[idx] = (np.arange(idx.shape[0]) + offset) % n_folds
                offset += idx.shape[0]
        return [np.flatnonzero(fold_of == f) for f in range(n_folds)]

    def _holdout(self, y: np.ndarray, multilabel: bool, rng: np.random.Generator) -> np.ndarray:
        n = y.shape[0]
        frac = min(float(self.holdout), float(self.max_holdout) / n)
        if multilabel:
            return np.sort(rng.permutation(n)[: max(1, round(n * frac))])
        picked = []
        for c in np.unique(y):
            idx = rng.permutation(np.flatnonzero(y == c))
            take = min(idx.shape[0] - 1, int(np.floor(idx.shape[0] * frac + rng.random())))
            if take > 0:
                picked.append(idx[:take])
        return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)

    def _fit_core(self, x: sp.csr_matrix, y: np.ndarray, k: int, multilabel: bool) -> dict[str, Any]:
        """Uncalibrated linear parts: svc (k, F) + intercept (k,), and for single-label the CNB (k, F)."""
        from sklearn.svm import LinearSVC

        n_feat = x.shape[1]
        max_iter = int(self.max_iter) if self.max_iter is not None else (3 if x.shape[0] >= 20000 else 10)
        svc_w = np.zeros((k, n_feat), dtype=np.float64)
        svc_b = np.zeros(k, dtype=np.float64)
        nb_w = None
        present = np.zeros(k, dtype=bool)
        if multilabel:
            for j in range(k):
                col = y[:, j]
                if col.min() == col.max():  # constant label in this part: a constant score
                    svc_b[j] = 2.0 if col[0] else -2.0
                    present[j] = bool(col[0])
                    continue
                clf = LinearSVC(C=float(self.C), max_iter=max_iter, random_state=int(self.seed))
                clf.fit(x, col)
                svc_w[j] = clf.coef_[0]
                svc_b[j] = clf.intercept_[0]
                present[j] = True
        else:
            labels_here = np.unique(y)
            present[labels_here] = True
            if labels_here.shape[0] >= 2:
                clf = LinearSVC(C=float(self.C), max_iter=max_iter, random_state=int(self.seed))
                clf.fit(x, y)
                if labels_here.shape[0] == 2:
                    a, b = labels_here
                    svc_w[a], svc_w[b] = -0.5 * clf.coef_[0], 0.5 * clf.coef_[0]
                    svc_b[a], svc_b[b] = -0.5 * clf.intercept_[0], 0.5 * clf.intercept_[0]
                else:
                    svc_w[labels_here] = clf.coef_
                    svc_b[labels_here] = clf.intercept_
            if self.use_nb:
                onehot = sp.csr_matrix((np.ones(y.shape[0]), (np.arange(y.shape[0]), y)), shape=(y.shape[0], k))
                counts = np.asarray((onehot.T @ x).todense())
                complement = counts.sum(axis=0, keepdims=True) - counts
                alpha = float(self.nb_alpha)
                nb_w = -(np.log(alpha + complement) - np.log(alpha * n_feat + complement.sum(axis=1, keepdims=True)))
                # centre per feature: softmax is unchanged, the numbers stay small
                nb_w -= nb_w.mean(axis=0, keepdims=True)
        return {
            "svc_w": svc_w.astype(np.float32),
            "svc_b": svc_b,
            "nb_w": nb_w.astype(np.float32) if nb_w is not None else None,
            "present": present,
        }

    def _scores(self, fitted: dict[str, Any], x: sp.csr_matrix, k: int, multilabel: bool) -> dict[str, Any]:
        svc = np.asarray(x @ fitted["svc_w"].T) + fitted["svc_b"]
        nb = np.asarray(x @ fitted["nb_w"].T) if fitted["nb_w"] is not None else None
        if not multilabel:  # classes absent from this part's training data sit at the bottom
            absent = ~fitted["present"]
            if absent.any() and (~absent).any():
                svc[:, absent] = svc[:, ~absent].min(axis=1, keepdims=True) - 1.0
                if nb is not None:
                    nb[:, absent] = nb[:, ~absent].min(axis=1, keepdims=True) - 1.0
        return {"svc": svc, "nb": nb}

    def _oof_scores(
        self, x: sp.csr_matrix, y: np.ndarray, k: int, multilabel: bool, folds: list[np.ndarray]
    ) -> tuple[dict[str, Any] | None, np.ndarray | None]:
        if not folds:
            return None, None
        n = x.shape[0]
        svc = np.zeros((n, k))
        nb = np.zeros((n, k)) if (self.use_nb and not multilabel) else None
        for idx in folds:
            tr = np.setdiff1d(np.arange(n), idx)
            ytr = y[tr]
            if not multilabel and np.unique(ytr).shape[0] < 2:
                continue
            part = self._scores(self._fit_core(x[tr], ytr, k, multilabel), x[idx], k, multilabel)
            svc[idx] = part["svc"]
            if nb is not None and part["nb"] is not None:
                nb[idx] = part["nb"]
        return {"svc": svc, "nb": nb}, y


    def _fold_weights(self, fitted: dict[str, Any], k: int, multilabel: bool) -> None:
        """Fold calibration into one (F, k) float32 weight matrix and a bias."""
        cal = self.calibration_
        if multilabel:
            a = np.asarray(cal["a"], dtype=np.float64)
            w = fitted["svc_w"] * a[:, None]
            b = fitted["svc_b"] * a + np.asarray(cal["c"], dtype=np.float64)
        else:
            w = cal["a"] * fitted["svc_w"]
            b = cal["a"] * fitted["svc_b"]
        # float16 on disk halves the model; rounding here keeps a loaded model bit-identical
        self.weights_ = np.ascontiguousarray(w.T.astype(np.float16), dtype=np.float32)
        self.bias_ = np.asarray(b, dtype=np.float64)
        self.nb_weights_ = None
        self.nb_scale_ = 0.0
        # a*s / (1 + t*sd(s)) == s' / (1 + (t/a)*sd(s')) with s' = a*s: keep t/a for the scaled weights
        self.svc_spread_ = 0.0 if multilabel else float(cal.get("t", 0.0)) / float(cal["a"])
        if not multilabel and fitted["nb_w"] is not None and cal.get("b"):
            self.nb_weights_ = np.ascontiguousarray(fitted["nb_w"].T.astype(np.float16), dtype=np.float32)
            self.nb_scale_ = float(cal["b"])
