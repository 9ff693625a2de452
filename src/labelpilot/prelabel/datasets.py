"""The shared datasets as a Label Studio project would hold them: a label config, tasks in the order the
annotator opens them, and the annotation the annotator saves for each (the gold, in Label Studio's result
shape). Reads ``../shared/data`` through the loaders the active-learning benchmark already uses.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

import numpy as np

from labelpilot.data.bio import read_conll, read_weibo
from labelpilot.data.cluener import read_cluener
from labelpilot.data.types import Example
from labelpilot.testing.corpora import SIZES, load_text_dataset

TEXT = ("tnews", "sst2", "trec", "goemotions", "bdci")
SPANS = ("cluener", "weibo", "conll2003")
ALL = TEXT + SPANS

#: What each dataset needs under the data root (to skip it with a clear message when it is absent).
NEEDS: dict[str, str] = {
    "tnews": "tnews/train.json", "sst2": "sst2/sentiment-train", "trec": "trec/train_5500.label",
    "goemotions": "goemotions/train.tsv", "bdci": "bdci2018_car_multilabel/train_2.csv",
    "cluener": "cluener2020/train.json", "weibo": "weibo_ner/weiboNER_2nd_conll.train",
    "conll2003": "conll2003/eng.train",
}

#: Readable names and hints for datasets whose raw labels are codes (what a project owner would type).
NAMES: dict[str, dict[str, str]] = {
    "sst2": {"0": "negative", "1": "positive"},
}
HINTS: dict[str, dict[str, str]] = {
    "trec": {"ABBR": "abbreviation", "DESC": "description or definition", "ENTY": "entity or thing",
             "HUM": "person or group of people", "LOC": "location or place", "NUM": "number, date or amount"},
}


@dataclass
class BenchDataset:
    name: str
    kind: str  # "choices" or "spans"
    labels: list[str]
    multiple: bool
    tasks: list[dict[str, Any]]  # {"id", "data": {"text"}}
    gold: list[list[dict[str, Any]]]  # Label Studio result per task
    notes: list[str] = field(default_factory=list)

    @property
    def label_config(self) -> str:
        hints = HINTS.get(self.name, {})

        def attrs(label: str) -> str:
            hint = f" hint={quoteattr(hints[label])}" if label in hints else ""
            return f"value={quoteattr(label)}{hint}"

        if self.kind == "choices":
            choice = "multiple" if self.multiple else "single"
            inner = "".join(f"<Choice {attrs(lab)}/>" for lab in self.labels)
            control = f'<Choices name="label" toName="text" choice="{choice}">{inner}</Choices>'
        else:
            inner = "".join(f"<Label {attrs(lab)}/>" for lab in self.labels)
            control = f'<Labels name="label" toName="text">{inner}</Labels>'
        return f'<View>{control}<Text name="text" value="$text"/></View>'


def missing(name: str, root: Path) -> str | None:
    """Why ``name`` cannot run from ``root``, or None."""
    if name not in NEEDS:
        return f"unknown dataset {name!r}; known: {', '.join(ALL)}"
    path = root / NEEDS[name]
    return None if path.exists() else f"{path} is absent"


def load(name: str, root: Path, n_tasks: int, seed: int = 0) -> BenchDataset:
    """The first ``n_tasks`` tasks of a shuffled pool of the training split (``seed`` 0: the order the results
    report; other seeds give other task orders, to see how noisy a window of 10 tasks is)."""
    return _load_spans(name, root, n_tasks, seed) if name in SPANS else _load_text(name, root, n_tasks, seed)


def _choice_result(labels: list[str]) -> list[dict[str, Any]]:
    return [{"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": labels}}]


def _load_text(name: str, root: Path, n_tasks: int, seed: int) -> BenchDataset:
    data = load_text_dataset(name, root, SIZES[name])
    order = np.random.default_rng(seed).permutation(len(data.texts))[:n_tasks]
    rename = NAMES.get(name, {})
    labels = [rename.get(lab, lab) for lab in data.labels]
    tasks, gold = [], []
    for i, j in enumerate(order):
        picked = [labels[c] for c in np.flatnonzero(data.y[j])] if data.multi_label else [labels[int(data.y[j])]]
        tasks.append({"id": i + 1, "data": {"text": data.texts[j]}})
        gold.append(_choice_result(picked))
    return BenchDataset(name, "choices", labels, data.multi_label, tasks, gold)


def read_span_examples(name: str, root: Path) -> list[Example]:
    if name == "cluener":
        return read_cluener(root / NEEDS[name])
    if name == "weibo":
        return read_weibo(root / NEEDS[name])
    return read_conll(root / NEEDS[name])


def _load_spans(name: str, root: Path, n_tasks: int, seed: int) -> BenchDataset:
    examples = [ex for ex in read_span_examples(name, root) if ex.text and ex.text.strip()]
    order = np.random.default_rng(seed).permutation(len(examples))[:n_tasks]
    labels = sorted({sp.label for ex in examples for sp in (ex.target.spans if ex.target else ())})
    tasks, gold = [], []
    for i, j in enumerate(order):
        ex = examples[j]
        result = [
            {"id": f"g{i}-{k}", "from_name": "label", "to_name": "text", "type": "labels",
             "value": {"start": sp.start, "end": sp.end, "text": ex.text[sp.start : sp.end], "labels": [sp.label]}}
            for k, sp in enumerate(ex.target.spans if ex.target else ())
        ]
        tasks.append({"id": i + 1, "data": {"text": ex.text}})
        gold.append(result)
    return BenchDataset(name, "spans", labels, False, tasks, gold)


def from_jsonl(path: Path) -> BenchDataset:
    """A handmade dataset: a first line ``{"name", "kind", "labels", "multiple"}``, then one
    ``{"text", "labels": [...]}`` (choices) or ``{"text", "spans": [[start, end, label], ...]}`` per task."""
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    head, rows = lines[0], lines[1:]
    tasks, gold = [], []
    for i, row in enumerate(rows):
        tasks.append({"id": i + 1, "data": {"text": row["text"]}})
        if head["kind"] == "choices":
            gold.append(_choice_result(list(row["labels"])))
        else:
            gold.append([
                {"id": f"g{i}-{k}", "from_name": "label", "to_name": "text", "type": "labels",
                 "value": {"start": s, "end": e, "text": row["text"][s:e], "labels": [lab]}}
                for k, (s, e, lab) in enumerate(row["spans"])
            ])
    return BenchDataset(head["name"], head["kind"], list(head["labels"]), bool(head.get("multiple")), tasks, gold)
