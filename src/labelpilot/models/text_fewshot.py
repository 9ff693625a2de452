"""A few-shot head on encoder vectors, mixed with text-linear's TF-IDF model (single-label).

Head
    Ridge regression of one-hot targets on ``[vector, 1]`` (512 + 1 columns). Its exact leave-one-out
    predictions come from one eigendecomposition of ``XᵀX`` (the hat-matrix identity
    ``loo_i = (f_i - h_ii y_i) / (1 - h_ii)``), so choosing the ridge penalty and calibrating need no refits:
    ~0.1 s at 1,000 examples, where 5-fold logistic regression would take seconds. The head's logits are
    ``a * ridge + b * zero_shot + c * centroid`` (``zero_shot`` = cosine to the label-name prototypes /
    temperature, the label names' prior; ``centroid`` = cosine to class centroids in which each label's name
    counts as one example, exact leave-one-out too), with ``a, b, c`` fitted by log-loss on the leave-one-out
    scores under a Gaussian prior (a 5, b 1, c 0) worth ``PRIOR_ROWS`` (10) rows: with a handful of
    examples the label names carry the prediction (a weight fitted on 5 rows used to drop the names' weight
    to its floor whenever the zero-shot guess missed on those 5), with many the data decides.
Mix
    ``p = w * p_head + (1 - w) * p_tfidf`` with ``w`` in {0, 0.1, …, 1} chosen by log-loss on the m held-out
    predictions of both (TF-IDF's out-of-fold or held-out-slice probabilities, the head's leave-one-out
    ones), then shrunk toward the head as if ``MIX_PRIOR_ROWS`` (20) more rows had chosen it:
    ``w = (m * w_best + 20) / (m + 20)``. Small data stays near the encoder (a 10-example TF-IDF model that
    won on 10 held-out rows no longer takes half the prediction), large data moves to the TF-IDF model where
    that is better. The three defaults were chosen on TREC and SST-2 task streams (bench/RESULTS.md,
    *Early models keep the label names' prior*); TNEWS was held out.
Every label of the control (when zero-shot is ready)
    The head then covers all the control's labels, not only the annotated ones (``seen``: where the TF-IDF
    model's classes sit among them). Ridge targets are centred per label (unseen labels: zero columns), so
    the ridge says "which of the seen labels" without a bias *for* the seen ones, and the label-name prior
    lets an unseen label win; TF-IDF probabilities get zeros for unseen labels before the mix. With a
    single annotated label there is no TF-IDF model (``seen`` only) and the head alone serves.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from labelpilot.data.types import Example
from labelpilot.encoders import EncoderUnavailable, TextEncoder, get_encoder
from labelpilot.models.text_zeroshot import TEMPERATURE, ZeroShot
from labelpilot.schema.types import ControlSpec

log = logging.getLogger("labelpilot.models")

LAMBDAS = (0.3, 1.0, 3.0, 10.0, 30.0)
WEIGHTS = tuple(i / 10 for i in range(11))
#: a third expert: cosine to class centroids in which each label's name counts as this many examples
CENTROIDS = True
PSEUDO_EXAMPLES = 1.0
#: the logit weights' prior (ridge 5, label names 1) counts as this many held-out rows
PRIOR_ROWS = 10.0
#: the head-vs-TF-IDF weight chosen on m held-out rows is shrunk toward the head alone as if this many rows
#: had preferred it: w = (m * w_best + MIX_PRIOR_ROWS) / (m + MIX_PRIOR_ROWS)
MIX_PRIOR_ROWS = 20.0


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _nll(p: np.ndarray, y: np.ndarray) -> float:
    return float(-np.log(np.clip(p[np.arange(y.shape[0]), y], 1e-12, None)).mean())


def _with_bias(v: np.ndarray) -> np.ndarray:
    return np.hstack([np.asarray(v, dtype=np.float64), np.ones((v.shape[0], 1))])


def ridge_loo(x: np.ndarray, y1: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(weights (d, k), leave-one-out scores (n, k), penalty) of the ridge with the best LOO squared error."""
    g = x.T @ x
    s, v = np.linalg.eigh(g)
    s = np.clip(s, 0.0, None)
    xv = x @ v
    xty = v.T @ (x.T @ y1)
    best: tuple[float, np.ndarray, np.ndarray, float] | None = None
    for lam in LAMBDAS:
        inv = 1.0 / (s + lam)
        fitted = xv @ (inv[:, None] * xty)
        h = np.clip((xv * xv) @ inv, 0.0, 0.999)
        loo = (fitted - h[:, None] * y1) / (1.0 - h[:, None])
        err = float(((loo - y1) ** 2).sum())
        if best is None or err < best[0]:
            best = (err, loo, v @ (inv[:, None] * xty), lam)
    assert best is not None
    return best[2], best[1], best[3]


