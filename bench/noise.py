"""Label-noise finding: plant random label errors in real data and measure how many the audit ranks on top.

Classification (TNEWS, SST-2): a seeded sample of ``--n`` training rows, 10 % of labels flipped uniformly to
another class; spans (CoNLL-2003): a seeded sample of ``--n-spans`` sentences, 10 % of the entity spans
perturbed (a third each: retyped, boundary moved by one token, dropped). ``labelpilot.audit`` then computes
out-of-fold predictions and ranks suspects. Reported: the share of planted errors in the top-ranked 10 %
(classification: 10 % of examples; spans: 10 % of the tasks, and span-level with K = 10 % of annotated spans),
precision@k (k = number of planted errors), ROC-AUC of the score, the confident-joint flag's precision/recall,
seconds. With ``--cleanlab /tmp/cl-venv/bin/python`` the same out-of-fold probabilities go to cleanlab 2.x in
that (throwaway) interpreter and its ``find_label_issues`` ranking is reported beside.

    .venv/bin/python bench/noise.py                      # all three datasets
    .venv/bin/python bench/noise.py --dataset sst2 --cleanlab /tmp/cl-venv/bin/python

Skips a dataset (with a visible message) when ``../shared/data`` does not have it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pickle
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from labelpilot.audit.oof import out_of_fold
from labelpilot.audit.suspects import RANK_BY, _classes, _prob_matrix, span_issues, suspects_from_oof
from labelpilot.data.bio import read_conll, tokenize
from labelpilot.data.types import Example, Span, Target
from labelpilot.schema import parse_label_config
from labelpilot.schema.types import ControlSpec, LabelSpec, TaskKind
from textdata import DEFAULT_DATA, label_config, load

CLEANLAB_SNIPPET = """
import json, sys, numpy as np
from cleanlab.filter import find_label_issues
d = np.load(sys.argv[1])
ranked = find_label_issues(d["labels"], d["probs"], return_indices_ranked_by="self_confidence")
print(json.dumps({"ranked": [int(i) for i in ranked]}))
"""


def load_avg() -> str:
    return f"{os.getloadavg()[0]:.1f}"


def _goemotions(data: Path) -> tuple[list[str], list[str], str]:
    """GoEmotions train, single-label rows only (36,308 of 43,410): texts, emotion names, a Choices config."""
    names = [ln.strip() for ln in (data / "goemotions" / "labels.txt").open(encoding="utf-8") if ln.strip()]
    texts, labels = [], []
    for line in (data / "goemotions" / "train.tsv").open(encoding="utf-8"):
        parts = line.rstrip("\n").split("\t")
        if len(parts) >= 2 and "," not in parts[1]:
            texts.append(parts[0])
            labels.append(names[int(parts[1])])
    choices = "".join(f'<Choice value="{n}"/>' for n in names)
    config = f'<View><Text name="text" value="$text"/><Choices name="label" toName="text">{choices}</Choices></View>'
    return texts, labels, config


def classification(name: str, args: argparse.Namespace) -> dict | None:
    try:
        if name == "goemotions":
            texts, labels, config = _goemotions(args.data)
        else:
            texts, labels = load(name, "train", args.data)
            config = label_config(name)
    except FileNotFoundError as exc:
        print(f"[{name}] SKIPPED: data missing ({exc})", file=sys.stderr)
        return None
    control = parse_label_config(config).controls[0]
    pairs: list[str] | None = None
    if name == "tnews" and args.keywords:  # TNEWS' keywords field as the second text (as a project would have it)
        pairs = [json.loads(line)["keywords"] for line in (args.data / "tnews" / "train.json").open(encoding="utf-8")
                 if line.strip()]
        control = dataclasses.replace(control, pair_key="keywords")
    rng = random.Random(args.seed)
    idx = rng.sample(range(len(texts)), min(args.n, len(texts)))
    classes = control.label_keys
    flipped = set(rng.sample(range(len(idx)), round(args.rate * len(idx))))
    examples = []
    for pos, i in enumerate(idx):
        lab = labels[i]
        if pos in flipped:
            lab = rng.choice([c for c in classes if c != lab])
        examples.append(Example(text=texts[i], text_pair=pairs[i] if pairs else None, id=str(pos),
                                target=Target(labels=(lab,))))
    load_before = load_avg()
    t0, c0 = time.perf_counter(), time.process_time()
    oof = out_of_fold(control, examples, folds=args.folds, seed=args.seed, options=json.loads(args.options),
                      repeats=args.repeats)
    sus = suspects_from_oof(oof, rank_by=args.rank_by)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    res = _rank_metrics([int(s.example_id) for s in sus], [s.score for s in sus], flipped, len(examples))
    for other in RANK_BY:  # the other rankings of the same probabilities (no refit)
        alt = suspects_from_oof(oof, rank_by=other)
        res[f"found_top10_{other}"] = _rank_metrics([int(s.example_id) for s in alt], [s.score for s in alt],
                                                    flipped, len(examples))["found_top10"]
    res["variants"] = _variants(oof, flipped)
    res["oof_notes"] = oof.notes
    res["repeats_used"] = oof.repeats
    res["refit_used"] = oof.options.get("refit")
    flagged = {int(s.example_id) for s in sus if s.flagged}
    res.update(
        dataset=name, n=len(examples), planted=len(flipped), seconds=round(seconds, 1), cpu_s=round(cpu, 1),
        load=f"{load_before} -> {load_avg()}", folds=oof.folds, family=oof.family,
        oof_accuracy=round(float(np.mean([p.labels[:1] == (labels[i],) for p, i in zip(oof.predictions, idx,
                                                                                      strict=True)])), 4),
        flag_precision=round(len(flagged & flipped) / max(1, len(flagged)), 4),
        flag_recall=round(len(flagged & flipped) / len(flipped), 4), n_flagged=len(flagged),
    )
    if args.cleanlab:
        res["cleanlab"] = _cleanlab(args.cleanlab, oof, flipped)
    return res


def _variants(oof, flipped: set[int]) -> dict[str, float]:
    """found-top-10 % of candidate rankings computed here from the same probabilities (second selection round):
    class-adjusted self-confidence p[given] / t_given (t = the class's mean self-confidence, as the confident
    joint's thresholds) and self-confidence after a temperature on the probabilities (p ** (1 / T), renormalized)."""
    classes = _classes(oof.control, oof)
    col = {c: j for j, c in enumerate(classes)}
    probs = np.clip(_prob_matrix(oof.predictions, classes), 1e-12, None)
    probs = probs / probs.sum(axis=1, keepdims=True)
    given = np.array([col[ex.target.labels[0]] for ex in oof.examples])
    rows = np.arange(len(given))
    ids = [int(ex.id) for ex in oof.examples]
    thr = np.array([probs[given == j, j].mean() if (given == j).any() else 1.0 for j in range(len(classes))])
    out = {}
    quality = {"self_confidence": probs[rows, given], "adjusted": probs[rows, given] / thr[given]}
    for t in (0.5, 2.0):
        q = probs ** (1.0 / t)
        quality[f"temperature_{t:g}"] = (q / q.sum(axis=1, keepdims=True))[rows, given]
    for name, q in quality.items():
        order = np.argsort(q, kind="stable")
        out[name] = _rank_metrics([ids[i] for i in order], [-float(q[i]) for i in order], flipped, len(ids))[
            "found_top10"]
    return out


def _rank_metrics(order: list[int], scores: list[float], planted: set[int], n: int) -> dict:
    k10 = round(0.1 * n)
    k = len(planted)
    truth = np.array([i in planted for i in order])
    return {
        "found_top10": round(float(truth[:k10].sum()) / max(1, len(planted)), 4),
        "precision_at_k": round(float(truth[:k].mean()) if k else 0.0, 4),
        "roc_auc": round(float(roc_auc_score(truth, scores)), 4) if 0 < truth.sum() < len(truth) else None,
    }


def _cleanlab(python: str, oof, flipped: set[int]) -> dict:
    classes = _classes(oof.control, oof)
    col = {c: j for j, c in enumerate(classes)}
    probs = _prob_matrix(oof.predictions, classes)
    probs = np.clip(probs, 1e-9, None)
    probs = probs / probs.sum(axis=1, keepdims=True)
    given = np.array([col[ex.target.labels[0]] for ex in oof.examples])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "oof.npz"
        np.savez(path, probs=probs, labels=given)
        t0 = time.perf_counter()
        out = subprocess.run([python, "-c", CLEANLAB_SNIPPET, str(path)], capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - t0
    if out.returncode:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"}
    ranked = json.loads(out.stdout)["ranked"]
    # cleanlab returns only the issues it finds, ranked; the rest follow by self-confidence (as ours)
    rest = sorted(set(range(len(given))) - set(ranked), key=lambda i: probs[i, given[i]])
    order = ranked + rest
    n = len(given)
    scores = [float(n - r) for r in range(n)]
    res = _rank_metrics([int(oof.examples[i].id) for i in order], scores, flipped, n)
    found = {int(oof.examples[i].id) for i in ranked}
    res.update(n_issues=len(ranked), issue_precision=round(len(found & flipped) / max(1, len(found)), 4),
               issue_recall=round(len(found & flipped) / len(flipped), 4), seconds=round(seconds, 2))
    return res


def _perturb_spans(examples: list[Example], rate: float, rng: random.Random, labels: list[str]) -> dict:
    """Perturb ``rate`` of all entity spans in place; returns {(example index, kind): original/new span}."""
    refs = [(i, j) for i, ex in enumerate(examples) for j in range(len(ex.target.spans))]
    chosen = rng.sample(refs, round(rate * len(refs)))
    by_ex: dict[int, list[int]] = {}
    for i, j in chosen:
        by_ex.setdefault(i, []).append(j)
    planted = []
    for i, js in by_ex.items():
        ex = examples[i]
        spans = list(ex.target.spans)
        toks = tokenize(ex.text)
        drop = set()
        for j in js:
            s = spans[j]
            kind = rng.choice(["retype", "shift", "drop"])
            if kind == "shift":
                # extend by one token to the right, or shrink from the right when that runs past the text
                after = [t for t in toks if t[0] >= s.end]
                inside = [t for t in toks if s.start <= t[0] and t[1] <= s.end]
                if after and not any(o.start <= after[0][0] < o.end for o in spans):
                    new = Span(s.start, after[0][1], s.label)
                elif len(inside) > 1:
                    new = Span(s.start, inside[-2][1], s.label)
                else:
                    kind = "retype"
            if kind == "retype":
                new = Span(s.start, s.end, rng.choice([lab for lab in labels if lab != s.label]))
            if kind == "drop":
                drop.add(j)
                planted.append((i, kind, s, None))
                continue
            spans[j] = new
            planted.append((i, kind, s, new))
        ex.target = Target(spans=tuple(sp for j, sp in enumerate(spans) if j not in drop))
    return {"planted": planted, "tasks": set(by_ex)}


def spans(args: argparse.Namespace) -> dict | None:
    path = args.data / "conll2003" / "eng.train"
    if not path.is_file():
        print(f"[conll] SKIPPED: data missing ({path})", file=sys.stderr)
        return None
    rng = random.Random(args.seed)
    every = [ex for ex in read_conll(path) if ex.target and ex.text.strip()]
    examples = rng.sample(every, min(args.n_spans, len(every)))
    for pos, ex in enumerate(examples):
        ex.id = str(pos)
    labels = sorted({s.label for ex in examples for s in ex.target.spans})
    control = ControlSpec(name="label", type="Labels", to_name="text", object_type="Text", value_key="text",
                          kind=TaskKind.TEXT_SPANS, labels=tuple(LabelSpec(value=lab) for lab in labels))
    n_spans = sum(len(ex.target.spans) for ex in examples)
    info = _perturb_spans(examples, args.rate, rng, labels)
    load_before = load_avg()
    t0, c0 = time.perf_counter(), time.process_time()
    cache = args.oof_cache / f"conll-{args.n_spans}-{args.seed}-{args.folds}.pkl" if args.oof_cache else None
    if cache is not None and cache.is_file():  # rescoring only: the fits of an earlier run, same data and seed
        oof = pickle.loads(cache.read_bytes())
        print(f"[conll] out-of-fold predictions from {cache} (seconds below exclude the fits)", file=sys.stderr)
    else:
        oof = out_of_fold(control, examples, folds=args.folds, seed=args.seed,
                          options=json.loads(args.span_options))
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_bytes(pickle.dumps(oof))
    sus = suspects_from_oof(oof, span_support=args.span_support)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    task = _rank_metrics([int(s.example_id) for s in sus], [s.score for s in sus], info["tasks"], len(examples))
    # span level: each planted error is found when an issue in the top K points at it
    issues = sorted(span_issues(oof, args.span_support), key=lambda s: -s.score)
    k = round(0.1 * n_spans)
    hit = [False] * len(info["planted"])
    by_kind: dict[str, list[bool]] = {}
    top = issues[:k]
    for p, (i, kind, orig, new) in enumerate(info["planted"]):
        for iss in top:
            if iss.index != i:
                continue
            same = new is not None and iss.given == new
            dropped = new is None and iss.given is None and iss.predicted is not None and (
                iss.predicted.start < orig.end and orig.start < iss.predicted.end)
            if same or dropped:
                hit[p] = True
        by_kind.setdefault(kind, []).append(hit[p])
    return {
        "dataset": "conll2003", "n": len(examples), "n_spans": n_spans, "planted": len(info["planted"]),
        "planted_tasks": len(info["tasks"]), "seconds": round(seconds, 1), "cpu_s": round(cpu, 1),
        "folds": oof.folds,
        "load": f"{load_before} -> {load_avg()}",
        "task_found_top10": task["found_top10"], "task_precision_at_k": task["precision_at_k"],
        "task_roc_auc": task["roc_auc"],
        "span_found_topK": round(sum(hit) / max(1, len(hit)), 4), "K": k,
        "span_found_by_kind": {kk: round(sum(v) / len(v), 3) for kk, v in by_kind.items()},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", choices=["tnews", "sst2", "conll", "trec", "goemotions", "all"], default="all",
                    help="all = the evaluation sets (tnews, sst2, conll); trec, goemotions chose the defaults")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--n", type=int, default=10000, help="classification examples")
    ap.add_argument("--n-spans", type=int, default=4000, help="CoNLL sentences")
    ap.add_argument("--rate", type=float, default=0.1)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=None,
                    help="classification: average over this many fold splits (default: the audit's own)")
    ap.add_argument("--span-support", default="min", choices=["min", "mean"])
    ap.add_argument("--rank-by", default="self_confidence")
    ap.add_argument("--keywords", action="store_true", help="TNEWS: keywords as the second text field")
    ap.add_argument("--options", default="{}", help="JSON options of the classification family")
    ap.add_argument("--span-options", default="{}", help="JSON options of the span family")
    ap.add_argument("--cleanlab", default=None, help="python of a venv with cleanlab installed")
    ap.add_argument("--oof-cache", type=Path, default=None,
                    help="CoNLL: keep the out-of-fold predictions here (pickle) and reuse them to rescore")
    ap.add_argument("--json", type=Path, default=None, help="append results here as JSON lines")
    args = ap.parse_args(argv)
    if not args.data.is_dir():
        print(f"SKIPPED: no shared data at {args.data}", file=sys.stderr)
        return 0
    names = ["tnews", "sst2", "conll"] if args.dataset == "all" else [args.dataset]
    for name in names:
        res = spans(args) if name == "conll" else classification(name, args)
        if res is None:
            continue
        res["options"] = args.span_options if name == "conll" else args.options
        res["repeats" if name != "conll" else "span_support"] = args.repeats if name != "conll" else args.span_support
        if name == "tnews":
            res["keywords"] = args.keywords
        print(json.dumps(res, ensure_ascii=False), flush=True)
        if args.json:
            with args.json.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(res, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
