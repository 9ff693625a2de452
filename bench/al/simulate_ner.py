"""NER part of the active-learning simulation (``bench/al/simulate.py``): the same protocol as the text
datasets, through the ``ner-crf`` family (CRFsuite), with span strategies (token → sentence aggregation) and
cost counted in tokens too.

Batches are fixed in sentences; curves are reported against labelled sentences, and the labelled-token
count of every round is kept so the table can say how many *tokens* each strategy needed (uncertainty
strategies are known to favour long sentences; MNLP normalises by length).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from curves import Curve, summarise

from labelpilot.data.bio import read_conll, read_weibo, tokenize
from labelpilot.data.cluener import read_cluener
from labelpilot.schema import make_label_config, parse_label_config
from labelpilot.strategies import Pool, get_strategy
from labelpilot.testing.corpora import NER_DATASETS, SIZES, Sizes

#: NER sizes at scale 1: the package's (CoNLL-2003, CLUENER) plus Weibo NER 2nd (its whole 1,350-sentence train
#: file as pool, its 270-sentence test file as test), kept here because only the simulation reads it.
NER_SIZES: dict[str, Sizes] = {
    **{k: SIZES[k] for k in NER_DATASETS},
    "weibo": Sizes(pool=1350, test=270, init=100, batch=100, budget=1000),
}
NER_NAMES = tuple(NER_SIZES)

#: ner-crf options for the simulation: one fit per round (no held-out refit), no LAC, fewer iterations.
CRF_OPTIONS: dict[str, Any] = {"holdout": 0.0, "max_iterations": 60, "lac": False, "zero_shot": False}
NER_STRATEGIES: dict[str, dict[str, Any]] = {
    "random": {"name": "random", "dedupe": None},
    "span-mnlp": {"name": "span", "aggregation": "mnlp"},
    "span-mean": {"name": "span", "aggregation": "mean"},
}


def load_ner(name: str, root: Path, sizes: Sizes) -> tuple[list[Any], list[Any], list[str]]:
    if name == "conll2003":
        train = read_conll(root / "conll2003" / "eng.train")
        test = read_conll(root / "conll2003" / "eng.testb")
    elif name == "cluener":
        train = read_cluener(root / "cluener2020" / "train.json")
        test = read_cluener(root / "cluener2020" / "dev.json")
    elif name == "weibo":
        train = read_weibo(root / "weibo_ner" / "weiboNER_2nd_conll.train")
        test = read_weibo(root / "weibo_ner" / "weiboNER_2nd_conll.test")
    else:
        raise ValueError(f"unknown NER dataset {name!r}")
    rng = np.random.default_rng(0)
    train = [train[i] for i in np.sort(rng.choice(len(train), min(sizes.pool, len(train)), replace=False))]
    test = [test[i] for i in np.sort(rng.choice(len(test), min(sizes.test, len(test)), replace=False))]
    labels = sorted({sp.label for ex in train + test if ex.target for sp in ex.target.spans})
    return train, test, labels


def _f1(model: Any, test: Sequence[Any]) -> float:
    from labelpilot.models.ner_crf import span_prf

    preds = model.predict(test)
    gold = [list(ex.target.spans) if ex.target else [] for ex in test]
    return float(span_prf(gold, [list(p.spans) for p in preds])["f1"])


def bench_ner(
    name: str,
    root: Path,
    *,
    seeds: Sequence[int],
    scale: float,
    log: Callable[[str], None],
    strategies: Sequence[str] = ("random", "span-mnlp"),
    budget: int | None = None,
) -> dict[str, Any] | None:
    try:
        from labelpilot.models.ner_crf import NerCrfModel  # optional family (sklearn-crfsuite)
    except ImportError as exc:
        log(f"[{name}] skipped: the ner-crf family is not available ({exc})")
        return None
    base = NER_SIZES[name]
    sizes = Sizes(
        int(base.pool * scale),
        int(base.test * max(scale, 0.5)),
        base.init,
        base.batch,
        budget or int(base.budget * scale),
    )
    train, test, labels = load_ner(name, root, sizes)
    control = parse_label_config(make_label_config(labels, kind="labels")).controls[0]
    tokens = np.array([len(tokenize(ex.text)) for ex in train])
    t0 = time.perf_counter()
    full_model = NerCrfModel(control, **CRF_OPTIONS)
    full_model.fit(train)
    full = _f1(full_model, test)
    log(
        f"[{name}] pool {len(train)} sentences / {int(tokens.sum())} tokens, test {len(test)}, full-pool F1 "
        f"{full:.4f} ({time.perf_counter() - t0:.1f}s)"
    )
    inits = {s: np.sort(np.random.default_rng(1000 + s).choice(len(train), sizes.init, replace=False)) for s in seeds}
    curves: dict[str, list[Curve]] = {}
    token_x: dict[str, list[list[int]]] = {}
    per_seed: list[dict[str, Any]] = []
    texts = [ex.text for ex in train]
    for strat_name in strategies:
        spec = NER_STRATEGIES[strat_name]
        params = {k: v for k, v in spec.items() if k != "name"}
        for seed in seeds:
            t_run = time.perf_counter()
            strat = get_strategy(spec["name"], random_state=seed, **params)
            labelled = np.zeros(len(train), dtype=bool)
            labelled[inits[seed]] = True
            curve = Curve(strat_name, seed)
            toks: list[int] = []
            while True:
                t1 = time.perf_counter()
                model = NerCrfModel(control, **CRF_OPTIONS)
                model.fit([train[i] for i in np.flatnonzero(labelled)])
                t_fit = time.perf_counter() - t1
                curve.labels.append(int(labelled.sum()))
                toks.append(int(tokens[labelled].sum()))
                curve.scores.append(_f1(model, test))
                if labelled.sum() >= min(sizes.budget, len(train)):
                    break
                t2 = time.perf_counter()
                unl = np.flatnonzero(~labelled)
                preds = model.predict([train[i] for i in unl])
                t3 = time.perf_counter()
                pool = Pool.from_predictions(preds, control.label_keys, texts=[texts[i] for i in unl])
                k = min(sizes.batch, sizes.budget - int(labelled.sum()), len(unl))
                sel = strat.select(pool, k)
                t4 = time.perf_counter()
                labelled[unl[sel.indices]] = True
                curve.round_seconds.append(t_fit + (t4 - t2))
                curve.select_seconds.append(t4 - t3)
            curves.setdefault(strat_name, []).append(curve)
            token_x.setdefault(strat_name, []).append(toks)
            per_seed.append(
                {
                    "strategy": strat_name,
                    "seed": seed,
                    "sentences": curve.labels,
                    "tokens": toks,
                    "f1": curve.scores,
                    "round_seconds": curve.round_seconds,
                    "select_seconds": curve.select_seconds,
                }
            )
            log(
                f"[{name}] {strat_name} seed {seed}: final F1 {curve.scores[-1]:.4f} at {curve.labels[-1]} sentences "
                f"/ {toks[-1]} tokens ({time.perf_counter() - t_run:.1f}s, load {os.getloadavg()[0]:.2f})"
            )
    summary = summarise(curves, full)
    for strat_name, row in summary.items():
        L = len(row["x"])
        tx = np.mean([t[:L] for t in token_x[strat_name]], axis=0)
        row["x_tokens"] = tx.tolist()
        hit = np.flatnonzero(np.array(row["mean"]) >= 0.95 * full)
        row["tokens_to_target"] = float(tx[hit[0]]) if len(hit) else None
    rtok = summary.get("random", {}).get("tokens_to_target")
    for row in summary.values():
        if rtok and row.get("tokens_to_target"):
            row["token_saving_vs_random"] = 1.0 - row["tokens_to_target"] / rtok
    return {
        "dataset": name,
        "metric": "entity_f1",
        "full_pool": full,
        "sizes": sizes.__dict__,
        "pool_tokens": int(tokens.sum()),
        "seeds": list(seeds),
        "summary": summary,
        "crf_options": CRF_OPTIONS,
        "curves": per_seed,
    }
