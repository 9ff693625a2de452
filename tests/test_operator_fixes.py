"""The operator fixes of issue 13: validation rows rejoin training and quality comes from all labels; stopping
advice from the round history without --model-id; evaluate/predict read the loop's model folder; inline text
echoed in predictions.csv; a CLI that starts fast; train --val-size 0 with true counts."""

from __future__ import annotations

import csv
import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from labelpilot.batch import evaluate_file, train_file
from labelpilot.data.types import FitReport
from labelpilot.loop import run_loop
from labelpilot.registry import Registry
from labelpilot.strategies import stop_advice
from tests.conftest import LABELPILOT
from tests.test_loop import POOL, TEXTS, TinyModel, make_input, read_csv, write

EXTRA = {  # ten more labelled items, for a 40-label start like the issue's
    "sports": ["the winger crossed for a late header", "the swimmer set a world record", "the derby ended in a draw",
               "the captain lifted the trophy"],
    "finance": ["the bank cut its growth forecast", "bond prices rallied on friday", "the firm issued new shares"],
    "weather": ["frost is likely in rural areas", "a warm front brings drizzle", "gales will batter the coast"],
}


@pytest.fixture(autouse=True)
def _reset() -> None:
    TinyModel.fits.clear()


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(LABELPILOT), *args], capture_output=True, text=True, cwd=cwd, timeout=timeout,
                          env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def forty_labels(root: Path, pool: list[str] | None = None) -> Path:
    """input_label.csv with 40 inline texts, input_unlabel.csv with the pool (inline)."""
    d = root / "input"
    d.mkdir(parents=True)
    rows = [[f"{lab[:2]}{i:02d}", t, lab] for lab in TEXTS for i, t in enumerate(TEXTS[lab] + EXTRA[lab])]
    assert len(rows) == 40
    write(d / "input_label.csv", ["sampleId", "text", "label"], rows)
    write(d / "input_unlabel.csv", ["sampleId", "text"], [[f"u{i:03d}", t] for i, t in enumerate(pool or POOL)])
    return d


# -- 1. validation rows rejoin training; quality from all labels -------------------------------------------
def test_final_model_is_refit_on_all_labels_and_quality_is_cross_validated(tmp_path: Path) -> None:
    inp = make_input(tmp_path)
    labelled = {r["sampleId"] for r in read_csv(inp / "input_label.csv")}
    res = run_loop(inp, tmp_path / "out", model=TinyModel, query_cnt=2, val_size=0.2)
    val_ids = res.report["val_ids"]
    assert val_ids and TinyModel.fits[0]["val"] == val_ids  # the seed-003 split is still used for early stopping
    final = TinyModel.fits[-1]
    assert final["train"] == sorted(labelled) and final["val"] == []  # the validation rows rejoined training
    training = res.report["training"]
    assert training["n_in_model"] == len(labelled) and training["refit_on_all"]
    assert training["early_stopping"]["n_val"] == len(val_ids)
    quality = training["quality"]
    assert quality["method"] == "cross-validation" and quality["n"] == len(labelled)  # not len(val_ids)
    assert 0.0 <= quality["score"] <= 1.0 and quality["metric"] == "accuracy"
    assert f"model trained on {len(labelled)} of {len(labelled)} labels" in res.report["summary"]
    # folds were fitted on fresh models that never saw their own fold
    fold_fits = TinyModel.fits[1:-1]
    assert len(fold_fits) == 5 and all(len(f["train"]) < len(labelled) for f in fold_fits)
    assert set().union(*(labelled - set(f["train"]) for f in fold_fits)) == labelled


def test_refit_false_keeps_the_seed003_model_and_says_so(tmp_path: Path) -> None:
    inp = make_input(tmp_path)
    res = run_loop(inp, tmp_path / "out", model=TinyModel, query_cnt=2, options={"refit": False})
    assert not set(res.report["val_ids"]) & set(TinyModel.fits[-1]["train"])
    assert res.report["training"]["quality"]["method"] == "hold-out"
    assert res.report["training"]["quality"]["n"] == len(res.report["val_ids"])
    assert "not in the model (refit=False)" in res.report["summary"]


