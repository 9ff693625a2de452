"""Pool-based active-learning simulation with gold labels as the oracle (formerly ``labelpilot bench al``).

    .venv/bin/python bench/al/simulate.py --datasets trec,sst2,tnews,goemotions [--seeds 3] [--out bench/results/al]


For every dataset the pool and the test set are fixed subsamples (data seed 0); for every seed the initial
labelled set is a random draw shared by all strategies; every strategy then runs the same rounds with the
same model and a fixed batch size: fit on the labelled items, score the test set, predict the unlabelled
pool, select a batch, reveal its gold labels. Reported per strategy: learning curves (PNG, mean ± std over
seeds), labels needed to reach 95% of the full-pool score, normalised learning-curve area, deficiency vs
random (< 1 is better), the worst gap below random along the curve, and the time per round.

The model is the product's ``text-linear`` family through the model contract (``training.fit_bundle``, default
options, encoder on) unless ``--model tfidf-lr`` names the fast fixed-feature option (TF-IDF character or word
n-grams + logistic regression, saga solver, features computed once per dataset); the small-text peer runs
with that option only. The issue-13 default choice (leave-one-dataset-out) is ``protocol.py`` here. Text classification:
TREC, SST-2, TNEWS, GoEmotions (multi-label, micro-F1). NER (CoNLL-2003, CLUENER) runs through the
``ner-crf`` family when it is installed, with token-level strategies (MNLP) and a token count as cost.
A peer library (small-text) can run in a separate interpreter (``--peer-python``) on the very same features,
classifier and initial sets (see ``peer_smalltext.py`` here). The corpora and their subsample sizes are
:mod:`labelpilot.testing.corpora` (``labelpilot bench prelabel`` uses the same pools); the NER part is
``simulate_ner.py``, the curves and their summary ``curves.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from curves import Curve, summarise
from scipy import sparse
from simulate_ner import NER_NAMES, NER_STRATEGIES, bench_ner

from labelpilot.data.types import Example, Target
from labelpilot.loop.runner import run_loop
from labelpilot.models.base import families, get_family
from labelpilot.schema import make_label_config, parse_label_config
from labelpilot.strategies import Pool, get_strategy
from labelpilot.testing.corpora import (
    SIZES,
    TEXT_DATASETS,
    Sizes,
    TextData,
    UnknownDataset,
    default_data_root,
    load_text_dataset,
)
from labelpilot.training import fit_bundle

DEFAULT_STRATEGIES = ("random", "least_confidence", "margin", "entropy", "diverse")
#: The names of the fast fixed-feature model (the bench's own TF-IDF + logistic regression).
FAST_MODEL = ("tfidf-lr", "linear")

def featurize(data: TextData) -> tuple[sparse.csr_matrix, sparse.csr_matrix]:
    """TF-IDF fitted on the pool texts (unsupervised): char 1-2-grams for Chinese, word 1-2-grams else."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(
        analyzer=data.analyzer,
        ngram_range=(1, 2),
        sublinear_tf=True,
        min_df=2,
        dtype=np.float32,
        token_pattern=r"(?u)\b\w+\b",
    )
    X = vec.fit_transform(data.texts).tocsr()
    return X, vec.transform(data.test_texts).tocsr()


class LinearLearner:
    """Logistic regression on fixed features; multi-label = one binary model per label. ``predict_proba``
    always returns every class column (classes missing from the labelled set get probability 0)."""

    def __init__(self, n_classes: int, multi_label: bool = False, C: float = 4.0, random_state: int = 0) -> None:
        self.n_classes = n_classes
        self.multi_label = multi_label
        self.C = C
        self.random_state = random_state

    def _lr(self) -> Any:
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=self.C, solver="saga", max_iter=30, tol=1e-3, random_state=self.random_state)

    def fit(self, X: Any, y: np.ndarray) -> LinearLearner:
        import warnings

        from sklearn.exceptions import ConvergenceWarning

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            if self.multi_label:
                self.models_: list[Any] = []
                for j in range(self.n_classes):
                    yj = y[:, j]
                    self.models_.append(float(yj.mean()) if yj.min() == yj.max() else self._lr().fit(X, yj))
            else:
                self.model_ = self._lr().fit(X, y) if len(np.unique(y)) > 1 else int(y[0])
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        n = X.shape[0]
        P = np.zeros((n, self.n_classes))
        if self.multi_label:
            for j, m in enumerate(self.models_):
                P[:, j] = m if isinstance(m, float) else m.predict_proba(X)[:, 1]
        elif isinstance(self.model_, int):
            P[:, self.model_] = 1.0
        else:
            P[:, self.model_.classes_] = self.model_.predict_proba(X)
        return P


