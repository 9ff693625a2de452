"""``labelpilot loop accept`` (seed 003 step 6): a real round of ``labelpilot loop`` on a synthetic dataset, then
the final labelled set: files, columns, counts, the threshold, the estimated accuracy against the truth, the
registry, multi-label, refused spans and clear errors; plus the estimate on SST-2 (shared data) against its
true labels."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import numpy as np
import pytest

from labelpilot.errors import InputError
from labelpilot.loop import run_loop
from labelpilot.loop.accept import (
    ACCEPT_REPORT_FILE,
    FINAL_LABEL_FILE,
    FINAL_UNLABEL_FILE,
    choose_threshold,
    run_accept,
    wilson,
)
from labelpilot.registry import Registry
from tests.conftest import SHARED_DATA

SHARED = SHARED_DATA  # conftest honours LABELPILOT_SHARED_DATA
CLASSES = ("alpha", "beta", "gamma")
FAST = {"encoder": False}  # TF-IDF text-linear: the accept step's folds stay quick


def write(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def synthetic(n: int, seed: int, *, multi: bool = False) -> list[tuple[str, tuple[str, ...]]]:
    """Texts of 8 words: each word from the item's class vocabulary with a per-item probability (0 to 0.4,
    so some items are easy and some hard), else from a shared vocabulary. Multi-label: one or two classes."""
    rng = random.Random(seed)
    vocab = {c: [f"{c[:2]}{i}" for i in range(25)] for c in CLASSES}
    shared = [f"w{i}" for i in range(80)]
    out = []
    for _ in range(n):
        labels = tuple(sorted(rng.sample(CLASSES, rng.choice((1, 2))))) if multi else (rng.choice(CLASSES),)
        q = rng.uniform(0.0, 0.4)
        words = [rng.choice(vocab[rng.choice(labels)]) if rng.random() < q else rng.choice(shared) for _ in range(8)]
        out.append((" ".join(words), labels))
    return out


def make_project(root: Path, n_label: int, n_pool: int, *, seed: int = 0, multi: bool = False) -> dict[str, str]:
    """input_label.csv / input_unlabel.csv with inline texts; returns the pool's true labels."""
    data = synthetic(n_label + n_pool, seed, multi=multi)
    d = root / "input"
    d.mkdir(parents=True)
    write(d / "input_label.csv", ["sampleId", "text", "label"],
          [[f"l{i:04d}", t, "|".join(y)] for i, (t, y) in enumerate(data[:n_label])])
    write(d / "input_unlabel.csv", ["sampleId", "text"], [[f"u{i:04d}", t] for i, (t, _) in enumerate(data[n_label:])])
    return {f"u{i:04d}": "|".join(y) for i, (_, y) in enumerate(data[n_label:])}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("accept")
    truth = make_project(root, 150, 300)
    run_loop(root / "input", root / "out", query_cnt=20, options=FAST)
    return root / "input", root / "out", truth


# -- the statistics --------------------------------------------------------------------------------------
def test_wilson_interval_known_values() -> None:
    lo, hi = wilson(40, 40)
    assert lo == pytest.approx(0.9124, abs=1e-3) and hi == 1.0  # 40/40 does not prove 100 %
    lo, hi = wilson(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-3) and hi == pytest.approx(0.5962, abs=1e-3)
    assert wilson(0, 0) == (0.0, 1.0)


def test_choose_threshold_is_the_lowest_score_reaching_the_target() -> None:
    scores = np.array([0.99, 0.98, 0.97, 0.9, 0.9, 0.8, 0.7, 0.6])
    correct = np.array([1, 1, 1, 1, 0, 1, 0, 0], dtype=bool)
    # from the top: 1, 1, 1, 1, .8 (tie at 0.9 taken whole), .833, .714, .625
    assert choose_threshold(scores, correct, 0.8, min_n=1) == pytest.approx(0.8)
    assert choose_threshold(scores, correct, 0.95, min_n=1) == pytest.approx(0.97)  # 0.9's tie brings it to 0.8
    assert choose_threshold(scores, correct, 0.95, min_n=4) is None  # 3 rows are too few
    assert choose_threshold(scores, correct, 0.6, min_n=1) == pytest.approx(0.6)
    # the lower-bound rule asks more: Wilson lower bounds 3/3 .4385, 4/5 .3755, 5/6 .4365, 5/7 .359
    assert choose_threshold(scores, correct, 0.43, min_n=1, lower_bound=True) == pytest.approx(0.8)
    assert choose_threshold(scores, correct, 0.437, min_n=1, lower_bound=True) == pytest.approx(0.97)
    assert choose_threshold(scores, correct, 0.44, min_n=1, lower_bound=True) is None


