"""``doc-fields``: key fields on document images, for ``<RectangleLabels>`` on ``<Image>`` whose labels are
field names (日期, 结论, Invoice No., ...): OCR, then a classifier over the OCR text segments.

Pipeline
    1. OCR (:mod:`labelpilot.ocr`, rapidocr PP-OCR det + rec, cached per image).
    2. Segments: each OCR line, split after a colon (``日期：2024-03-05`` -> ``日期：`` + ``2024-03-05``; the
       split position comes from rapidocr's word boxes), so a key and its value are separate segments.
    3. Features per segment: character 1-3-grams of its text (digits folded to 0), 1-2-grams of the text of
       its neighbours (left on the same row, above, below: where the key of a value usually is), its
       position on the page (raw and binned), size relative to the page's median line, and shape cues
       (length, digit / CJK / letter ratios, ends with a colon, was split off a key, looks like a date).
       Text features are hashed (no vocabulary to store).
    4. Pass 1: a multinomial logistic regression over the field labels plus "O" (not a field).
       Optional pass 2 (``context=True``): the same features plus pass 1's probabilities for the segment and
       its four neighbours, trained on out-of-fold pass-1 probabilities. Off by default: on the synthetic
       report pages it scored no better than pass 1 alone.
    5. Decoding: a segment whose best field label reaches ``segment_threshold`` joins a group with the
       segments of the same label next to it (the lines of a wrapped paragraph, the words of a row); a label
       keeps at most as many groups per page as the training pages had boxes of it. A group's box is the
       union of its segments, corrected by the median offset between annotated boxes and OCR boxes seen in
       training (people draw boxes tighter or looser than OCR), and its score is its mean probability.
       Each box carries the OCR text, which the backend writes into a per-region ``<TextArea>`` when the
       config has one (Label Studio's OCR template).

Training targets come from the annotated boxes: a segment takes the label of the box that covers at least
half of its width and overlaps it by half of the smaller height, else "O". A box that covers no OCR text
is reported in ``FitReport.skipped``.

Before any annotation (``is_fitted`` is False) the model proposes, for labels whose names can be keys on
the page (日期, Name, Total, ...), the value printed next to such a key (:mod:`labelpilot.models.doc_keyvalue`;
``zero_shot_ready()`` says whether a control's names allow it, scores 0.3-0.6). Once trained, the classifier's
boxes are served, and the key/value proposals only for labels the training pages never had.

Pages turned by 90/180/270 degrees are detected and OCR'd upright when the page-orientation model is installed
(option ``orient``, :mod:`labelpilot.orientation`); segments, features and training targets live on the
upright page and the returned boxes are mapped back onto the image as stored. Pages that are blank or not
documents at all give few or no confident segments, hence empty or low-score predictions; a page that
cannot be read fails only its own prediction.

Saved as JSON + ``.npz`` (no pickle). Options (``extra_params``): ``C``, ``segment_threshold``,
``score_threshold``, ``det_side``, ``use_cls``, ``n_features``, ``zero_shot``, ``orient``.
"""

from labelpilot.models.document.grouping import OTHER, _best_annotation, _groups, _join, _softmax, _union, field_scores
from labelpilot.models.document.model import (
    ARRAYS_FILE,
    DEFAULTS,
    FORMAT_VERSION,
    META_FILE,
    DocumentFieldModel,
)
from labelpilot.models.document.segments import (
    Segment,
    _char_spans,
    _cuts,
    _dense,
    _neighbours,
    _norm,
    segments_of,
)

__all__ = [
    "ARRAYS_FILE",
    "DEFAULTS",
    "FORMAT_VERSION",
    "META_FILE",
    "OTHER",
    "DocumentFieldModel",
    "Segment",
    "_best_annotation",
    "_char_spans",
    "_cuts",
    "_dense",
    "_groups",
    "_join",
    "_neighbours",
    "_norm",
    "_softmax",
    "_union",
    "field_scores",
    "segments_of",
]