class ExampleRows:
    """Texts indexable like a feature matrix (by int or bool arrays), for models that featurize themselves."""

    def __init__(self, texts: Sequence[str]) -> None:
        self.texts = list(texts)
        self.shape = (len(self.texts),)

    def __getitem__(self, idx: Any) -> ExampleRows:
        idx = np.asarray(idx)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        return ExampleRows([self.texts[int(i)] for i in idx])


class ContractLearner:
    """A labelpilot model family (e.g. ``text-linear``) trained by the one trainer (``training.fit_bundle``, default
    options, no validation split), for the simulation."""

    def __init__(self, family: str, labels: Sequence[str], multi_label: bool) -> None:
        self.schema = parse_label_config(make_label_config(list(labels), multiple=multi_label))
        self.control = self.schema.controls[0]
        self.family = family
        get_family(family)  # an unknown family fails here, before the first round
        self.labels = list(labels)
        self.multi_label = multi_label

    def fit(self, rows: ExampleRows, y: np.ndarray) -> ContractLearner:
        def target(v: Any) -> Target:
            if self.multi_label:
                return Target(labels=tuple(self.labels[j] for j in np.flatnonzero(v)))
            return Target(labels=(self.labels[int(v)],))

        examples = [Example(text=t, target=target(v)) for t, v in zip(rows.texts, y, strict=True)]
        bundle, _ = fit_bundle(self.schema, {self.control.name: examples}, families={self.control.name: self.family},
                               min_examples=1, strict=True)
        self.model_ = bundle.models[self.control.name]
        return self

    def predict_proba(self, rows: ExampleRows) -> np.ndarray:
        preds = self.model_.predict([Example(text=t) for t in rows.texts])
        col = {k: j for j, k in enumerate(self.control.label_keys)}
        P = np.zeros((len(preds), len(self.labels)))
        for i, p in enumerate(preds):
            for k, v in (p.probs or {}).items():
                P[i, col[k]] = v
        return P


def score(P: np.ndarray, y: np.ndarray, multi_label: bool) -> float:
    """Accuracy, or micro-F1 for multi-label (labels with p >= 0.5, the top label when none is)."""
    if not multi_label:
        return float(np.mean(P.argmax(axis=1) == y))
    pred = P >= 0.5
    pred[np.arange(len(P)), P.argmax(axis=1)] = True
    tp = float(np.sum(pred & (y == 1)))
    fp = float(np.sum(pred & (y == 0)))
    fn = float(np.sum(~pred & (y == 1)))
    return 2 * tp / max(2 * tp + fp + fn, 1.0)


