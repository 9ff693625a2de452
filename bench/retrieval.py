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


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--queries", type=int, default=500)
    main_args = ap.parse_args()