# -- end to end on the seed-003 protocol --------------------------------------------------------------------
def test_accept_end_to_end_files_counts_threshold_and_estimate(project, tmp_path: Path) -> None:
    inp, out, truth = project
    res = run_accept(inp, out, target_accuracy=0.9, final_dir=tmp_path / "final")
    rep = res.report
    header, final = read_csv(tmp_path / "final" / FINAL_LABEL_FILE)
    assert header == ["sampleId", "path", "text", "label", "source", "score"]
    left_header, left = read_csv(tmp_path / "final" / FINAL_UNLABEL_FILE)
    assert left_header == ["sampleId", "path", "text"]  # input_unlabel.csv's format: feeds another round
    assert json.loads((tmp_path / "final" / ACCEPT_REPORT_FILE).read_text()) == json.loads(json.dumps(rep))

    human = [r for r in final if r["source"] == "human"]
    model = [r for r in final if r["source"] == "model"]
    assert len(human) == 150 and all(r["score"] == "" and r["sampleId"].startswith("l") for r in human)
    c = rep["counts"]
    assert c["human"] == 150 and c["predicted"] == 300 and c["accepted"] == len(model)
    assert len(model) + len(left) == 300 and c["left_for_humans"] == len(left)
    assert {r["sampleId"] for r in model} | {r["sampleId"] for r in left} == set(truth)
    assert 0 < len(model) < 300  # the threshold matters on this data
    assert sum(e["accepted"] for e in rep["per_class"].values()) == len(model)

    # the threshold: every accepted score is above it, every left one below it (predictions.csv's confidence)
    t = rep["threshold"]
    _, preds = read_csv(out / "predictions.csv")
    conf = {r["sampleId"]: float(r["confidence"]) for r in preds}
    assert all(float(r["score"]) >= t and conf[r["sampleId"]] == float(r["score"]) for r in model)
    assert all(conf[r["sampleId"]] < t for r in left)
    # ... and it is the lowest held-out score at which the held-out rows reach the target
    rows = rep["held_out"]["rows"]
    assert len(rows) == 150 and rep["held_out"]["method"] == "cross-validation"
    above = [r for r in rows if r["score"] >= t]
    assert sum(r["correct"] for r in above) / len(above) >= 0.9 and len(above) >= 10
    lower = sorted({r["score"] for r in rows if r["score"] < t}, reverse=True)
    if lower:
        with_next = [r for r in rows if r["score"] >= lower[0]]
        assert sum(r["correct"] for r in with_next) / len(with_next) < 0.9
    est = rep["estimated_accuracy"]
    assert est["n"] == len(above) and est["accuracy"] == pytest.approx(sum(r["correct"] for r in above) / len(above))

    # the estimate against the truth of the pool
    true_acc = np.mean([truth[r["sampleId"]] == r["label"] for r in model])
    all_acc = np.mean([truth[r["sampleId"]] == r["label"] for r in preds])
    assert est["low"] <= true_acc <= est["high"], (est, true_acc)
    assert true_acc > all_acc + 0.05  # accepting the confident part is worth it: clearly above the whole pool