def run_curve(
    strategy: str,
    seed: int,
    X: Any,
    y: np.ndarray,
    Xt: Any,
    yt: np.ndarray,
    texts: Sequence[str],
    init: np.ndarray,
    sizes: Sizes,
    n_classes: int,
    multi_label: bool,
    learner: Callable[[int], Any] | None = None,
    rows: Any = None,
    test_rows: Any = None,
) -> Curve:
    """One strategy, one seed: rounds of fit -> test score -> predict pool -> select until the budget.

    ``X``/``Xt`` are the TF-IDF features (the strategies' vectors, and the bench learner's input); with
    ``learner`` (seed -> an object with ``fit(rows, y)``/``predict_proba(rows)``) the model reads ``rows``
    / ``test_rows`` instead (e.g. :class:`ExampleRows` for a model family through the contract)."""
    n = X.shape[0]
    make = learner or (lambda s: LinearLearner(n_classes, multi_label, random_state=s))
    R = X if rows is None else rows
    Rt = Xt if test_rows is None else test_rows
    labelled = np.zeros(n, dtype=bool)
    labelled[init] = True
    curve = Curve(strategy, seed)
    params: dict[str, Any] = {"random_state": seed}
    if strategy == "random":
        params["dedupe"] = None  # the textbook baseline: plain uniform draws
    strat = get_strategy(strategy, **params)
    return simulate_rounds(curve, strat, lambda: make(seed), R, Rt, y, yt, texts, X, labelled, sizes, multi_label)


def simulate_rounds(
    curve: Curve,
    strat: Any,
    make: Callable[[], Any],
    R: Any,
    Rt: Any,
    y: np.ndarray,
    yt: np.ndarray,
    texts: Sequence[str],
    vectors: Any,
    labelled: np.ndarray,
    sizes: Sizes,
    multi_label: bool,
) -> Curve:
    """The rounds of one curve: fit ``make()`` on the labelled rows of ``R`` -> score on ``Rt`` -> predict the
    pool -> ``strat`` selects a batch (``labelled`` is updated in place) until the budget; one home for
    :func:`run_curve` here and ``protocol.run_curve``."""
    n = len(labelled)
    while True:
        t0 = time.perf_counter()
        model = make().fit(R[labelled], y[labelled])
        t_fit = time.perf_counter() - t0
        curve.labels.append(int(labelled.sum()))
        curve.scores.append(score(model.predict_proba(Rt), yt, multi_label))
        if labelled.sum() >= min(sizes.budget, n):
            break
        t1 = time.perf_counter()
        unl = np.flatnonzero(~labelled)
        pool = Pool(
            probs=model.predict_proba(R[unl]),
            multi_label=multi_label,
            texts=[texts[i] for i in unl],
            vectors=None if vectors is None else vectors[unl],
            n_labeled=int(labelled.sum()),
        )
        k = min(sizes.batch, sizes.budget - int(labelled.sum()), len(unl))
        t2 = time.perf_counter()
        sel = strat.select(pool, k)
        t3 = time.perf_counter()
        if len(sel.indices) == 0:
            break
        labelled[unl[sel.indices]] = True
        curve.round_seconds.append(t_fit + (t3 - t1))
        curve.select_seconds.append(t3 - t2)
    return curve


