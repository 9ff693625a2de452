"""text-linear calibration and thresholds: the SVC/NB mix fitted by log-loss, Platt scaling, per-label thresholds.

Held-out scores come from :mod:`.training`; what is fitted here is folded into the served weights there.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def _row_scaled(s: np.ndarray) -> np.ndarray:
    """Each row divided by its standard deviation over the classes (rows without spread become 0).

    Complement NB scores grow with the text's length and vocabulary; on their own scale they would
    over-rule the SVC on long texts and vanish on short ones. (Softmax ignores the row means.)"""
    sd = s.std(axis=1, keepdims=True)
    return np.divide(s, sd, out=np.zeros_like(s), where=sd > 1e-12)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50.0, 50.0)))



class _Calibration:
    """The calibration step of :class:`~labelpilot.models.text_linear.model.TextLinearModel` (a mixin)."""

    def _calibrate(
        self, scores: dict[str, Any] | None, y: np.ndarray | None, k: int, multilabel: bool
    ) -> dict[str, float]:
        """Fit the calibration (and thresholds) on held-out scores; return the held-out metrics."""
        if multilabel:
            return self._calibrate_multilabel(scores, y, k)
        return self._calibrate_single(scores, y, k)

    def _calibrate_single(self, scores: dict[str, Any] | None, y: np.ndarray | None, k: int) -> dict[str, float]:
        """Fit ``logits = a*svc / (1 + t*rowstd(svc)) + b*nb / rowstd(nb)`` by log-loss (weak prior).

        ``t`` lets the data choose between a plain temperature (t = 0: what is best with few classes,
        where the spread of the scores *is* the confidence) and scaling each row to a common spread
        (large t: better with many classes, e.g. TNEWS' 15)."""
        from scipy.optimize import minimize

        prior = np.array([2.0, 0.0, 0.5 if self.use_nb else 0.0])
        if scores is None or y is None or y.shape[0] == 0:
            self.calibration_ = {"a": float(prior[0]), "t": 0.0, "b": float(prior[2]), "fitted": False}
            return {}
        s1 = scores["svc"]
        sd1 = s1.std(axis=1, keepdims=True)
        s2 = _row_scaled(scores["nb"]) if scores["nb"] is not None else np.zeros_like(s1)
        m = y.shape[0]
        rows = np.arange(m)
        lam = 1.0 / m  # a weak prior that fades with more held-out data
        scale = np.array([1.0, 10.0, 0.5])

        def logits(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            u = 1.0 + p[1] * sd1
            return p[0] * s1 / u + p[2] * s2, u

        def objective(p: np.ndarray) -> tuple[float, np.ndarray]:
            z, u = logits(p)
            z -= z.max(axis=1, keepdims=True)
            logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
            g = np.exp(logp)
            g[rows, y] -= 1.0  # d nll / d logits, times m
            nll = -logp[rows, y].mean()
            grad = np.array(
                [
                    (g * s1 / u).sum() / m,
                    (g * (-p[0] * s1 * sd1 / (u * u))).sum() / m,
                    (g * s2).sum() / m,
                ]
            )
            d = (p - prior) / scale
            return nll + 0.5 * lam * float(d @ d), grad + lam * d / scale

        bounds = [(0.01, 50.0), (0.0, 100.0), (0.0, 50.0 if self.use_nb else 0.0)]
        res = minimize(objective, prior, jac=True, method="L-BFGS-B", bounds=bounds)
        a, t, b = (float(v) for v in res.x)
        self.calibration_ = {"a": a, "t": t, "b": b, "fitted": True}
        prob = _softmax(logits(res.x)[0])
        self._heldout_probs = prob
        pred = prob.argmax(axis=1)
        return {
            "accuracy": float((pred == y).mean()),
            "macro_f1": _macro_f1(y, pred, k),
            "log_loss": float(-np.log(np.clip(prob[rows, y], 1e-15, None)).mean()),
        }

    def _calibrate_multilabel(self, scores: dict[str, Any] | None, y: np.ndarray | None, k: int) -> dict[str, float]:
        self.thresholds_ = np.full(k, 0.5)
        if scores is None or y is None or y.shape[0] == 0:
            self.calibration_ = {"a": [2.0] * k, "c": [0.0] * k, "fitted": False}
            return {}
        s = scores["svc"]
        a_pool, c_pool = _platt(s.ravel(), y.ravel().astype(np.float64), 2.0, 0.0)
        a = np.full(k, a_pool)
        c = np.full(k, c_pool)
        for j in range(k):
            pos = int(y[:, j].sum())
            if pos >= 10 and y.shape[0] - pos >= 10:
                a[j], c[j] = _platt(s[:, j], y[:, j].astype(np.float64), a_pool, c_pool)
        prob = _sigmoid(a * s + c)
        for j in range(k):
            if int(y[:, j].sum()) >= 3:
                self.thresholds_[j] = (_best_threshold(prob[:, j], y[:, j]) if self.threshold_rule == "f1"
                                       else _gain_threshold(prob[:, j], y[:, j]))
        self.calibration_ = {"a": a.tolist(), "c": c.tolist(), "fitted": True}
        pred = (prob >= self.thresholds_).astype(np.int8)
        return _multilabel_metrics(y, pred)


# ---------------------------------------------------------------------------------------------
# small numeric helpers


def _macro_f1(y: np.ndarray, pred: np.ndarray, k: int) -> float:
    tp = np.bincount(y[pred == y], minlength=k).astype(np.float64)
    n_true = np.bincount(y, minlength=k)
    n_pred = np.bincount(pred, minlength=k)
    used = (n_true + n_pred) > 0
    f1 = np.divide(2 * tp, n_true + n_pred, out=np.zeros(k), where=used)
    return float(f1[used].mean()) if used.any() else 0.0


def _multilabel_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    tp = (y & pred).sum(axis=0).astype(np.float64)
    n_true = y.sum(axis=0).astype(np.float64)
    n_pred = pred.sum(axis=0).astype(np.float64)
    denom = n_true + n_pred
    used = denom > 0
    per_label = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=used)
    micro = 2 * tp.sum() / denom.sum() if denom.sum() > 0 else 0.0
    return {
        "micro_f1": float(micro),
        "macro_f1": float(per_label[used].mean()) if used.any() else 0.0,
        "exact_match": float((y == pred).all(axis=1).mean()),
    }


def _platt(s: np.ndarray, t: np.ndarray, a0: float, c0: float) -> tuple[float, float]:
    """Fit p = sigmoid(a*s + c) by log-loss, with a weak prior towards (a0, c0)."""
    from scipy.optimize import minimize

    m = s.shape[0]
    lam = 1.0 / max(m, 1)
    prior = np.array([a0, c0])

    def objective(p: np.ndarray) -> tuple[float, np.ndarray]:
        z = p[0] * s + p[1]
        # log(1 + exp(z)) - t*z, computed stably
        loss = np.logaddexp(0.0, z) - t * z
        g = _sigmoid(z) - t
        d = p - prior
        return float(loss.mean() + 0.5 * lam * d @ d), np.array([(g * s).mean(), g.mean()]) + lam * d

    res = minimize(objective, prior, jac=True, method="L-BFGS-B", bounds=[(0.01, 50.0), (-50.0, 50.0)])
    return float(res.x[0]), float(res.x[1])


def _best_threshold(p: np.ndarray, t: np.ndarray) -> float:
    """The threshold in [0.05, 0.95] with the best F1 on (p, t); midway between neighbouring scores."""
    order = np.argsort(-p, kind="stable")
    ps, ts = p[order], t[order].astype(np.float64)
    tp = np.cumsum(ts)
    n_pos = ts.sum()
    f1 = 2 * tp / (np.arange(1, ps.shape[0] + 1) + n_pos)  # predicting the top i+1 as positive
    ok = (ps >= 0.05) & (ps <= 0.95)
    if not ok.any():
        return 0.5
    best = int(np.flatnonzero(ok)[np.argmax(f1[ok])])
    nxt = ps[best + 1] if best + 1 < ps.shape[0] else 0.0
    return float(np.clip((ps[best] + nxt) / 2.0, 0.05, 0.95))


def _gain_threshold(p: np.ndarray, t: np.ndarray) -> float:
    """The threshold (>= 0.5) with the most ``tp - fp`` on (p, t): a proposed label saves one click when
    right and costs one when wrong. Above every score (nothing proposed) when no cut gains."""
    order = np.argsort(-p, kind="stable")
    ps, ts = p[order], t[order].astype(np.float64)
    gain = np.cumsum(2.0 * ts - 1.0)  # tp - fp when the top i+1 are proposed
    ok = ps > 0.5
    if not ok.any():
        return 0.5
    best = int(np.flatnonzero(ok)[np.argmax(gain[ok])])
    if gain[best] <= 0.0:
        return float(min(max(0.5, ps[0] + 1e-6), 0.999))
    nxt = max(float(ps[best + 1]) if best + 1 < ps.shape[0] else 0.5, 0.5)
    return float(np.clip((ps[best] + nxt) / 2.0, 0.5, 0.999))