def test_cli_with_forty_labels_reports_quality_over_all_forty(tmp_path: Path) -> None:
    inp = forty_labels(tmp_path)
    out = tmp_path / "out"
    proc = run_cli("loop", "--input-dir", str(inp), "--output-dir", str(out), "--query-cnt", "3")
    assert "model trained on 40 of 40 labels" in proc.stdout
    # text-linear does not stop early and validates itself: the seed-003 split is not fitted separately
    assert "the 8-row seed-003 validation split was not fitted separately" in proc.stdout
    assert "over all 40 labels" in proc.stdout  # text-linear's own 5-fold out-of-fold predictions
    report = json.loads((out / "report.json").read_text())
    assert report["training"]["quality"]["n"] == 40 and report["training"]["quality"]["method"] == "cross-validation"
    assert report["fit"]["n_train"] == 40  # what the saved model was trained on


class SelfEstimating(TinyModel):
    """A family that cross-validates itself when fitted without val (reports cv_ metrics, as the image
    classifier does): the loop must use that and not cross-validate again."""

    name = "self-estimating-test"

    def get_params(self) -> dict:
        return {**super().get_params(), "cv_folds": 4}

    def fit(self, examples, *, val=None, progress=None) -> FitReport:
        report = super().fit(examples, val=val, progress=progress)
        if val is None:
            report.metrics = {"cv_accuracy": 0.75, "cv_folds": 4.0}
        return report


def test_a_family_that_estimates_itself_is_not_cross_validated_again(tmp_path: Path) -> None:
    inp = make_input(tmp_path)
    res = run_loop(inp, tmp_path / "out", model=SelfEstimating, query_cnt=2)
    assert len(TinyModel.fits) == 1 and TinyModel.fits[0]["val"] == []  # one fit on all labels, no folds
    quality = res.report["training"]["quality"]
    assert quality["method"] == "cross-validation" and quality["score"] == 0.75 and "4-fold" in quality["detail"]


def test_registry_rounds_keep_quality_history(tmp_path: Path) -> None:
    inp = make_input(tmp_path)
    reg = Registry(tmp_path / "reg")
    r1 = run_loop(inp, tmp_path / "o1", model=TinyModel, registry=reg, model_name="news", query_cnt=2)
    assert r1.model_version.metrics["al_quality"] == r1.report["training"]["quality"]["score"]
    r2 = run_loop(inp, tmp_path / "o2", model=TinyModel, registry=reg, model_id="news@1", is_first_train=False,
                  query_cnt=2)
    hist = r2.report["history"]
    assert len(hist) == 2 and hist[0]["quality"] == r1.report["training"]["quality"]["score"]
    assert hist[0]["n_labels"] < hist[1]["n_labels"] and hist[1]["kappa"] is not None


def test_text_linear_refit_is_never_skipped_by_its_time_budget(tmp_path: Path) -> None:
    inp = forty_labels(tmp_path)
    # cv_max_n=10: text-linear scores a hold-out slice, then refits on all unless its time budget says no
    res = run_loop(inp, tmp_path / "o1", query_cnt=2, options={"cv_max_n": 10})
    training = res.report["training"]
    assert training["n_in_model"] == 40 and training["refit_on_all"] and res.report["fit"]["n_train"] == 40
    assert training["quality"]["method"] == "hold-out" and 0 < training["quality"]["n"] < 40
    # an explicit budget is the caller's choice: the skipped refit is said, with the counts
    res = run_loop(inp, tmp_path / "o2", query_cnt=2, options={"cv_max_n": 10, "time_budget": 0})
    training = res.report["training"]
    assert training["n_in_model"] < 40 and not training["refit_on_all"]
    assert f"the final model holds {training['n_in_model']} of 40 labels" in res.report["summary"]
    assert "refit on all examples skipped" in res.report["summary"]


