"""``keywords``: pre-labels keyword spans (TF-IDF + TextRank, :mod:`labelpilot.keywords`) for a
``<Labels>`` control on ``<Text>``.

Which label
    The keyword label is the one :meth:`ControlSpec.map_predicted` maps the name ``keyword`` to: a
    ``<Label>`` whose ``predicted_values`` contains ``keyword``, e.g.
    ``<Label value="关键词" predicted_values="keyword"/>`` (or, failing that, a label whose value is
    ``keyword``, any case). Without one, every prediction carries an error naming the control.
    ``labelpilot.models.base.family_for`` picks this family by itself when every label of a ``<Labels>``
    control has ``predicted_values="keyword"``; for a control that mixes keyword and entity labels,
    choose the family explicitly.

Training
    None needed (``is_fitted`` is always True). ``fit`` counts document frequencies over the texts it is
    given (annotations are not needed and are ignored); they join the IDF corpus of later predictions.

Options (constructor keywords)
    ``alpha`` (0.5), ``top_k`` (5), ``userdict`` (mapping word -> boost, or a list of words), ``lang``
    ("auto"), ``window`` (5), ``all_occurrences`` (True: every occurrence of a keyword becomes a span;
    False: only the first), ``min_score`` (0.0: keywords scoring below it are left out).

Output
    Spans with the keyword's score (0..1); ``Prediction.score`` is their mean (0 when there are none);
    ``uncertainty`` is None (this family has nothing to learn from labels).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from labelpilot.data.types import Example, FitReport, Prediction, Span
from labelpilot.keywords import analyse, detect_lang, extract_keywords, load_userdict
from labelpilot.models.base import ModelBase, Progress
from labelpilot.schema.types import ControlSpec, TaskKind

KEYWORD_NAME = "keyword"
META_FILE = "keywords.json"
DEFAULTS: dict[str, Any] = {
    "alpha": 0.5,
    "top_k": 5,
    "userdict": None,
    "lang": "auto",
    "window": 5,
    "all_occurrences": True,
    "min_score": 0.0,
}


class KeywordModel(ModelBase):
    """Keyword pre-labelling for a ``<Labels>`` control (see the module doc)."""

    name: ClassVar[str] = "keywords"
    kinds: ClassVar[frozenset[TaskKind]] = frozenset({TaskKind.TEXT_SPANS})
    DEFAULTS: ClassVar[dict[str, Any]] = DEFAULTS
    META_FILE: ClassVar[str] = META_FILE

    def __init__(self, control: ControlSpec, **options: Any) -> None:
        super().__init__(control, **options)
        self.doc_freq_: Counter[str] = Counter()
        self.n_docs_: int = 0

    @property
    def is_fitted(self) -> bool:
        return True

    def keyword_label(self) -> str | None:
        return self.control.map_predicted(KEYWORD_NAME)

    def fit(
        self,
        examples: Sequence[Example],
        *,
        val: Sequence[Example] | None = None,
        progress: Progress | None = None,
    ) -> FitReport:
        t0 = time.perf_counter()
        udict = load_userdict(self.options.get("userdict"))
        lang = self.options.get("lang", "auto")
        skipped: list[str] = []
        for i, ex in enumerate(examples):
            text = ex.text if isinstance(ex.text, str) else ""
            if not text.strip():
                skipped.append(f"example {i}: empty text")
                continue
            lg = detect_lang(text) if lang == "auto" else lang
            self.doc_freq_.update({k for k, _, _, c in analyse(text, lg, udict) if c})
            self.n_docs_ += 1
            if progress is not None and (i + 1) % 500 == 0:
                progress(i + 1, len(examples), "counting document frequencies")
        notes = [f"document frequencies from {self.n_docs_} texts ({len(self.doc_freq_)} words)"]
        if self.keyword_label() is None:
            notes.append(f'no label of control {self.control.name!r} has predicted_values="keyword"')
        return FitReport(
            n_train=len(examples) - len(skipped),
            labels=[k for k in [self.keyword_label()] if k],
            seconds=time.perf_counter() - t0,
            skipped=skipped,
            notes=notes,
        )

    def predict(self, examples: Sequence[Example]) -> list[Prediction]:
        label = self.keyword_label()
        if label is None:
            msg = (
                f'control {self.control.name!r} has no keyword label: add predicted_values="keyword" '
                "to one of its <Label> tags"
            )
            return [Prediction(error=msg) for _ in examples]
        opts = self.options
        texts = [ex.text if isinstance(ex.text, str) else "" for ex in examples]
        try:
            found = extract_keywords(
                texts,
                alpha=float(opts["alpha"]),
                top_k=int(opts["top_k"]),
                userdict=opts.get("userdict"),
                lang=opts.get("lang", "auto"),
                window=int(opts.get("window", 5)),
                doc_freq=self.doc_freq_,
                n_docs=self.n_docs_,
            )
        except Exception as exc:
            return [Prediction(error=f"{type(exc).__name__}: {exc}") for _ in examples]
        out: list[Prediction] = []
        min_score = float(opts.get("min_score", 0.0))
        for text, kws in zip(texts, found, strict=True):
            spans: list[Span] = []
            scores: list[float] = []
            for kw in kws:
                if kw.score < min_score:
                    continue
                scores.append(kw.score)
                occ = kw.occurrences if opts.get("all_occurrences", True) else kw.occurrences[:1]
                for s, e in occ:
                    spans.append(Span(s, e, label, score=float(kw.score), text=text[s:e]))
            spans.sort(key=lambda sp: (sp.start, sp.end))
            out.append(Prediction(spans=tuple(spans), score=float(np.mean(scores)) if scores else 0.0))
        return out

    def save(self, directory: Path) -> None:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.save_meta(d, n_docs=self.n_docs_, doc_freq=dict(self.doc_freq_))

    @classmethod
    def load(cls, directory: Path, control: ControlSpec) -> KeywordModel:
        model, meta = cls.from_saved(directory, control)
        model.n_docs_ = int(meta.get("n_docs", 0))
        model.doc_freq_ = Counter({str(k): int(v) for k, v in (meta.get("doc_freq") or {}).items()})
        return model
