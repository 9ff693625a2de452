"""doc-fields: the :class:`DocumentFieldModel` family class (OCR + segment classifier; pipeline in the package
doc, :mod:`labelpilot.models.document`). Segments and their features live in
:mod:`labelpilot.models.document.segments`, grouping and scoring in :mod:`labelpilot.models.document.grouping`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from scipy import sparse

from labelpilot.data.types import Box, Example, FitReport, Prediction
from labelpilot.errors import InputError, MediaError, TrainingError
from labelpilot.models import doc_keyvalue as kv
from labelpilot.models.base import ModelBase, Progress, saved_report
from labelpilot.models.document.grouping import OTHER, _best_annotation, _groups, _join, _softmax, _union, field_scores
from labelpilot.models.document.segments import Segment, _dense, _neighbours, _norm, segments_of
from labelpilot.ocr import OcrEngine, OcrLine, OcrPage, OcrSettings, rapidocr_available
from labelpilot.orientation import orientation_available
from labelpilot.schema.types import ControlSpec, TaskKind

log = logging.getLogger("labelpilot.models.document")  # the name it had as one module

FORMAT_VERSION = 1
META_FILE = "doc_fields.json"
ARRAYS_FILE = "doc_fields.npz"

DEFAULTS: dict[str, Any] = {
    "C": 4.0,
    "segment_threshold": 0.4,  # a segment joins a field when its best field probability reaches this
    "score_threshold": 0.3,  # boxes below this score are not returned (model_score_threshold overrides)
    "det_side": 960,
    "use_cls": False,
    "n_features": 2**14,  # hashed text features of the segment itself (neighbours get a quarter each)
    "context": False,  # pass 2 (neighbour probabilities): measured no better on the synthetic pages
    "left_weight": 3.0,  # weight of the left neighbour's text (where a value's key usually is)
    "neighbour_weight": 0.5,  # weight of the right / above / below neighbours' text
    "layout_weight": 0.3,  # weight of the position and shape features (higher: memorises positions)
    "zero_shot": True,  # before training (and for labels training never saw): values next to keys named like labels
    "orient": "auto",  # undo page rotation before OCR: True, False, or "auto" (when the model is installed)
}


class DocumentFieldModel(ModelBase):
    """OCR + segment classifier for key fields on document images (see module doc)."""

    name: ClassVar[str] = "doc-fields"
    kinds: ClassVar[frozenset[TaskKind]] = frozenset({TaskKind.IMAGE_BOXES})
    DEFAULTS: ClassVar[dict[str, Any]] = DEFAULTS
    OPTION_TYPES: ClassVar[dict[str, tuple[type, ...]]] = {"orient": (bool, str)}
    META_FILE: ClassVar[str] = META_FILE
    FORMAT_VERSION: ClassVar[int] = FORMAT_VERSION

    def __init__(self, control: ControlSpec, **options: Any) -> None:
        super().__init__(control, **options)
        for key in ("segment_threshold", "score_threshold"):
            v = float(self.options[key])
            if not 0 <= v <= 1:
                raise InputError(f"{key} must be between 0 and 1", field=key)
        if int(self.options["n_features"]) < 256:
            raise InputError("n_features must be at least 256", field="n_features")
        self.classes_: list[str] | None = None  # OTHER first, then field labels
        self.coef_: list[np.ndarray] = []  # per pass: (n_classes, n_cols)
        self.intercept_: list[np.ndarray] = []
        self.dense_mean_: np.ndarray | None = None
        self.dense_scale_: np.ndarray | None = None
        self.max_per_page_: dict[str, int] = {}
        self.box_offsets_: dict[str, list[float]] = {}  # label -> [dx0, dy0, dx1, dy1] in line heights
        self.report_: FitReport | None = None
        self._hashers: list[Any] | None = None

    # -- helpers --------------------------------------------------------------------------------------

    @property
    def is_fitted(self) -> bool:
        return self.classes_ is not None and bool(self.coef_)

    @property
    def threshold(self) -> float:
        t = self.control.score_threshold
        return float(t) if t is not None else float(self.options["score_threshold"])

    def _ocr(self) -> OcrEngine:
        orient = self.options["orient"]
        orient = orientation_available() if orient == "auto" else bool(orient)
        return OcrEngine.get(
            OcrSettings(det_side=int(self.options["det_side"]), use_cls=bool(self.options["use_cls"]), orient=orient)
        )

    def _key_names(self) -> dict[str, list[tuple[str, str]]]:
        return kv.label_names(self.control) if self.options["zero_shot"] else {}

    def zero_shot_ready(self) -> bool:
        """True when, before training, some label's name (value, alias, hint or ``predicted_values``) can be
        looked for as a key on the page (see :mod:`labelpilot.models.doc_keyvalue`) and rapidocr is installed."""
        return bool(self._key_names()) and rapidocr_available()

    def _zero_shot(self, segs: Sequence[Segment], nb: np.ndarray, page: OcrPage, labels: Sequence[str] | None,
                   threshold: float) -> tuple[Box, ...]:
        props = kv.propose(segs, nb, page.width, page.height, self._key_names(), labels)
        return kv.proposal_boxes(props, page, threshold)

    def warm_up(self) -> None:
        """Load the OCR models and the classifier's imports (sklearn, scipy) now, not in the first request."""
        self._ocr().warm_up()
        if self.is_fitted:
            page = OcrPage(
                1240,
                1754,
                (
                    OcrLine("Date: 2024-03-05", (100, 100, 500, 140), 1.0),
                    OcrLine("结论：未见异常", (100, 200, 400, 240), 1.0),
                ),
            )
            segs = segments_of(page)
            self._decode(segs, _neighbours(segs), page, self.threshold)

    def _hash(self) -> list[Any]:
        if self._hashers is None:
            from sklearn.feature_extraction.text import HashingVectorizer

            nf = int(self.options["n_features"])
            own = HashingVectorizer(
                analyzer="char_wb", ngram_range=(1, 3), n_features=nf, alternate_sign=False, norm="l2", lowercase=False
            )
            ctx = HashingVectorizer(
                analyzer="char_wb",
                ngram_range=(1, 2),
                n_features=max(64, nf // 4),
                alternate_sign=False,
                norm="l2",
                lowercase=False,
            )
            self._hashers = [own, ctx]
        return self._hashers

    def _features(
        self, segs: Sequence[Segment], nb: np.ndarray, width: int, height: int, dense: np.ndarray | None = None
    ) -> sparse.csr_matrix:
        """The segments' feature rows; ``dense``: their :func:`_dense` features when already computed."""
        own, ctx = self._hash()
        texts = [_norm(s.text) for s in segs]
        wl, wo, wd = (float(self.options[k]) for k in ("left_weight", "neighbour_weight", "layout_weight"))
        blocks = [own.transform(texts)]
        for k in range(4):
            blocks.append(ctx.transform([texts[j] if j >= 0 else "" for j in nb[:, k]]) * (wl if k == 0 else wo))
        if dense is None:
            dense = _dense(segs, nb, width, height)
        assert self.dense_mean_ is not None and self.dense_scale_ is not None
        blocks.append(sparse.csr_matrix((dense - self.dense_mean_) / self.dense_scale_ * wd))
        return sparse.hstack(blocks, format="csr")

    @staticmethod
    def _context(p1: np.ndarray, nb: np.ndarray) -> np.ndarray:
        k = p1.shape[1]
        cols = [p1]
        for j in range(4):
            idx = nb[:, j]
            c = np.zeros((len(idx), k))
            c[idx >= 0] = p1[idx[idx >= 0]]
            cols.append(c)
        return np.hstack(cols)

    def _page(self, ex: Example) -> OcrPage:
        if not ex.image:
            raise MediaError("the task has no image")
        return self._ocr().page(ex.image)

    # -- training -------------------------------------------------------------------------------------

    def _targets(self, segs: Sequence[Segment], ex: Example, page: OcrPage) -> tuple[list[str], list[str]]:
        """A label per segment from the annotated boxes, and notes on boxes that cover no OCR text."""
        labels = [OTHER] * len(segs)
        notes = []
        boxes = ex.target.boxes if ex.target else ()
        best = [0.0] * len(segs)
        for box in boxes:
            bx0, by0 = box.x * page.width, box.y * page.height
            bx1, by1 = bx0 + box.width * page.width, by0 + box.height * page.height
            hit = False
            for i, s in enumerate(segs):
                x0, y0, x1, y1 = s.box
                # horizontally: most of the segment is inside the box; vertically: the two overlap by most
                # of the smaller height (OCR boxes are taller than the glyphs people draw around)
                hfrac = max(0.0, min(x1, bx1) - max(x0, bx0)) / max(1.0, x1 - x0)
                vfrac = max(0.0, min(y1, by1) - max(y0, by0)) / max(1.0, min(y1 - y0, by1 - by0))
                cover = min(hfrac, vfrac)
                if cover >= 0.5 and cover > best[i]:
                    labels[i], best[i], hit = box.label, cover, True
            if not hit:
                notes.append(f"task {ex.id}: the {box.label!r} box covers no OCR text")
        return labels, notes

    def fit(
        self, examples: Sequence[Example], *, val: Sequence[Example] | None = None, progress: Progress | None = None
    ) -> FitReport:
        report = FitReport()
        pages = self._training_pages(examples, report, progress)
        if progress:
            progress(len(examples), len(examples), "training the field classifier")
        all_labels = sorted({lab for *_, labels, _ in pages for lab in labels if lab != OTHER})
        if not all_labels:
            raise TrainingError("no annotated box covers OCR text: nothing to learn from", field=self.control.name)
        classes = [OTHER, *all_labels]
        x_pages, y_pages = self._training_matrices(pages, classes)
        self._fit_passes(pages, x_pages, y_pages, classes)
        self._fit_layout(pages, all_labels)
        report.n_train = len(pages)
        report.labels = all_labels
        pred_train = self._decode_pages(pages)
        report.metrics.update({f"train_{k}": v for k, v in field_scores(pred_train, [p[4] for p in pages]).items()})
        report.metrics["segments"] = float(sum(len(yp) for yp in y_pages))
        if val:
            report.n_val = len(val)
            report.metrics.update({f"val_{k}": v for k, v in field_scores(self.predict(val), list(val)).items()})
        self.report_ = report
        return report

    def _training_pages(
        self, examples: Sequence[Example], report: FitReport, progress: Progress | None
    ) -> list[tuple[list[Segment], np.ndarray, OcrPage, list[str], Example]]:
        """OCR of the annotated pages: (segments, neighbours, page, segment labels, example on the upright page)
        per usable page; the others are noted in ``report.skipped``."""
        known = set(self.control.label_keys)
        pages: list[tuple[list[Segment], np.ndarray, OcrPage, list[str], Example]] = []
        for n, ex in enumerate(examples):
            if progress:
                progress(n, len(examples), "OCR of the annotated pages")
            if ex.target is None:
                report.skipped.append(f"task {ex.id}: no annotation")
                continue
            boxes = tuple(b for b in ex.target.boxes if b.label in known)
            if len(boxes) < len(ex.target.boxes):
                report.skipped.append(f"task {ex.id}: boxes with labels the control does not have were ignored")
            try:
                page = self._page(ex)
            except MediaError as exc:
                report.skipped.append(f"task {ex.id}: {exc.message}")
                continue
            segs = segments_of(page)
            if not segs:
                report.skipped.append(f"task {ex.id}: OCR found no text on the page")
                continue
            boxes = tuple(kv.from_original(b, page) for b in boxes)  # onto the upright page OCR read
            ex2 = Example(image=ex.image, id=ex.id, target=type(ex.target)(boxes=boxes))
            labels, notes = self._targets(segs, ex2, page)
            report.skipped.extend(notes)
            pages.append((segs, _neighbours(segs), page, labels, ex2))
        return pages

    def _training_matrices(
        self, pages: Sequence[tuple[Any, ...]], classes: Sequence[str]
    ) -> tuple[list[sparse.csr_matrix], list[np.ndarray]]:
        """Fits the dense scaler on all training segments at once, then each page's (features, class indices)."""
        cidx = {c: i for i, c in enumerate(classes)}
        dense_pages = [_dense(s, nb, p.width, p.height) for s, nb, p, *_ in pages]
        dense_all = np.vstack(dense_pages)
        self.dense_mean_ = dense_all.mean(axis=0)
        std = dense_all.std(axis=0)
        self.dense_scale_ = np.where(std > 1e-9, std, 1.0)
        x_pages = [
            self._features(s, nb, p.width, p.height, dense)
            for (s, nb, p, *_), dense in zip(pages, dense_pages, strict=True)
        ]
        y_pages = [np.array([cidx[lab] for lab in labels]) for *_, labels, _ in pages]
        return x_pages, y_pages

    def _fit_passes(
        self, pages: Sequence[tuple[Any, ...]], x_pages: list[sparse.csr_matrix], y_pages: list[np.ndarray],
        classes: list[str],
    ) -> None:
        """Pass 1 on all segments; with ``context``, pass 2 on out-of-fold pass-1 probabilities (3 folds by page)."""
        from sklearn.linear_model import LogisticRegression

        x = sparse.vstack(x_pages, format="csr")
        y = np.concatenate(y_pages)
        C = float(self.options["C"])

        def lr() -> LogisticRegression:
            return LogisticRegression(C=C, max_iter=3000, tol=1e-4)

        if len(set(y.tolist())) < 2:
            raise TrainingError("the annotated pages have only one kind of segment", field=self.control.name)
        m1 = lr().fit(x, y)
        self.classes_ = classes
        w1, b1 = self._full_coef(m1, len(classes))
        self.coef_, self.intercept_ = [w1], [b1]
        if not (self.options["context"] and len(pages) >= 3):
            return
        folds = np.arange(len(pages)) % 3
        oof = [np.zeros((xp.shape[0], len(classes))) for xp in x_pages]
        for f in range(3):
            tr = [i for i in range(len(pages)) if folds[i] != f]
            te = [i for i in range(len(pages)) if folds[i] == f]
            ytr = np.concatenate([y_pages[i] for i in tr])
            if len(set(ytr.tolist())) < 2:
                continue
            mf = lr().fit(sparse.vstack([x_pages[i] for i in tr]), ytr)
            w, b = self._full_coef(mf, len(classes))
            for i in te:
                oof[i] = _softmax(x_pages[i] @ w.T + b)
        ctx = np.vstack([self._context(o, nb) for o, (_, nb, *_) in zip(oof, pages, strict=True)])
        x2 = sparse.hstack([x, sparse.csr_matrix(ctx * 3.0)], format="csr")
        m2 = lr().fit(x2, y)
        w2, b2 = self._full_coef(m2, len(classes))
        self.coef_.append(w2)
        self.intercept_.append(b2)

    def _fit_layout(self, pages: Sequence[tuple[Any, ...]], all_labels: Sequence[str]) -> None:
        """How many boxes of a label a page holds, and how annotated boxes sit around the OCR boxes."""
        counts: dict[str, int] = {}
        offsets: dict[str, list[list[float]]] = {}
        for segs, _nb, page, labels, ex in pages:
            for lab in all_labels:
                n = sum(1 for b in ex.target.boxes if b.label == lab) if ex.target else 0
                counts[lab] = max(counts.get(lab, 0), n)
            for group_label, members in _groups(segs, labels):
                box = _union([segs[i].box for i in members])
                h = float(np.median([segs[i].height for i in members]))
                ann = _best_annotation(box, ex, page, group_label)
                if ann is not None:
                    offsets.setdefault(group_label, []).append([(a - g) / h for a, g in zip(ann, box, strict=True)])
        self.max_per_page_ = {lab: max(1, c) for lab, c in counts.items()}
        every = [o for v in offsets.values() for o in v]
        self.box_offsets_ = {lab: np.median(np.array(v), axis=0).round(4).tolist() for lab, v in offsets.items()}
        if every:
            self.box_offsets_["*"] = np.median(np.array(every), axis=0).round(4).tolist()

    @staticmethod
    def _full_coef(m: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """sklearn's coef_ for classes seen in training, expanded to all ``k`` classes (unseen: -inf bias)."""
        w = np.zeros((k, m.coef_.shape[1]))
        b = np.full(k, -30.0)
        seen = [int(c) for c in m.classes_]
        if len(seen) == 2 and m.coef_.shape[0] == 1:  # binary: sklearn keeps one row
            w[seen[1]], b[seen[1]] = m.coef_[0], m.intercept_[0]
            w[seen[0]], b[seen[0]] = 0.0, 0.0
        else:
            w[seen], b[seen] = m.coef_, m.intercept_
        return w, b

    # -- prediction -----------------------------------------------------------------------------------

    def _probs(self, segs: Sequence[Segment], nb: np.ndarray, page: OcrPage) -> np.ndarray:
        x = self._features(segs, nb, page.width, page.height)
        p = _softmax(x @ self.coef_[0].T + self.intercept_[0])
        if len(self.coef_) > 1:
            x2 = sparse.hstack([x, sparse.csr_matrix(self._context(p, nb) * 3.0)], format="csr")
            p = _softmax(x2 @ self.coef_[1].T + self.intercept_[1])
        return p

    def _decode(self, segs: Sequence[Segment], nb: np.ndarray, page: OcrPage, threshold: float) -> Prediction:
        assert self.classes_ is not None
        if not segs:
            return Prediction(score=0.0, uncertainty=0.0)
        p = self._probs(segs, nb, page)
        field_p = p[:, 1:]
        best = field_p.argmax(axis=1)
        conf = field_p.max(axis=1)
        seg_thr = float(self.options["segment_threshold"])
        labels = [self.classes_[1 + int(b)] if c >= seg_thr else OTHER for b, c in zip(best, conf, strict=True)]
        boxes: list[Box] = []
        for lab, members in _groups(segs, labels):
            score = float(np.mean([conf[i] for i in members]))
            x0, y0, x1, y1 = _union([segs[i].box for i in members])
            h = float(np.median([segs[i].height for i in members]))
            off = self.box_offsets_.get(lab) or self.box_offsets_.get("*") or [0.0, 0.0, 0.0, 0.0]
            x0, y0, x1, y1 = x0 + off[0] * h, y0 + off[1] * h, x1 + off[2] * h, y1 + off[3] * h
            x0, y0 = max(0.0, x0), max(0.0, y0)
            x1, y1 = min(float(page.width), x1), min(float(page.height), y1)
            if x1 <= x0 or y1 <= y0:
                continue
            text = _join([segs[i].text for i in members])
            boxes.append(
                Box(
                    x0 / page.width,
                    y0 / page.height,
                    (x1 - x0) / page.width,
                    (y1 - y0) / page.height,
                    lab,
                    round(score, 6),
                    text=text,
                )
            )
        kept: list[Box] = []
        for lab in {b.label for b in boxes}:
            mine = sorted((b for b in boxes if b.label == lab), key=lambda b: -(b.score or 0))
            kept.extend(mine[: self.max_per_page_.get(lab, 1)])
        kept = [b for b in kept if (b.score or 0) >= threshold]
        kept.sort(key=lambda b: (b.y, b.x))
        # uncertainty: how close the page's most doubtful segment is to flipping (field vs not, or label)
        top2 = np.sort(p, axis=1)[:, -2:]
        margin = float((top2[:, 1] - top2[:, 0]).min())
        score = float(np.mean([b.score or 0 for b in kept])) if kept else float(1.0 - conf.max())
        return Prediction(boxes=tuple(kept), score=score, uncertainty=1.0 - margin)

    def _decode_pages(self, pages: Sequence[tuple[Any, ...]]) -> list[Prediction]:
        return [self._decode(segs, nb, page, self.threshold) for segs, nb, page, *_ in pages]

    def _predict_page(self, page: OcrPage, threshold: float) -> Prediction:
        """A page's boxes relative to the image as stored: the classifier's, plus key/value proposals for the
        labels it never saw; before training the key/value proposals alone."""
        segs = segments_of(page)
        nb = _neighbours(segs)
        if not self.is_fitted:
            boxes = self._zero_shot(segs, nb, page, None, threshold)
            score = float(np.mean([b.score or 0.0 for b in boxes])) if boxes else 0.0
            return Prediction(boxes=boxes, score=score, uncertainty=1.0 - score if boxes else 1.0)
        pred = self._decode(segs, nb, page, threshold)
        boxes = tuple(kv.to_original(b, page) for b in pred.boxes)
        unseen = [lab for lab in self.control.label_keys if lab not in (self.classes_ or ())]
        if unseen and self.options["zero_shot"]:
            boxes = tuple(sorted((*boxes, *self._zero_shot(segs, nb, page, unseen, threshold)),
                                 key=lambda b: (b.y, b.x)))
        return Prediction(boxes=boxes, score=pred.score, uncertainty=pred.uncertainty)

    def predict(self, examples: Sequence[Example], *, threshold: float | None = None) -> list[Prediction]:
        if not self.is_fitted and not self.zero_shot_ready():
            return [Prediction(error="the doc-fields model is not trained yet") for _ in examples]
        thr = self.threshold if threshold is None else float(threshold)
        out = []
        for ex in examples:
            try:
                out.append(self._predict_page(self._page(ex), thr))
            except MediaError as exc:
                out.append(Prediction(error=exc.message))
            except Exception as exc:  # one bad page never spoils the batch
                log.exception("doc-fields: prediction failed for %s", ex.id)
                out.append(Prediction(error=f"prediction failed: {type(exc).__name__}: {exc}"))
        return out

    def embed(self, examples: Sequence[Example]) -> np.ndarray:
        """Hashed character 1-2-grams of the page's OCR text (n, 512), L2-normalised; zeros when unreadable."""
        from sklearn.feature_extraction.text import HashingVectorizer

        hv = HashingVectorizer(analyzer="char_wb", ngram_range=(1, 2), n_features=512, alternate_sign=False, norm="l2")
        texts = []
        for ex in examples:
            try:
                texts.append(_norm(self._page(ex).text))
            except MediaError:
                texts.append("")
        return np.asarray(hv.transform(texts).todense(), dtype=np.float32)

    # -- persistence ----------------------------------------------------------------------------------

    def save(self, directory: Path) -> None:
        if not self.is_fitted:
            raise TrainingError("cannot save an unfitted doc-fields model", field=self.control.name)
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {"dense_mean": self.dense_mean_, "dense_scale": self.dense_scale_}
        for i, (w, b) in enumerate(zip(self.coef_, self.intercept_, strict=True)):
            arrays[f"coef{i}"] = w.astype(np.float32)
            arrays[f"intercept{i}"] = b
        tmp = d / (ARRAYS_FILE + ".tmp.npz")
        np.savez_compressed(tmp, **arrays)
        tmp.replace(d / ARRAYS_FILE)
        self.save_meta(d, classes=self.classes_, passes=len(self.coef_), max_per_page=self.max_per_page_,
                       box_offsets=self.box_offsets_, report=self.report_.to_dict() if self.report_ else None)

    @classmethod
    def load(cls, directory: Path, control: ControlSpec) -> DocumentFieldModel:
        d = Path(directory)
        model, meta = cls.from_saved(d, control, required=(ARRAYS_FILE,))
        with np.load(d / ARRAYS_FILE, allow_pickle=False) as z:
            model.dense_mean_, model.dense_scale_ = z["dense_mean"], z["dense_scale"]
            for i in range(int(meta["passes"])):
                model.coef_.append(np.asarray(z[f"coef{i}"], dtype=np.float64))
                model.intercept_.append(np.asarray(z[f"intercept{i}"], dtype=np.float64))
        model.classes_ = list(meta["classes"])
        model.max_per_page_ = {k: int(v) for k, v in (meta.get("max_per_page") or {}).items()}
        model.box_offsets_ = meta.get("box_offsets") or {}
        model.report_ = saved_report(meta)
        model.warn_unknown_labels(model.classes_[1:], log)
        return model


