"""The model registry: atomic versions, serving pointer, promote/rollback, crash debris."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from labelpilot.data.types import Example, FitReport, Prediction, Target
from labelpilot.errors import NotFoundError
from labelpilot.models import base
from labelpilot.models.bundle import Bundle
from labelpilot.registry import Registry, parse_model_ref
from labelpilot.schema import TaskKind, make_label_config, parse_label_config


class MajorityModel:
    """The smallest model that follows the contract: predicts the most frequent label."""

    name = "test-majority"
    kinds = frozenset({TaskKind.TEXT_CHOICES})

    def __init__(self, control, **options):
        self.control = control
        self.label_ = None

    @property
    def is_fitted(self) -> bool:
        return self.label_ is not None

    def fit(self, examples, *, val=None, progress=None) -> FitReport:
        counts = Counter(lab for ex in examples for lab in ex.target.labels)
        self.label_ = counts.most_common(1)[0][0]
        return FitReport(n_train=len(examples), labels=sorted(counts), metrics={"accuracy": 0.5})

    def predict(self, examples):
        return [Prediction(labels=(self.label_,), score=0.5) for _ in examples]

    def embed(self, examples):
        return None

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "m.json").write_text(json.dumps({"label": self.label_}))

    @classmethod
    def load(cls, directory: Path, control):
        m = cls(control)
        m.label_ = json.loads((directory / "m.json").read_text())["label"]
        return m


@pytest.fixture(autouse=True)
def _register_family(monkeypatch):
    monkeypatch.setitem(base._BUILTIN, "test-majority", "tests.test_registry:MajorityModel")


def make_bundle(label: str) -> tuple[Bundle, FitReport]:
    schema = parse_label_config(make_label_config(["pos", "neg"]))
    model = MajorityModel(schema.controls[0])
    report = model.fit([Example(text="x", target=Target(labels=(label,)))])
    return Bundle(schema, {"label": model}), report


def test_register_load_promote_rollback(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    b1, r1 = make_bundle("pos")
    v1 = reg.register("demo", b1, report=r1)
    b2, r2 = make_bundle("neg")
    v2 = reg.register("demo", b2, report=r2)
    assert (v1.version, v2.version) == (1, 2) and v1.tag != v2.tag and v2.tag.startswith("test-majority-v2-")
    assert reg.get("demo").version == 2 and v2.metrics == {"accuracy": 0.5} and v2.labels == ["neg"]
    _mv, bundle = reg.load("demo")
    assert bundle.models["label"].predict([Example(text="y")])[0].labels == ("neg",)
    assert reg.rollback("demo").version == 1
    assert reg.load("demo")[1].models["label"].label_ == "pos"
    with pytest.raises(NotFoundError, match="no version older"):
        reg.rollback("demo")
    assert reg.promote("demo", 2).version == 2
    assert [h["action"] for h in reg.history("demo")] == ["register", "register", "rollback", "promote"]
    # a second Registry over the same folder (another process) sees the same state
    assert Registry(tmp_path).get("demo").version == 2
    assert reg.find_tag(v1.tag).version == 1


def test_unknown_names_and_versions_are_404_with_the_name(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    with pytest.raises(NotFoundError, match="'nope'"):
        reg.get("nope")
    reg.register("demo", make_bundle("pos")[0])
    with pytest.raises(NotFoundError, match="no version v7"):
        reg.get("demo", 7)


def test_crash_debris_is_never_a_version_and_is_cleaned(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    reg.register("demo", make_bundle("pos")[0])
    model_dir = next((tmp_path / "models").iterdir())
    (model_dir / ".tmp-deadbeef").mkdir()  # interrupted save
    (model_dir / ".tmp-deadbeef" / "half").write_text("x")
    (model_dir / "v2").mkdir()  # renamed but never committed
    assert [m.version for m in reg.list_versions("demo")] == [1]
    removed = Registry(tmp_path).cleanup()
    assert sorted(Path(p).name for p in removed) == [".tmp-deadbeef", "v2"]
    # the next version number is still 2 and is complete
    assert reg.register("demo", make_bundle("neg")[0]).version == 2
    assert (model_dir / "v2" / "bundle.json").exists()


def test_failed_save_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    reg = Registry(tmp_path)
    bundle, _ = make_bundle("pos")

    def boom(self, directory):
        directory.mkdir(parents=True)
        (directory / "partial").write_text("x")
        raise OSError("disk full")

    monkeypatch.setattr(MajorityModel, "save", boom)
    with pytest.raises(OSError):
        reg.register("demo", bundle)
    assert reg.list_models() == [] or reg.list_models()[0]["versions"] == 0
    assert not any(p.name.startswith(".tmp-") for p in (tmp_path / "models").rglob("*"))


def test_names_are_safe_folders(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    mv = reg.register("../../etc/passwd 项目", make_bundle("pos")[0])
    assert mv.path.resolve().is_relative_to((tmp_path / "models").resolve())


@pytest.mark.parametrize(("ref", "out"), [("m", ("m", None)), ("m@3", ("m", 3)), ("a@b@v12", ("a@b", 12))])
def test_parse_model_ref(ref, out) -> None:
    assert parse_model_ref(ref) == out
