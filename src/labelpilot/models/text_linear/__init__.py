"""``text-linear``: fast linear text classification for Choices and Taxonomy on text.

Features
    Character n-grams (default 1-3) and word n-grams (default 1-2; jieba for text with CJK characters,
    a plain ``\\w+`` split otherwise) of ``Example.text``, plus the same over ``Example.text_pair`` in
    separate feature groups, plus the pair's delimiter-separated segments as whole tokens (TNEWS'
    ``keywords`` field is "a,b,c"). Every n-gram becomes a 64-bit key (a polynomial hash of its code
    points computed with numpy over the whole batch, mixed with a per-group salt; the group id is kept
    in the low 3 bits), so the vocabulary is a sorted ``uint64`` array, looked up through a table of
    bucket starts: no Python dict of strings, small memory, collisions negligible (about n^2 / 2^62).
    Values are sublinear TF-IDF, L2-normalised per feature group. Saved: vocabulary keys, idf, weights
    (float16 on disk) and the embedding projection, as ``.npz`` + JSON (no pickle).

Classifier
    Single-label: a one-vs-rest ``LinearSVC`` and a Complement Naive Bayes, mixed as
    ``softmax(a * svc / (1 + t * rowstd(svc)) + b * cnb / rowstd(cnb))`` with ``a, t, b`` fitted by
    log-loss on held-out data. Scaling the rows of scores to a common spread took TNEWS' held-out
    log-loss from 1.15 to 1.07 and accuracy +0.5 point compared with a plain linear mix; ``t`` stays
    near 0 when there are few classes. Prediction is two sparse-dense products and a softmax.
    Multi-label: one ``LinearSVC`` per label, Platt-scaled on held-out data (pooled, per label when there
    is enough data) and per-label thresholds on held-out data: by default the threshold (>= 0.5) with the
    most ``tp - fp`` (a proposed label saves a click when right and costs one when wrong), or the
    F1-optimal one with ``threshold_rule="f1"``.

Held-out data is ``val`` when given; otherwise k-fold out-of-fold scores for small sets, or a
stratified slice for large ones (then the model is refitted on everything if the time budget allows).

sklearn and jieba are imported lazily: a serving process that only predicts needs numpy and scipy
(jieba only for CJK text).
"""

from labelpilot.models.text_linear.calibration import _gain_threshold
from labelpilot.models.text_linear.model import TextLinearModel

__all__ = ["TextLinearModel", "_gain_threshold"]
