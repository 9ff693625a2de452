"""The active-learning default by the leave-one-dataset-out protocol of bench/RESULTS.md (issue 13).

    nice -n 10 .venv/bin/python bench/al/protocol.py run --data /work/shared/data      # resumable, incremental
    .venv/bin/python bench/al/protocol.py report                                        # table, PNGs, folds
    .venv/bin/python bench/al/protocol.py select-time --data /work/shared/data          # 50k-pool selection time

``run`` simulates pool-based active learning with gold labels as the oracle, through the product's model: the
``text-linear`` family with its defaults (encoder on), trained by the one trainer (``training.fit_bundle``, via
``simulate.ContractLearner``), then the calls ``run_loop`` makes: score the test set, predict the pool, build a
``Pool`` (texts, ``n_labeled``; vectors only for the candidate that is fed the encoder's vectors) and call
``strategy.select``. The fixed-feature TF-IDF + logistic regression model is the named fast option
(``--model tfidf-lr``). Pools are 3,000 / 1,000 test (data seed 0); one random start set per seed, shared by
all candidates. Every finished (dataset, candidate, seed) curve is appended at once to
``<out>/<model>/<dataset>.jsonl`` and skipped when the run is restarted, so partial results survive.
Runs go seed-major (every dataset and candidate at seed 0, then seed 1, ...), so a cut-short run still
covers every cell. ``report`` applies the fold rule and writes ``bench/results/al/protocol*``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from curves import Curve, summarise
from simulate import ContractLearner, ExampleRows, LinearLearner, featurize, score, simulate_rounds

from labelpilot.strategies import Pool, get_strategy
from labelpilot.testing.corpora import Sizes, TextData, default_data_root, load_text_dataset

#: Start + batch -> budget per dataset (the protocol's lines), pool 3,000 / test 1,000.
PROTOCOL_SIZES: dict[str, Sizes] = {
    "trec": Sizes(pool=3000, test=1000, init=50, batch=50, budget=1000),
    "sst2": Sizes(pool=3000, test=1000, init=100, batch=100, budget=1500),
    "tnews": Sizes(pool=3000, test=1000, init=100, batch=100, budget=1500),
    "goemotions": Sizes(pool=3000, test=1000, init=100, batch=100, budget=1500),
    "bdci": Sizes(pool=3000, test=1000, init=100, batch=100, budget=1500),
}

#: candidate -> (registry strategy, parameters, which vectors the pool carries: None = texts only, as
#: ``run_loop`` builds it for these strategies, or "encoder" = the text encoder's vectors of the pool).
CANDIDATES: dict[str, tuple[str, dict[str, Any], str | None]] = {
    "random": ("random", {"dedupe": None}, None),  # the textbook baseline: plain uniform draws
    "margin": ("margin", {}, None),
    "entropy": ("entropy", {}, None),
    "least_confidence": ("least_confidence", {}, None),
    "diverse": ("diverse", {}, None),
    "diverse_enc": ("diverse", {}, "encoder"),
    "badge": ("badge", {}, None),
}

MODELS = ("text-linear", "tfidf-lr")


class Setup:
    """One dataset ready for the rounds: data, the model's inputs, encoder vectors, full-pool score."""

    def __init__(self, name: str, root: Path, model: str) -> None:
        self.name, self.model = name, model
        self.sizes = PROTOCOL_SIZES[name]
        self.data: TextData = load_text_dataset(name, root, self.sizes)
        d = self.data
        if model == "tfidf-lr":
            self.rows, self.test_rows = featurize(d)
        else:
            self.rows, self.test_rows = ExampleRows(d.texts), ExampleRows(d.test_texts)
        self.encoder_vectors: np.ndarray | None = None
        t0 = time.perf_counter()
        self.full = score(self.learner(0).fit(self.rows, d.y).predict_proba(self.test_rows), d.y_test, d.multi_label)
        self.full_seconds = time.perf_counter() - t0

    def learner(self, seed: int) -> Any:
        d = self.data
        if self.model == "tfidf-lr":
            return LinearLearner(len(d.labels), d.multi_label, random_state=seed)
        return ContractLearner("text-linear", d.labels, d.multi_label)

    def vectors(self) -> np.ndarray:
        """The text encoder's vectors of the pool, computed once per dataset (the model's own encoder passes
        hit the same process-wide cache)."""
        if self.encoder_vectors is None:
            from labelpilot.encoders import get_encoder  # lazy: only the encoder-fed candidate needs it

            self.encoder_vectors = get_encoder().encode(self.data.texts, persist=True)
        return self.encoder_vectors

    def init(self, seed: int) -> np.ndarray:
        n = len(self.data.texts)
        return np.sort(np.random.default_rng(1000 + seed).choice(n, self.sizes.init, replace=False))