def _fit_ab(r: np.ndarray, zs: np.ndarray | None, y: np.ndarray, b_min: float = 0.0,
            cen: np.ndarray | None = None, prior_rows: float | None = None) -> tuple[float, float, float]:
    """Logit weights (a on the ridge scores, b on the zero-shot logits, c on the centroid logits) by
    log-loss on held-out scores, with a Gaussian prior (a 5, b 1, c 0) worth ``prior_rows`` rows
    (default :data:`PRIOR_ROWS`): with a handful of rows the label names keep their weight."""
    from scipy.optimize import minimize  # lazy: scipy.optimize costs ~0.2 s to import, only fit needs it

    m = y.shape[0]
    rows = np.arange(m)
    feats = [r, zs if zs is not None else np.zeros_like(r), cen if cen is not None else np.zeros_like(r)]
    prior = np.array([5.0, 1.0 if zs is not None else 0.0, 0.0])
    lam = (PRIOR_ROWS if prior_rows is None else prior_rows) / max(m, 1)

    def objective(p: np.ndarray) -> tuple[float, np.ndarray]:
        z = p[0] * feats[0] + p[1] * feats[1] + p[2] * feats[2]
        z -= z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        g = np.exp(logp)
        g[rows, y] -= 1.0
        d = p - prior
        grad = np.array([(g * f).sum() / m for f in feats]) + lam * d
        return float(-logp[rows, y].mean() + 0.5 * lam * d @ d), grad

    bounds = [(0.0, 100.0), (b_min if zs is not None else 0.0, 5.0 if zs is not None else 0.0),
              (0.0, 5.0 if cen is not None else 0.0)]
    res = minimize(objective, prior, jac=True, method="L-BFGS-B", bounds=bounds)
    return float(res.x[0]), float(res.x[1]), float(res.x[2])


def centroids_loo(vectors: np.ndarray, y: np.ndarray, k: int, protos: np.ndarray | None,
                  beta: float) -> tuple[np.ndarray, np.ndarray]:
    """Class centroids (k, dim), unit length: the sum of a label's example vectors plus ``beta`` times its
    label-name prototype (the name counts as ``beta`` pseudo-examples; a label without examples is its
    prototype, without a prototype a zero row), and each example's cosine to every centroid with itself
    left out of its own label's centroid (n, k)."""
    v = np.asarray(vectors, dtype=np.float64)
    sums = np.zeros((k, v.shape[1]))
    np.add.at(sums, y, v)
    if protos is not None:
        sums += beta * np.asarray(protos, dtype=np.float64)
    norms = np.linalg.norm(sums, axis=1)
    dots = v @ sums.T  # (n, k)
    rows = np.arange(v.shape[0])
    own = dots[rows, y]
    sq = np.clip(norms[y] ** 2 - 2.0 * own + (v * v).sum(axis=1), 0.0, None)
    cos = dots / np.maximum(norms, 1e-12)[None, :]
    alone = sq < 1e-10  # the example was its label's centroid all by itself: nothing left to compare with
    cos[rows, y] = np.where(alone, 0.0, (own - (v * v).sum(axis=1)) / np.sqrt(np.where(alone, 1.0, sq)))
    return (sums / np.maximum(norms, 1e-12)[:, None]).astype(np.float32), cos


