"""Query strategies: which unlabelled items to label next, with the scores behind every choice.

A strategy reads model outputs (a :class:`Pool`: probabilities, token probabilities, vectors, texts) and
returns a :class:`Selection` (``indices``, per-item ``scores``, ``strategy``). It holds no model.
Batches never repeat an item nor contain exact or near-duplicate texts (``dedupe``: cosine > 0.95).

Families: :class:`RandomSampling`; uncertainty (:class:`LeastConfidence`, :class:`MarginSampling` =
breaking ties, :class:`EntropySampling`, :class:`MultiLabelUncertainty`); spans (:class:`SpanUncertainty`:
max / mean / MNLP token aggregation, token budgets); diversity (:class:`KCenterGreedy`,
:class:`ClusterSampling`, :class:`DiverseUncertainty`, :class:`Badge`); the first batch
(:class:`ColdStart`); stopping (:func:`stop_advice`, :class:`StoppingMonitor`).

**Label Studio ordering.** The Data Manager sorts by "Prediction score", the ``score`` labelpilot returns
with each prediction, which is the model's confidence: sort **ascending** to see the least confident task
first. To carry another strategy's order into that column, publish :func:`review_scores` (ascending sort =
the strategy's ranking). In files, the ``rank`` column of the loop's predictions CSV is that order.
"""

from labelpilot.strategies.base import Pool, QueryStrategy, Selection
from labelpilot.strategies.dedupe import NearDuplicateFilter, normalize_text, text_vectors
from labelpilot.strategies.diversity import (
    Badge,
    ClusterSampling,
    ColdStart,
    DiverseUncertainty,
    KCenterGreedy,
    gradient_embedding,
    tfidf_vectors,
)
from labelpilot.strategies.ordering import review_order, review_scores
from labelpilot.strategies.registry import DEFAULT_STRATEGY, STRATEGIES, canonical_name, get_strategy
from labelpilot.strategies.spans import SpanUncertainty, item_score, span_scores, token_uncertainty
from labelpilot.strategies.stopping import StopAdvice, StoppingMonitor, agreement, stop_advice
from labelpilot.strategies.uncertainty import (
    EntropySampling,
    LeastConfidence,
    MarginSampling,
    MultiLabelUncertainty,
    RandomSampling,
    UncertaintySampling,
    entropy,
    label_closeness,
    least_confidence,
    margin,
    multilabel_uncertainty,
)

# Names other libraries and seed 003 use.
BreakingTies = MarginSampling
PredictionEntropy = EntropySampling
CoreSet = KCenterGreedy
EmbeddingKMeans = ClusterSampling

__all__ = [
    "DEFAULT_STRATEGY",
    "STRATEGIES",
    "Badge",
    "BreakingTies",
    "ClusterSampling",
    "ColdStart",
    "CoreSet",
    "DiverseUncertainty",
    "EmbeddingKMeans",
    "EntropySampling",
    "KCenterGreedy",
    "LeastConfidence",
    "MarginSampling",
    "MultiLabelUncertainty",
    "NearDuplicateFilter",
    "Pool",
    "PredictionEntropy",
    "QueryStrategy",
    "RandomSampling",
    "Selection",
    "SpanUncertainty",
    "StopAdvice",
    "StoppingMonitor",
    "UncertaintySampling",
    "agreement",
    "canonical_name",
    "entropy",
    "get_strategy",
    "gradient_embedding",
    "item_score",
    "label_closeness",
    "least_confidence",
    "margin",
    "multilabel_uncertainty",
    "normalize_text",
    "review_order",
    "review_scores",
    "span_scores",
    "stop_advice",
    "text_vectors",
    "tfidf_vectors",
    "token_uncertainty",
]
