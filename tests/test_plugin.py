"""A seed-003 plug-in (examples/plugin_demo/my_model.py) through run_loop, unchanged."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest

from labelpilot.errors import InputError
from labelpilot.loop import plugin as plugin_mod
from labelpilot.loop import run_loop
from labelpilot.registry import Registry

pytest.importorskip("pandas", reason="seed-003 plug-ins need pandas (pip install pandas)")

DEMO = Path(__file__).resolve().parents[1] / "examples" / "plugin_demo"
sys.path.insert(0, str(DEMO))

from tests.entry_points import install_entry_points  # noqa: E402
from tests.test_loop import TEXTS, make_input, read_csv  # noqa: E402


def test_example_plugin_two_rounds(tmp_path: Path) -> None:
    inp = make_input(tmp_path)
    r1 = run_loop(
        inp,
        tmp_path / "o1",
        model="my_model:MyModel",
        query_cnt=4,
        strategy="MarginSampling",
        options={"epochs": 1, "lr": 0.1},
    )
    rows = read_csv(r1.predictions_csv)
    assert len(rows) == 12 and sum(r["hard_example"] == "1" for r in rows) == 4
    assert {r["label"] for r in rows} <= set(TEXTS)
    assert r1.report["strategy"]["info"]["source"] == "plug-in hard-example flags"
    assert r1.report["split"]["val"] > 0
    assert (tmp_path / "o1" / "model" / "control-0" / "my_model.pkl").is_file()
    # round two starts from the saved plug-in model (load_model) and adds input_added_label.csv
    r2 = run_loop(inp, tmp_path / "o2", model_id=str(tmp_path / "o1" / "model"), is_first_train=False, query_cnt=2)
    assert r2.report["model"]["family"] == "plugin:my_model:MyModel"
    assert r2.report["split"]["added_used"] > 0
    assert sorted(r2.report["val_ids"]) == sorted(r1.report["val_ids"])  # the plug-in's own seeded split


def test_plugin_in_registry(tmp_path: Path) -> None:
    inp = make_input(tmp_path)
    reg = Registry(tmp_path / "reg")
    run_loop(inp, tmp_path / "o1", model="my_model:MyModel", registry=reg, model_name="demo", query_cnt=2)
    r2 = run_loop(inp, tmp_path / "o2", registry=reg, model_id="demo@1", is_first_train=False, query_cnt=2)
    assert r2.model_version is not None and r2.model_version.version == 2
    report = json.loads((tmp_path / "o2" / "report.json").read_text())
    assert report["model"]["registry"]["name"] == "demo"


def test_plugin_without_flags_uses_labelpilot_strategy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import my_model

    original = my_model.MyModel.query_hard_example

    def no_flags(self, df_img, work_dir, query_cnt, strategy, options):
        return original(self, df_img, work_dir, query_cnt, strategy, options).drop(columns=["hard_example"])

    monkeypatch.setattr(my_model.MyModel, "query_hard_example", no_flags)
    inp = make_input(tmp_path)
    res = run_loop(inp, tmp_path / "out", model="my_model:MyModel", query_cnt=3, strategy="EntropySampling")
    assert res.report["strategy"]["used"] == "entropy" and len(res.hard_ids) == 3


def test_entry_point_lookup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a real entry point (a dist-info folder on sys.path), found by labelpilot.plugins as pip would leave it
    install_entry_points(tmp_path / "site", monkeypatch, "lp_demo_plugin",
                         {plugin_mod.PLUGIN_GROUP: {"demo": "my_model:MyModel"}})
    import my_model

    assert plugin_mod.load_object("demo") is my_model.MyModel
    with pytest.raises(InputError, match="no plug-in 'nope'"):
        plugin_mod.load_object("nope")


def test_clear_error_without_pandas(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    inp = make_input(tmp_path)
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas -> ImportError
    out = tmp_path / "out"
    with pytest.raises(InputError, match="pip install pandas"):
        run_loop(inp, out, model=_ProtocolOnly, query_cnt=2)
    assert not out.exists()


class _ProtocolOnly:
    """The six methods, nothing else (no pandas import at class level)."""

    def split_train_val(self, df_init, df_anno, is_first_train, val_size, random_seed):
        return df_init, None

    def save_model(self, save_dir): ...

    def load_model(self, model_dir):
        return self

    def train_model(self, df_train, df_val, work_dir, is_first_train, options): ...

    def query_hard_example(self, df_img, work_dir, query_cnt, strategy, options): ...


def test_plugin_failure_names_the_method(tmp_path: Path) -> None:
    class Broken(_ProtocolOnly):
        def train_model(self, df_train, df_val, work_dir, is_first_train, options):
            raise ValueError("boom")

    from labelpilot.errors import TrainingError

    inp = make_input(tmp_path)
    with pytest.raises(TrainingError, match="train_model failed: ValueError: boom"):
        run_loop(inp, tmp_path / "out", model=Broken, query_cnt=2)
    assert not (tmp_path / "out").exists()
    with (inp / "input_label.csv").open(encoding="utf-8") as fh:
        assert next(csv.reader(fh)) == ["sampleId", "path", "label"]
