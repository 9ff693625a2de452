"""The seed-003 operator, one test per line of the protocol, plus bad input with nothing written."""

from __future__ import annotations

import csv
import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from labelpilot.data.types import Example, FitReport, Prediction
from labelpilot.errors import InputError
from labelpilot.loop import run_loop
from labelpilot.loop.cli import parse_options
from labelpilot.registry import Registry
from labelpilot.schema.types import ControlSpec, TaskKind

TEXTS = {
    "sports": [
        "the striker scored twice in the derby",
        "our team won the league final last night",
        "the goalkeeper saved a late penalty",
        "a hat trick for the young forward",
        "the coach praised the defence after the match",
        "fans cheered as the club lifted the cup",
        "the tennis champion won in straight sets",
        "a record crowd watched the marathon",
        "the referee showed a red card",
        "the relay team broke the national record",
    ],
    "finance": [
        "shares fell after the quarterly earnings report",
        "the central bank raised interest rates",
        "investors sold bonds as inflation climbed",
        "the stock market closed at a record high",
        "the company announced a dividend increase",
        "oil prices pushed the index lower",
        "the bank reported strong profit growth",
        "currency traders bet on a weaker dollar",
        "the merger lifted both share prices",
        "analysts cut their revenue forecast",
    ],
    "weather": [
        "heavy rain is expected over the weekend",
        "a storm warning was issued for the coast",
        "temperatures will drop below freezing tonight",
        "sunny skies and a light breeze tomorrow",
        "snow closed several mountain roads",
        "the heatwave will last until friday",
        "fog delayed flights at the airport",
        "strong winds knocked down power lines",
        "showers will clear by the afternoon",
        "a mild and dry week is forecast",
    ],
}
POOL = [
    "the midfielder signed a new contract",
    "bond yields rose sharply on monday",
    "thunderstorms will hit the north tonight",
    "the team lost the semi final on penalties",
    "the fund manager bought tech shares",
    "a cold front brings rain and wind",
    "the athlete won gold in the sprint",
    "the market rallied after the rate cut",
    "clear skies expected for the holiday",
    "the club fired its manager",
    "earnings beat expectations this quarter",
    "hail damaged crops in the valley",
]


class TinyModel:
    """A test-local model that follows the contract (TF-IDF + logistic regression, single- or multi-label)."""

    name: ClassVar[str] = "tiny-test"
    kinds: ClassVar[frozenset[TaskKind]] = frozenset({TaskKind.TEXT_CHOICES})
    fits: ClassVar[list[dict]] = []

    def __init__(self, control: ControlSpec, C: float = 4.0, random_state: int = 0) -> None:
        self.control = control
        self.C = C
        self.random_state = random_state

    def get_params(self) -> dict:
        return {"C": self.C, "random_state": self.random_state}

    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "clf_")

    def fit(self, examples: Sequence[Example], *, val=None, progress=None) -> FitReport:
        TinyModel.fits.append({"train": sorted(e.id for e in examples), "val": sorted(e.id for e in val or ())})
        self.vec_ = TfidfVectorizer().fit([e.text for e in examples])
        keys = self.control.label_keys
        X = self.vec_.transform([e.text for e in examples])
        if self.control.multiple:  # one binary model per label
            Y = np.array([[k in e.target.labels for k in keys] for e in examples], dtype=int)
            self.clf_ = [
                LogisticRegression(C=self.C).fit(X, Y[:, j]) if 0 < Y[:, j].sum() < len(Y) else float(Y[:, j].mean())
                for j in range(len(keys))
            ]
            return FitReport(n_train=len(examples), n_val=len(val or ()), labels=keys)
        y = [keys.index(e.target.labels[0]) for e in examples]
        self.clf_ = LogisticRegression(C=self.C, max_iter=500).fit(X, y)
        metrics = {}
        if val:
            yv = [keys.index(e.target.labels[0]) for e in val]
            metrics["accuracy"] = float(np.mean(self.clf_.predict(self.vec_.transform([e.text for e in val])) == yv))
        return FitReport(n_train=len(examples), n_val=len(val or ()), labels=keys, metrics=metrics)

    def predict(self, examples: Sequence[Example]) -> list[Prediction]:
        keys = self.control.label_keys
        X = self.vec_.transform([e.text for e in examples])
        if self.control.multiple:
            P = np.column_stack(
                [np.full(X.shape[0], c) if isinstance(c, float) else c.predict_proba(X)[:, 1] for c in self.clf_]
            )
            return [
                Prediction(
                    labels=tuple(k for k, p in zip(keys, row, strict=True) if p >= 0.5),
                    probs=dict(zip(keys, row.tolist(), strict=True)),
                    score=float(row.max()),
                )
                for row in P
            ]
        P = np.zeros((len(examples), len(keys)))
        P[:, self.clf_.classes_] = self.clf_.predict_proba(X)
        out = []
        for row in P:
            j = int(row.argmax())
            out.append(
                Prediction(labels=(keys[j],), probs=dict(zip(keys, row.tolist(), strict=True)), score=float(row[j]))
            )
        return out

    def embed(self, examples):
        return None

    def save(self, directory: Path) -> None:
        import pickle

        directory.mkdir(parents=True, exist_ok=True)
        (directory / "m.pkl").write_bytes(pickle.dumps((self.C, self.vec_, self.clf_)))

    @classmethod
    def load(cls, directory: Path, control: ControlSpec) -> TinyModel:
        import pickle

        C, vec, clf = pickle.loads((directory / "m.pkl").read_bytes())
        m = cls(control, C=C)
        m.vec_, m.clf_ = vec, clf
        return m


