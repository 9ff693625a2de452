"""Query strategies: scores, tie-breaking, de-duplication, span aggregation, diversity, stopping, names."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy import sparse

from labelpilot.data.types import Prediction
from labelpilot.errors import InputError
from labelpilot.strategies import (
    DEFAULT_STRATEGY,
    Badge,
    ClusterSampling,
    ColdStart,
    DiverseUncertainty,
    EntropySampling,
    KCenterGreedy,
    LeastConfidence,
    MarginSampling,
    MultiLabelUncertainty,
    Pool,
    RandomSampling,
    SpanUncertainty,
    StoppingMonitor,
    agreement,
    canonical_name,
    entropy,
    get_strategy,
    item_score,
    label_closeness,
    least_confidence,
    margin,
    multilabel_uncertainty,
    normalize_text,
    review_scores,
    stop_advice,
)

P = np.array(
    [
        [0.90, 0.05, 0.05],  # sure
        [0.40, 0.40, 0.20],  # a tie between two classes
        [0.34, 0.33, 0.33],  # almost uniform
        [0.60, 0.30, 0.10],
    ]
)


def test_uncertainty_scores() -> None:
    np.testing.assert_allclose(least_confidence(P), [0.10, 0.60, 0.66, 0.40])
    np.testing.assert_allclose(margin(P), [0.15, 1.00, 0.99, 0.70])  # breaking ties: a tie scores 1
    h = entropy(P)
    assert h.argmax() == 2 and h.argmin() == 0 and h.min() >= 0 and h.max() <= 1


def test_selection_order_scores_and_name() -> None:
    pool = Pool(probs=P)
    for strat, first in ((LeastConfidence(), 2), (MarginSampling(), 1), (EntropySampling(), 2)):
        sel = strat.select(pool, 2)
        assert sel.indices[0] == first and len(set(sel.indices.tolist())) == 2
        assert sel.scores.shape == (4,) and sel.strategy == strat.name
        assert set(sel.ranking().tolist()) == {0, 1, 2, 3}


def test_ties_broken_at_random_not_by_position() -> None:
    pool = Pool(probs=np.full((50, 2), 0.5))
    firsts = {int(MarginSampling(random_state=s).select(pool, 1).indices[0]) for s in range(20)}
    assert len(firsts) > 5  # not always item 0
    a = MarginSampling(random_state=3).select(pool, 5).indices
    b = MarginSampling(random_state=3).select(pool, 5).indices
    assert a.tolist() == b.tolist()  # but reproducible per seed


def test_batches_skip_exact_and_near_duplicates() -> None:
    texts = [
        "The match was great!",
        "the match was  great",
        "The match was great!!",
        "stocks fell",
        "rain today",
        "The match was great today",
    ]
    probs = np.array([[0.5, 0.5], [0.5, 0.5], [0.5, 0.5], [0.6, 0.4], [0.7, 0.3], [0.51, 0.49]])
    sel = MarginSampling(random_state=0).select(Pool(probs=probs, texts=texts), 3)
    chosen = [texts[i] for i in sel.indices]
    assert len({normalize_text(t) for t in chosen}) == 3
    assert sum(normalize_text(t) == "thematchwasgreat" for t in chosen) == 1
    assert sel.info["skipped_duplicates"] >= 2
    # near duplicates by cosine on the pool vectors
    vecs = np.array([[1, 0, 0], [0.999, 0.01, 0], [0, 1, 0], [0, 0, 1]], dtype=float)
    sel = LeastConfidence().select(Pool(probs=np.full((4, 2), 0.5), vectors=vecs), 3)
    assert not {0, 1} <= set(sel.indices.tolist())
    # dedupe=None keeps them (only repeated positions are removed)
    sel = LeastConfidence(dedupe=None, random_state=0).select(Pool(probs=np.full((4, 2), 0.5), vectors=vecs), 4)
    assert sorted(sel.indices.tolist()) == [0, 1, 2, 3]


def test_random_sampling_distinct_and_seeded() -> None:
    pool = Pool(probs=np.random.default_rng(0).dirichlet([1, 1, 1], 100))
    a = RandomSampling(random_state=1).select(pool, 30)
    assert len(set(a.indices.tolist())) == 30
    assert a.indices.tolist() == RandomSampling(random_state=1).select(pool, 30).indices.tolist()


def test_invalid_predictions_never_selected() -> None:
    preds = [
        Prediction(labels=("a",), probs={"a": 0.5, "b": 0.5}),
        Prediction(error="bad image"),
        Prediction(labels=("a",), probs={"a": 0.9, "b": 0.1}),
    ]
    pool = Pool.from_predictions(preds, ["a", "b"])
    sel = LeastConfidence().select(pool, 3)
    assert 1 not in sel.indices and np.isnan(sel.scores[1])


def test_multilabel_closeness_to_threshold() -> None:
    probs = np.array([[0.5, 0.0], [0.9, 0.1], [0.3, 0.3]])
    np.testing.assert_allclose(label_closeness(probs, 0.5)[0], [1.0, 0.0])
    close = label_closeness(np.array([[0.3, 0.65]]), 0.3)
    np.testing.assert_allclose(close, [[1.0, 0.5]])
    pool = Pool(probs=probs, multi_label=True)
    assert MultiLabelUncertainty(reduce="max").select(pool, 1).indices[0] == 0
    assert MultiLabelUncertainty(reduce="mean").select(pool, 1).indices[0] == 2
    # the default: which label is it? (normalised top-2 margin); row 2 ties its two labels
    assert MultiLabelUncertainty().select(pool, 1).indices[0] == 2
    np.testing.assert_allclose(multilabel_uncertainty(probs, reduce="margin"), [0.0, 0.2, 1.0])
    # seed-003 names work on multi-label pools too: least confidence = no label is confidently present
    assert LeastConfidence().select(pool, 1).indices[0] == 2
    assert MarginSampling().select(pool, 1).indices[0] == 2


def test_span_aggregations_and_length_bias() -> None:
    short = np.array([0.6, 0.99])
    long = np.array([0.6, 0.99, 0.99, 0.99, 0.99, 0.99, 0.99, 0.99])
    assert item_score(short, "max") == pytest.approx(0.4) == item_score(long, "max")
    assert item_score(short, "mean") > item_score(long, "mean")
    assert item_score(short, "mnlp") > item_score(long, "mnlp")  # normalised: the short one is less sure
    assert item_score(long, "sum") > item_score(short, "sum")  # sum favours long sentences
    marg = np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])
    assert item_score(marg, "max", "entropy") > 0.6
    pool = Pool(token_probs=[short, long, np.array([0.99, 0.99])])
    sel = SpanUncertainty("mnlp").select(pool, 1)
    assert sel.indices.tolist() == [0]
    # token budget: 9 tokens fit the short (2) and the long (8) only when the budget allows it
    sel = SpanUncertainty("max", token_budget=3, random_state=0).select(pool, 10)
    assert sum(len(pool.token_probs[i]) for i in sel.indices[:-1]) < 3
    # the generic uncertainty strategies accept span pools (MNLP by default)
    assert LeastConfidence().select(pool, 1).indices.tolist() == [0]


def _clusters(rng: np.random.Generator, per: int = 20) -> np.ndarray:
    centres = np.eye(3) * 10
    return np.vstack([c + rng.normal(0, 0.3, (per, 3)) for c in centres])


def test_kcenter_and_kmeans_cover_the_clusters() -> None:
    rng = np.random.default_rng(0)
    X = _clusters(rng)
    truth = np.repeat([0, 1, 2], 20)
    for strat in (KCenterGreedy(random_state=0), ClusterSampling(random_state=0), ColdStart(random_state=0)):
        sel = strat.select(Pool(vectors=X), 3)
        assert sorted(truth[sel.indices].tolist()) == [0, 1, 2], strat.name
    # core-set starts from the labelled items: with cluster 0 labelled it avoids it
    sel = KCenterGreedy(random_state=0).select(Pool(vectors=X, labeled_vectors=X[:3]), 2)
    assert 0 not in truth[sel.indices]


def test_cold_start_from_texts_only_is_stratified() -> None:
    sport = ["football", "tennis", "rugby", "cricket", "hockey", "golf"]
    verbs = ["final won by", "semi final lost by", "derby drawn by", "cup match for", "league game of"]
    teams = ["the home side", "the visitors", "a young squad", "the champions", "our club", "the rivals"]
    texts = [f"{sport[i % 6]} {verbs[i % 5]} {teams[(i // 5) % 6]}" for i in range(30)]
    texts += [
        f"stock market {w} as {x}"
        for w in ("closes higher", "falls sharply")
        for x in ("banks rally", "oil slides", "bond yields jump", "tech shares slump", "the dollar firms")
    ]
    sel = ColdStart(random_state=0, n_clusters=2).select(Pool(texts=texts), 8)
    chosen = [texts[i] for i in sel.indices]
    assert len(chosen) == 8 and len(set(chosen)) == 8
    assert 1 <= sum("stock" in t for t in chosen) <= 7  # both kinds of text are represented
    assert sel.info["clusters"] == 2 and np.isfinite(sel.scores).all()


def test_diverse_uncertainty_spreads_the_batch() -> None:
    rng = np.random.default_rng(1)
    X = _clusters(rng)
    probs = np.tile([0.9, 0.1], (60, 1))
    probs[:20] = [0.52, 0.48]  # cluster 0 is the most uncertain ...
    probs[20:40] = [0.6, 0.4]  # ... cluster 1 a little less
    sel = DiverseUncertainty(beta=3, random_state=0).select(Pool(probs=probs, vectors=X), 3)
    truth = np.repeat([0, 1, 2], 20)
    assert len(set(truth[sel.indices].tolist())) >= 2  # plain top-3 would all be cluster 0
    top = MarginSampling(random_state=0, dedupe=None).select(Pool(probs=probs, vectors=X), 3)
    assert (top.indices < 20).all()


def test_diverse_warm_up_is_random_until_enough_labels() -> None:
    rng = np.random.default_rng(3)
    X = _clusters(rng)
    probs = np.tile([0.9, 0.1], (60, 1))
    probs[:20] = [0.5, 0.5]
    early = DiverseUncertainty(random_state=0, dedupe=None).select(Pool(probs=probs, vectors=X, n_labeled=5), 5)
    assert "warm-up" in early.info["phase"] and len(set(early.indices.tolist())) == 5
    later = DiverseUncertainty(random_state=0, beta=2).select(Pool(probs=probs, vectors=X, n_labeled=500), 5)
    assert "phase" not in later.info
    assert "phase" not in DiverseUncertainty(warmup=0).select(Pool(probs=probs, vectors=X, n_labeled=5), 5).info


def test_badge_distinct_items() -> None:
    rng = np.random.default_rng(2)
    probs = rng.dirichlet([1, 1, 1], 200)
    X = sparse.random(200, 50, density=0.2, random_state=0, format="csr")
    sel = Badge(random_state=0).select(Pool(probs=probs, vectors=X), 20)
    assert len(set(sel.indices.tolist())) == 20


def test_stopping_signals() -> None:
    assert agreement(["a", "b", "a"], ["a", "b", "a"]) == (1.0, 0.0)
    k, changed = agreement(["a", "b", "a", "b"], ["a", "b", "b", "b"])
    assert changed == 0.25 and k < 1
    assert stop_advice([0.995, 0.999, 0.998], [0.2, 0.2, 0.2]).stop
    assert not stop_advice([0.8, 0.999], [0.3, 0.2]).stop
    assert stop_advice([0.5], [0.30, 0.301, 0.302, 0.3015]).stop  # uncertainty flat
    mon = StoppingMonitor(window=2)
    ids = list(range(10))
    adv = None
    for _ in range(3):
        adv = mon.update(ids, ["x"] * 5 + ["y"] * 5, np.full(10, 0.2))
    assert adv is not None and adv.stop and adv.kappa == 1.0


def test_names_and_aliases() -> None:
    for name, cls in (
        ("LeastConfidence", LeastConfidence),
        ("EntropySampling", EntropySampling),
        ("MarginSampling", MarginSampling),
        ("RandomSampling", RandomSampling),
        ("BreakingTies", MarginSampling),
        ("least-confidence", LeastConfidence),
    ):
        assert isinstance(get_strategy(name), cls)
    assert canonical_name("CoreSet") == "kcenter"
    assert get_strategy(None).name == canonical_name(DEFAULT_STRATEGY)
    # the protocol's choice (bench/RESULTS.md, leave-one-dataset-out): margin uncertainty
    assert DEFAULT_STRATEGY == "margin" and isinstance(get_strategy(None), MarginSampling)
    probs = np.array([[0.9, 0.05, 0.05], [0.4, 0.38, 0.22], [0.6, 0.3, 0.1], [0.34, 0.33, 0.33], [0.7, 0.2, 0.1]])
    texts = ["a clear one", "close call", "fairly sure", "a coin toss", "leaning one way"]
    sel = get_strategy(None, random_state=0).select(Pool(probs=probs, texts=texts), 2)
    assert sel.indices.tolist() == [3, 1]  # the two smallest top-2 margins, smallest first
    with pytest.raises(InputError, match="unknown query strategy"):
        get_strategy("NoSuchSampling")


def test_review_scores_sort_ascending_reproduces_the_ranking() -> None:
    sel = MarginSampling(random_state=0).select(Pool(probs=P), 2)
    s = review_scores(sel)
    assert np.argsort(s).tolist() == sel.ranking().tolist()
    assert (s > 0).all() and s.max() == 1.0


def test_large_pool_selection_is_fast() -> None:
    rng = np.random.default_rng(0)
    n = 50_000
    probs = rng.dirichlet(np.ones(15) * 0.3, n)
    texts = [f"item {i} about topic {i % 97}" for i in range(n)]
    t0 = time.process_time()  # CPU time: the test machine's 2 cores are shared, wall time is not ours
    sel = get_strategy(DEFAULT_STRATEGY, random_state=0).select(Pool(probs=probs, texts=texts), 100)
    assert len(sel.indices) == 100 and time.process_time() - t0 < 5
