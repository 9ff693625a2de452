"""One loader for every pluggable kind (labelpilot.plugins): strategies, model families and seed-003
plug-ins are found by real entry points (a dist-info folder on sys.path, as ``pip install`` leaves it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from labelpilot import plugins
from labelpilot.errors import InputError, NotFoundError
from labelpilot.loop import run_loop
from labelpilot.models.base import families, get_family
from labelpilot.models.keywords import KeywordModel
from labelpilot.strategies import Pool, RandomSampling, canonical_name, get_strategy
from tests.entry_points import install_entry_points
from tests.test_loop import TinyModel, make_input, read_csv

#: a strategy from "another package": the most confident items first (the opposite of least confidence)
STRATEGY_SOURCE = '''
import numpy as np
from labelpilot.strategies.base import Selection


class MostConfident:
    name = "most_confident"

    def __init__(self, random_state=None, offset=0.0):
        self.offset = offset

    def select(self, pool, n):
        scores = pool.probs.max(axis=1) + self.offset
        order = np.argsort(-scores, kind="stable")[:n]
        return Selection(order, scores, self.name, {"from": "entry point"})
'''


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return install_entry_points(
        tmp_path / "site", monkeypatch, "lp_demo_strategies",
        {
            plugins.STRATEGIES: {
                "most_confident": "lp_demo_strategy:MostConfident",
                "random": "lp_demo_strategy:MostConfident",  # a built-in name: never replaced
                "broken": "lp_no_such_module:Thing",
            },
            plugins.MODEL_FAMILIES: {
                "demo-keywords": "labelpilot.models.keywords:KeywordModel",
                "text-linear": "labelpilot.models.keywords:KeywordModel",  # a built-in name: never replaced
            },
        },
        {"lp_demo_strategy": STRATEGY_SOURCE},
    )


@pytest.mark.usefixtures("site")
def test_strategy_from_entry_point() -> None:
    probs = np.array([[0.5, 0.5], [0.9, 0.1], [0.6, 0.4], [0.99, 0.01]])
    strategy = get_strategy("most_confident", random_state=0, offset=1.0)
    assert type(strategy).__module__ == "lp_demo_strategy" and strategy.offset == 1.0
    sel = strategy.select(Pool(probs=probs), 2)
    assert list(sel.indices) == [3, 1] and sel.info == {"from": "entry point"}
    assert canonical_name("MostConfident") == "most_confident"  # names are squashed like the built-ins'
    assert isinstance(get_strategy("random"), RandomSampling)
    with pytest.raises(InputError, match="most_confident") as unknown:
        get_strategy("NoSuchSampling")  # the error lists the installed strategies too
    assert unknown.value.field == "strategy"
    with pytest.raises(InputError, match=r"'broken'.*cannot be loaded") as broken:
        get_strategy("broken")
    assert broken.value.field == "strategy" and broken.value.status_code < 500


def test_strategy_entry_point_through_the_loop(site: Path, tmp_path: Path) -> None:
    inp = make_input(tmp_path)
    res = run_loop(inp, tmp_path / "out", model=TinyModel, query_cnt=3, strategy="MostConfident")
    assert res.report["strategy"]["used"] == "most_confident"
    rows = read_csv(res.predictions_csv)
    hard = sorted((r for r in rows if r["hard_example"] == "1"), key=lambda r: -float(r["confidence"]))
    rest = [float(r["confidence"]) for r in rows if r["hard_example"] != "1"]
    assert len(hard) == 3 and min(float(r["confidence"]) for r in hard) >= max(rest)


@pytest.mark.usefixtures("site")
def test_family_from_entry_point() -> None:
    found = families()
    assert found["demo-keywords"] == "labelpilot.models.keywords:KeywordModel"
    assert found["text-linear"] == "labelpilot.models.text_linear:TextLinearModel"
    assert get_family("demo-keywords") is KeywordModel
    with pytest.raises(NotFoundError, match="demo-keywords"):
        get_family("no-such-family")


def test_without_the_distribution_nothing_is_added() -> None:
    assert "demo-keywords" not in families()
    assert "most_confident" not in plugins.entry_point_refs(plugins.STRATEGIES)
    with pytest.raises(plugins.PluginNotFound):
        plugins.load_named(plugins.STRATEGIES, "most_confident")


def test_import_object_forms(tmp_path: Path) -> None:
    assert plugins.import_object("labelpilot.models.keywords:KeywordModel") is KeywordModel
    assert plugins.import_object("labelpilot.plugins:PluginNotFound.__name__") == "PluginNotFound"
    script = tmp_path / "lp_file_plugin.py"
    script.write_text("class Thing:\n    answer = 42\n", encoding="utf-8")
    assert plugins.import_object(f"{script}:Thing.answer", files=True) == 42
    with pytest.raises(ImportError):
        plugins.import_object(f"{script}:Thing")  # a file path only where the caller allows it