def write(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


def make_input(root: Path, *, inline: bool = False, added: int = 4) -> Path:
    """input_label.csv (24 items as text files), input_added_label.csv (``added`` items), input_unlabel.csv."""
    d = root / "input"
    (d / "texts").mkdir(parents=True)
    init, extra = [], []
    n = 0
    for label, texts in TEXTS.items():
        for k, t in enumerate(texts):
            n += 1
            sid = f"s{n:03d}"
            (d / "texts" / f"{sid}.txt").write_text(t, encoding="utf-8")
            (extra if k >= len(texts) - added // 3 - (1 if added % 3 and label == "sports" else 0) else init).append(
                [sid, f"texts/{sid}.txt", label]
            )
    write(d / "input_label.csv", ["sampleId", "path", "label"], init)
    write(d / "input_added_label.csv", ["sampleId", "path", "label"], extra)
    if inline:
        write(d / "input_unlabel.csv", ["sampleId", "text"], [[f"u{i:03d}", t] for i, t in enumerate(POOL)])
    else:
        for i, t in enumerate(POOL):
            (d / "texts" / f"u{i:03d}.txt").write_text(t, encoding="utf-8")
        write(
            d / "input_unlabel.csv",
            ["sampleId", "path"],
            [[f"u{i:03d}", f"texts/u{i:03d}.txt"] for i in range(len(POOL))],
        )
    return d


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(autouse=True)
def _reset():
    TinyModel.fits.clear()


# -- the protocol, line by line ---------------------------------------------------------------------
def test_seeded_split_is_identical_across_rounds(tmp_path: Path) -> None:
    inp = make_input(tmp_path)
    r1 = run_loop(inp, tmp_path / "o1", model=TinyModel, query_cnt=3, random_seed=7)
    r2 = run_loop(
        inp,
        tmp_path / "o2",
        model=TinyModel,
        query_cnt=3,
        random_seed=7,
        is_first_train=False,
        model_id=str(tmp_path / "o1" / "model"),
    )
    assert r1.report["val_ids"] == r2.report["val_ids"] and r1.report["val_ids"]
    init_ids = {row["sampleId"] for row in read_csv(inp / "input_label.csv")}
    assert set(r1.report["val_ids"]) <= init_ids  # validation only from input_label.csv
    r3 = run_loop(inp, tmp_path / "o3", model=TinyModel, query_cnt=3, random_seed=8)
    assert r3.report["val_ids"] != r1.report["val_ids"]
    assert TinyModel.fits[0]["val"] == r1.report["val_ids"]  # the model got val= for early stopping


def test_no_validation_mode(tmp_path: Path) -> None:
    inp = make_input(tmp_path)
    res = run_loop(inp, tmp_path / "out", model=TinyModel, val_size=0, query_cnt=2)
    assert res.report["split"]["val"] == 0 and TinyModel.fits[-1]["val"] == []
    assert res.report["split"]["train"] == len(read_csv(inp / "input_label.csv"))


def test_added_labels_join_only_after_first_round(tmp_path: Path) -> None:
    inp = make_input(tmp_path)
    added = {row["sampleId"] for row in read_csv(inp / "input_added_label.csv")}
    run_loop(inp, tmp_path / "o1", model=TinyModel, query_cnt=2)
    assert not added & set(TinyModel.fits[-1]["train"])
    run_loop(inp, tmp_path / "o2", model=TinyModel, query_cnt=2, is_first_train=False)
    assert added <= set(TinyModel.fits[-1]["train"])
    assert not added & set(TinyModel.fits[-1]["val"])


def test_output_csv_schema_and_hard_examples(tmp_path: Path) -> None:
    inp = make_input(tmp_path)
    res = run_loop(inp, tmp_path / "out", model=TinyModel, query_cnt=4, strategy="EntropySampling")
    rows = read_csv(res.predictions_csv)
    assert list(rows[0]) == [
        "sampleId",
        "path",
        "label",
        "confidence",
        "uncertainty",
        "hard_example",
        "rank",
        "prob_finance",
        "prob_sports",
        "prob_weather",
    ]
    assert [r["sampleId"] for r in rows] == [f"u{i:03d}" for i in range(len(POOL))]  # input order
    assert sorted(int(r["rank"]) for r in rows) == list(range(1, len(POOL) + 1))
    hard = [r for r in rows if r["hard_example"] == "1"]
    assert len(hard) == 4 and {int(r["rank"]) for r in hard} == {1, 2, 3, 4}
    for r in rows:
        assert abs(sum(float(r[f"prob_{k}"]) for k in TEXTS) - 1) < 1e-4
        assert r["label"] in TEXTS
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["strategy"]["used"] == "entropy" and report["model"]["dir"]
    assert (tmp_path / "out" / "model" / "bundle.json").is_file()


def test_registry_versions_and_model_id(tmp_path: Path) -> None:
    inp = make_input(tmp_path)
    reg = Registry(tmp_path / "reg")
    r1 = run_loop(inp, tmp_path / "o1", model=TinyModel, registry=reg, model_name="news", query_cnt=3)
    assert r1.model_version is not None and r1.model_version.version == 1
    r2 = run_loop(
        inp,
        tmp_path / "o2",
        registry=reg,
        model_id="news@1",
        is_first_train=False,
        query_cnt=3,
        options={"C": 2.0},
        model=TinyModel,
    )
    assert r2.model_version.version == 2 and r2.model_version.parent == "news@1"
    assert r2.report["stopping"]["kappa"] is not None  # consecutive models compared on the pool
    assert not (tmp_path / "o2" / "model").exists()


def test_inline_text_column(tmp_path: Path) -> None:
    inp = make_input(tmp_path, inline=True)
    res = run_loop(inp, tmp_path / "out", model=TinyModel, query_cnt=2, strategy="MarginSampling")
    assert len(res.hard_ids) == 2


def test_multilabel_labels_separated_by_pipe(tmp_path: Path) -> None:
    inp = make_input(tmp_path)
    rows = read_csv(inp / "input_label.csv")
    for r in rows[::4]:
        r["label"] = r["label"] + "|" + ("weather" if r["label"] != "weather" else "sports")
    write(
        inp / "input_label.csv", ["sampleId", "path", "label"], [[r["sampleId"], r["path"], r["label"]] for r in rows]
    )
    res = run_loop(inp, tmp_path / "out", model=TinyModel, query_cnt=3, strategy="LeastConfidence")
    assert res.report["multi_label"] is True
    out = read_csv(res.predictions_csv)
    assert all(set(r["label"].split("|")) <= set(TEXTS) for r in out if r["label"])
    assert sum(r["hard_example"] == "1" for r in out) == 3


def test_cli_options_parsing() -> None:
    assert parse_options(['{"C": 2, "x": [1]}', "a=1,b=hello", "c=true"]) == {
        "C": 2,
        "x": [1],
        "a": 1,
        "b": "hello",
        "c": True,
    }


# -- bad input: a clear error naming file and line, nothing written ------------------------------------
def _assert_fails(tmp_path: Path, inp: Path, match: str, **kw) -> None:
    out = tmp_path / "out"
    with pytest.raises(InputError, match=match):
        run_loop(inp, out, model=TinyModel, query_cnt=2, **kw)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_missing_and_extra_columns(tmp_path: Path) -> None:
    inp = make_input(tmp_path)
    write(inp / "input_unlabel.csv", ["sampleId", "path", "comment"], [["u1", "texts/u000.txt", "x"]])
    _assert_fails(tmp_path, inp, r"input_unlabel.csv: unexpected column\(s\) comment")
    write(inp / "input_label.csv", ["sampleId", "path"], [["a", "texts/s001.txt"]])
    _assert_fails(tmp_path, inp, r"input_label.csv: missing column\(s\) label")


def test_duplicate_sample_ids(tmp_path: Path) -> None:
    inp = make_input(tmp_path)
    rows = read_csv(inp / "input_label.csv")
    write(
        inp / "input_label.csv",
        ["sampleId", "path", "label"],
        [[r["sampleId"], r["path"], r["label"]] for r in rows] + [[rows[0]["sampleId"], rows[1]["path"], "sports"]],
    )
    _assert_fails(tmp_path, inp, rf"input_label.csv line {len(rows) + 2} \(sampleId='{rows[0]['sampleId']}'\): "
                                 r"duplicate sampleId \(first on line 2\)")


def test_unknown_label_for_model_id(tmp_path: Path) -> None:
    inp = make_input(tmp_path)
    run_loop(inp, tmp_path / "o1", model=TinyModel, query_cnt=2)
    write(inp / "input_added_label.csv", ["sampleId", "path", "label"], [["s001x", "texts/s001.txt", "politics"]])
    with pytest.raises(InputError, match=r"input_added_label.csv line 2 .*'politics' unknown to the model"):
        run_loop(inp, tmp_path / "o2", model_id=str(tmp_path / "o1" / "model"), is_first_train=False, model=TinyModel)
    assert not (tmp_path / "o2").exists()


def test_empty_unlabelled_file(tmp_path: Path) -> None:
    inp = make_input(tmp_path)
    write(inp / "input_unlabel.csv", ["sampleId", "path"], [])
    _assert_fails(tmp_path, inp, "input_unlabel.csv has no rows")


def test_unreadable_path(tmp_path: Path) -> None:
    inp = make_input(tmp_path)
    write(inp / "input_unlabel.csv", ["sampleId", "path"], [["u1", "texts/u000.txt"], ["u2", "texts/missing.txt"]])
    _assert_fails(tmp_path, inp, r"input_unlabel.csv line 3 \(sampleId='u2'\): path 'texts/missing.txt' not found")
    (inp / "texts" / "bad.txt").write_bytes(b"\xff\xfe\xfa")
    write(inp / "input_unlabel.csv", ["sampleId", "path"], [["u1", "texts/bad.txt"]])
    _assert_fails(tmp_path, inp, r"line 2 .*cannot read 'texts/bad.txt' as UTF-8")


def test_images_need_an_image_family(tmp_path: Path) -> None:
    from labelpilot.errors import LabelpilotError
    from labelpilot.models.base import family_for
    from labelpilot.schema import make_label_config, parse_label_config

    inp = make_input(tmp_path)
    (inp / "a.jpg").write_bytes(b"not really")
    write(inp / "input_label.csv", ["sampleId", "path", "label"], [["i1", "a.jpg", "ant"], ["i2", "a.jpg", "bee"]])
    write(inp / "input_unlabel.csv", ["sampleId", "path"], [["i3", "a.jpg"]])
    out = tmp_path / "out"
    control = parse_label_config(make_label_config(["ant", "bee"], kind="image-choices")).controls[0]
    try:
        has_family = family_for(control) is not None
    except LabelpilotError:
        has_family = False
    if has_family:  # an image family is installed: a broken image fails the round with a clear error
        with pytest.raises(LabelpilotError, match="image"):
            run_loop(inp, out, query_cnt=1)
    else:
        with pytest.raises(InputError, match="image models not available yet"):
            run_loop(inp, out, query_cnt=1)
    assert not out.exists()


def test_existing_output_dir_untouched_on_error(tmp_path: Path) -> None:
    inp = make_input(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    write(inp / "input_unlabel.csv", ["sampleId", "path"], [["u1", "nope.txt"]])
    with pytest.raises(InputError):
        run_loop(inp, out, model=TinyModel)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


# -- the real text classifier ---------------------------------------------------------------------------
HAVE_TEXT_LINEAR = importlib.util.find_spec("labelpilot.models.text_linear") is not None


@pytest.mark.skipif(not HAVE_TEXT_LINEAR, reason="labelpilot.models.text_linear is not in this checkout yet")
def test_real_text_linear_two_rounds(tmp_path: Path) -> None:
    inp = make_input(tmp_path)
    reg = Registry(tmp_path / "reg")
    r1 = run_loop(
        inp,
        tmp_path / "o1",
        registry=reg,
        model_name="news",
        query_cnt=3,
        options={"epochs": 1, "batch_size": 16, "lr": 0.1, "lrf": 0.05},
    )  # seed-003's demo options
    assert r1.report["model"]["family"] == "text-linear"
    assert sorted(r1.report["ignored_options"]) == ["batch_size", "epochs", "lr", "lrf"]
    with pytest.raises(InputError, match="unknown option"):
        run_loop(inp, tmp_path / "bad", options={"no_such_option": 1})
    assert not (tmp_path / "bad").exists()
    r2 = run_loop(inp, tmp_path / "o2", registry=reg, model_id="news@1", is_first_train=False, query_cnt=3)
    assert r2.model_version.version == 2
    rows = read_csv(r2.predictions_csv)
    assert sum(r["hard_example"] == "1" for r in rows) == 3
    assert {r["label"] for r in rows} <= set(TEXTS)