def test_accept_all_threshold_and_registry(project, tmp_path: Path) -> None:
    inp, out, _ = project
    reg = Registry(tmp_path / "reg")
    res = run_accept(inp, out, accept_all=True, name="next-project", registry=reg, final_dir=tmp_path / "all")
    assert res.report["counts"]["accepted"] == 300 and res.report["counts"]["left_for_humans"] == 0
    assert res.report["estimated_accuracy"]["n"] == 150  # --all: the estimate is the whole held-out accuracy
    mv = reg.get("next-project")
    assert res.model_ref == "next-project@1" and mv.parent == str(out / "model")
    assert mv.metrics["accept_accepted"] == 300 and mv.metrics["accept_human"] == 150
    assert (mv.path / "manifest.json").is_file() or any(mv.path.iterdir())
    # the registered model predicts like the round's (it is the same model)
    from labelpilot.models.bundle import Bundle

    bundle = Bundle.load(mv.path)
    assert list(bundle.models) and bundle.families == Bundle.load(out / "model").families

    res = run_accept(inp, out, threshold=0.99, final_dir=tmp_path / "t")
    assert res.report["mode"] == "threshold" and res.report["threshold"] == 0.99
    _, final = read_csv(tmp_path / "t" / FINAL_LABEL_FILE)
    assert all(float(r["score"]) >= 0.99 for r in final if r["source"] == "model")


def test_round_model_in_a_registry(project, tmp_path: Path) -> None:
    inp, _, _ = project
    reg = Registry(tmp_path / "reg")
    run_loop(inp, tmp_path / "out", query_cnt=5, options=FAST, registry=reg, model_name="round")
    assert not (tmp_path / "out" / "model").exists()
    with pytest.raises(InputError, match="round@1 in a registry: pass --registry"):
        run_accept(inp, tmp_path / "out")
    res = run_accept(inp, tmp_path / "out", target_accuracy=0.9, registry=reg, name="final")
    assert res.report["model"]["from"] == "round@1" and res.model_ref == "final@1"
    assert reg.get("final").parent == "round@1" and res.report["held_out"]["n"] == 150


def test_accept_without_a_reachable_target_accepts_nothing(project, tmp_path: Path) -> None:
    inp, out, _ = project
    res = run_accept(inp, out, target_accuracy=1.0, final_dir=tmp_path / "f", min_held_out=150)
    assert res.report["threshold"] is None and res.report["counts"]["accepted"] == 0
    assert "nothing is accepted" in res.report["threshold_rule"]
    assert res.report["counts"]["left_for_humans"] == 300



def test_lower_bound_rule_is_stricter(project, tmp_path: Path) -> None:
    inp, out, _ = project
    plain = run_accept(inp, out, target_accuracy=0.85, final_dir=tmp_path / "a").report
    safe = run_accept(inp, out, target_accuracy=0.85, final_dir=tmp_path / "b", lower_bound=True).report
    assert safe["lower_bound_rule"] and "Wilson lower bound" in safe["threshold_rule"]
    assert safe["threshold"] is None or (safe["threshold"] >= plain["threshold"]
                                         and safe["estimated_accuracy"]["low"] >= 0.85)
    assert safe["counts"]["accepted"] <= plain["counts"]["accepted"]


def test_human_labels_added_after_the_round_win_and_added_rows_are_not_scored(project, tmp_path: Path) -> None:
    inp, out, truth = project
    inp2 = tmp_path / "input"
    inp2.mkdir()
    for name in ("input_label.csv", "input_unlabel.csv"):
        (inp2 / name).write_bytes((inp / name).read_bytes())
    hard = json.loads((out / "report.json").read_text())["hard_examples"][:5]
    _, pool = read_csv(inp / "input_unlabel.csv")
    text = {r["sampleId"]: r["text"] for r in pool}
    write(inp2 / "input_added_label.csv", ["sampleId", "text", "label"], [[s, text[s], truth[s]] for s in hard])
    res = run_accept(inp2, out, accept_all=True, final_dir=tmp_path / "f")
    _, final = read_csv(tmp_path / "f" / FINAL_LABEL_FILE)
    by_id = {r["sampleId"]: r for r in final}
    assert all(by_id[s]["source"] == "human" and by_id[s]["label"] == truth[s] for s in hard)
    assert len(final) == 450 and res.report["counts"]["predicted"] == 295
    assert not {r["sampleId"] for r in res.report["held_out"]["rows"]} & set(hard)
    assert any("human label is kept" in n for n in res.notes)


