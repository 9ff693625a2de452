"""The text encoder: vectors, cache, threads, failures, and no network."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from labelpilot import encoders
from labelpilot.encoders import EncoderUnavailable, VectorCache, encoder_problem, get_encoder, text_key

PROBLEM = encoder_problem()
needs_encoder = pytest.mark.skipif(PROBLEM is not None, reason=f"text encoder not available: {PROBLEM}")


@pytest.fixture
def fresh_encoders(monkeypatch):
    """Forget the process-wide encoder before and after (for tests that change its settings)."""
    encoders.reset()
    yield monkeypatch
    encoders.reset()


def test_vector_cache_is_bounded_by_entries_and_bytes() -> None:
    cache = VectorCache(max_entries=3, max_bytes=10_000)
    keys = [text_key(f"t{i}") for i in range(5)]
    cache.put_many(keys, np.ones((5, 8), dtype=np.float32))
    assert len(cache) == 3 and cache.get_many(keys[:2]) == [None, None]  # the oldest went first
    small = VectorCache(max_entries=100, max_bytes=2 * 512 * 4)
    small.put_many(keys, np.ones((5, 512), dtype=np.float32))
    assert len(small) == 2 and small.nbytes <= 2 * 512 * 4
    assert small.get_many([keys[4]])[0] is not None


@needs_encoder
def test_vectors_are_normalised_cached_and_meaningful() -> None:
    enc = get_encoder()
    assert enc.dim == 512 and enc.name == "use-multilingual-v3-int8"
    texts = ["今天的足球比赛非常精彩", "The football match today was thrilling", "股市今天大跌", "", "  "]
    v = enc.encode(texts)
    assert v.shape == (5, 512) and v.dtype == np.float32
    odd = enc.encode(["a\x00b", "\ud800 lone surrogate", "😀" * 300, "x" * 18000, None, 5])  # type: ignore[list-item]
    assert odd.shape == (6, 512) and np.isfinite(odd).all()
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)
    # cross-lingual: the translation is nearer than a different topic in the same language
    assert float(v[0] @ v[1]) > float(v[0] @ v[2]) + 0.1
    hits = enc.cache.hits
    again = enc.encode(texts[:3])
    assert enc.cache.hits >= hits + 3 and np.array_equal(again, v[:3])


@needs_encoder
def test_concurrent_encoding_gives_the_same_vectors() -> None:
    enc = get_encoder()
    texts = [f"线程安全测试 thread safety sentence number {i}" for i in range(120)]
    enc.cache.clear()
    with ThreadPoolExecutor(4) as pool:
        parts = list(pool.map(lambda chunk: enc.encode(chunk), [texts[i::4] for i in range(4)]))
    enc.cache.clear()
    alone = enc.encode(texts)
    for i in range(4):
        # int8 activations are quantised per batch, so a vector moves a little with its batch-mates
        cos = (parts[i] * alone[i::4]).sum(axis=1)
        assert cos.min() > 0.99, cos.min()


def test_switched_off_or_missing_model_is_a_clear_error(fresh_encoders, tmp_path: Path) -> None:
    fresh_encoders.setenv("LABELPILOT_ENCODER", "none")
    with pytest.raises(EncoderUnavailable, match="switched off"):
        get_encoder()
    encoders.reset()
    fresh_encoders.setenv("LABELPILOT_ENCODER", "use-multilingual")
    fresh_encoders.setenv("LABELPILOT_ENCODER_PATH", str(tmp_path / "missing.onnx"))
    with pytest.raises(EncoderUnavailable, match="not installed"):
        get_encoder()
    assert "missing.onnx" in (encoder_problem() or "")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx model at all")
    encoders.reset()
    fresh_encoders.setenv("LABELPILOT_ENCODER_PATH", str(bad))
    pytest.importorskip("onnxruntime_extensions")
    with pytest.raises(EncoderUnavailable, match="could not be loaded"):
        get_encoder()


NETWORK_PROBE = textwrap.dedent(
    """
    import json, socket
    calls = []
    real = socket.socket.connect
    def connect(self, address):
        calls.append(repr(address))
        host = address[0] if isinstance(address, tuple) else str(address)
        if self.family in (socket.AF_INET, socket.AF_INET6) and host not in ("127.0.0.1", "::1", "localhost"):
            raise OSError("network disabled by the test")
        return real(self, address)
    socket.socket.connect = connect
    socket.socket.connect_ex = lambda self, address: (calls.append(repr(address)), 111)[1]
    from labelpilot.data.types import Example, Target
    from labelpilot.encoders import get_encoder
    from labelpilot.models.text_linear import TextLinearModel
    from labelpilot.schema import parse_label_config
    config = ('<View><Text name="t" value="$text"/><Choices name="c" toName="t">'
              '<Choice value="Sports"/><Choice value="Finance"/></Choices></View>')
    control = parse_label_config(config).controls[0]
    model = TextLinearModel(control)
    assert model.zero_shot_ready()
    zero = model.predict([Example(text="球队赢得了冠军")])[0].labels
    train = [Example(text=t, target=Target(labels=(l,))) for t, l in [
        ("the team won the cup", "Sports"), ("a great goal in the final", "Sports"),
        ("stocks fell sharply", "Finance"), ("the bank raised interest rates", "Finance")] * 2]
    model.fit(train)
    after = model.predict([Example(text="shares rallied")])[0].labels
    print(json.dumps({"calls": calls, "dim": get_encoder().dim, "zero": zero, "after": after}))
    """
)


@needs_encoder
def test_loading_and_using_the_encoder_opens_no_network_connection(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABELPILOT_ENCODER")}
    script = tmp_path / "probe.py"
    script.write_text(NETWORK_PROBE)
    cmd = [sys.executable, str(script)]
    trace = tmp_path / "connect.trace"
    strace = shutil.which("strace")
    if strace:  # the kernel's view too: native code (onnxruntime, its extensions) bypasses Python's socket
        cmd = [strace, "-f", "--seccomp-bpf", "-qq", "-e", "trace=connect", "-o", str(trace), *cmd]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["calls"] == [] and out["dim"] == 512
    assert out["zero"] == ["Sports"] and out["after"] == ["Finance"]
    if strace:
        inet = [line for line in trace.read_text().splitlines() if "AF_INET" in line]
        assert inet == [], inet


def test_vector_store_round_trip_bound_and_broken_path(tmp_path: Path) -> None:
    from labelpilot.encoders.store import VectorStore

    store = VectorStore(tmp_path / "v.sqlite", dim=4, max_rows=5)
    keys = [text_key(f"t{i}") for i in range(12)]
    vecs = np.random.default_rng(0).normal(size=(12, 4)).astype(np.float32)
    store.put_many(keys[:3], vecs[:3])
    got = VectorStore(tmp_path / "v.sqlite", dim=4).get_many(keys[:4])  # another connection, as another process
    assert set(got) == set(keys[:3]) and np.allclose(got[keys[0]], vecs[0], atol=1e-2)
    store.put_many(keys[3:], vecs[3:])
    assert len(store.get_many(keys)) <= 6 and keys[11] in store.get_many(keys[-1:])  # the oldest were pruned
    (tmp_path / "file").write_text("x")
    broken = VectorStore(tmp_path / "file" / "v.sqlite", dim=4)
    broken.put_many(keys[:1], vecs[:1])
    assert broken.get_many(keys[:1]) == {}  # unusable: skipped, never an error


@needs_encoder
def test_training_vectors_persist_for_the_next_process(tmp_path: Path) -> None:
    from labelpilot.encoders.store import VectorStore

    enc = get_encoder()
    saved = enc.store
    try:
        enc.store = VectorStore(tmp_path / "v.sqlite", enc.dim)
        texts = [f"持久化测试 persisted vector {i}" for i in range(10)]
        first = enc.encode(texts, persist=True)
        enc.cache.clear()
        enc.store = VectorStore(tmp_path / "v.sqlite", enc.dim)  # a fresh connection, as a new training process
        misses = enc.cache.misses
        again = enc.encode(texts, persist=True)
        assert enc.cache.misses == misses + 10 and len(enc.store.get_many([text_key(t) for t in texts])) == 10
        assert ((first * again).sum(axis=1) > 0.9999).all()
    finally:
        enc.store = saved
