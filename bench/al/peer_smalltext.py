"""Peer run for the active-learning simulation (``bench/al/simulate.py``): the same simulation with
small-text's PoolBasedActiveLearner.

Run by path with the Python of a separate venv that has small-text (it is not a labelpilot dependency and
this file imports nothing from labelpilot)::

    /tmp/al-peer/bin/python peer_smalltext.py '{"data": "...npz", "strategy": "BreakingTies", ...}'

It gets the very same TF-IDF features, initial set, batch size, budget and classifier settings
(LogisticRegression saga, C, max_iter=30, tol=1e-3) as labelpilot's own strategies, and writes the curve
as JSON.
"""

from __future__ import annotations

import json
import sys
import time
import warnings

import numpy as np
from scipy import sparse


def main(cfg: dict) -> None:
    import small_text as st
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    warnings.simplefilter("ignore", ConvergenceWarning)
    warnings.simplefilter("ignore", UserWarning)
    d = np.load(cfg["data"])
    X = sparse.csr_matrix((d["X_data"], d["X_indices"], d["X_indptr"]), shape=tuple(d["X_shape"]))
    Xt = sparse.csr_matrix((d["Xt_data"], d["Xt_indices"], d["Xt_indptr"]), shape=tuple(d["Xt_shape"]))
    y, yt = d["y"], d["yt"]
    multi = bool(cfg["multi_label"])
    n_classes = int(cfg["n_classes"])
    seed = int(cfg["seed"])
    np.random.seed(seed)
    base = LogisticRegression(C=cfg["C"], solver="saga", max_iter=30, tol=1e-3, random_state=seed)
    y_st = sparse.csr_matrix(y) if multi else y
    dataset = st.SklearnDataset(X, y_st)
    factory = st.SklearnClassifierFactory(base, n_classes, kwargs={"multi_label": multi})
    qs = getattr(st, cfg["strategy"])()
    learner = st.PoolBasedActiveLearner(factory, qs, dataset)
    init = np.array(cfg["init"], dtype=np.int64)
    labels, scores, round_s, select_s = [], [], [], []
    t_fit0 = time.perf_counter()
    learner.initialize_data(init, y_st[init])
    t_fit = time.perf_counter() - t_fit0
    while True:
        labels.append(len(learner.indices_labeled))
        scores.append(evaluate(learner.classifier.model, Xt, yt, multi, n_classes))
        if labels[-1] >= cfg["budget"]:
            break
        k = min(cfg["batch"], cfg["budget"] - labels[-1], X.shape[0] - labels[-1])
        t0 = time.perf_counter()
        idx = learner.query(num_samples=k)
        t1 = time.perf_counter()
        learner.update(y_st[idx])
        t2 = time.perf_counter()
        select_s.append(t1 - t0)
        round_s.append(t_fit + (t1 - t0))
        t_fit = t2 - t1
    with open(cfg["out"], "w", encoding="utf-8") as fh:
        json.dump({"labels": labels, "scores": scores, "round_seconds": round_s, "select_seconds": select_s}, fh)


def evaluate(model: object, Xt: object, yt: np.ndarray, multi: bool, n_classes: int) -> float:
    """The same scores as labelpilot's simulation: accuracy, or micro-F1 with the top label forced."""
    raw = model.predict_proba(Xt)  # type: ignore[attr-defined]
    raw = raw.toarray() if sparse.issparse(raw) else np.asarray(raw)
    if multi:
        P = raw
        pred = P >= 0.5
        pred[np.arange(len(P)), P.argmax(axis=1)] = True
        tp = float(np.sum(pred & (yt == 1)))
        fp = float(np.sum(pred & (yt == 0)))
        fn = float(np.sum(~pred & (yt == 1)))
        return 2 * tp / max(2 * tp + fp + fn, 1.0)
    P = np.zeros((Xt.shape[0], n_classes))  # type: ignore[attr-defined]
    P[:, model.classes_] = raw  # type: ignore[attr-defined]
    return float(np.mean(P.argmax(axis=1) == yt))


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