# -- 2. stopping advice from the round history without --model-id ------------------------------------------
def test_every_round_advises_from_the_history_in_output_dir(tmp_path: Path) -> None:
    pool = POOL + [f"{t} again" for lab in EXTRA for t in EXTRA[lab]] * 3
    pool = [f"{t} {i}" for i, t in enumerate(pool)]
    inp = forty_labels(tmp_path, pool)
    out = tmp_path / "out"
    added: list[list[str]] = []
    reports = []
    for round_no in range(1, 4):
        args = ["loop", "--input-dir", str(inp), "--output-dir", str(out), "--query-cnt", "4"]
        proc = run_cli(*args, *([] if round_no == 1 else ["--not-first-train"]))
        assert f"stopping (round {round_no}): " in proc.stdout
        report = json.loads((out / "report.json").read_text())
        reports.append(report)
        assert report["stopping"]["reason"] and report["stopping"]["rounds"] == round_no
        assert [e["round"] for e in report["history"]] == list(range(1, round_no + 1))
        # label the hard examples (oracle: the word that names the label is in TEXTS' order) and move them
        rows = read_csv(out / "predictions.csv")
        hard = [r for r in rows if r["hard_example"] == "1"]
        added += [[r["sampleId"], r["text"], r["label"]] for r in hard]  # echoed text: no join needed
        write(inp / "input_added_label.csv", ["sampleId", "text", "label"], added)
        left = [[r["sampleId"], r["text"]] for r in rows if r["hard_example"] != "1"]
        write(inp / "input_unlabel.csv", ["sampleId", "text"], left)
    assert [e["n_labels"] for e in reports[-1]["history"]] == [40, 44, 48]
    assert reports[0]["history"][0]["kappa"] is None
    assert all(r["history"][-1]["kappa"] is not None for r in reports[1:])  # vs the previous predictions.csv
    assert all(e["quality"] is not None for e in reports[-1]["history"])
    assert (out / "model" / "loop_history.json").is_file()
    # a rerun of the last round replaces it instead of adding a round
    run_cli("loop", "--input-dir", str(inp), "--output-dir", str(out), "--query-cnt", "4", "--not-first-train")
    rerun = json.loads((out / "report.json").read_text())
    assert [e["n_labels"] for e in rerun["history"]] == [40, 44, 48, 52]
    run_cli("loop", "--input-dir", str(inp), "--output-dir", str(out), "--query-cnt", "4", "--not-first-train")
    again = json.loads((out / "report.json").read_text())
    assert [e["n_labels"] for e in again["history"]] == [40, 44, 48, 52] and "rerun" in again["stopping"][
        "history_source"]


def test_history_follows_a_model_folder(tmp_path: Path) -> None:
    inp = make_input(tmp_path)
    run_loop(inp, tmp_path / "o1", model=TinyModel, query_cnt=2)
    r2 = run_loop(inp, tmp_path / "o2", model=TinyModel, query_cnt=2, is_first_train=False,
                  model_id=str(tmp_path / "o1" / "model"))
    assert len(r2.report["history"]) == 2 and r2.report["history"][-1]["kappa"] is not None


def test_quality_plateau_and_rising_quality() -> None:
    flat = stop_advice([], [0.3, 0.29, 0.27, 0.25], qualities=[0.80, 0.86, 0.862, 0.864])
    assert flat.stop and "quality plateau" in flat.reason
    rising = stop_advice([], [0.3, 0.29, 0.27, 0.25], qualities=[0.70, 0.76, 0.80, 0.84])
    assert not rising.stop and "0.800 -> 0.840" in rising.reason


# -- 3. evaluate and predict read the loop's model folder --------------------------------------------------
def test_evaluate_and_predict_read_the_loop_model_folder(tmp_path: Path) -> None:
    inp = forty_labels(tmp_path)
    out = tmp_path / "out"
    run_loop(inp, out, query_cnt=2)
    dev = tmp_path / "dev.csv"
    write(dev, ["text", "label"], [[t, lab] for lab in TEXTS for t in TEXTS[lab][:3]])
    report = tmp_path / "eval.json"
    proc = run_cli("evaluate", str(out / "model"), str(dev), "--out", str(report), cwd=tmp_path)
    result = json.loads(report.read_text())
    assert result["metrics"]["n"] == 9 and result["metrics"]["accuracy"] >= 0.5 and "accuracy" in proc.stdout
    assert (out / "model" / "evaluations" / "dev.json").is_file()
    assert not (tmp_path / "labelpilot-data").exists()  # no registry was created for a folder
    pred = tmp_path / "pred.csv"
    run_cli("predict", str(out / "model"), str(dev), "-o", str(pred), "--workers", "1", cwd=tmp_path)
    rows = read_csv(pred)
    assert len(rows) == 9 and all(r["predictions"] in TEXTS for r in rows)


def test_evaluate_reads_a_plugin_model_folder(tmp_path: Path) -> None:
    pytest.importorskip("pandas", reason="seed-003 plug-ins need pandas")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "plugin_demo"))
    inp = make_input(tmp_path)
    run_loop(inp, tmp_path / "o1", model="my_model:MyModel", query_cnt=2)
    dev = tmp_path / "dev.csv"
    write(dev, ["text", "label"], [[t, lab] for lab in TEXTS for t in TEXTS[lab][:2]])
    result = evaluate_file(None, str(tmp_path / "o1" / "model"), dev)
    assert result["metrics"]["n"] == 6 and result["version"] is None


