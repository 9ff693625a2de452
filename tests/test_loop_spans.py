"""``labelpilot loop`` on span (NER) tasks, end to end through the CLI as a user runs it: Label Studio span JSON
and BIO label cells, the built-in CRF and a seed-003 plug-in span model (a real file loaded by
``--model path.py:Class``), malformed rows skipped and reported, the token budget, and ``predictions.csv``
whose spans match the texts. Small synthetic data made here; nothing from ../shared."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from labelpilot.data.bio import tokenize
from labelpilot.data.span_cells import cell_form, parse_span_cell
from labelpilot.loop.span_files import detect_task
from labelpilot.strategies import Pool
from labelpilot.strategies.spans import budget_batch, select_scored

pytest.importorskip("pycrfsuite")

NAMES = ["John", "Mary", "Ahmed", "Olga", "Pedro", "Anna", "Kofi", "Yuki", "Sven", "Maria"]
CITIES = ["Paris", "Lagos", "Lima", "Oslo", "Delhi", "Cairo", "Quito", "Hanoi", "Perth", "Turin"]
TEMPLATES = ["{p} lives in {c} .", "{p} flew to {c} yesterday .", "In {c} , {p} met old friends .",
             "{p} likes {c} a lot .", "Nobody saw {p} near {c} last week ."]
FAST = ["--options", "lac=false", "--options", "zero_shot=false"]  # the test's data needs neither


def _sentence(rng: random.Random) -> tuple[str, list[dict[str, Any]]]:
    t, p, c = rng.choice(TEMPLATES), rng.choice(NAMES), rng.choice(CITIES)
    text = t.format(p=p, c=c)
    return text, [{"start": text.index(p), "end": text.index(p) + len(p), "labels": ["PER"]},
                  {"start": text.index(c), "end": text.index(c) + len(c), "labels": ["LOC"]}]


def _bio(text: str, spans: list[dict[str, Any]]) -> str:
    tags, pos = [], 0
    for tok in text.split():
        s = text.index(tok, pos)
        pos = s + len(tok)
        lab = next((sp["labels"][0] for sp in spans if sp["start"] == s), None)
        tags.append(f"B-{lab}" if lab else "O")
    return " ".join(tags)


def _write(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


BAD_ROWS = [  # (sampleId, text, label cell): each must be skipped and reported with its line
    ["bad-range", "John lives in Oslo .", '[{"start": 0, "end": 99, "labels": ["PER"]}]'],
    ["bad-count", "John lives in Oslo .", "B-PER O"],
    ["bad-json", "John lives in Oslo .", '[{"start": 0, "end": 4, "labels": ["PER"]'],
    ["bad-text", "John lives in Oslo .", '[{"start": 0, "end": 4, "text": "Mary", "labels": ["PER"]}]'],
    ["bad-empty", "John lives in Oslo .", ""],
    ["l0", "Mary lives in Lima .", "[]"],  # a duplicate sampleId (l0 is the first row)
]


def _project(root: Path, form: str, n_label: int = 80, n_pool: int = 60, seed: int = 0) -> Path:
    rng = random.Random(seed)
    inp = root / f"in-{form}"
    inp.mkdir(parents=True)
    rows = []
    for i in range(n_label):
        text, spans = _sentence(rng)
        rows.append([f"l{i}", text, json.dumps(spans) if form == "json" else _bio(text, spans)])
    rows.append(["l-none", "Nobody came .", "[]" if form == "json" else "O O O"])
    _write(inp / "input_label.csv", ["sampleId", "text", "label"], rows + BAD_ROWS)
    _write(inp / "input_unlabel.csv", ["sampleId", "text"], [[f"u{i}", _sentence(rng)[0]] for i in range(n_pool)])
    return inp


def _cli(args: list[str]) -> Any:
    from labelpilot.cli import _mount_optional_commands, app

    _mount_optional_commands("loop")
    return CliRunner().invoke(app, ["loop", *args])


def _predictions(out: Path) -> list[dict[str, str]]:
    with (out / "predictions.csv").open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def _check_predictions(out: Path, labels: set[str], budget: int | None) -> list[dict[str, str]]:
    """Every predicted span lies inside its text and names it; tokens, hard rows and the budget agree."""
    rows = _predictions(out)
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert len(rows) == report["split"]["pool"]
    for r in rows:
        regions = json.loads(r["label"])
        assert int(r["n_spans"]) == len(regions)
        for reg in regions:
            assert 0 <= reg["start"] < reg["end"] <= len(r["text"])
            assert r["text"][reg["start"]:reg["end"]] == reg["text"]
            assert set(reg["labels"]) <= labels
        assert int(r["tokens"]) == len(tokenize(r["text"]))
        assert 0.0 <= float(r["confidence"]) <= 1.0
    hard = [r for r in rows if r["hard_example"] == "1"]
    assert sorted(r["sampleId"] for r in hard) == sorted(report["hard_examples"])
    assert sorted(int(r["rank"]) for r in hard) == list(range(1, len(hard) + 1))  # hard rows rank first
    tokens = sum(int(r["tokens"]) for r in hard)
    assert tokens == report["strategy"]["tokens"]
    if budget is not None:
        assert 0 < tokens <= budget
    return hard


@pytest.mark.parametrize("form", ["json", "bio"])
def test_crf_round_both_forms(tmp_path: Path, form: str) -> None:
    inp = _project(tmp_path, form)
    out = tmp_path / f"out-{form}"
    task = [] if form == "json" else ["--task", "ner"]  # span JSON is detected; BIO asked for by name
    res = _cli(["--input-dir", str(inp), "--output-dir", str(out), "--query-cnt", "10", "--token-budget", "30",
                *task, *FAST])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["task"] == "spans" and report["model"]["family"] == "ner-crf"
    assert report["label_forms"] == {form: 81}
    assert report["strategy"]["used"] == "span:mnlp" and report["strategy"]["token_budget"] == 30
    # the six malformed rows are skipped, each named by file and line, and the round went on
    skipped = report["skipped_rows"]["rows"]
    assert report["skipped_rows"]["count"] == 6
    for k, (sid, _, _) in enumerate(BAD_ROWS):
        assert any(f"input_label.csv line {83 + k} (sampleId={sid!r})" in p for p in skipped), (sid, skipped)
    assert "duplicate sampleId (first on line 2)" in skipped[-1]
    assert "skipped: input_label.csv line 83" in res.output and "6 malformed rows skipped" in res.output
    q = report["training"]["quality"]
    assert q["metric"] == "f1" and q["n"] == report["split"]["val"] > 0 and 0.8 <= q["score"] <= 1.0
    assert {"precision", "recall", "f1/PER", "f1/LOC"} <= set(q["metrics"])
    assert "validation span F1" in res.output
    _check_predictions(out, {"PER", "LOC"}, 30)
    assert (out / "model" / "loop_history.json").is_file()
    # the model folder the loop wrote is read by `labelpilot evaluate` and `labelpilot predict`, span cells in
    # either form (issue 13: "evaluate/predict read a model folder")
    from labelpilot.cli import app

    rng = random.Random(7)
    held = [_sentence(rng) for _ in range(12)]
    for cell_form_name, cell in (("json", json.dumps), ("bio", None)):
        table = tmp_path / f"held-{form}-{cell_form_name}.csv"
        _write(table, ["text", "label"], [[t, cell(sp) if cell else _bio(t, sp)] for t, sp in held])
        report_path = tmp_path / f"eval-{form}-{cell_form_name}.json"
        ev = CliRunner().invoke(app, ["evaluate", str(out / "model"), str(table), "--out", str(report_path)])
        assert ev.exit_code == 0, ev.output
        metrics = json.loads(report_path.read_text(encoding="utf-8"))["metrics"]
        assert metrics["f1"] >= 0.8 and metrics["n"] == len(held), metrics
    texts = tmp_path / f"texts-{form}.csv"
    _write(texts, ["text"], [[t] for t, _ in held])
    pred = CliRunner().invoke(app, ["predict", str(out / "model"), str(texts), "-o", str(tmp_path / f"p-{form}.jsonl")])
    assert pred.exit_code == 0, pred.output
    lines = [json.loads(x) for x in (tmp_path / f"p-{form}.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(lines) == len(held) and all(s["text"] == t[s["start"]:s["end"]]
                                           for row, (t, _) in zip(lines, held, strict=True) for s in row["predictions"])
    refused = _cli(["accept", "--input-dir", str(inp), "--output-dir", str(out), "--all"])
    assert refused.exit_code == 2 and "accepting spans is not built yet" in refused.output

    # round 2: the hard examples labelled, from the saved model folder, the same output folder
    added = inp / "input_added_label.csv"
    rows = []
    for r in _predictions(out):
        if r["hard_example"] == "1":
            rows.append([r["sampleId"], r["text"], r["label"]])  # the predictions read back as label cells
    _write(added, ["sampleId", "text", "label"], rows)
    pool = [[r["sampleId"], r["text"]] for r in _predictions(out) if r["hard_example"] != "1"]
    _write(inp / "input_unlabel.csv", ["sampleId", "text"], pool)
    res2 = _cli(["--input-dir", str(inp), "--output-dir", str(out), "--not-first-train", "--model-id",
                 str(out / "model"), "--query-cnt", "5", *task, *FAST])
    assert res2.exit_code == 0, res2.output
    report2 = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report2["split"]["added_used"] == len(rows) and report2["split"]["pool"] == len(pool)
    assert report2["stopping"]["rounds"] == 2 and report2["strategy"]["query_cnt"] == 5
    _check_predictions(out, {"PER", "LOC"}, None)


ZH_NAMES = ["张三", "李四", "王五", "赵六", "陈晨"]
ZH_CITIES = ["北京", "上海", "广州", "深圳", "成都"]
ZH_TEMPLATES = ["{p}在{c}工作。", "昨天{p}去了{c}。", "{c}的{p} 很忙。"]


def _zh_row(rng: random.Random) -> tuple[str, str]:
    p, c, t = rng.choice(ZH_NAMES), rng.choice(ZH_CITIES), rng.choice(ZH_TEMPLATES)
    text = t.format(p=p, c=c)
    tags = ["O"] * len(text)
    for word, lab in ((p, "PER"), (c, "LOC")):
        i = text.index(word)
        tags[i], tags[i + 1] = f"B-{lab}", f"I-{lab}"
    return text, " ".join(t for t, ch in zip(tags, text, strict=True) if not ch.isspace())  # no tag for a space


def test_chinese_bio_per_character_without_validation(tmp_path: Path) -> None:
    rng = random.Random(1)
    inp = tmp_path / "in"
    inp.mkdir()
    _write(inp / "input_label.csv", ["sampleId", "text", "label"], [[f"l{i}", *_zh_row(rng)] for i in range(40)])
    _write(inp / "input_unlabel.csv", ["sampleId", "text"], [[f"u{i}", _zh_row(rng)[0]] for i in range(20)])
    out = tmp_path / "out"
    res = _cli(["--input-dir", str(inp), "--output-dir", str(out), "--val-size", "0", "--token-budget", "25", *FAST])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["task"] == "spans" and report["label_forms"] == {"bio": 40} and report["skipped_rows"]["count"] == 0
    assert report["split"]["val"] == 0 and report["training"]["quality"]["score"] is None
    assert "no validation rows" in res.output
    hard = _check_predictions(out, {"PER", "LOC"}, 25)
    assert all(int(r["tokens"]) == len(r["text"].replace(" ", "")) for r in hard)  # a token per CJK character




@pytest.mark.parametrize("flag", [False, True])
def test_plugin_span_model(tmp_path: Path, flag: bool) -> None:
    pytest.importorskip("pandas")
    plugin = Path(__file__).resolve().parents[1] / "examples" / "plugin_demo" / "span_model.py"
    inp = _project(tmp_path, "bio")
    # a pool with unseen names: the plug-in is unsure there
    _write(inp / "input_unlabel.csv", ["sampleId", "text"],
           [[f"u{i}", f"Zed{i} lives in Paris ."] for i in range(10)]
           + [[f"k{i}", f"Mary lives in {c} ."] for i, c in enumerate(CITIES)])
    out = tmp_path / "out"
    res = _cli(["--input-dir", str(inp), "--output-dir", str(out), "--task", "spans", "--model",
                f"{plugin}:DictNer", "--query-cnt", "20", "--token-budget", "14", "--options", "dedupe=null",
                *(["--options", "flag=true"] if flag else [])])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["model"]["family"] == f"plugin:{plugin}:DictNer"
    assert report["training"]["quality"]["score"] == pytest.approx(1.0)  # the templates' names all reappear
    hard = _check_predictions(out, {"PER", "LOC"}, 14)
    assert len(hard) == 2 and all(r["sampleId"].startswith("u") for r in hard)  # 5 tokens each, budget 14
    expected = "plugin:span:model-uncertainty" if flag else "span:model-uncertainty"
    assert report["strategy"]["used"] == expected
    assert list((out / "model").rglob("lexicon.json"))  # the plug-in saved itself into the model folder
    # round 2 from the saved plug-in model: the hard rows labelled (a new name), the rest still unlabelled
    _write(inp / "input_added_label.csv", ["sampleId", "text", "label"],
           [[r["sampleId"], r["text"], "B-PER O O B-LOC O"] for r in hard])
    _write(inp / "input_unlabel.csv", ["sampleId", "text"],
           [[r["sampleId"], r["text"]] for r in _predictions(out) if r["hard_example"] != "1"])
    res2 = _cli(["--input-dir", str(inp), "--output-dir", str(out), "--not-first-train", "--model-id",
                 str(out / "model"), "--query-cnt", "3", "--options", "dedupe=null"])
    assert res2.exit_code == 0, res2.output
    report2 = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report2["model"]["family"].startswith("plugin:") and report2["split"]["added_used"] == 2
    lexicon = json.loads(next((out / "model").rglob("lexicon.json")).read_text(encoding="utf-8"))
    assert {r["text"].split()[0] for r in hard} <= {w for w, lab in lexicon.items() if lab == "PER"}  # BIO read back


def test_file_level_errors_stop_the_round(tmp_path: Path) -> None:
    inp = _project(tmp_path, "json")
    out = tmp_path / "out"
    _write(inp / "input_unlabel.csv", ["sampleId", "txt"], [["u1", "John ."]])
    res = _cli(["--input-dir", str(inp), "--output-dir", str(out), "--task", "spans"])
    assert res.exit_code == 2 and "input_unlabel.csv: missing column(s) path" in res.output
    assert not out.exists()
    _write(inp / "input_unlabel.csv", ["sampleId", "text"], [["u1", "John ."]])
    res = _cli(["--input-dir", str(inp), "--output-dir", str(out), "--task", "spans", "--strategy", "badge"])
    assert res.exit_code == 2 and "does not rank span tasks" in res.output
    all_bad = tmp_path / "bad"
    all_bad.mkdir()
    _write(all_bad / "input_label.csv", ["sampleId", "text", "label"], [r for r in BAD_ROWS if r[0] != "l0"])
    _write(all_bad / "input_unlabel.csv", ["sampleId", "text"], [["u1", "John ."]])
    res = _cli(["--input-dir", str(all_bad), "--output-dir", str(out), "--task", "spans"])
    assert res.exit_code == 2 and "no usable labelled rows; skipped: input_label.csv line 2" in res.output
    assert not out.exists()


def test_label_cells() -> None:
    text = "John lives in Oslo ."
    spans, form = parse_span_cell('[{"start": 0, "end": 4, "labels": ["PER"]}]', text)
    assert form == "json" and [(s.start, s.end, s.label) for s in spans] == [(0, 4, "PER")]
    ls_result = [{"from_name": "label", "to_name": "text", "type": "labels",
                  "value": {"start": 14, "end": 18, "text": "Oslo", "labels": ["LOC"]}}]
    assert [(s.start, s.label) for s in parse_span_cell(json.dumps(ls_result), text)[0]] == [(14, "LOC")]
    annotation = {"result": ls_result}
    assert len(parse_span_cell(json.dumps(annotation), text)[0]) == 1
    assert parse_span_cell('[{"start": 0, "end": 4, "label": "PER"}]', text)[0][0].label == "PER"
    assert parse_span_cell("[]", text)[0] == []
    assert [(s.start, s.end, s.label) for s in parse_span_cell("B-PER O O B-LOC O", text)[0]] == [
        (0, 4, "PER"), (14, 18, "LOC")]
    # CJK: one tag per non-space character (a space inside the text carries no tag)
    zh = "张三 在北京工作"
    got = parse_span_cell("B-PER I-PER O B-LOC I-LOC O O", zh)[0]
    assert [(zh[s.start:s.end], s.label) for s in got] == [("张三", "PER"), ("北京", "LOC")]
    for bad, why in [('[{"start": 0, "end": 4}]', "labels"), ('[{"start": "a", "end": 4, "labels": ["X"]}]',
                     "not an integer"), ("B-PER O", "2 BIO tags for 5 tokens"), ("B-PER X-Y O O O", "cannot read tag"),
                     ("sports", "neither Label Studio span JSON nor BIO"), ("", "empty label")]:
        with pytest.raises(ValueError, match=why):
            parse_span_cell(bad, text)
    assert cell_form("sports") is None and cell_form("O") is None and cell_form("B-PER O") == "bio"


def test_task_detection(tmp_path: Path) -> None:
    _write(tmp_path / "input_label.csv", ["sampleId", "text", "label"],
           [["a", "good film", "pos"], ["b", "bad film", "neg"], ["c", "fine", "pos|neg"]])
    assert detect_task(tmp_path) == "classes"
    assert detect_task(tmp_path / "missing") == "classes"
    _write(tmp_path / "input_label.csv", ["sampleId", "text", "label"],
           [["a", "John came", "B-PER O"], ["b", "x", '[{"start": 0, "end": 1, "labels": ["X"]}]'], ["c", "y", "z"]])
    assert detect_task(tmp_path) == "spans"


def test_token_budget_never_exceeded() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 40, size=200)
    texts = [f"item {i}" for i in range(200)]
    pool = Pool(token_probs=[rng.random(k) for k in lengths], texts=texts)
    for budget in (1, 7, 50, 333, 10_000):
        idx, info = budget_batch(np.arange(200), 500, pool, lengths, budget, None)
        assert lengths[idx].sum() <= budget and info["tokens"] == lengths[idx].sum()
        # nothing left out would still fit
        left = budget - lengths[idx].sum()
        assert not any(lengths[i] <= left for i in set(range(200)) - set(idx.tolist()))
    sel = select_scored(rng.random(200), pool, 5, name="t", token_budget=10_000)
    assert len(sel.indices) == 5  # the item count still caps the batch
