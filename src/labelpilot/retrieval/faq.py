"""FAQ matching: a user's query -> one standard question and its answer, with a confidence, or "no answer".

Seed 004 §7 (Aliyun PAI's customer-service FAQ): standard questions, each with synonymous phrasings
(``query_label_idx_map``), retrieval of the K most similar standard questions, a selection step with a
confidence threshold, and the chosen question's answer. Here:

1. *retrieval*: every training phrasing is a vector (the multilingual encoder) in a :class:`VectorIndex`; a
   query's score for a question is its best cosine to that question's phrasings, turned into a distribution
   over the K retrieved questions by a softmax (temperature ``TAU``);
2. *classifier*: a multinomial logistic regression on the same encoder vectors (it learns which directions
   separate questions, where retrieval only measures closeness);
3. the two distributions are mixed, ``alpha * classifier + (1 - alpha) * retrieval``; the top question's
   mixed probability is the confidence, and below ``threshold`` the answer is "no answer".

``alpha`` and ``threshold`` are tuned on held-out data: 20 % of the phrasings of the answerable questions,
plus every phrasing of 15 % of the questions, which are left out of training so that they play queries with
no answer (rows with an empty question id, if the CSV has any, are such queries too). ``threshold`` maximises
``(1 - s) * P(right answer | answerable) + s * P(no answer | unanswerable)`` on held-out data, where ``s`` is
the expected share of unanswerable queries (``no_answer_share``: given, else the CSV's share of rows without
a question id, else 0.2). The final model is then refit on all rows with the tuned values.

Beyond an annotation product, and not here: the knowledge graph behind answers (entities, attributes,
answers computed from them) and the dialogue state machine (multi-turn slot filling, clarifying questions,
hand-over to a human). This module answers one query at a time from a fixed table of answers.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from labelpilot.data.types import FitReport
from labelpilot.encoders import get_encoder
from labelpilot.errors import InputError, NotFoundError, TrainingError
from labelpilot.files import read_rows
from labelpilot.registry import Registry
from labelpilot.registry.cache import VersionCache
from labelpilot.retrieval.index import VectorIndex

FORMAT_VERSION = 1
TAU = 0.05
TOP_K = 20
ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)


@dataclass(slots=True)
class FaqRow:
    query: str
    question_id: str  # "" = a query with no answer (used only to tune the threshold)
    answer: str = ""
    question: str = ""


def read_faq_csv(path: Path, *, query_col: str = "query", id_col: str = "question_id",
                 answer_col: str = "answer", question_col: str = "question") -> list[FaqRow]:

    rows: list[FaqRow] = []
    for row in read_rows(path):
        if row.error:
            raise InputError(f"{path}: line {row.line}: {row.error}", field="input")
        v = row.values
        for col in (query_col, id_col):
            if col not in v:
                raise InputError(f"{path}: line {row.line}: no column {col!r} (have {sorted(v)})", field=col)
        rows.append(FaqRow(str(v[query_col] or ""), str(v[id_col] or "").strip(), str(v.get(answer_col) or ""),
                           str(v.get(question_col) or "")))
    return rows


def _softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


class FaqModel:
    """Retrieval over phrasings + a linear classifier on encoder vectors (see the module doc)."""

    def __init__(self) -> None:
        self.questions: list[str] = []  # question ids, the classifier's class order
        self.texts: dict[str, str] = {}  # id -> standard question
        self.answers: dict[str, str] = {}
        self.alpha = 0.5
        self.threshold = 0.0
        self.no_answer_share = 0.2
        self.metrics: dict[str, float] = {}
        self.encoder = ""
        self.index: VectorIndex | None = None
        self.coef: np.ndarray | None = None
        self.intercept: np.ndarray | None = None
        self._lock = threading.Lock()

    # -- fitting ----------------------------------------------------------------------------------
    def _fit_parts(self, X: np.ndarray, y: list[str]) -> None:
        from sklearn.linear_model import LogisticRegression

        self.questions = sorted(set(y))
        index = VectorIndex("text", X.shape[1], encoder=self.encoder)
        index.add([f"p{i}" for i in range(len(y))], X, [{"q": q} for q in y])
        self.index = index
        if len(self.questions) > 1:
            clf = LogisticRegression(C=20.0, max_iter=500).fit(X, y)
            coef, intercept = clf.coef_, clf.intercept_
            if len(self.questions) == 2:  # binary: sklearn keeps one row for class 1
                coef, intercept = np.vstack([-coef, coef]) / 2, np.array([-intercept[0], intercept[0]]) / 2
            self.coef, self.intercept = coef.astype(np.float32), intercept.astype(np.float32)
        else:
            self.coef = np.zeros((1, X.shape[1]), np.float32)
            self.intercept = np.zeros(1, np.float32)

    def _probs(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(classifier, retrieval) probabilities over ``self.questions``, each (n, n_questions)."""
        assert self.index is not None and self.coef is not None and self.intercept is not None
        p_clf = _softmax(X @ self.coef.T + self.intercept)
        col = {q: j for j, q in enumerate(self.questions)}
        best = np.full((len(X), len(self.questions)), -np.inf, dtype=np.float32)
        for row, hits in enumerate(self.index.search(X, TOP_K)):
            for h in hits:
                j = col[h.payload["q"]]
                best[row, j] = max(best[row, j], h.score)
        p_ret = _softmax(np.where(np.isfinite(best), best / TAU, -1e9))
        return p_clf, p_ret

    @classmethod
    def fit(cls, rows: Sequence[FaqRow], *, seed: int = 0, no_answer_share: float | None = None) -> FaqModel:
        """``no_answer_share``: the expected share of queries that have no answer (the threshold's trade-off);
        default: the share of rows without a question id when the CSV has such rows, else 0.2."""

        answerable = [r for r in rows if r.question_id]
        if len({r.question_id for r in answerable}) < 2:
            raise TrainingError("FAQ training needs at least two standard questions (question ids)")
        enc = get_encoder()
        X = enc.encode([r.query for r in rows], persist=True)
        ids = np.array([r.question_id for r in rows], dtype=object)
        rng = np.random.default_rng(seed)
        qids = sorted({r.question_id for r in answerable})
        unseen = set(rng.permutation(qids)[: max(1, int(0.15 * len(qids)))].tolist()) if len(qids) >= 4 else set()
        train, held = [], []
        for q in qids:
            pos = np.flatnonzero(ids == q)
            if q in unseen:
                held.extend(pos.tolist())
                continue
            pos = rng.permutation(pos)
            n_held = int(0.2 * len(pos)) if len(pos) >= 3 else 0
            held.extend(pos[:n_held].tolist())
            train.extend(pos[n_held:].tolist())
        held.extend(np.flatnonzero(ids == "").tolist())
        model = cls()
        model.encoder = enc.name
        if no_answer_share is None:
            n_none = sum(1 for r in rows if not r.question_id)
            no_answer_share = n_none / len(rows) if n_none else 0.2
        if not 0.0 <= no_answer_share < 1.0:
            raise InputError("the no-answer share is from 0 to below 1", field="no_answer_share")
        model.no_answer_share = float(no_answer_share)
        metrics: dict[str, float] = {"questions": float(len(qids)), "phrasings": float(len(answerable))}
        if held and len({ids[i] for i in train}) >= 2:
            model._fit_parts(X[train], [ids[i] for i in train])
            model._tune(X[held], [ids[i] if ids[i] not in unseen else "" for i in held], metrics)
        full = cls()
        full.encoder, full.alpha, full.threshold, full.metrics = enc.name, model.alpha, model.threshold, metrics
        keep = [i for i, r in enumerate(rows) if r.question_id]
        full._fit_parts(X[keep], [ids[i] for i in keep])
        for r in answerable:
            full.texts.setdefault(r.question_id, r.question or r.query)
            if r.answer and r.question_id not in full.answers:
                full.answers[r.question_id] = r.answer
            if r.question:
                full.texts[r.question_id] = r.question
        return full

    def _tune(self, X: np.ndarray, truth: list[str], metrics: dict[str, float]) -> None:
        p_clf, p_ret = self._probs(X)
        truth_arr = np.array(truth, dtype=object)
        inscope = truth_arr != ""
        qs = np.array(self.questions, dtype=object)
        best_alpha, best_acc = 0.5, -1.0
        for a in ALPHAS:
            top = qs[np.argmax(a * p_clf + (1 - a) * p_ret, axis=1)]
            acc = float((top[inscope] == truth_arr[inscope]).mean()) if inscope.any() else 0.0
            metrics[f"heldout_top1_alpha_{a}"] = round(acc, 4)
            if acc > best_acc + 1e-9:
                best_alpha, best_acc = a, acc
        mixed = best_alpha * p_clf + (1 - best_alpha) * p_ret
        top, conf = qs[np.argmax(mixed, axis=1)], mixed.max(axis=1)
        right = top == truth_arr
        # held-out holds every phrasing of the left-out questions but a fifth of the others', so the
        # unanswerable share there is ~50 %; the objective weighs the two groups by ``no_answer_share`` instead
        share = self.no_answer_share if (~inscope).any() and inscope.any() else float((~inscope).mean())
        best_t, best_score = 0.0, -1.0
        for t in np.unique(np.concatenate([[0.0], conf])):
            answered = conf >= t
            gain_in = float((answered & right)[inscope].mean()) if inscope.any() else 0.0
            gain_out = float((~answered)[~inscope].mean()) if (~inscope).any() else 0.0
            score = (1 - share) * gain_in + share * gain_out
            if score > best_score + 1e-9:
                best_t, best_score = float(t), score
        self.alpha, self.threshold = best_alpha, best_t
        abstain = conf < best_t
        metrics |= {"alpha": best_alpha, "threshold": round(best_t, 4), "heldout_top1": round(best_acc, 4),
                    "heldout_weighted_accuracy": round(best_score, 4), "no_answer_share": share,
                    "heldout_no_answer_precision": round(float((~inscope[abstain]).mean()), 4) if abstain.any()
                    else float("nan"),
                    "heldout_queries": float(len(truth)), "heldout_unanswerable": float((~inscope).sum())}

    # -- answering --------------------------------------------------------------------------------
    def scores(self, X: np.ndarray) -> np.ndarray:
        p_clf, p_ret = self._probs(X)
        return self.alpha * p_clf + (1 - self.alpha) * p_ret

    def answer(self, queries: Sequence[str], top: int = 3) -> list[dict[str, Any]]:

        X = get_encoder().encode(list(queries))
        with self._lock:
            mixed = self.scores(X)
        out = []
        for row in mixed:
            order = np.argsort(-row)[:top]
            best = self.questions[order[0]]
            conf = float(row[order[0]])
            cands = [{"question_id": self.questions[j], "question": self.texts.get(self.questions[j], ""),
                      "score": round(float(row[j]), 6)} for j in order]
            if conf < self.threshold:
                out.append({"answered": False, "question_id": None, "question": None, "answer": None,
                            "confidence": round(conf, 6), "threshold": round(self.threshold, 6),
                            "candidates": cands})
            else:
                out.append({"answered": True, "question_id": best, "question": self.texts.get(best, ""),
                            "answer": self.answers.get(best, ""), "confidence": round(conf, 6),
                            "threshold": round(self.threshold, 6), "candidates": cands})
        return out

    # -- saving -----------------------------------------------------------------------------------
    @property
    def families(self) -> list[str]:
        return ["faq"]

    def save(self, directory: Path) -> None:
        assert self.index is not None and self.coef is not None and self.intercept is not None
        directory.mkdir(parents=True, exist_ok=True)
        self.index.save(directory / "phrasings")
        np.savez(directory / "classifier.npz", coef=self.coef, intercept=self.intercept)
        meta = {"format": FORMAT_VERSION, "questions": self.questions, "texts": self.texts, "answers": self.answers,
                "alpha": self.alpha, "threshold": self.threshold, "metrics": self.metrics, "encoder": self.encoder}
        (directory / "faq.json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, directory: Path) -> FaqModel:
        meta = json.loads((directory / "faq.json").read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT_VERSION:
            raise TrainingError(f"{directory}: FAQ format {meta.get('format')!r}, expected {FORMAT_VERSION}")
        self = cls()
        for key in ("questions", "texts", "answers", "alpha", "threshold", "metrics", "encoder"):
            setattr(self, key, meta[key])
        self.index = VectorIndex.load(directory / "phrasings")
        with np.load(directory / "classifier.npz") as data:
            self.coef, self.intercept = data["coef"], data["intercept"]
        return self


#: Loaded FAQ models kept per process (least recently used out first; a newer version replaces the old).
MAX_LOADED_FAQS = 16


class FaqStore:
    """FAQ models of a data dir, versioned in their own registry (``<data dir>/faq``)."""

    def __init__(self, root: Path) -> None:
        self.registry = Registry(Path(root))
        self._cache: VersionCache[FaqModel] = VersionCache(
            lambda name, version: FaqModel.load(self.registry.get(name, version).path), MAX_LOADED_FAQS)

    def register(self, name: str, model: FaqModel) -> int:
        report = FitReport(n_examples=int(model.metrics.get("phrasings", 0)), labels=model.questions,
                           metrics={k: v for k, v in model.metrics.items() if np.isfinite(v)})
        return self.registry.register(name, model, report=report).version  # type: ignore[arg-type]

    def get(self, name: str) -> tuple[int, FaqModel]:
        version = self.registry.serving_version(name)
        if version is None:
            raise NotFoundError(f"unknown FAQ {name!r}", field="faq")
        return version, self._cache.get(name, version)
