"""Seed-003 plug-ins for span (NER) tasks: the same six methods as :mod:`labelpilot.loop.plugin`, with spans.

What the plug-in sees: ``df_train`` / ``df_val`` / ``df_init`` / ``df_anno`` with ``label`` = Label Studio span
JSON (``[{"start", "end", "text", "labels": [...]}]``, offsets into ``text``), whatever form the CSV used
(span JSON or BIO tags).

What ``query_hard_example`` returns is read by column name (case-insensitive):

- ``sampleId`` (required);
- the predicted spans: ``label`` / ``spans`` / ``pred`` / ``prediction`` / ``predicted_label``, as Label Studio
  span JSON or as BIO tags (the label-cell rules of :mod:`labelpilot.loop.span_files`); a region's ``score``
  is kept;
- the confidence in the whole labelling: ``confidence`` / ``score`` / ``prob`` / ``probability`` (default:
  the lowest span score, else 1.0 for "no entities");
- optionally ``uncertainty`` (higher = label sooner) and ``token_probs`` (a JSON list of per-token
  max-probabilities: MNLP then ranks the pool exactly as for the built-in CRF);
- the hard-example flag (``hard_example`` / ``hard`` / ...), as for classification plug-ins.

A row whose spans cannot be read becomes a prediction error (never selected, reported in ``predictions.csv``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from labelpilot.data.span_cells import parse_span_cell
from labelpilot.data.types import Example, Prediction, Span
from labelpilot.errors import TrainingError
from labelpilot.loop.plugin import _CONF_COLS, _HARD_COLS, PluginModel, hard_flag
from labelpilot.schema.types import TaskKind

_SPAN_COLS = ("label", "spans", "pred", "prediction", "predicted_label", "labels")


def _number(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def _region_scores(cell: str) -> list[float | None]:
    try:
        obj = json.loads(cell)
    except (json.JSONDecodeError, TypeError):
        return []
    regions = obj if isinstance(obj, list) else []
    out = []
    for r in regions:
        v = r.get("value", r) if isinstance(r, dict) else {}
        out.append(_number(v.get("score", r.get("score") if isinstance(r, dict) else None)))
    return out


def _token_probs(value: Any) -> np.ndarray | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    try:
        arr = np.asarray(json.loads(value) if isinstance(value, str) else value, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        return None
    return arr


class SpanPluginModel(PluginModel):
    """A seed-003 plug-in serving a ``<Labels>`` (span) control; see the module doc for its columns."""

    kinds: ClassVar[frozenset[TaskKind]] = frozenset({TaskKind.TEXT_SPANS})

    def _read_output(self, out: Any, examples: Sequence[Example]) -> list[Prediction]:
        cols = self._output_columns(out)
        span_col = next((cols[c] for c in _SPAN_COLS if c in cols), None)
        if span_col is None:
            raise TrainingError(f"plug-in {self.ref}: query_hard_example's DataFrame has no label (spans) column")
        conf_col = next((cols[c] for c in _CONF_COLS if c in cols), None)
        hard_col = next((cols[c] for c in _HARD_COLS if c in cols), None)
        unc_col, tok_col = cols.get("uncertainty"), cols.get("token_probs")
        texts = {str(e.id): e.text for e in examples}
        known = set(self.control.label_keys)
        records: dict[str, Prediction] = {}
        flags: dict[str, bool] = {}
        for rec in out.to_dict("records"):
            sid = str(rec[cols["sampleid"]])
            if sid not in texts:
                continue
            records[sid] = self._one(rec, texts[sid], span_col, conf_col, unc_col, tok_col, known)
            if hard_col is not None:
                flags[sid] = hard_flag(rec[hard_col])
        self.hard_flags_ = flags if hard_col is not None else None
        return [records.get(str(e.id)) or Prediction(error="the plug-in returned no prediction") for e in examples]

    def _one(self, rec: dict[str, Any], text: str, span_col: Any, conf_col: Any, unc_col: Any, tok_col: Any,
             known: set[str]) -> Prediction:
        raw = rec[span_col]
        cell = "" if raw is None or (isinstance(raw, float) and math.isnan(raw)) else str(raw)
        try:
            spans, _form = parse_span_cell(cell or "[]", text)
        except ValueError as exc:
            return Prediction(error=f"plug-in spans unreadable: {exc}")
        unknown = sorted({s.label for s in spans} - known)
        if unknown:
            return Prediction(error=f"plug-in spans with unknown label(s) {', '.join(unknown)}")
        scores = _region_scores(cell)
        scores = scores if len(scores) == len(spans) else [None] * len(spans)
        spans = [Span(s.start, s.end, s.label, score=sc, text=s.text) for s, sc in zip(spans, scores, strict=True)]
        conf = _number(rec[conf_col]) if conf_col is not None else None
        if conf is None:
            known_scores = [s.score for s in spans if s.score is not None]
            conf = min(known_scores) if known_scores else 1.0
        unc = _number(rec[unc_col]) if unc_col is not None else None
        tok = _token_probs(rec[tok_col]) if tok_col is not None else None
        return Prediction(spans=tuple(spans), score=float(conf), uncertainty=unc, token_probs=tok)
