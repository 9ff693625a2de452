"""The ``ner-crf`` family (split out of one module; see :mod:`.model`)."""

from labelpilot.metrics import span_prf  # re-exported: bench/al/simulate_ner.py imports it from here
from labelpilot.models.ner_crf.model import (
    DEFAULTS,
    FORMAT_VERSION,
    LAC_NAMES,
    META_FILE,
    MODEL_FILE,
    NerCrfModel,
    case_statistics,
    featurize,
    lac_available,
    lac_words,
    max_token_entropy,
    mean_token_entropy,
    normalized_sequence_logprob,
    prediction_uncertainty,
    token_entropies,
    token_uncertainties,
)

__all__ = [
    "DEFAULTS", "FORMAT_VERSION", "LAC_NAMES", "META_FILE", "MODEL_FILE", "NerCrfModel", "case_statistics",
    "featurize", "lac_available", "lac_words", "max_token_entropy", "mean_token_entropy",
    "normalized_sequence_logprob", "prediction_uncertainty", "span_prf", "token_entropies", "token_uncertainties",
]
