"""`labelpilot bench prelabel` on handmade datasets: the edit counts, and a full run against a real server."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from labelpilot.prelabel.harness import run_dataset
from labelpilot.prelabel.metrics import score_choices, score_spans, summarize
from labelpilot.prelabel.report import summarize_run, windows
from tests.conftest import LABELPILOT, NEGATIVE, POSITIVE
from tests.test_retrain_fast import NER_CONFIG, ner_task


def _span(s: int, e: int, label: str) -> dict:
    return {"type": "labels", "from_name": "ner", "to_name": "text", "value": {"start": s, "end": e, "labels": [label]}}


def _choice(*labels: str) -> list[dict]:
    return [{"type": "choices", "from_name": "c", "to_name": "text", "value": {"choices": list(labels)}}]


def test_edits_and_effort_saved() -> None:
    gold = [_span(0, 5, "PER"), _span(10, 14, "LOC"), _span(20, 25, "ORG")]
    pred = [_span(0, 5, "PER"), _span(10, 14, "ORG"), _span(19, 25, "LOC"), _span(30, 33, "PER")]
    s = score_spans(pred, gold)
    # exact PER: 0; label fix on 10-14: 1; boundary+label fix on 19-25 vs 20-25: 2; spurious 30-33: 1 deletion
    assert (s.tp, s.fp, s.fn, s.edits_with, s.edits_without) == (1, 3, 2, 4, 3)
    assert score_spans([], gold).edits_with == 3  # nothing pre-labelled: every span inserted
    single = [score_choices(_choice("pos"), _choice("pos"), False),
              score_choices(_choice("neg"), _choice("pos"), False),
              score_choices([], _choice("pos"), False), score_choices(_choice("pos"), _choice("pos"), False)]
    out = summarize(single, "choices", False)
    assert out["accuracy"] == 0.5 and out["effort_saved"] == 0.5 and out["prelabelled"] == 0.75
    multi = score_choices(_choice("a", "b"), _choice("b", "c"), True)
    assert (multi.edits_with, multi.edits_without) == (2, 2)  # untick a, tick c
    assert windows(230) == [(1, 10), (11, 50), (51, 100), (101, 200), (201, 230)]
    assert windows(7) == [(1, 7)]


def _sentiment_jsonl(path: Path) -> Path:
    extra_pos = ["really good", "love the colour", "works great", "非常满意", "good value"]
    extra_neg = ["really bad", "hate the colour", "does not work", "非常失望", "bad value"]
    pos, neg = POSITIVE + extra_pos, NEGATIVE + extra_neg
    rows = [{"name": "handmade-sentiment", "kind": "choices", "labels": ["Positive", "Negative"]}]
    for p, n in zip(pos, neg, strict=True):
        rows += [{"text": p, "labels": ["Positive"]}, {"text": n, "labels": ["Negative"]}]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows[:31]), encoding="utf-8")
    return path


def test_bench_prelabel_command_on_a_handmade_dataset(tmp_path: Path) -> None:
    data = _sentiment_jsonl(tmp_path / "sentiment.jsonl")
    out = tmp_path / "out"
    t0 = time.perf_counter()
    proc = subprocess.run(
        [str(LABELPILOT), "bench", "prelabel", "--jsonl", str(data), "--out", str(out), "--seconds-per-task", "3"],
        capture_output=True, text=True, timeout=120,
    )
    elapsed = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert elapsed < 60, f"30 tasks took {elapsed:.0f} s"
    report = json.loads((out / "prelabel.json").read_text())
    (s,) = report["datasets"]
    assert s["dataset"] == "handmade-sentiment" and s["tasks"] == 30 and s["metric"] == "accuracy"
    assert [w["window"] for w in s["windows"]] == ["1-10", "11-30"]
    first, later = s["windows"]
    assert s["per_task"][0]["version"] == s["setup_version"]  # task 1: what /setup announced, before training
    assert s["per_task"][-1]["version"] != s["setup_version"] and first["versions"] >= 2
    assert later["prelabelled"] == 1.0 and later["accuracy"] >= 0.6, later
    assert later["effort_saved"] == later["accuracy"]  # single choice: a right pre-label saves the one click
    done = [j for j in s["jobs"] if j["state"] == "done"]
    assert len(done) >= 3 and all(j["job_s"] > 0 for j in done)
    assert 0 < later["predict_p50_ms"] <= later["predict_p99_ms"] < 5000
    table = (out / "prelabel.md").read_text()
    assert "| handmade-sentiment | 11-30 | accuracy |" in table and "load average" in table
    assert (out / "prelabel.png").read_bytes()[:4] == b"\x89PNG"


def test_spans_run_learns_the_names(tmp_path: Path) -> None:
    from labelpilot.prelabel.datasets import BenchDataset

    pairs = [ner_task(i) for i in range(30)]
    ds = BenchDataset("handmade-ner", "spans", ["PER", "LOC"], False, [t for t, _ in pairs],
                      [[{**r, "from_name": "label"} for r in a["result"]] for _, a in pairs])
    assert ds.label_config.count("<Label ") == 2 and NER_CONFIG.count("<Label ") == 2
    run = run_dataset(ds, wait="version", timeout=60, log=lambda _: None)
    s = summarize_run(run)
    first, later = s["windows"]
    assert first["edits_without"] == 20 and 0 <= first["f1"] <= 1
    assert later["f1"] >= 0.8 and later["effort_saved"] >= 0.6, later
    assert not run.errors