@dataclass
class FewShotHead:
    """What a trained text-linear model keeps of the encoder side (saved with it)."""

    encoder: str
    weights: np.ndarray  # (dim + 1, k) float32
    a: float
    b: float
    mix: float  # weight of the head in the mixed probabilities
    prototypes: np.ndarray | None  # (k, dim) label-name prototypes of the model's classes (b > 0)
    seen: np.ndarray | None = None  # full label space: column of each TF-IDF class among the head's
    c: float = 0.0  # weight of the centroid logits
    centroids: np.ndarray | None = None  # (k, dim) unit class centroids, label names as pseudo-examples (c > 0)

    def __post_init__(self) -> None:
        # (dim, k) C-contiguous: OpenBLAS was ~100x slower on ``vectors @ prototypes.T`` (a transposed operand)
        self._proto_t = np.ascontiguousarray(self.prototypes.T) if self.prototypes is not None else None
        self._cen_t = np.ascontiguousarray(self.centroids.T) if self.centroids is not None else None

    def head_probs(self, vectors: np.ndarray) -> np.ndarray:
        z = self.a * (_with_bias(vectors) @ self.weights)
        v32 = np.asarray(vectors, dtype=np.float32)
        if self._proto_t is not None and self.b:
            z = z + self.b * (v32 @ self._proto_t) / TEMPERATURE
        if self._cen_t is not None and self.c:
            z = z + self.c * (v32 @ self._cen_t) / TEMPERATURE
        return _softmax(z)

    def to_full(self, p_tfidf: np.ndarray) -> np.ndarray:
        """TF-IDF probabilities in the head's label space (zeros for labels it never saw)."""
        if self.seen is None:
            return p_tfidf
        out = np.zeros((p_tfidf.shape[0], self.weights.shape[1]), dtype=np.float64)
        out[:, self.seen] = p_tfidf
        return out

    def combine(self, p_tfidf: np.ndarray | None, examples: Sequence[Example]) -> np.ndarray:
        """The mixed probabilities; the TF-IDF ones alone when the encoder is unavailable here
        (``p_tfidf`` None: a head-only model, which needs the encoder)."""
        p = self.to_full(p_tfidf) if p_tfidf is not None else None
        if p is not None and self.mix <= 0.0:
            return p
        try:
            enc = get_encoder()
        except EncoderUnavailable:
            if p is None:
                raise
            return p
        if enc.name != self.encoder:
            if p is None:
                raise EncoderUnavailable(f"the model was trained with encoder {self.encoder}, not {enc.name}")
            return p
        head = self.head_probs(enc.encode([ex.text or "" for ex in examples]))
        return head if p is None else self.mix * head + (1.0 - self.mix) * p

    def to_saved(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays = {"fs_weights": self.weights.astype(np.float32)}
        if self.seen is not None:
            arrays["fs_seen"] = self.seen.astype(np.int64)
        if self.prototypes is not None:
            arrays["fs_prototypes"] = self.prototypes.astype(np.float32)
        if self.centroids is not None:
            arrays["fs_centroids"] = self.centroids.astype(np.float32)
        return arrays, {"encoder": self.encoder, "a": self.a, "b": self.b, "c": self.c, "mix": self.mix}

    @classmethod
    def from_saved(cls, arrays: Any, meta: dict[str, Any] | None) -> FewShotHead | None:
        if not meta or "fs_weights" not in arrays:
            return None
        protos = arrays.get("fs_prototypes")
        seen = arrays.get("fs_seen")
        cen = arrays.get("fs_centroids")
        return cls(str(meta["encoder"]), np.asarray(arrays["fs_weights"], np.float32), float(meta["a"]),
                   float(meta["b"]), float(meta["mix"]), protos, seen, float(meta.get("c", 0.0)), cen)


def class_prototypes(
    control: ControlSpec, encoder: TextEncoder, classes: Sequence[str], descriptions: dict[str, str] | None = None
) -> np.ndarray | None:
    zs = ZeroShot(control, encoder, descriptions)
    if not zs.ready or zs.prototypes is None:
        return None
    index = {lab.key: j for j, lab in enumerate(zs.labels)}
    if not all(c in index for c in classes):
        return None
    return zs.prototypes[[index[c] for c in classes]]


def fit_head(
    control: ControlSpec,
    encoder: TextEncoder,
    classes: Sequence[str],
    train: Sequence[Example],
    y: np.ndarray,
    heldout: dict[str, Any],
    descriptions: dict[str, str] | None = None,
    full: bool = False,
) -> tuple[FewShotHead, dict[str, float]]:
    """Fit the head on ``train`` and choose the mix weight on TF-IDF's held-out predictions.

    ``heldout``: ``probs`` (m, k) of the TF-IDF model (None: none, the head alone is mixed in) and either
    ``rows`` (indices into ``train``: out-of-fold or held-out-slice rows) or ``val`` examples with ``val_y``.
    ``full``: ``classes`` are all the control's labels, some never annotated (centred targets, the label-name
    prior always on)."""
    k = len(classes)
    vectors = encoder.encode([ex.text or "" for ex in train], persist=True)  # the next run reads them back
    x = _with_bias(vectors)
    y1 = np.zeros((y.shape[0], k))
    y1[np.arange(y.shape[0]), y] = 1.0
    if full:
        y1 -= y1.mean(axis=0, keepdims=True)
    w, loo, lam = ridge_loo(x, y1)
    protos = class_prototypes(control, encoder, classes, descriptions)
    zs = (vectors @ np.ascontiguousarray(protos.T)) / TEMPERATURE if protos is not None else None
    centroids, cen_loo = None, None
    if CENTROIDS:
        centroids, cos = centroids_loo(vectors, y, k, protos, PSEUDO_EXAMPLES)
        cen_loo = cos / TEMPERATURE
    a, b, c = _fit_ab(loo, zs, y, b_min=0.2 if full else 0.0, cen=cen_loo)
    head = FewShotHead(encoder.name, w.astype(np.float32), a, b, 0.0, protos if b > 0 else None, None, c,
                       centroids if c > 0 else None)
    metrics: dict[str, float] = {"encoder_ridge_penalty": lam}
    if heldout.get("probs") is None:
        head.mix = 1.0
        metrics["encoder_mix"] = 1.0
        return head, metrics
    if heldout.get("val") is not None:
        p_head = head.head_probs(encoder.encode([ex.text or "" for ex in heldout["val"]]))
        y_ho = np.asarray(heldout["val_y"])
    else:
        rows = np.asarray(heldout["rows"], dtype=np.int64)
        z = a * loo[rows] + (b * zs[rows] if zs is not None else 0.0)
        if cen_loo is not None and c > 0:
            z = z + c * cen_loo[rows]
        p_head, y_ho = _softmax(z), y[rows]
    p_tfidf = np.asarray(heldout["probs"])
    losses = {wt: _nll(wt * p_head + (1.0 - wt) * p_tfidf, y_ho) for wt in WEIGHTS}
    best = min(losses, key=lambda wt: (losses[wt], -wt))
    m_ho = float(y_ho.shape[0])
    head.mix = round((m_ho * best + MIX_PRIOR_ROWS) / (m_ho + MIX_PRIOR_ROWS), 3)
    losses.setdefault(head.mix, _nll(head.mix * p_head + (1.0 - head.mix) * p_tfidf, y_ho))
    p_mix = head.mix * p_head + (1.0 - head.mix) * p_tfidf
    metrics.update({
        "encoder_mix": head.mix,
        "encoder_accuracy": float((p_head.argmax(axis=1) == y_ho).mean()),
        "tfidf_accuracy": float((p_tfidf.argmax(axis=1) == y_ho).mean()),
        "mixed_accuracy": float((p_mix.argmax(axis=1) == y_ho).mean()),
        "mixed_log_loss": losses[head.mix],
        "encoder_heldout_n": float(y_ho.shape[0]),
    })
    return head, metrics
