"""Near-duplicate report of an index: pairs above a cosine threshold, grouped into clusters, as CSV + counts.

Every item is searched against the index (its ``k`` nearest neighbours, itself left out); a pair whose score
reaches ``threshold`` is a near-duplicate pair, and pairs are joined into clusters (union-find: a ~ b and
b ~ c put a, b, c in one cluster). For a labelling project this finds tasks that would be labelled twice
(and, with ``--label-col`` at build time, duplicates that carry different labels: ``label_a`` != ``label_b``).
The CSV is written atomically (``RowWriter``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labelpilot.errors import InputError
from labelpilot.files import RowWriter
from labelpilot.retrieval.index import VectorIndex

COLUMNS = ["cluster", "id_a", "id_b", "score", "item_a", "item_b", "label_a", "label_b"]


@dataclass(slots=True)
class DupReport:
    items: int
    pairs: int
    clusters: int
    items_in_clusters: int
    largest_cluster: int
    threshold: float

    def to_dict(self) -> dict[str, Any]:
        return {"items": self.items, "pairs": self.pairs, "clusters": self.clusters,
                "items_in_clusters": self.items_in_clusters, "largest_cluster": self.largest_cluster,
                "threshold": self.threshold}


def _find(parent: dict[str, str], x: str) -> str:
    while parent[x] != x:
        parent[x] = parent[parent[x]]
        x = parent[x]
    return x


def _label(payload: dict[str, Any]) -> str:
    return str(payload.get("text") or payload.get("source") or "")[:200]


def near_duplicates(index: VectorIndex, threshold: float, *, k: int = 10,
                    batch: int = 1024) -> tuple[list[dict[str, Any]], DupReport]:
    """The pairs (sorted by cluster, then score) and the counts."""
    if not -1.0 <= threshold <= 1.0:
        raise InputError("--threshold is a cosine from -1 to 1 (e.g. 0.95)", field="threshold")
    ids, vectors, payloads = index.items()
    info = dict(zip(ids, payloads, strict=True))
    pairs: dict[tuple[str, str], float] = {}
    for start in range(0, len(ids), batch):
        rows = index.search(vectors[start : start + batch], k + 1)
        for offset, hits in enumerate(rows):
            me = ids[start + offset]
            for h in hits:
                if h.id != me and h.score >= threshold:
                    key = (me, h.id) if me < h.id else (h.id, me)
                    pairs[key] = max(pairs.get(key, -2.0), h.score)
    parent: dict[str, str] = {}
    for a, b in pairs:
        parent.setdefault(a, a)
        parent.setdefault(b, b)
        ra, rb = _find(parent, a), _find(parent, b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    roots = sorted({_find(parent, x) for x in parent})
    number = {r: n + 1 for n, r in enumerate(roots)}
    sizes: dict[int, int] = {}
    for x in parent:
        c = number[_find(parent, x)]
        sizes[c] = sizes.get(c, 0) + 1
    out = [{"cluster": number[_find(parent, a)], "id_a": a, "id_b": b, "score": round(s, 6),
            "item_a": _label(info.get(a, {})), "item_b": _label(info.get(b, {})),
            "label_a": info.get(a, {}).get("label", ""), "label_b": info.get(b, {}).get("label", "")}
           for (a, b), s in pairs.items()]
    out.sort(key=lambda r: (r["cluster"], -r["score"], r["id_a"], r["id_b"]))
    report = DupReport(items=len(ids), pairs=len(pairs), clusters=len(roots), items_in_clusters=len(parent),
                       largest_cluster=max(sizes.values(), default=0), threshold=threshold)
    return out, report


def write_report(index: VectorIndex, threshold: float, output: Path, *, k: int = 10) -> DupReport:

    rows, report = near_duplicates(index, threshold, k=k)
    writer = RowWriter(output, COLUMNS)
    try:
        writer.write(rows)
    except BaseException:
        writer.abort()
        raise
    writer.close()
    return report