# -- 4. inline text echoed ------------------------------------------------------------------------------------
def test_inline_text_is_echoed_in_predictions(tmp_path: Path) -> None:
    inp = make_input(tmp_path, inline=True)
    res = run_loop(inp, tmp_path / "out", model=TinyModel, query_cnt=3)
    rows = read_csv(res.predictions_csv)
    assert list(rows[0])[:4] == ["sampleId", "path", "text", "label"]
    given = {r["sampleId"]: r["text"] for r in read_csv(inp / "input_unlabel.csv")}
    assert {r["sampleId"]: r["text"] for r in rows} == given
    hard = [r["text"] for r in rows if r["hard_example"] == "1"]
    assert len(hard) == 3 and all(hard)
    # items given by path keep the old columns
    res2 = run_loop(make_input(tmp_path / "p"), tmp_path / "out2", model=TinyModel, query_cnt=3)
    assert "text" not in read_csv(res2.predictions_csv)[0]


# -- 5. startup ---------------------------------------------------------------------------------------------
def best_of(n: int, *args: str) -> float:
    best = float("inf")
    for _ in range(n):
        t0 = time.perf_counter()
        proc = subprocess.run([str(LABELPILOT), *args], capture_output=True, text=True, timeout=120)
        best = min(best, time.perf_counter() - t0)
        assert proc.returncode == 0, proc.stderr
    return best


@pytest.mark.parametrize("flag", ["--version", "--help"])
def test_version_and_help_start_fast(flag: str) -> None:
    seconds = best_of(3, flag)
    assert seconds < 1.5, f"labelpilot {flag}: best of 3 took {seconds:.2f} s (load {os.getloadavg()})"


def test_help_imports_no_heavy_package() -> None:
    code = (
        "import sys; sys.argv = ['labelpilot', '--help']\n"
        "from labelpilot.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = ['sklearn', 'scipy', 'pandas', 'torch', 'jieba', 'onnxruntime', 'matplotlib', 'fastapi']\n"
        "print('HEAVY', [m for m in heavy if m in sys.modules])"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "HEAVY []" in proc.stdout, proc.stdout[-500:] + proc.stderr[-2000:]
    assert "loop" in proc.stdout  # the loop command is still listed


# -- 6. train --val-size 0 --------------------------------------------------------------------------------------
def table(path: Path, n: int) -> Path:
    rng = random.Random(0)
    labels = sorted(TEXTS)
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"])
        for i in range(n):
            lab = labels[i % 3]
            w.writerow([f"{rng.choice(TEXTS[lab])} {rng.choice(TEXTS[rng.choice(labels)]).split()[1]} n{i % 17}", lab])
    return path


def test_train_val_size_zero_trains_on_every_row_and_prints_true_counts(tmp_path: Path) -> None:
    data = table(tmp_path / "t.csv", 400)
    dd = str(tmp_path / "dd")
    # cv_max_n=100 sends text-linear down its large-set path (a scored hold-out slice, then a refit)
    proc = run_cli("train", str(data), "--name", "t", "--val-size", "0", "--options", "cv_max_n=100", "--data-dir", dd)
    assert "400 of 400 rows in the model (no validation split)" in " ".join(proc.stdout.split())
    mv = Registry(tmp_path / "dd" / "registry").get("t")
    assert mv.n_examples == 400
    skipped = run_cli("train", str(data), "--name", "t", "--val-size", "0", "--options", "cv_max_n=100",
                      "--options", "time_budget=0", "--data-dir", dd)
    text = " ".join(skipped.stdout.split())
    found = re.search(r"(\d+) of 400 rows in the model .*REFIT ON ALL ROWS SKIPPED \((\d+) rows not in", text)
    assert found and int(found[1]) + int(found[2]) == 400 and int(found[2]) > 0, text
    held = run_cli("train", str(data), "--name", "t", "--val-size", "0.1", "--data-dir", dd)
    assert "360 train / 40 val (held out by --val-size, not in the model)" in " ".join(held.stdout.split())


def test_train_file_val_size_zero_in_process(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "reg")
    _, report, _ = train_file(reg, "t", table(tmp_path / "t.csv", 300), val_size=0, options={"cv_max_n": 50})
    assert report.n_train == 300 and report.notes[0].startswith("counts: 300 of 300 rows in the model")
