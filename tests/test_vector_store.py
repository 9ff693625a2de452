"""The on-disk vector store across processes (issue 13: a second ``labelpilot loop`` round over the same pool
reads the pool's vectors back instead of encoding them again)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from labelpilot.encoders import encoder_problem, get_encoder, persisting, text_key
from labelpilot.encoders.store import VectorStore

PROBLEM = encoder_problem()
needs_encoder = pytest.mark.skipif(PROBLEM is not None, reason=f"text encoder not available: {PROBLEM}")

_CHILD = textwrap.dedent(
    """
    import json, sys
    from labelpilot.encoders import get_encoder, persisting
    enc = get_encoder()
    texts = json.loads(sys.argv[1])
    with persisting():
        v = enc.encode(texts)
    print(json.dumps({"encoded": enc.encoded, "store": str(enc.store.path), "first": v[0].tolist()}))
    """
)


def _child(texts: list[str], cache: Path) -> dict:
    env = {**os.environ, "LABELPILOT_CACHE_DIR": str(cache), "LABELPILOT_ENCODER_PATH": str(get_encoder().path)}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1] / "src"), env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(texts)], capture_output=True, text=True,
                         env=env, timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@needs_encoder
def test_pool_vectors_survive_a_new_process_and_a_changed_text_misses(tmp_path: Path) -> None:
    texts = [f"第{i}轮的候选文本 pool text {i}" for i in range(20)]
    first = _child(texts, tmp_path)
    assert first["encoded"] == 20 and Path(first["store"]).is_relative_to(tmp_path)
    again = _child(texts, tmp_path)  # a new process: every vector comes from the store
    assert again["encoded"] == 0
    assert float(np.dot(first["first"], again["first"])) > 0.9999  # float16 on disk
    changed = _child([texts[0] + "!", *texts[1:]], tmp_path)
    assert changed["encoded"] == 1  # only the edited text is encoded again


@needs_encoder
def test_encode_writes_the_store_only_when_asked(tmp_path: Path) -> None:
    enc = get_encoder()
    saved = enc.store
    try:
        enc.store = VectorStore(tmp_path / "v.sqlite", enc.dim)
        plain, kept = ["只在内存里 in memory only"], ["写入磁盘 kept on disk"]
        enc.encode(plain)
        with persisting():
            enc.encode(kept)
        enc.encode(["after the block"])
        stored = enc.store.get_many([text_key(t) for t in (*plain, *kept, "after the block")])
        assert set(stored) == {text_key(kept[0])}
    finally:
        enc.store = saved


def test_a_damaged_store_file_is_replaced_and_written_again(tmp_path: Path) -> None:
    path = tmp_path / "v.sqlite"
    keys = [text_key(f"t{i}") for i in range(4)]
    vecs = np.random.default_rng(1).normal(size=(4, 8)).astype(np.float32)
    path.write_bytes(b"this is not an SQLite file" * 100)
    store = VectorStore(path, dim=8)
    assert store.get_many(keys) == {}  # ignored, never an error
    store.put_many(keys, vecs)
    got = VectorStore(path, dim=8).get_many(keys)  # a new connection reads what was written after the reset
    assert set(got) == set(keys) and np.allclose(got[keys[2]], vecs[2], atol=1e-2)

    # damage that shows only at the write: the file is replaced and the rows go into the new one
    path2 = tmp_path / "w.sqlite"
    writer = VectorStore(path2, dim=8)
    writer.put_many(keys[:1], vecs[:1])
    writer._conn.close()  # type: ignore[union-attr]
    writer._conn = None
    path2.write_bytes(b"\0garbage" * 512)
    for suffix in ("-wal", "-shm"):
        Path(f"{path2}{suffix}").unlink(missing_ok=True)
    writer.put_many(keys[1:], vecs[1:])
    assert set(VectorStore(path2, dim=8).get_many(keys)) == set(keys[1:])


def test_the_store_keeps_at_most_max_rows_the_newest(tmp_path: Path) -> None:
    store = VectorStore(tmp_path / "v.sqlite", dim=4, max_rows=50)
    keys = [text_key(f"row {i}") for i in range(120)]
    vecs = np.ones((120, 4), dtype=np.float32)
    for start in range(0, 120, 7):
        store.put_many(keys[start : start + 7], vecs[start : start + 7])
    kept = store.get_many(keys)
    assert len(kept) == 50 and set(kept) == set(keys[-50:])
    (n,) = store._conn.execute("SELECT count(*) FROM vectors").fetchone()  # type: ignore[union-attr]
    assert n == 50


def test_text_linear_reads_jieba_words_back_from_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("jieba")
    from labelpilot.models.text_linear import features

    monkeypatch.setenv("LABELPILOT_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(features, "_word_store", None)
    texts = [features._normalize(t) for t in ("今天的足球比赛非常精彩", "股市今天大跌，投资者担忧", "English only text",
                                               "", "中文 mixed with English 123", "！？")]
    plain = [list(w) for w in features._words_batch(texts, False)]  # outside persisting(): nothing on disk
    assert not (tmp_path / "text-linear").exists()
    with persisting():
        first = [list(w) for w in features._words_batch(texts, False)]
    assert first == plain
    monkeypatch.setattr(features, "_word_store", None)  # as a new process: a new connection, an empty lru_cache
    features._cjk_words.cache_clear()
    with persisting():
        again = [list(w) for w in features._words_batch(texts, False)]
        assert again == plain and features._cjk_words.cache_info().misses == 0  # jieba was not run
        changed = features._words_batch([texts[0] + "吗"], False)
    assert features._cjk_words.cache_info().misses == 1 and list(changed[0]) != plain[0]
    assert features._cjk_words.cache_info().misses == 1
    with persisting():  # the HMM option gives other words: its own entries
        features._words_batch(texts[:1], True)
    assert features._cjk_words.cache_info().misses == 2


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    import csv

    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


@needs_encoder
def test_a_loop_round_keeps_its_pool_for_the_next_round(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A round writes the pool's vectors and words to disk; a rerun in a fresh process state encodes and
    segments nothing and predicts the same (float16 vectors on disk)."""
    import csv

    from labelpilot.loop import run_loop
    from labelpilot.models.text_linear import features

    topics = {"sports": ["足球比赛", "篮球联赛", "网球公开赛"], "finance": ["股市大跌", "银行利率", "基金收益"],
              "tech": ["手机芯片", "人工智能", "软件更新"]}
    rows = [[f"l{label}{i}", f"{word}的最新消息{i}", label] for label, words in topics.items()
            for i, word in enumerate(words * 4)]
    pool = [[f"u{i}", f"{w}今天{i}号的报道"] for i, w in enumerate(w for ws in topics.values() for w in ws * 3)]
    inp = tmp_path / "in"
    inp.mkdir()
    _write_csv(inp / "input_label.csv", ["sampleId", "text", "label"], rows)
    _write_csv(inp / "input_unlabel.csv", ["sampleId", "text"], pool)
    monkeypatch.setenv("LABELPILOT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(features, "_word_store", None)
    enc = get_encoder()
    saved = enc.store
    try:
        enc.store = VectorStore(tmp_path / "cache" / "v.sqlite", enc.dim)
        enc.cache.clear()  # a fresh process: what other tests encoded is not in memory (only misses are stored)
        run_loop(inp, tmp_path / "out1", query_cnt=3)
        pool_keys = [text_key(text) for _, text in pool]
        assert len(enc.store.get_many(pool_keys)) == len(pool)
        enc.cache.clear()  # as a new process: nothing in memory
        enc.store = VectorStore(tmp_path / "cache" / "v.sqlite", enc.dim)
        monkeypatch.setattr(features, "_word_store", None)
        features._cjk_words.cache_clear()
        encoded = enc.encoded
        run_loop(inp, tmp_path / "out2", query_cnt=3)
        assert enc.encoded == encoded  # no text was encoded again (pool, labels, label names)
        assert features._cjk_words.cache_info().misses == 0  # nor segmented
    finally:
        enc.store = saved

    def probs(out: str) -> np.ndarray:
        with (tmp_path / out / "predictions.csv").open(encoding="utf-8") as fh:
            got = list(csv.DictReader(fh))
        return np.array([[float(r[f"prob_{k}"]) for k in topics] for r in got])

    assert np.abs(probs("out1") - probs("out2")).max() < 0.01
