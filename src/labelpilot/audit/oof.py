"""Out-of-fold predictions: every annotated example predicted by a model that never saw it.

Label-error finding (``suspects.py``) needs, for each annotated example, what a model trained on the *other*
annotations thinks. The examples are split into K folds (stratified by the first label for classification, so
each fold sees every class where possible); for each fold a fresh model of the product's own family for the
control (``models.base.family_for`` / ``get_family``, the same contract training uses) is fitted on the other
folds and predicts the held-out one. Nothing here knows a family's internals: the only optional extra is a
``marginals(text)`` method (``ner-crf`` has one) whose per-token tag marginals let span suspicion ask "how
likely is the *annotated* tag here", not only "how sure is the model of its own tags".

Speed: a family's slow, marginal options are turned down by default (:data:`FAST_OPTIONS`, overridable with
``options``): text-linear skips its refit-on-everything after the internal held-out slice and uses 3 internal
folds for its calibration (``refit=true`` was worth +1 point on SST-2 for twice the fits); ner-crf skips
zero-shot sources, the LAC analyser and gazetteer fill-in (spans that would blur what the CRF itself says).
Small sets get fewer folds (at least 2, and at least 8 examples per fold), and the result says so in ``notes``.
``repeats`` averages class probabilities over several fold splits. Size-aware default: class labels with at
most :data:`SMALL_SET` (20,000) annotated examples get :data:`SMALL_SET_REPEATS` = 2 splits (twice the fits),
larger sets one. The default was chosen on TREC and GoEmotions only (repeats 1-3 x refit on/off, ranking by
self-confidence or normalized margin; a cheaper candidate within 0.5 point of the best wins: 2 splits, no
refit, self-confidence) and then evaluated on SST-2, TNEWS and CoNLL-2003 (``bench/RESULTS.md``, "Label noise:
size-aware defaults").
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from labelpilot.data.types import Example, Prediction
from labelpilot.errors import InputError, TrainingError
from labelpilot.models.base import Progress, family_for, get_family
from labelpilot.schema.types import ControlSpec, TaskKind

#: Options applied per family unless the caller sets them: the fast settings for K fits in a row.
FAST_OPTIONS: dict[str, dict[str, Any]] = {
    "text-linear": {"refit": False, "cv_folds": 3, "cv_folds_large": 3, "time_budget": float("inf")},
    "ner-crf": {"zero_shot": False, "lac": False, "fill_in": False},
}

#: Class labels with at most this many annotated examples get the stronger (costlier) defaults below.
SMALL_SET = 20_000
#: Fold splits averaged by default for a small set of class labels (one split above SMALL_SET).
SMALL_SET_REPEATS = 2
#: Options added per family for a small set of class labels (over FAST_OPTIONS, under the caller's).
SMALL_SET_OPTIONS: dict[str, dict[str, Any]] = {}

#: Fewest examples per fold before the fold count is reduced.
MIN_PER_FOLD = 8
#: Fewest annotated examples an out-of-fold audit runs on.
MIN_EXAMPLES = 4


@dataclass
class TokenMarginals:
    """Per-token tag marginals of one example (from a family's ``marginals(text)``)."""

    offsets: list[tuple[int, int]]
    tags: list[str]
    marginals: np.ndarray  # (n_tokens, n_tags)


@dataclass
class OutOfFold:
    """Out-of-fold predictions, aligned with ``examples`` (the annotated examples that were used)."""

    control: ControlSpec
    family: str
    examples: list[Example]
    predictions: list[Prediction]
    fold_of: np.ndarray  # fold index of each example
    folds: int
    seconds: float
    marginals: list[TokenMarginals | None] | None = None
    notes: list[str] = field(default_factory=list)
    repeats: int = 1  # fold splits averaged
    options: dict[str, Any] = field(default_factory=dict)  # the family options the fold models used


def _has_target(ex: Example, control: ControlSpec) -> bool:
    t = ex.target
    if t is None:
        return False
    if control.kind is TaskKind.TEXT_SPANS or control.kind is TaskKind.IMAGE_BOXES:
        return True  # no spans/boxes is an annotation too ("nothing here")
    return bool(t.labels)


def assign_folds(examples: Sequence[Example], k: int, seed: int, stratify: bool) -> np.ndarray:
    """Fold index per example: shuffled, and round-robin within each first label when ``stratify``, so
    every fold gets its share of each class (a class with fewer than ``k`` examples lands in fewer folds)."""
    rng = np.random.default_rng(seed)
    n = len(examples)
    fold = np.empty(n, dtype=np.int64)
    if not stratify:
        order = rng.permutation(n)
        fold[order] = np.arange(n) % k
        return fold
    groups: dict[str, list[int]] = {}
    for i, ex in enumerate(examples):
        key = ex.target.labels[0] if ex.target and ex.target.labels else ""
        groups.setdefault(key, []).append(i)
    offset = 0
    for key in sorted(groups):
        idx = np.array(groups[key])[rng.permutation(len(groups[key]))]
        fold[idx] = (np.arange(len(idx)) + offset) % k
        offset += len(idx)
    return fold


def choose_folds(n: int, folds: int) -> int:
    """The fold count for ``n`` examples: ``folds``, reduced so each fold holds >= MIN_PER_FOLD, never < 2."""
    if folds < 2:
        raise InputError("folds must be at least 2", field="folds")
    return max(2, min(folds, n // MIN_PER_FOLD))


def _average(runs: list[list[Prediction]], multiple: bool) -> list[Prediction]:
    """One prediction per example from several runs: mean probabilities, labels re-derived from them."""
    out = []
    for group in zip(*runs, strict=True):
        ok = [p for p in group if p.error is None and p.probs]
        if not ok:
            out.append(group[0])
            continue
        keys = sorted({k for p in ok for k in p.probs})  # type: ignore[union-attr]
        probs = {k: float(np.mean([p.probs.get(k, 0.0) for p in ok])) for k in keys}  # type: ignore[union-attr]
        labels = tuple(k for k in keys if probs[k] >= 0.5) if multiple else (max(keys, key=probs.__getitem__),)
        out.append(Prediction(labels=labels, probs=probs, score=max(probs.values()) if probs else 0.0))
    return out


def _family(control: ControlSpec, family: str | None) -> type:
    cls = get_family(family) if family else family_for(control)
    if cls is None:
        raise TrainingError(f"no model family for {control.kind} yet", field="family")
    if control.kind not in cls.kinds:
        raise InputError(f"family {cls.name!r} does not serve {control.kind}", field="family")
    return cls


def _annotated(control: ControlSpec, examples: Sequence[Example], notes: list[str]) -> list[Example]:
    used = [ex for ex in examples if _has_target(ex, control)]
    if len(used) < len(examples):
        notes.append(f"{len(examples) - len(used)} example(s) without an annotation for {control.name!r} left out")
    if len(used) < MIN_EXAMPLES:
        raise InputError(
            f"an audit needs at least {MIN_EXAMPLES} annotated examples for {control.name!r}, got {len(used)}",
            field="examples",
        )
    return used


def _fold(
    cls: type, control: ControlSpec, opts: dict[str, Any], used: list[Example], fold_of: np.ndarray, f: int,
    preds: list[Prediction | None], margs: list[TokenMarginals | None] | None, notes: list[str],
    say: Callable[[str], None],
) -> None:
    """Fit on every fold but ``f`` and fill ``preds`` (and ``margs``) for the examples of fold ``f``."""
    train = [used[i] for i in np.flatnonzero(fold_of != f)]
    test_idx = np.flatnonzero(fold_of == f)
    test = [used[i] for i in test_idx]
    model = cls(control, **opts)
    try:
        model.fit(train)
    except TrainingError as exc:
        notes.append(f"fold {f + 1}: training failed ({exc.message}); its examples have no prediction")
        for i in test_idx:
            preds[i] = Prediction(error=f"fold model failed: {exc.message}")
        return
    say(f"predicting {len(test)}")
    for i, p in zip(test_idx, model.predict(test), strict=True):
        preds[i] = p
    if margs is None:
        return
    for i, ex in zip(test_idx, test, strict=True):
        try:
            offs, tags, _yseq, marg, _logp = model.marginals(ex.text)  # type: ignore[attr-defined]
            margs[i] = TokenMarginals(list(offs), list(tags), np.asarray(marg, dtype=np.float64))
        except Exception:  # marginals refine span scores; the predictions stand without them
            margs[i] = None


def out_of_fold(
    control: ControlSpec,
    examples: Sequence[Example],
    *,
    folds: int = 5,
    seed: int = 0,
    family: str | None = None,
    options: dict[str, Any] | None = None,
    progress: Progress | None = None,
    repeats: int | None = None,
) -> OutOfFold:
    """Fit one model per fold on the other folds and predict the held-out fold (see the module doc).

    ``repeats`` > 1 (class labels only): that many different fold splits (seeds ``seed``, ``seed + 1``, ...),
    probabilities averaged; an ensemble that ranks errors a little better for ``repeats`` times the fits.
    ``repeats=None`` (default): SMALL_SET_REPEATS for class labels with <= SMALL_SET examples, else 1; the
    family options are FAST_OPTIONS, then SMALL_SET_OPTIONS for such small sets, then ``options``."""
    t0 = time.perf_counter()
    cls = _family(control, family)
    if repeats is not None and repeats < 1:
        raise InputError("repeats must be at least 1", field="repeats")
    notes: list[str] = []
    used = _annotated(control, examples, notes)
    k = choose_folds(len(used), folds)
    if k < folds:
        notes.append(f"{len(used)} examples: {k} folds instead of {folds} (at least {MIN_PER_FOLD} per fold)")
    stratify = control.kind in (TaskKind.TEXT_CHOICES, TaskKind.IMAGE_CHOICES, TaskKind.TEXT_TAXONOMY)
    small = stratify and len(used) <= SMALL_SET
    if repeats is None:
        repeats = SMALL_SET_REPEATS if small else 1
    elif repeats > 1 and not stratify:
        notes.append("repeats apply to class labels only; spans/boxes ran once")
        repeats = 1
    opts = {**FAST_OPTIONS.get(cls.name, {}), **(SMALL_SET_OPTIONS.get(cls.name, {}) if small else {}),
            **(options or {})}
    want_marg = callable(getattr(cls, "marginals", None))
    runs: list[list[Prediction]] = []
    margs: list[TokenMarginals | None] | None = None
    fold_of = np.zeros(len(used), dtype=np.int64)
    total = k * repeats
    for r in range(repeats):
        fold_of = assign_folds(used, k, seed + r, stratify)
        preds: list[Prediction | None] = [None] * len(used)
        margs = [None] * len(used) if want_marg else None
        for f in range(k):
            where = f"fold {f + 1}/{k}" + (f" (repeat {r + 1}/{repeats})" if repeats > 1 else "")

            def say(message: str, step: int = r * k + f, where: str = where) -> None:
                if progress:
                    progress(step, total, f"{where}: {message}")

            say("fitting")
            _fold(cls, control, opts, used, fold_of, f, preds, margs, notes, say)
        runs.append([p if p is not None else Prediction(error="not predicted") for p in preds])
    if progress:
        progress(total, total, "out-of-fold predictions done")
    if repeats > 1:
        notes.append(f"probabilities averaged over {repeats} fold splits")
    return OutOfFold(
        control=control,
        family=cls.name,
        examples=used,
        predictions=runs[0] if repeats == 1 else _average(runs, control.multiple),
        fold_of=fold_of,
        folds=k,
        seconds=time.perf_counter() - t0,
        marginals=margs,
        notes=notes,
        repeats=repeats,
        options=opts,
    )
