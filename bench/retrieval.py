"""Similarity search and FAQ matching on shared data (issue 15).

Measures, with the same code the server runs (``labelpilot.retrieval``):

- TNEWS texts (USE-multilingual vectors): recall@10 of the HNSW index against exact search (the share of the
  exact top-10 the index finds), same-class precision@10 of both, build time and query p50/p95 at 50k items;
- ants/bees images (EfficientNet-Lite0 pooled features): the same recall and same-class figures;
- FAQ: top-1 accuracy and no-answer precision on a FAQ set built from TNEWS (see :func:`faq_set`).

Vectors are cached under ``$LABELPILOT_CACHE_DIR/bench`` (encoding 50k texts takes minutes on a busy
machine); delete the folder to re-encode. Run::

    PYTHONPATH=src .venv/bin/python bench/retrieval.py [--n 50000] [--queries 500]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
if not SHARED.exists():
    SHARED = Path("/work/shared/data")
TNEWS = SHARED / "tnews"
HYMENOPTERA = SHARED / "hymenoptera"


def _cache(name: str) -> Path:
    from labelpilot import config

    return config.cache_dir("bench") / name


def tnews_rows(split: str, n: int) -> tuple[list[str], list[str], list[str]]:
    """(sentences, labels, keywords) of the first ``n`` rows of a TNEWS split (``train`` or ``dev``)."""
    texts, labels, keywords = [], [], []
    with (TNEWS / f"{split}.json").open(encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            texts.append(row["sentence"])
            labels.append(row["label_desc"])
            keywords.append(row.get("keywords") or "")
            if len(texts) >= n:
                break
    return texts, labels, keywords


def tnews_vectors(split: str, n: int) -> tuple[np.ndarray, list[str], list[str]]:
    """Encoded TNEWS rows, cached on disk as float16 (cosine error < 1e-3)."""
    from labelpilot.encoders import get_encoder

    texts, labels, _ = tnews_rows(split, n)
    enc = get_encoder()
    path = _cache(f"tnews-{split}-{len(texts)}-{enc.name}.npy")
    if path.is_file():
        X = np.load(path).astype(np.float32)
    else:
        parts = []
        for start in range(0, len(texts), 2000):
            parts.append(enc.encode(texts[start : start + 2000]))
            print(f"  encoded {start + len(parts[-1])}/{len(texts)} {split}", file=sys.stderr, flush=True)
        X = np.concatenate(parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, X.astype(np.float16))
    X /= np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    return X, labels, texts


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000.0, q))


def _neighbour_figures(index, exact, Q: np.ndarray, q_labels: list[str], labels: dict[str, str], k: int,
                       exclude: list[str] | None = None) -> dict[str, float]:
    """recall@k of ``index`` against ``exact`` and the same-class precision@k of both, one query at a time."""
    recall, same_index, same_exact, times = [], [], [], []
    for row in range(len(Q)):
        skip = [exclude[row]] if exclude else []
        t = time.perf_counter()
        got = index.search(Q[row : row + 1], k, exclude=skip)[0]
        times.append(time.perf_counter() - t)
        ref = exact.search(Q[row : row + 1], k, exclude=skip)[0]
        recall.append(len({h.id for h in got} & {h.id for h in ref}) / max(1, len(ref)))
        same_index.append(np.mean([labels[h.id] == q_labels[row] for h in got]))
        same_exact.append(np.mean([labels[h.id] == q_labels[row] for h in ref]))
    return {"recall_at_k_vs_exact": round(float(np.mean(recall)), 4),
            "same_class_at_k_index": round(float(np.mean(same_index)), 4),
            "same_class_at_k_exact": round(float(np.mean(same_exact)), 4),
            "query_p50_ms": round(_pct(times, 50), 3), "query_p95_ms": round(_pct(times, 95), 3)}


def bench_text(n: int, n_queries: int, k: int = 10) -> dict[str, object]:
    from labelpilot.retrieval.index import VectorIndex

    X, y, _ = tnews_vectors("train", n)
    Q, qy, qtexts = tnews_vectors("dev", max(n_queries, 2000))
    Q, qy, qtexts = Q[:n_queries], qy[:n_queries], qtexts[:n_queries]
    ids = [f"t{i}" for i in range(len(X))]
    labels = dict(zip(ids, y, strict=True))
    out: dict[str, object] = {"items": len(X), "queries": len(Q), "k": k}
    built = {}
    for kind, hnsw_min in (("flat", 10**9), ("hnsw", 1)):
        t = time.perf_counter()
        index = VectorIndex("text", X.shape[1], hnsw_min=hnsw_min)
        for start in range(0, len(X), 5000):
            index.add(ids[start : start + 5000], X[start : start + 5000])
        out[f"build_s_{kind}"] = round(time.perf_counter() - t, 2)
        built[kind] = index
    exact = built["flat"]
    out["hnsw"] = _neighbour_figures(built["hnsw"], exact, Q, qy, labels, k)
    out["flat"] = _neighbour_figures(exact, exact, Q, qy, labels, k)
    # the whole query as a client sees it: encoding a new text + HNSW search
    from labelpilot.encoders import get_encoder

    enc, times = get_encoder(), []
    for text in qtexts[:200]:
        t = time.perf_counter()
        built["hnsw"].search(enc.encode([text + " ?"]), k)  # "+ ?": not in the encoder's cache
        times.append(time.perf_counter() - t)
    out["encode_and_search_p50_ms"] = round(_pct(times, 50), 2)
    out["encode_and_search_p95_ms"] = round(_pct(times, 95), 2)
    out["_index"] = built["hnsw"]
    return out


def bench_http(index, n_queries: int = 200) -> dict[str, object]:
    """Save the 50k HNSW index into a data dir, start ``labelpilot serve`` and time /v1/indexes/.../search."""
    import subprocess
    import tempfile

    import httpx

    from benchutil import wait_healthy
    from labelpilot.retrieval.service import IndexStore

    _, _, qtexts = tnews_vectors("dev", 2000)
    with tempfile.TemporaryDirectory(prefix="lp-bench-retrieval-") as tmp:
        t = time.perf_counter()
        IndexStore(Path(tmp) / "indexes").save("tnews", index)
        save_s = time.perf_counter() - t
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        exe = Path(sys.executable).parent / "labelpilot"
        proc = subprocess.Popen([str(exe), "serve", "--port", str(port), "--data-dir", tmp, "--log-level", "warning"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(url, proc, 60)
            with httpx.Client(base_url=url, timeout=60) as c:
                t = time.perf_counter()
                c.post("/v1/indexes/tnews/search", json={"text": "热身", "k": 10}).raise_for_status()
                first = time.perf_counter() - t  # loads the index and the encoder
                by_text, by_id = [], []
                for i, text in enumerate(qtexts[:n_queries]):
                    t = time.perf_counter()
                    c.post("/v1/indexes/tnews/search", json={"text": text, "k": 10}).raise_for_status()
                    by_text.append(time.perf_counter() - t)
                    t = time.perf_counter()
                    c.post("/v1/indexes/tnews/search", json={"id": f"t{i * 97}", "k": 10}).raise_for_status()
                    by_id.append(time.perf_counter() - t)
        finally:
            proc.terminate()
            proc.wait(20)
    return {"save_s": round(save_s, 2), "first_search_s": round(first, 2),
            "by_text_p50_ms": round(_pct(by_text, 50), 2), "by_text_p95_ms": round(_pct(by_text, 95), 2),
            "by_id_p50_ms": round(_pct(by_id, 50), 2), "by_id_p95_ms": round(_pct(by_id, 95), 2)}


def bench_images(k: int = 10) -> dict[str, object]:
    """Leave-one-out neighbours of the 398 ants/bees images (train + val)."""
    from labelpilot.retrieval.index import VectorIndex
    from labelpilot.retrieval.service import image_features

    paths = sorted(p for p in HYMENOPTERA.rglob("*") if p.is_file())
    t = time.perf_counter()
    feats, errors = image_features([str(p) for p in paths])
    feature_s = time.perf_counter() - t
    keep = [i for i, e in enumerate(errors) if e is None]
    ids = [str(paths[i].relative_to(HYMENOPTERA)) for i in keep]
    labels = {i: paths[j].parent.name for i, j in zip(ids, keep, strict=True)}
    X = feats[keep]
    exact, hnsw = VectorIndex("image", X.shape[1]), VectorIndex("image", X.shape[1], hnsw_min=1)
    exact.add(ids, X)
    hnsw.add(ids, X)
    fig = _neighbour_figures(hnsw, exact, X, [labels[i] for i in ids], labels, k, exclude=ids)
    ref = _neighbour_figures(exact, exact, X, [labels[i] for i in ids], labels, k, exclude=ids)
    return {"images": len(ids), "failed": len(paths) - len(ids), "features_s": round(feature_s, 1), "hnsw": fig,
            "flat": ref}


def faq_set(n_questions: int = 80, n_unseen: int = 20, per_question: int = 40, seed: int = 0):
    """A FAQ set from TNEWS keywords: a keyword found in 30-300 training sentences is a standard question
    ("关于<keyword>"), and the sentences whose keyword list holds it (and no other chosen keyword) are its
    phrasings (at most ``per_question``). 70 % of each question's phrasings train, 30 % are test queries;
    ``n_unseen`` further keywords are never trained and their sentences (15 each) are test queries that
    have no answer."""
    from labelpilot.retrieval.faq import FaqRow

    texts, _, keywords = tnews_rows("train", 10**9)
    count: dict[str, int] = {}
    for kw in keywords:
        for w in set(filter(None, kw.split(","))):
            count[w] = count.get(w, 0) + 1
    rng = np.random.default_rng(seed)
    pool = sorted(w for w, c in count.items() if 30 <= c <= 300 and len(w) >= 2)
    chosen = [str(w) for w in rng.permutation(pool)[: n_questions + n_unseen]]
    rank = {w: i for i, w in enumerate(chosen)}
    by_q: dict[str, list[str]] = {w: [] for w in chosen}
    for text, kw in zip(texts, keywords, strict=True):
        hit = [w for w in set(filter(None, kw.split(","))) if w in rank]
        if len(hit) == 1 and len(by_q[hit[0]]) < per_question:
            by_q[hit[0]].append(text)
    train, test = [], []
    for w in chosen[:n_questions]:
        phr = list(rng.permutation(by_q[w]))
        cut = int(0.7 * len(phr))
        train += [FaqRow(str(p), w, f"关于{w}的标准答案", f"关于{w}") for p in phr[:cut]]
        test += [(str(p), w) for p in phr[cut:]]
    for w in chosen[n_questions:]:
        test += [(str(p), "") for p in by_q[w][:15]]
    return train, test


def bench_faq() -> dict[str, object]:
    from labelpilot.retrieval.faq import FaqModel

    train, test = faq_set()
    t = time.perf_counter()
    model = FaqModel.fit(train)
    fit_s = time.perf_counter() - t
    answers = model.answer([q for q, _ in test])
    truth = np.array([w for _, w in test], dtype=object)
    inscope = truth != ""
    top = np.array([a["candidates"][0]["question_id"] for a in answers], dtype=object)
    answered = np.array([a["answered"] for a in answers])
    right = top == truth
    from sklearn.metrics import roc_auc_score

    conf = np.array([a["confidence"] for a in answers])
    return {"questions": len({r.question_id for r in train}), "train_phrasings": len(train),
            "test_queries": int(inscope.sum()), "test_unanswerable": int((~inscope).sum()), "fit_s": round(fit_s, 1),
            "alpha": model.alpha, "threshold": round(model.threshold, 4),
            "top1_accuracy": round(float(right[inscope].mean()), 4),
            "answered_accuracy": round(float(right[answered & inscope].sum() / max(1, answered.sum())), 4),
            "no_answer_precision": round(float((~inscope[~answered]).mean()), 4) if (~answered).any() else None,
            "no_answer_recall": round(float((~answered[~inscope]).mean()), 4),
            "accuracy_with_no_answer": round(float(np.where(answered, right, ~inscope).mean()), 4),
            "always_answer_accuracy": round(float(right.mean()), 4),
            "auc_confidence_right_vs_rest": round(float(roc_auc_score(right, conf)), 4),
            "auc_confidence_answerable_vs_not": round(float(roc_auc_score(inscope, conf)), 4),
            "heldout_tuning": {k: v for k, v in model.metrics.items() if k.startswith("heldout_")}}


def main(n: int, n_queries: int, only: str | None = None) -> dict[str, object]:
    results: dict[str, object] = {}
    if only == "faq":
        results["faq_tnews_keywords"] = bench_faq()
        print(json.dumps(results["faq_tnews_keywords"], indent=1, ensure_ascii=False), flush=True)
        return results
    if TNEWS.is_dir():
        text = bench_text(n, n_queries)
        index = text.pop("_index")
        results["tnews_text"] = text
        print(json.dumps(text, indent=1), flush=True)
        results["tnews_http"] = bench_http(index)
        print(json.dumps(results["tnews_http"], indent=1), flush=True)
        results["faq_tnews_keywords"] = bench_faq()
        print(json.dumps(results["faq_tnews_keywords"], indent=1, ensure_ascii=False), flush=True)
    else:
        results["tnews_text"] = f"skipped: {TNEWS} not found"
    if HYMENOPTERA.is_dir():
        results["hymenoptera_images"] = bench_images()
        print(json.dumps(results["hymenoptera_images"], indent=1), flush=True)
    else:
        results["hymenoptera_images"] = f"skipped: {HYMENOPTERA} not found"
    return results


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "retrieval.json")
    ap.add_argument("--only", choices=["faq"], default=None, help="Run one part (merged into --out).")
    args = ap.parse_args()
    res = main(args.n, args.queries, args.only)
    if args.only and args.out.is_file():  # one part again: merged into the last full results
        res = {**json.loads(args.out.read_text(encoding="utf-8")), **res}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"-> {args.out}")