def test_multi_label_accept(tmp_path: Path) -> None:
    truth = make_project(tmp_path, 120, 120, seed=3, multi=True)
    run_loop(tmp_path / "input", tmp_path / "out", query_cnt=10, options=FAST)
    res = run_accept(tmp_path / "input", tmp_path / "out", target_accuracy=0.8, final_dir=tmp_path / "f")
    rep = res.report
    assert rep["multi_label"] and "least sure" in rep["score"]
    _, final = read_csv(tmp_path / "f" / FINAL_LABEL_FILE)
    model = [r for r in final if r["source"] == "model"]
    _, preds = read_csv(tmp_path / "out" / "predictions.csv")
    by_id = {r["sampleId"]: r for r in preds}
    for r in model:  # the score is the least sure per-label decision, from the prob_ columns
        p = by_id[r["sampleId"]]
        chosen = set(r["label"].split("|"))
        want = min(float(p[f"prob_{k}"]) if k in chosen else 1 - float(p[f"prob_{k}"]) for k in CLASSES)
        assert float(r["score"]) == pytest.approx(want, abs=2e-6) and float(r["score"]) >= rep["threshold"]
    rows = rep["held_out"]["rows"]
    assert all(r["correct"] == (set(r["label"].split("|")) == set(r["predicted"].split("|"))) for r in rows)
    if model:  # exact match of the label set against the truth, within the interval
        est = rep["estimated_accuracy"]
        true_acc = np.mean([set(truth[r["sampleId"]].split("|")) == set(r["label"].split("|")) for r in model])
        assert est["low"] - 0.05 <= true_acc <= est["high"] + 0.05, (est, true_acc)


# -- refusals and errors ----------------------------------------------------------------------------------
def test_spans_model_is_refused(tmp_path: Path) -> None:
    from labelpilot.models.bundle import Bundle
    from labelpilot.models.keywords import KeywordModel
    from labelpilot.schema import make_label_config, parse_label_config

    schema = parse_label_config(make_label_config(["PER", "LOC", "ORG"], kind="labels"))
    control = schema.controls[0]
    model = KeywordModel(control)  # a spans family that needs no training
    make_project(tmp_path, 20, 5)
    out = tmp_path / "out"
    out.mkdir()
    Bundle(schema, {control.name: model}).save(out / "model")
    (out / "report.json").write_text(json.dumps({"labels": ["PER", "LOC", "ORG"], "multi_label": False}))
    write(out / "predictions.csv", ["sampleId", "path", "label", "confidence"], [["u0000", "", "PER", "0.9"]])
    with pytest.raises(InputError, match="spans and boxes are not supported"):
        run_accept(tmp_path / "input", out)
    assert not (out / FINAL_LABEL_FILE).exists()


def test_errors_are_clear_and_nothing_is_written(project, tmp_path: Path) -> None:
    inp, out, _ = project
    with pytest.raises(InputError, match=r"report\.json not found .*must be the output folder of `labelpilot loop`"):
        run_accept(inp, tmp_path, accept_all=True)  # an empty folder with no loop output
    (tmp_path / "report.json").write_text((out / "report.json").read_text())
    with pytest.raises(InputError, match=r"predictions\.csv not found .*run `labelpilot loop` first"):
        run_accept(inp, tmp_path, accept_all=True)
    write(tmp_path / "predictions.csv", ["sampleId", "text", "guess"], [["u0000", "x", "alpha"]])
    with pytest.raises(InputError, match=r"missing column.*label, confidence"):
        run_accept(inp, tmp_path, accept_all=True)
    write(tmp_path / "predictions.csv", ["sampleId", "text", "label", "confidence"], [["u0000", "x", "delta", "0.5"]])
    with pytest.raises(InputError, match=r"line 2 .*'delta' unknown"):
        run_accept(inp, tmp_path, accept_all=True)
    with pytest.raises(InputError, match="either --all or --threshold"):
        run_accept(inp, out, accept_all=True, threshold=0.5)
    with pytest.raises(InputError, match="threshold must be in"):
        run_accept(inp, out, threshold=1.5)
    # too few held-out rows: say so and point at --all / --threshold
    few = tmp_path / "few"
    few.mkdir()
    _, labelled = read_csv(inp / "input_label.csv")
    write(few / "input_label.csv", ["sampleId", "text", "label"],
          [[r["sampleId"], r["text"], r["label"]] for r in labelled[:6]])
    with pytest.raises(InputError, match=r"too few held-out labels.*--threshold T or --all"):
        run_accept(few, out)
    # no model: a threshold cannot be chosen, --threshold still works
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("report.json", "predictions.csv"):
        (bare / name).write_bytes((out / name).read_bytes())
    with pytest.raises(InputError, match=r"no model.*--threshold T or --all"):
        run_accept(inp, bare)
    res = run_accept(inp, bare, threshold=0.9)
    assert res.report["estimated_accuracy"]["accuracy"] is None and any("no model" in n for n in res.notes)
    assert not any((tmp_path / n).exists() for n in (FINAL_LABEL_FILE, FINAL_UNLABEL_FILE, ACCEPT_REPORT_FILE))
    assert not list(bare.glob(".*.tmp"))  # no temporary debris


