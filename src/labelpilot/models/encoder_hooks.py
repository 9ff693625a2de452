"""Where ``text-linear`` meets the text encoder: zero-shot before training, the few-shot head after.

Kept out of text_linear.py so that the TF-IDF model reads on its own. Every hook is a no-op when the model's
``encoder`` option is off or the encoder cannot load: the model then behaves exactly as without it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from labelpilot.data.types import FitReport
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


def after_fit(model: Any, report: FitReport) -> None:
    """Fit the few-shot head of a freshly fitted single-label model and choose its mix weight."""
    inputs, model._fewshot_inputs = model._fewshot_inputs, None
    model.fewshot_ = None
    if not model.encoder or model.multilabel_ or not inputs or inputs.get("probs") is None:
        return
    if inputs.get("val") is None and inputs.get("rows") is None:
        return
    t0 = time.perf_counter()
    try:
        encoder = get_encoder()
    except EncoderUnavailable as exc:
        report.notes.append(f"TF-IDF model only: {exc.message}")
        return
    descriptions = model.label_descriptions if isinstance(model.label_descriptions, dict) else None
    head, metrics = fit_head(model.control, encoder, model.classes_, inputs["train"], inputs["y"], inputs, descriptions)
    model.fewshot_ = head
    report.metrics.update(metrics)
    report.notes.append(
        f"encoder head mixed in with weight {head.mix:.1f} ({encoder.name}, {time.perf_counter() - t0:.2f}s); "
        f"held-out accuracy TF-IDF {metrics['tfidf_accuracy']:.3f}, encoder {metrics['encoder_accuracy']:.3f}, "
        f"mixed {metrics['mixed_accuracy']:.3f}"
    )
    if "accuracy" in report.metrics:
        report.metrics["accuracy"] = metrics["mixed_accuracy"]


def load_head(arrays: Any, meta: dict[str, Any] | None) -> FewShotHead | None:
    return FewShotHead.from_saved(arrays, meta)