def run_curve(setup: Setup, candidate: str, seed: int) -> Curve:
    """One candidate, one seed: fit -> score the test set -> predict the pool -> select, until the budget."""
    d, sizes = setup.data, setup.sizes
    if candidate.startswith("peer:"):
        from peer_inproc import PeerStrategy

        strat: Any = PeerStrategy(candidate.removeprefix("peer:"), random_state=seed)
        vec_kind = None
    else:
        strategy, params, vec_kind = CANDIDATES[candidate]
        strat = get_strategy(strategy, random_state=seed, **params)
    vectors = setup.vectors() if vec_kind == "encoder" else None
    n = len(d.texts)
    labelled = np.zeros(n, dtype=bool)
    labelled[setup.init(seed)] = True
    curve = Curve(candidate, seed)
    return simulate_rounds(curve, strat, lambda: setup.learner(seed), setup.rows, setup.test_rows, d.y, d.y_test,
                           d.texts, vectors, labelled, sizes, d.multi_label)


def read_done(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def split(value: str) -> list[str]:
    return [s.strip() for s in value.split(",") if s.strip()]


app = typer.Typer(add_completion=False)


@app.command()
def run(
    data: Annotated[Path | None, typer.Option(help="The shared datasets folder")] = None,
    datasets: Annotated[str, typer.Option(help="Comma-separated")] = "trec,sst2,tnews,goemotions",
    candidates: Annotated[str, typer.Option(help="Comma-separated")] = ",".join(CANDIDATES),
    seeds: Annotated[str, typer.Option(help="Comma-separated seeds")] = "0,1,2",
    model: Annotated[str, typer.Option(help="text-linear (the product) or tfidf-lr (the fast option)")] = "text-linear",
    out: Annotated[Path, typer.Option(help="Folder for the incremental results")] = Path("bench/out/al"),
) -> None:
    """Run (or resume) the protocol's simulation, appending each finished curve to ``<out>/<model>/*.jsonl``."""
    from threadpoolctl import threadpool_limits

    if model not in MODELS:
        raise typer.BadParameter(f"model must be one of {', '.join(MODELS)}", param_hint="--model")
    root = data or default_data_root()
    folder = out / model
    folder.mkdir(parents=True, exist_ok=True)
    names, cands, seed_list = split(datasets), split(candidates), [int(s) for s in split(seeds)]
    unknown = [c for c in cands if c not in CANDIDATES and not c.startswith("peer:")]
    for bad in unknown + [x for x in names if x not in PROTOCOL_SIZES]:
        raise typer.BadParameter(f"unknown candidate or dataset {bad!r}")
    setups: dict[str, Setup] = {}
    with threadpool_limits(1):
        for seed in seed_list:
            for name in names:
                path = folder / f"{name}.jsonl"
                done = {(r["candidate"], r["seed"]) for r in read_done(path) if "candidate" in r}
                todo = [c for c in cands if (c, seed) not in done]
                if not todo:
                    continue
                if name not in setups:
                    setups[name] = Setup(name, root, model)
                    s = setups[name]
                    meta = {"meta": True, "dataset": name, "model": model, "full_pool": s.full,
                            "metric": s.data.metric, "sizes": s.sizes.__dict__, "full_seconds": s.full_seconds}
                    with path.open("a", encoding="utf-8") as fh:
                        fh.write(json.dumps(meta) + "\n")
                    typer.echo(f"[{name}] full-pool {s.data.metric} {s.full:.4f} ({s.full_seconds:.1f}s)")
                for cand in todo:
                    t0, c0 = time.perf_counter(), time.process_time()
                    c = run_curve(setups[name], cand, seed)
                    rec = {"dataset": name, "candidate": cand, "seed": seed, "labels": c.labels, "scores": c.scores,
                           "round_seconds": c.round_seconds, "select_seconds": c.select_seconds,
                           "wall": time.perf_counter() - t0, "cpu": time.process_time() - c0,
                           "load": list(os.getloadavg()), "at": time.strftime("%Y-%m-%d %H:%M:%S")}
                    with path.open("a", encoding="utf-8") as fh:
                        fh.write(json.dumps(rec) + "\n")
                    typer.echo(f"[{name}] {cand} seed {seed}: final {c.scores[-1]:.4f} at {c.labels[-1]} "
                               f"({rec['wall']:.0f}s wall, {rec['cpu']:.0f}s CPU, load {rec['load'][0]:.2f})")


def load_results(folders: Sequence[Path]) -> dict[str, dict[str, Any]]:
    """dataset -> {"full_pool", "metric", "sizes", "curves": candidate -> [Curve], "cpu"} from the incremental
    files of ``folders`` (the first one that has a dataset's meta line gives its full-pool score)."""
    out: dict[str, dict[str, Any]] = {}
    seen: set[tuple[str, str, int]] = set()
    for folder in folders:
        for path in sorted(folder.glob("*.jsonl")):
            entry = out.setdefault(path.stem, {"curves": {}, "wall": 0.0, "cpu": 0.0})
            for r in read_done(path):
                if r.get("meta"):
                    if "full_pool" not in entry:
                        entry.update(full_pool=r["full_pool"], metric=r["metric"], sizes=r["sizes"])
                    continue
                if (path.stem, r["candidate"], r["seed"]) in seen:  # a cell run twice (parallel runs): first kept
                    continue
                seen.add((path.stem, r["candidate"], r["seed"]))
                c = Curve(r["candidate"], r["seed"], r["labels"], r["scores"], r["round_seconds"],
                          r["select_seconds"])
                entry["curves"].setdefault(r["candidate"], []).append(c)
                entry["wall"] += r["wall"]
                entry["cpu"] += r["cpu"]
    return out


@app.command()
def report(
    out: Annotated[Path, typer.Option(help="Folder of the incremental results")] = Path("bench/out/al"),
    model: Annotated[str, typer.Option()] = "text-linear",
    results: Annotated[Path, typer.Option(help="Where the table, PNGs and JSON go")] = Path("bench/results/al"),
    seeds: Annotated[str, typer.Option(help="Only these seeds (the ones every cell has)")] = "",
    more: Annotated[str, typer.Option(help="Comma-separated further result folders (parallel runs, peers)")] = (
        "bench/out/al-s2,bench/out/al-peer"
    ),
) -> None:
    """Summaries per dataset, the leave-one-dataset-out folds and the chosen default."""
    from protocol_report import write_report  # lazy: run needs no matplotlib

    raw = load_results([out / model, *(Path(f) / model for f in split(more))])
    keep = {int(s) for s in split(seeds)}
    summaries: dict[str, dict[str, Any]] = {}
    for name, entry in raw.items():
        curves = {k: [c for c in v if not keep or c.seed in keep] for k, v in entry["curves"].items()}
        curves = {k: v for k, v in curves.items() if v}
        summaries[name] = {"full_pool": entry["full_pool"], "metric": entry["metric"], "sizes": entry["sizes"],
                           "seeds": sorted({c.seed for v in curves.values() for c in v}),
                           "cpu_seconds": entry["cpu"], "summary": summarise(curves, entry["full_pool"])}
    typer.echo(write_report(summaries, model, results))


def _timing_pool(root: Path, n: int) -> tuple[Pool, Pool]:
    """A 50k TNEWS pool with text-linear's probabilities (trained on 2,000 titles, encoder off: the selection
    reads only the probabilities, and 50k encoder passes would cost minutes of CPU) and its texts; the second
    pool also carries 512-d unit vectors (random: the selection's cost depends only on their shape)."""
    from labelpilot.data.types import Example, Target  # lazy: only select-time builds a model itself
    from labelpilot.models.base import get_family  # lazy: as above
    from labelpilot.schema import make_label_config, parse_label_config  # lazy: as above

    rows = [json.loads(line) for line in (root / "tnews" / "train.json").read_text(encoding="utf-8").splitlines()]
    texts = [r["sentence"] for r in rows]
    texts = (texts * (1 + n // len(texts)))[:n]
    labels = sorted({r["label_desc"] for r in rows})
    control = parse_label_config(make_label_config(labels)).controls[0]
    model = get_family("text-linear")(control, encoder=False)
    model.fit([Example(text=r["sentence"], target=Target(labels=(r["label_desc"],))) for r in rows[:2000]])
    preds = model.predict([Example(text=t) for t in texts])
    pool = Pool.from_predictions(preds, control.label_keys, texts=texts, n_labeled=2000)
    vec = np.random.default_rng(0).standard_normal((n, 512)).astype(np.float32)
    vec /= np.linalg.norm(vec, axis=1, keepdims=True)
    pool_v = Pool.from_predictions(preds, control.label_keys, texts=texts, vectors=vec, n_labeled=2000)
    return pool, pool_v


@app.command("select-time")
def select_time(
    data: Annotated[Path | None, typer.Option(help="The shared datasets folder")] = None,
    n: Annotated[int, typer.Option(help="Pool size")] = 50_000,
    batch: Annotated[int, typer.Option()] = 100,
    repeats: Annotated[int, typer.Option()] = 3,
    results: Annotated[Path, typer.Option()] = Path("bench/results/al/protocol-select-50k.json"),
) -> None:
    """Seconds of ``strategy.select`` for every candidate on an ``n``-item pool (best and median of repeats)."""
    from threadpoolctl import threadpool_limits

    pool, pool_v = _timing_pool(data or default_data_root(), n)
    out: dict[str, Any] = {"pool": n, "batch": batch, "load_before": list(os.getloadavg()), "candidates": {}}
    with threadpool_limits(1):
        for cand, (strategy, params, vec_kind) in CANDIDATES.items():
            times, cpus = [], []
            for r in range(repeats):
                strat = get_strategy(strategy, random_state=r, **params)
                t0, c0 = time.perf_counter(), time.process_time()
                strat.select(pool_v if vec_kind else pool, batch)
                times.append(time.perf_counter() - t0)
                cpus.append(time.process_time() - c0)
            out["candidates"][cand] = {"best": min(times), "median": float(np.median(times)), "cpu_best": min(cpus)}
            typer.echo(f"{cand}: best {min(times):.3f}s, median {np.median(times):.3f}s wall, "
                       f"load {os.getloadavg()[0]:.2f}")
    out["load_after"] = list(os.getloadavg())
    out["at"] = time.strftime("%Y-%m-%d %H:%M:%S")
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    app()