def test_cli_accept(project, tmp_path: Path) -> None:
    """`labelpilot loop accept` through the real command tree (in-process: a subprocess would spend most of
    its time importing sklearn on a busy machine); `labelpilot loop` itself is run by tests/test_loop.py."""
    from typer.testing import CliRunner

    from labelpilot.cli import _mount_optional_commands, app

    _mount_optional_commands("loop")
    inp, out, _ = project
    reg = tmp_path / "data"
    runner = CliRunner()
    res = runner.invoke(app, ["loop", "accept", "--input-dir", str(inp), "--output-dir", str(out), "--threshold",
                              "0.8", "--final-dir", str(tmp_path / "f"), "--name", "cli-next", "--data-dir", str(reg)])
    assert res.exit_code == 0, res.output
    assert "threshold 0.8000: --threshold, set by hand" in res.output
    assert "estimated accuracy of the accepted labels:" in res.output and "Wilson 95%" in res.output
    assert "registered: cli-next@1" in res.output and Registry(reg / "registry").get("cli-next").version == 1
    assert (tmp_path / "f" / FINAL_LABEL_FILE).is_file()
    bad = runner.invoke(app, ["loop", "accept", "--input-dir", str(inp), "--output-dir", str(tmp_path / "nowhere"),
                              "--all"])
    assert bad.exit_code == 2 and "is not a folder (the output of `labelpilot loop`)" in bad.output
    missing = runner.invoke(app, ["loop", "--input-dir", str(inp)])  # the round still wants both folders
    assert missing.exit_code == 2 and "missing option --output-dir" in missing.output


# -- shared data: the estimate against the truth ----------------------------------------------------------
@pytest.mark.skipif(not (SHARED / "sst2" / "sentiment-train").is_file(),
                    reason=f"shared data absent: {SHARED}/sst2/sentiment-train")
def test_sst2_estimated_accuracy_contains_the_true_accuracy(tmp_path: Path) -> None:
    lines = (SHARED / "sst2" / "sentiment-train").read_text(encoding="utf-8").splitlines()
    rows = [(t.strip(), y.strip()) for t, _, y in (ln.rpartition("\t") for ln in lines) if t.strip()]
    rng = random.Random(1)
    sample = rng.sample(rows, 2000)
    d = tmp_path / "input"
    d.mkdir()
    n_label = 500
    write(d / "input_label.csv", ["sampleId", "text", "label"],
          [[f"l{i}", t, "pos" if y == "1" else "neg"] for i, (t, y) in enumerate(sample[:n_label])])
    write(d / "input_unlabel.csv", ["sampleId", "text"], [[f"u{i}", t] for i, (t, _) in enumerate(sample[n_label:])])
    truth = {f"u{i}": "pos" if y == "1" else "neg" for i, (_, y) in enumerate(sample[n_label:])}
    run_loop(d, tmp_path / "out", query_cnt=50, options=FAST)
    res = run_accept(d, tmp_path / "out", target_accuracy=0.9)
    est = res.report["estimated_accuracy"]
    _, final = read_csv(tmp_path / "out" / FINAL_LABEL_FILE)
    model = [r for r in final if r["source"] == "model"]
    assert len(model) >= 100, res.report["counts"]
    true_acc = float(np.mean([truth[r["sampleId"]] == r["label"] for r in model]))
    assert est["low"] <= true_acc <= est["high"], (est, true_acc, res.report["counts"])
