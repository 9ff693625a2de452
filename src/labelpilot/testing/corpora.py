"""Readers of the shared text corpora with the fixed subsamples the benchmarks use.

TREC, SST-2, TNEWS, GoEmotions and BDCI-2018 (car reviews) from the shared data folder, each subsampled into a
pool and a test set with data seed 0 at the sizes of :data:`SIZES` (the "scale 1" setup of the active-learning
simulation in ``bench/al/``). ``labelpilot bench prelabel`` draws its text tasks from the same pools, so the
readers live in the package (under ``testing/``, with the other code that exists for measuring labelpilot
rather than for serving) and the simulation imports them from here.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TEXT_DATASETS = ("trec", "sst2", "tnews", "goemotions", "bdci")
NER_DATASETS = ("conll2003", "cluener")


@dataclass
class Sizes:
    """Pool and test subsample sizes, initial labelled set, batch and label budget of one dataset."""

    pool: int
    test: int
    init: int
    batch: int
    budget: int


#: Pool/test subsample sizes, initial set, batch and label budget per dataset (the "scale 1" setup).
SIZES: dict[str, Sizes] = {
    "trec": Sizes(pool=5452, test=500, init=50, batch=50, budget=2500),
    "sst2": Sizes(pool=10000, test=1821, init=100, batch=100, budget=5000),
    "tnews": Sizes(pool=10000, test=3000, init=100, batch=100, budget=6000),
    "goemotions": Sizes(pool=6000, test=2000, init=100, batch=100, budget=3000),
    "bdci": Sizes(pool=7000, test=3000, init=100, batch=100, budget=3000),
    "conll2003": Sizes(pool=4000, test=1000, init=100, batch=100, budget=2000),
    "cluener": Sizes(pool=4000, test=1000, init=100, batch=100, budget=2000),
}


@dataclass
class TextData:
    """One text corpus as pool texts/labels and test texts/labels (class ids or a 0/1 matrix)."""

    name: str
    texts: list[str]
    y: np.ndarray  # (n,) int class ids, or (n, L) 0/1 for multi-label
    test_texts: list[str]
    y_test: np.ndarray
    labels: list[str]
    multi_label: bool = False
    analyzer: str = "word"
    metric: str = "accuracy"


def default_data_root() -> Path:
    """``$LABELPILOT_SHARED_DATA``, else ``../shared/data`` or ``/work/shared/data`` when it exists."""
    env = os.environ.get("LABELPILOT_SHARED_DATA")
    if env:
        return Path(env)
    for cand in (Path.cwd().parent / "shared" / "data", Path("/work/shared/data")):
        if cand.is_dir():
            return cand
    return Path.cwd().parent / "shared" / "data"


def _subsample(n: int, k: int, seed: int = 0) -> np.ndarray:
    if k >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, k, replace=False))


class UnknownDataset(ValueError):
    """A dataset name that :func:`load_text_dataset` does not know."""


def _read_trec(p: Path) -> tuple[list[str], list[str]]:
    """TREC: ``COARSE:fine question`` a line (latin-1); the coarse class is the label."""
    texts, labels = [], []
    for line in p.read_text(encoding="latin-1").splitlines():
        if line.strip():
            head, _, text = line.partition(" ")
            labels.append(head.split(":")[0])
            texts.append(text.strip())
    return texts, labels


def _read_sst2(p: Path) -> tuple[list[str], list[str]]:
    """SST-2: ``text<TAB>label`` a line."""
    texts, labels = [], []
    for line in p.read_text(encoding="utf-8").splitlines():
        text, _, lab = line.rpartition("\t")
        if text.strip():
            texts.append(text.strip())
            labels.append(lab.strip())
    return texts, labels


def _read_tnews(p: Path) -> tuple[list[str], list[str]]:
    """TNEWS (CLUE): a JSON object a line with ``sentence`` and ``label_desc``."""
    rows = [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r["sentence"] for r in rows], [r["label_desc"] for r in rows]


#: The single-label datasets: reader, train and test file under the data root, analyzer.
_SINGLE_LABEL = {
    "trec": (_read_trec, "trec/train_5500.label", "trec/TREC_10.label", "word"),
    "sst2": (_read_sst2, "sst2/sentiment-train", "sst2/sentiment-test", "word"),
    "tnews": (_read_tnews, "tnews/train.json", "tnews/dev.json", "char"),
}


def _single_label(name: str, root: Path, sizes: Sizes) -> TextData:
    """A single-label dataset of :data:`_SINGLE_LABEL`, labels as class ids over the sorted label set."""
    read, train_file, test_file, analyzer = _SINGLE_LABEL[name]
    tr, ytr = read(root / train_file)
    te, yte = read(root / test_file)
    labels = sorted(set(ytr) | set(yte))
    col = {k: j for j, k in enumerate(labels)}
    pi, ti = _subsample(len(tr), sizes.pool), _subsample(len(te), sizes.test)
    return TextData(
        name,
        [tr[i] for i in pi],
        np.array([col[ytr[i]] for i in pi]),
        [te[i] for i in ti],
        np.array([col[yte[i]] for i in ti]),
        labels,
        False,
        analyzer,
    )


def _goemotions(root: Path, sizes: Sizes) -> TextData:
    """GoEmotions: ``text<TAB>label ids`` a line, multi-label over ``labels.txt``."""
    names = (root / "goemotions" / "labels.txt").read_text(encoding="utf-8").split()

    def read(p: Path) -> tuple[list[str], np.ndarray]:
        texts, rows = [], []
        for line in p.read_text(encoding="utf-8").splitlines():
            parts = line.split("\t")
            if len(parts) >= 2:
                texts.append(parts[0])
                v = np.zeros(len(names), dtype=np.int8)
                v[[int(x) for x in parts[1].split(",")]] = 1
                rows.append(v)
        return texts, np.vstack(rows)

    tr, Ytr = read(root / "goemotions" / "train.tsv")
    te, Yte = read(root / "goemotions" / "test.tsv")
    pi, ti = _subsample(len(tr), sizes.pool), _subsample(len(te), sizes.test)
    return TextData(
        "goemotions", [tr[i] for i in pi], Ytr[pi], [te[i] for i in ti], Yte[ti], names, True, "word", "micro_f1"
    )


def _bdci(root: Path, sizes: Sizes) -> TextData:
    """CCF BDCI 2018 car reviews (zh): one CSV row per (content, topic); only train_2.csv is labelled, so
    its contents are split into pool and test (data seed 0). Multi-label over the 10 topics."""
    topics: dict[str, set[str]] = {}
    text_of: dict[str, str] = {}
    with (root / "bdci2018_car_multilabel" / "train_2.csv").open(encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            text_of[row["content_id"]] = row["content"]
            topics.setdefault(row["content_id"], set()).add(row["subject"])
    names = sorted({t for ts in topics.values() for t in ts})
    ids = sorted(text_of)
    order = np.random.default_rng(0).permutation(len(ids))
    Y = np.zeros((len(ids), len(names)), dtype=np.int8)
    for i, cid in enumerate(ids):
        Y[i, [names.index(t) for t in topics[cid]]] = 1
    pi, ti = order[: sizes.pool], order[sizes.pool : sizes.pool + sizes.test]
    return TextData("bdci", [text_of[ids[i]] for i in pi], Y[pi], [text_of[ids[i]] for i in ti], Y[ti], names, True,
                    "char", "micro_f1")


def load_text_dataset(name: str, root: Path, sizes: Sizes) -> TextData:
    """Read one of the shared text datasets and subsample pool and test (data seed 0)."""
    if name in _SINGLE_LABEL:
        return _single_label(name, root, sizes)
    if name == "goemotions":
        return _goemotions(root, sizes)
    if name == "bdci":
        return _bdci(root, sizes)
    raise UnknownDataset(f"unknown text dataset {name!r}; known: {', '.join(TEXT_DATASETS)}")
