"""Where ``text-linear`` meets the text encoder: zero-shot before training, the few-shot head after.

Kept out of ``text_linear/`` so that the TF-IDF model reads on its own. Every hook is a no-op when the model's
``encoder`` option is off or the encoder cannot load: the model then behaves exactly as without it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from labelpilot.data.types import Example, FitReport
from labelpilot.encoders import EncoderUnavailable, get_encoder
from labelpilot.models.text_fewshot import FewShotHead, fit_head
from labelpilot.models.text_zeroshot import ZeroShot

log = logging.getLogger("labelpilot.models")


def zero_shot(model: Any) -> ZeroShot | None:
    """The model's zero-shot predictor when it can pre-label from label names, else None (remembered per
    control object, so a /predict costs no prototype encoding)."""
    if not model.encoder:
        return None
    cached = model._zero_shot
    if cached is not None and cached[0] is model.control:
        return cached[1]
    try:
        encoder = get_encoder()
    except EncoderUnavailable:
        return None
    descriptions = model.label_descriptions if isinstance(model.label_descriptions, dict) else None
    zs = ZeroShot(model.control, encoder, descriptions)
    if not zs.ready:
        log.info("no zero-shot pre-labels for %s: %s", model.control.name, zs.reason)
    value = zs if zs.ready else None
    model._zero_shot = (model.control, value)
    return value


def full_labels(model: Any, classes: list[str]) -> list[str] | None:
    """All the labels zero-shot knows for a single-label model whose annotated ``classes`` are among them
    (the few-shot head then covers every label); None otherwise (the head covers ``classes`` as before)."""
    if model.multilabel_ or model.control.multiple:
        return None
    zs = zero_shot(model)
    if zs is None:
        return None
    keys = [lab.key for lab in zs.labels]
    return keys if set(classes) <= set(keys) else None


def _full_inputs(inputs: dict[str, Any], seen: np.ndarray, k: int) -> dict[str, Any]:
    """The TF-IDF targets and held-out probabilities in the full label space.

    A held-out example that is its label's only example stands for a text of a label not annotated yet: a
    model trained without it could not have proposed that label, yet TF-IDF's held-out probabilities
    (calibrated over the labels of all the examples) give it its share. Its TF-IDF probability of that
    label is set to 0 (the rest renormalised), so the mix weight is judged on how often a new label comes
    up (the singletons' share, as in Good-Turing) instead of assuming that none ever will."""
    y = np.asarray(inputs["y"])
    out = dict(inputs, y=seen[y])
    if inputs.get("probs") is not None:
        held = np.array(inputs["probs"], dtype=np.float64)
        if inputs.get("val") is None and inputs.get("rows") is not None:
            rows = np.asarray(inputs["rows"], dtype=np.int64)
            counts = np.bincount(y, minlength=held.shape[1])
            for i in np.flatnonzero(counts[y[rows]] == 1):
                held[i, y[rows[i]]] = 0.0
                total = held[i].sum()
                held[i] = held[i] / total if total > 0 else 1.0 / held.shape[1]
        probs = np.zeros((held.shape[0], k))
        probs[:, seen] = held
        out["probs"] = probs
    if inputs.get("val_y") is not None:
        out["val_y"] = seen[np.asarray(inputs["val_y"])]
    if inputs.get("val") is None and inputs.get("rows") is None:
        out["probs"] = None
    return out


MIN_GAIN_ROWS = 1000  # held-out predictions needed before a head can be judged not worth its serving cost


def _not_worth_serving(head: FewShotHead, metrics: dict[str, float], min_gain: float) -> bool:
    """A mixed-in head whose held-out accuracy gain over TF-IDF alone is below ``min_gain``, judged on at
    least :data:`MIN_GAIN_ROWS` predictions (small sets keep the head: there it is what helps most)."""
    if head.mix <= 0.0 or min_gain <= 0.0 or metrics.get("encoder_heldout_n", 0.0) < MIN_GAIN_ROWS:
        return False
    return metrics["mixed_accuracy"] - metrics["tfidf_accuracy"] < min_gain


def after_fit(model: Any, report: FitReport) -> None:
    """Fit the few-shot head of a freshly fitted single-label model and choose its mix weight."""
    inputs, model._fewshot_inputs = model._fewshot_inputs, None
    model.fewshot_ = None
    if not model.encoder or model.multilabel_ or not inputs:
        return
    full = full_labels(model, model.classes_)
    if full is None and inputs.get("probs") is None:
        return
    if full is None and inputs.get("val") is None and inputs.get("rows") is None:
        return
    t0 = time.perf_counter()
    try:
        encoder = get_encoder()
    except EncoderUnavailable as exc:
        report.notes.append(f"TF-IDF model only: {exc.message}")
        return
    descriptions = model.label_descriptions if isinstance(model.label_descriptions, dict) else None
    classes = model.classes_
    every_label_seen = full is None or len(set(model.classes_)) == len(full)
    if full is not None:
        seen = np.array([full.index(c) for c in model.classes_], dtype=np.int64)
        inputs, classes = _full_inputs(inputs, seen, len(full)), full
    head, metrics = fit_head(model.control, encoder, classes, inputs["train"], inputs["y"], inputs, descriptions,
                             full=full is not None)
    if full is not None:
        head.seen = seen
        model.classes_ = list(full)
        report.labels = list(full)
    model.fewshot_ = head
    report.metrics.update(metrics)
    if "tfidf_accuracy" not in metrics:
        report.notes.append(f"encoder head only ({encoder.name}): no held-out TF-IDF predictions to mix by")
        return
    if every_label_seen and _not_worth_serving(head, metrics, model.encoder_min_gain):
        report.notes.append(
            f"encoder head dropped: it adds {100 * (metrics['mixed_accuracy'] - metrics['tfidf_accuracy']):+.1f} "
            f"points of held-out accuracy ({int(metrics['encoder_heldout_n'])} predictions, "
            f"encoder_min_gain {model.encoder_min_gain}); the model serves TF-IDF alone, without encoding"
        )
        head.mix = 0.0
        report.metrics.update(encoder_mix=0.0, mixed_accuracy=metrics["tfidf_accuracy"])
        if "accuracy" in report.metrics:
            report.metrics["accuracy"] = metrics["tfidf_accuracy"]
        return
    report.notes.append(
        f"encoder head mixed in with weight {head.mix:.1f} ({encoder.name}, {time.perf_counter() - t0:.2f}s); "
        f"held-out accuracy TF-IDF {metrics['tfidf_accuracy']:.3f}, encoder {metrics['encoder_accuracy']:.3f}, "
        f"mixed {metrics['mixed_accuracy']:.3f}"
    )
    if "accuracy" in report.metrics:
        report.metrics["accuracy"] = metrics["mixed_accuracy"]


def fit_head_only(model: Any, examples: list[Example], label: str) -> FitReport | None:
    """A model of one annotated label (no TF-IDF model can train): the few-shot head over every label with
    the label-name prior, when zero-shot is ready; None otherwise (the caller reports the error)."""
    full = full_labels(model, [label]) if model.encoder else None
    if full is None:
        return None
    t0 = time.perf_counter()
    encoder = get_encoder()
    descriptions = model.label_descriptions if isinstance(model.label_descriptions, dict) else None
    y = np.full(len(examples), full.index(label), dtype=np.int64)
    head, metrics = fit_head(model.control, encoder, full, examples, y, {"probs": None}, descriptions, full=True)
    head.seen = np.zeros(0, dtype=np.int64)
    model.fewshot_, model.classes_, model.multilabel_ = head, list(full), False
    report = FitReport(n_train=len(examples), labels=list(full), metrics=metrics,
                       seconds=time.perf_counter() - t0,
                       notes=[f"only {label!r} annotated so far: encoder head with the label-name prior "
                              f"({encoder.name}), no TF-IDF model yet"])
    model.report_ = report
    return report


def load_head(arrays: Any, meta: dict[str, Any] | None) -> FewShotHead | None:
    return FewShotHead.from_saved(arrays, meta)