def plot(name: str, summary: dict[str, dict[str, Any]], full: float, metric: str, path: Path, xlabel: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=90)
    for strat, row in summary.items():
        x, m, s = np.array(row.get("x_tokens", row["x"])), np.array(row["mean"]), np.array(row["std"])
        style = "--" if strat.startswith("peer:") else ("-" if strat != "random" else ":")
        ax.plot(x, m, style, label=strat, lw=1.6 if strat != "random" else 2.2)
        ax.fill_between(x, m - s, m + s, alpha=0.12)
    ax.axhline(full, color="k", lw=0.8, label=f"full pool {full:.3f}")
    ax.axhline(0.95 * full, color="grey", lw=0.8, ls="--", label="95% of full pool")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(metric)
    ax.set_title(f"{name}: active learning curves (mean ± std over seeds)")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def run_peer(
    peer_python: Path,
    strategies: Sequence[str],
    X: Any,
    y: np.ndarray,
    Xt: Any,
    yt: np.ndarray,
    inits: dict[int, np.ndarray],
    sizes: Sizes,
    n_classes: int,
    multi_label: bool,
) -> dict[str, list[Curve]]:
    """small-text in its own interpreter on the same features, classifier settings and initial sets."""
    script = Path(__file__).with_name("peer_smalltext.py")
    out: dict[str, list[Curve]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data.npz"
        np.savez(
            data,
            X_data=X.data,
            X_indices=X.indices,
            X_indptr=X.indptr,
            X_shape=X.shape,
            y=y,
            Xt_data=Xt.data,
            Xt_indices=Xt.indices,
            Xt_indptr=Xt.indptr,
            Xt_shape=Xt.shape,
            yt=yt,
        )
        for strat in strategies:
            for seed, init in inits.items():
                res_path = Path(tmp) / f"{strat}-{seed}.json"
                cfg = {
                    "data": str(data),
                    "strategy": strat,
                    "seed": seed,
                    "init": init.tolist(),
                    "batch": sizes.batch,
                    "budget": sizes.budget,
                    "n_classes": n_classes,
                    "multi_label": multi_label,
                    "C": 4.0,
                    "out": str(res_path),
                }
                proc = subprocess.run(
                    [str(peer_python), str(script), json.dumps(cfg)],
                    capture_output=True,
                    text=True,
                    timeout=3600,
                    env={**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"},
                )
                if proc.returncode != 0:
                    raise RuntimeError(f"peer {strat} seed {seed} failed: {proc.stderr.strip()[-1500:]}")
                r = json.loads(res_path.read_text())
                out.setdefault(f"peer:{strat}", []).append(
                    Curve(f"peer:{strat}", seed, r["labels"], r["scores"], r["round_seconds"], r["select_seconds"])
                )
    return out


def bench_text(
    name: str,
    root: Path,
    strategies: Sequence[str],
    seeds: Sequence[int],
    scale: float,
    peer_python: Path | None,
    peer_strategies: Sequence[str],
    log: Callable[[str], None],
    model: str = "text-linear",
    batch: int | None = None,
) -> dict[str, Any]:
    base = SIZES[name]
    sizes = Sizes(
        pool=int(base.pool * scale),
        test=int(base.test * max(scale, 0.5)),
        init=base.init,
        batch=batch or base.batch,
        budget=int(base.budget * scale),
    )
    try:
        data = load_text_dataset(name, root, sizes)
    except UnknownDataset as exc:
        raise typer.BadParameter(str(exc)) from exc
    X, Xt = featurize(data)
    n_classes = len(data.labels)
    t0 = time.perf_counter()
    learner: Callable[[int], Any] | None = None
    rows: Any = None
    test_rows: Any = None
    if model in FAST_MODEL:
        fitted: Any = LinearLearner(n_classes, data.multi_label).fit(X, data.y)
        full = score(fitted.predict_proba(Xt), data.y_test, data.multi_label)
    else:
        rows, test_rows = ExampleRows(data.texts), ExampleRows(data.test_texts)

        def learner(_seed: int) -> Any:
            return ContractLearner(model, data.labels, data.multi_label)

        full = score(learner(0).fit(rows, data.y).predict_proba(test_rows), data.y_test, data.multi_label)
    log(
        f"[{name}] model {model}, pool {X.shape[0]} x {X.shape[1]} features, test {Xt.shape[0]}, "
        f"full-pool {data.metric} {full:.4f} ({time.perf_counter() - t0:.1f}s)"
    )
    inits = {s: np.sort(np.random.default_rng(1000 + s).choice(X.shape[0], sizes.init, replace=False)) for s in seeds}
    curves: dict[str, list[Curve]] = {}
    for strat in strategies:
        for seed in seeds:
            t0 = time.perf_counter()
            c = run_curve(
                strat,
                seed,
                X,
                data.y,
                Xt,
                data.y_test,
                data.texts,
                inits[seed],
                sizes,
                n_classes,
                data.multi_label,
                learner,
                rows,
                test_rows,
            )
            curves.setdefault(strat, []).append(c)
            log(
                f"[{name}] {strat} seed {seed}: final {c.scores[-1]:.4f} at {c.labels[-1]} labels "
                f"({time.perf_counter() - t0:.1f}s, load {os.getloadavg()[0]:.2f})"
            )
    if peer_python is not None and model in FAST_MODEL:
        for ps in peer_strategies:
            t0 = time.perf_counter()
            try:
                curves.update(
                    run_peer(peer_python, [ps], X, data.y, Xt, data.y_test, inits, sizes, n_classes, data.multi_label)
                )
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                log(f"[{name}] peer small-text {ps} FAILED: {exc}")
                continue
            log(f"[{name}] peer small-text {ps} done ({time.perf_counter() - t0:.1f}s)")
    summary = summarise(curves, full)
    return {
        "dataset": name,
        "metric": data.metric,
        "full_pool": full,
        "sizes": sizes.__dict__,
        "features": int(X.shape[1]),
        "seeds": list(seeds),
        "summary": summary,
        "model": model,
    }


def time_round(root: Path, n: int, strategy: str, log: Callable[[str], None]) -> dict[str, Any]:
    """Seconds for one loop round's predict + select on an ``n``-item TNEWS pool, through the model contract
    with the text-linear family when available (else the bench learner on precomputed features)."""
    rows = [json.loads(line) for line in (root / "tnews" / "train.json").read_text(encoding="utf-8").splitlines()]
    texts = [r["sentence"] for r in rows]
    while len(texts) < n:  # TNEWS has 53k; repeat only if asked for more
        texts = texts + texts
    texts = texts[:n]
    labels = sorted({r["label_desc"] for r in rows})
    train = [
        Example(text=r["sentence"], target=Target(labels=(r["label_desc"],)), id=str(i))
        for i, r in enumerate(rows[:2000])
    ]
    out: dict[str, Any] = {"pool": n, "strategy": strategy, "load_before": list(os.getloadavg())}
    if "text-linear" in families():
        control = parse_label_config(make_label_config(labels)).controls[0]
        model = get_family("text-linear")(control)
        model.fit(train)
        pool_ex = [Example(text=t, id=str(i)) for i, t in enumerate(texts)]
        c0, t0 = time.process_time(), time.perf_counter()
        preds = model.predict(pool_ex)
        c1, t1 = time.process_time(), time.perf_counter()
        pool = Pool.from_predictions(preds, control.label_keys, texts=texts)
        sel = get_strategy(strategy, random_state=0).select(pool, 100)
        c2, t2 = time.process_time(), time.perf_counter()
        out.update(
            model="text-linear",
            predict_seconds=t1 - t0,
            select_seconds=t2 - t1,
            total_seconds=t2 - t0,
            predict_cpu_seconds=c1 - c0,
            select_cpu_seconds=c2 - c1,
            total_cpu_seconds=c2 - c0,
        )
    else:
        from sklearn.feature_extraction.text import TfidfVectorizer

        vec = TfidfVectorizer(analyzer="char", ngram_range=(1, 2), sublinear_tf=True, min_df=2, dtype=np.float32)
        Xtr = vec.fit_transform([e.text for e in train])
        ytr = np.array([labels.index(e.target.labels[0]) for e in train])  # type: ignore[union-attr]
        learner = LinearLearner(len(labels)).fit(Xtr, ytr)
        t0 = time.perf_counter()
        P = learner.predict_proba(vec.transform(texts))
        t1 = time.perf_counter()
        sel = get_strategy(strategy, random_state=0).select(Pool(probs=P, texts=texts), 100)
        t2 = time.perf_counter()
        out.update(
            model="bench LinearLearner (text-linear not installed)",
            predict_seconds=t1 - t0,
            select_seconds=t2 - t1,
            total_seconds=t2 - t0,
        )
    out["selected"] = len(sel.indices)
    out["load_after"] = list(os.getloadavg())
    log(
        f"[timing] {n}-item pool: predict {out['predict_seconds']:.2f}s + select {out['select_seconds']:.2f}s "
        f"= {out['total_seconds']:.2f}s ({out['model']}), load {out['load_after'][0]:.2f}"
    )
    return out


def time_loop_round(root: Path, n: int, strategy: str, log: Callable[[str], None]) -> dict[str, Any]:
    """One real ``run_loop`` round on seed-003 CSVs: 2,000 labelled TNEWS titles, ``n`` unlabelled ones
    (inline ``text`` column), default model family, ``query_cnt=100``. Returns the report's timings."""
    import csv

    rows = [json.loads(line) for line in (root / "tnews" / "train.json").read_text(encoding="utf-8").splitlines()]
    with tempfile.TemporaryDirectory(prefix="al-timing-") as tmp:
        inp = Path(tmp) / "input"
        inp.mkdir()
        with (inp / "input_label.csv").open("w", encoding="utf-8", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["sampleId", "text", "label"])
            w.writerows([f"l{i}", r["sentence"], r["label_desc"]] for i, r in enumerate(rows[:2000]))
        with (inp / "input_unlabel.csv").open("w", encoding="utf-8", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["sampleId", "text"])
            w.writerows([f"u{i}", rows[2000 + i % (len(rows) - 2000)]["sentence"]] for i in range(n))
        load_before = list(os.getloadavg())
        c0, t0 = time.process_time(), time.perf_counter()
        res = run_loop(inp, Path(tmp) / "out", query_cnt=100, strategy=strategy, val_size=0.2)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    sec = res.report["seconds"]
    out = {
        "pool": n,
        "strategy": res.report["strategy"]["used"],
        "model": res.report["model"]["family"],
        "seconds": sec,
        "predict_plus_select": sec["predict"] + sec["select"],
        "predict_plus_select_cpu": res.report["cpu_seconds"]["predict"] + res.report["cpu_seconds"]["select"],
        "round_wall": wall,
        "round_cpu": cpu,
        "load_before": load_before,
        "load_after": list(os.getloadavg()),
    }
    log(
        f"[timing] run_loop on a {n}-item pool ({out['model']}, {out['strategy']}): predict {sec['predict']:.2f}s + "
        f"select {sec['select']:.2f}s = {out['predict_plus_select']:.2f}s wall, "
        f"{out['predict_plus_select_cpu']:.2f}s CPU; whole round {wall:.1f}s wall / "
        f"{cpu:.1f}s CPU; load {load_before[0]:.2f} -> {out['load_after'][0]:.2f}"
    )
    return out


def format_table(results: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| dataset | strategy | labels to 95% of full | saving vs random | AUC | final | deficiency "
        "| max shortfall vs random | s/round |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for res in results:
        for strat, row in res["summary"].items():
            need = row["labels_to_target"]
            need_s = str(need) if need is not None else f">{row['budget']}"
            if "saving_vs_random" in row:
                save = f"{100 * row['saving_vs_random']:.0f}%"
            elif "saving_vs_random_at_least" in row:
                save = f"≥{100 * row['saving_vs_random_at_least']:.0f}%"
            else:
                save = "—"
            dfc = row.get("deficiency")
            gap = row.get("worst_gap_vs_random")
            lines.append(
                f"| {res['dataset']} | {strat} | {need_s} | {save if strat != 'random' else '—'} | {row['auc']:.4f} "
                f"| {row['final']:.4f} | {'—' if dfc is None else f'{dfc:.3f}'} "
                f"| {'—' if gap is None else f'{100 * gap:+.1f}%'} | {row['seconds_per_round']:.3f} |"
            )
    return "\n".join(lines)


def bench_al_command(
    datasets: Annotated[
        str, typer.Option(help="Comma-separated: trec,sst2,tnews,goemotions (+ bdci, conll2003, cluener)")
    ] = "trec,sst2,tnews,goemotions",
    strategies: Annotated[str, typer.Option(help="Comma-separated strategy names")] = ",".join(DEFAULT_STRATEGIES),
    seeds: Annotated[int, typer.Option(help="Number of seeds (>= 3 for the report)")] = 3,
    scale: Annotated[float, typer.Option(help="Multiply pool sizes and budgets (1 = the documented setup)")] = 1.0,
    out: Annotated[Path, typer.Option(help="Folder for PNGs, results.json and table.md")] = Path("bench/results/al"),
    data_root: Annotated[Path | None, typer.Option(help="The shared datasets folder")] = None,
    peer_python: Annotated[
        Path | None, typer.Option(help="Python of a venv with small-text installed, to run it as a peer")
    ] = None,
    peer_strategies: Annotated[str, typer.Option(help="small-text strategies to run")] = "BreakingTies,LeastConfidence",
    timing_pool: Annotated[
        int, typer.Option(help="Also time one predict+select round on a pool this large (0: no)")
    ] = 0,
    model: Annotated[
        str,
        typer.Option(
            help="A model family through the model contract (text-linear, the product's) or 'tfidf-lr' "
            "(the fast option: TF-IDF + logistic regression on fixed features; 'linear' is its old name)"
        ),
    ] = "text-linear",
    batch: Annotated[int | None, typer.Option(help="Override the per-dataset batch size")] = None,
    ner_strategies: Annotated[
        str, typer.Option(help=f"NER only, comma-separated: {', '.join(NER_STRATEGIES)}")
    ] = "random,span-mnlp",
    budget: Annotated[int | None, typer.Option(help="NER only: override the budget in sentences")] = None,
    first_seed: Annotated[int, typer.Option(help="NER only: seeds are first_seed .. first_seed + seeds - 1")] = 0,
) -> None:
    """Simulate pool-based active learning on the shared datasets and write curves and a table."""
    from threadpoolctl import threadpool_limits

    root = data_root or default_data_root()
    if not root.is_dir():
        typer.echo(f"error: shared data folder {root} not found (set --data-root or LABELPILOT_SHARED_DATA)", err=True)
        raise typer.Exit(2)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "bench.log"

    def log(msg: str) -> None:
        typer.echo(msg)
        with log_path.open("a", encoding="utf-8") as fh:
            fh.write(msg + "\n")

    log(
        f"bench al started {time.strftime('%Y-%m-%d %H:%M:%S')}, load {os.getloadavg()}, "
        f"python {sys.version.split()[0]}"
    )
    strat_list = [s.strip() for s in strategies.split(",") if s.strip()]
    peer_list = [s.strip() for s in peer_strategies.split(",") if s.strip()]
    results = []
    with threadpool_limits(1):
        for name in [d.strip() for d in datasets.split(",") if d.strip()]:
            if name in NER_NAMES:
                res = bench_ner(
                    name,
                    root,
                    seeds=list(range(first_seed, first_seed + seeds)),
                    scale=scale,
                    log=log,
                    strategies=[s.strip() for s in ner_strategies.split(",") if s.strip()],
                    budget=budget,
                )
                if res is None:
                    continue
            else:
                res = bench_text(
                    name, root, strat_list, list(range(seeds)), scale, peer_python, peer_list, log, model, batch
                )
            results.append(res)
            xlabel = "labelled tokens" if name in NER_NAMES else "labelled items"
            plot(name, res["summary"], res["full_pool"], res["metric"], out / f"{name}.png", xlabel)
            (out / f"{name}.json").write_text(json.dumps(res, indent=1), encoding="utf-8")
        timing = None
        if timing_pool:
            timing = {"contract": time_round(root, timing_pool, strat_list[-1], log)}
            if "text-linear" in families():
                timing["run_loop"] = time_loop_round(root, timing_pool, strat_list[-1], log)
    # the table covers every dataset result in ``out`` (earlier runs of other datasets included)
    done = {r["dataset"] for r in results}
    for path in sorted(out.glob("*.json")):
        if path.stem not in done and (path.stem in SIZES or path.stem in NER_NAMES):
            results.append(json.loads(path.read_text(encoding="utf-8")))
    order = [*TEXT_DATASETS, *NER_NAMES]
    results.sort(key=lambda r: order.index(r["dataset"]))
    table = format_table(results)
    (out / "table.md").write_text(table + "\n", encoding="utf-8")
    if timing:
        (out / "timing.json").write_text(json.dumps(timing, indent=1), encoding="utf-8")
    typer.echo(table)


if __name__ == "__main__":
    typer.run(bench_al_command)
