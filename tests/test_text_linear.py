"""Tests of the ``text-linear`` model family on small hand-written data (plus one TNEWS subset test)."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from labelpilot.data.types import Example, Target
from labelpilot.errors import InputError, TrainingError
from labelpilot.models.base import get_family
from labelpilot.models.text_linear import TextLinearModel
from labelpilot.schema.types import ControlSpec, LabelSpec, TaskKind
from tests.conftest import SHARED_DATA

TNEWS = SHARED_DATA / "tnews"


def choices(*values: str, multiple: bool = False, threshold: float | None = None) -> ControlSpec:
    return ControlSpec(
        name="label",
        type="Choices",
        to_name="text",
        object_type="Text",
        value_key="text",
        kind=TaskKind.TEXT_CHOICES,
        labels=tuple(LabelSpec(value=v) for v in values),
        multiple=multiple,
        score_threshold=threshold,
    )


def ex(text: str, *labels: str, pair: str | None = None) -> Example:
    return Example(text=text, text_pair=pair, target=Target(labels=labels))


SPORTS_EN = [
    "the football team won the match last night",
    "a great goal by the striker in the final minute",
    "the tennis player won the championship title",
    "our basketball coach praised the players after the game",
    "the league match ended in a draw after extra time",
    "the marathon runner broke the world record",
    "the goalkeeper saved a penalty in the cup final",
    "fans cheered as the team lifted the trophy",
]
FINANCE_EN = [
    "the stock market fell sharply as investors sold shares",
    "the central bank raised interest rates again",
    "quarterly earnings beat analyst expectations",
    "bond yields rose while the dollar weakened",
    "the company reported higher profit and revenue",
    "investors bought shares after the earnings report",
    "inflation data pushed the stock index lower",
    "the bank cut its interest rate forecast",
]
SPORTS_ZH = [
    "国足在世界杯预选赛中战胜对手",
    "这位球员在比赛最后一分钟打进制胜球",
    "篮球队主教练赛后表扬了球员",
    "网球公开赛决赛今晚开打",
    "马拉松选手打破了赛会纪录",
    "联赛第十轮比赛双方战平",
    "中国女排夺得世界杯冠军",
    "足球俱乐部签下一名新前锋",
]
FINANCE_ZH = [
    "央行宣布下调存款准备金率",
    "股市今日大跌投资者纷纷抛售股票",
    "公司发布季度财报利润大幅增长",
    "人民币汇率小幅走高",
    "银行上调贷款利率",
    "基金经理看好明年股市行情",
    "上市公司公告回购股份",
    "通胀数据公布后股票指数下跌",
]


def single_label_data() -> list[Example]:
    data = [ex(t, "sports") for t in SPORTS_EN + SPORTS_ZH]
    data += [ex(t, "finance") for t in FINANCE_EN + FINANCE_ZH]
    return data


@pytest.fixture(scope="module")
def single_model() -> TextLinearModel:
    model = TextLinearModel(choices("sports", "finance", "weather"))
    model.fit(single_label_data())
    return model


def test_registered_family() -> None:
    assert get_family("text-linear") is TextLinearModel
    assert TaskKind.TEXT_TAXONOMY in TextLinearModel.kinds


def test_single_label_learns_english_and_chinese(single_model: TextLinearModel) -> None:
    tests = [
        ("the striker scored a goal in the match", "sports"),
        ("investors sold shares as the stock market fell", "finance"),
        ("球员在比赛中打进一球", "sports"),
        ("股市下跌，投资者抛售股票", "finance"),
    ]
    preds = single_model.predict([Example(text=t) for t, _ in tests])
    assert [p.labels for p in preds] == [(label,) for _, label in tests]
    for p in preds:
        assert p.error is None
        assert p.probs is not None
        # probabilities over the labels the model knows ("weather" never appeared in training); with the
        # text encoder and meaningful names, over every label of the control (zero-shot covers "weather")
        known = {"sports", "finance", "weather"} if single_model.zero_shot_ready() else {"sports", "finance"}
        assert set(p.probs) == known
        assert sum(p.probs.values()) == pytest.approx(1.0, abs=1e-6)
        assert p.score == pytest.approx(max(p.probs.values()))
        assert p.score > 0.5
        assert p.uncertainty is not None and 0.0 <= p.uncertainty <= 1.0
    # a clear text is less uncertain than an ambiguous one
    clear, vague = single_model.predict([Example(text="the football team won the match"), Example(text="hello")])
    assert clear.uncertainty is not None and vague.uncertainty is not None
    assert clear.uncertainty < vague.uncertainty


def test_fit_report_and_progress() -> None:
    calls: list[tuple[int, int, str]] = []
    model = TextLinearModel(choices("sports", "finance"))
    assert not model.is_fitted
    assert model.embed([Example(text="x")]) is None
    report = model.fit(single_label_data(), progress=lambda d, t, m: calls.append((d, t, m)))
    assert model.is_fitted
    assert report.n_train == 32
    assert report.n_val == 32  # out-of-fold predictions on a small set
    assert report.labels == ["sports", "finance"]
    assert 0.7 <= report.metrics["accuracy"] <= 1.0
    assert 0.0 <= report.metrics["macro_f1"] <= 1.0
    assert report.seconds > 0
    assert calls and calls[-1][0] == calls[-1][1]
    assert [d for d, _, _ in calls] == sorted(d for d, _, _ in calls)


def test_explicit_validation_set() -> None:
    data = single_label_data()
    val = data[::4]
    train = [e for i, e in enumerate(data) if i % 4]
    report = TextLinearModel(choices("sports", "finance")).fit(train, val=val)
    assert report.n_train == len(train)
    assert report.n_val == len(val)
    assert report.metrics["accuracy"] >= 0.6


def test_empty_text_gets_a_prediction(single_model: TextLinearModel) -> None:
    preds = single_model.predict([Example(text=""), Example(text="   "), Example(text="", text_pair="")])
    for p in preds:
        assert p.error is None
        assert p.labels and p.labels[0] in {"sports", "finance"}
        assert p.probs is not None
        assert sum(p.probs.values()) == pytest.approx(1.0, abs=1e-6)
    assert single_model.predict([]) == []


def test_predictions_in_order_and_batch_equals_single(single_model: TextLinearModel) -> None:
    texts = ["the bank raised rates", "球队赢了比赛", "", "stock prices", "goal!"]
    batch = single_model.predict([Example(text=t) for t in texts])
    one_by_one = [single_model.predict([Example(text=t)])[0] for t in texts]
    for b, s in zip(batch, one_by_one, strict=True):
        assert b.labels == s.labels
        assert b.probs is not None and s.probs is not None
        for key in b.probs:
            assert b.probs[key] == pytest.approx(s.probs[key], abs=1e-5)


def test_single_text_prediction_is_fast(single_model: TextLinearModel) -> None:
    single_model.predict([Example(text="warm up jieba 你好")])
    times = []
    for t in ["the striker scored a goal", "股市今日大跌", "bank rates", "篮球比赛"] * 25:
        t0 = time.perf_counter()
        single_model.predict([Example(text=t)])
        times.append(time.perf_counter() - t0)
    # the target is well under 1 ms; the bound is loose because the test machine may be busy
    assert float(np.median(times)) < 0.01


def test_unknown_labels_are_skipped_and_counted() -> None:
    data = single_label_data()
    data += [ex("it will rain tomorrow", "weather"), ex("sunny and warm", "climate"), ex("no target")]
    data.append(Example(text="no target at all"))
    model = TextLinearModel(choices("sports", "finance"))
    report = model.fit(data)
    assert report.n_train == 32
    assert len(report.skipped) == 4
    assert any("weather" in reason for reason in report.skipped)
    assert any("climate" in reason for reason in report.skipped)
    assert report.to_dict()["n_skipped"] == 4


def test_single_class_raises_training_error() -> None:
    # without the text encoder (with it and meaningful names, one label trains the encoder head alone:
    # tests/test_text_early.py)
    model = TextLinearModel(choices("sports", "finance"), encoder=False)
    with pytest.raises(TrainingError, match="at least 2 different labels"):
        model.fit([ex(t, "sports") for t in SPORTS_EN])
    with pytest.raises(TrainingError, match="no usable training examples"):
        model.fit([ex("text", "unknown-label")])
    assert not model.is_fitted
    with pytest.raises(TrainingError, match="all 2 training texts are empty"):
        model.fit([ex("", "sports"), ex("", "finance")])
    assert not model.is_fitted


def test_failed_fit_keeps_the_previous_model(single_model: TextLinearModel) -> None:
    text = [Example(text="the striker scored a goal")]
    before = single_model.predict(text)[0]
    with pytest.raises(TrainingError):  # no usable example (one label alone may train with the encoder)
        single_model.fit([ex(t, "unknown-label") for t in FINANCE_EN])
    after = single_model.predict(text)[0]
    assert after.labels == before.labels == ("sports",)
    assert after.probs == before.probs


def test_unknown_option_is_rejected() -> None:
    with pytest.raises(InputError, match="unknown option"):
        TextLinearModel(choices("a", "b"), not_an_option=1)


# -- multi-label --------------------------------------------------------------------------------


def multilabel_data() -> list[Example]:
    data = [ex(t, "sports") for t in SPORTS_EN]
    data += [ex(t, "finance") for t in FINANCE_EN]
    both = [
        "the football club shares rose on the stock market",
        "investors bought shares of the basketball team",
        "the tennis star signed a sponsorship deal with the bank",
        "stock market traders watched the cup final",
        "the league sold broadcast rights and its profit rose",
        "the bank sponsors the marathon and the football match",
        "club revenue and player transfer fees beat expectations",
        "shares of the sports company fell after the match",
    ]
    data += [ex(t, "sports", "finance") for t in both]
    data += [ex(t, "weather") for t in ["heavy rain and wind tomorrow", "sunny weather this weekend"] * 3]
    return data


def test_multilabel() -> None:
    model = TextLinearModel(choices("sports", "finance", "weather", multiple=True))
    report = model.fit(multilabel_data())
    assert model.multilabel_
    assert {"micro_f1", "macro_f1"} <= set(report.metrics)
    assert report.metrics["micro_f1"] > 0.6
    preds = model.predict(
        [
            Example(text="the striker scored in the football match"),
            Example(text="the football club shares rose on the stock market today"),
            Example(text="rain and wind this weekend"),
        ]
    )
    assert preds[0].labels == ("sports",)
    assert set(preds[1].labels) == {"sports", "finance"}
    assert preds[2].labels == ("weather",)
    for p in preds:
        assert p.probs is not None and set(p.probs) == {"sports", "finance", "weather"}
        assert all(0.0 <= v <= 1.0 for v in p.probs.values())
        assert p.score == pytest.approx(np.mean([p.probs[lab] for lab in p.labels]))
        assert p.uncertainty is not None and 0.0 <= p.uncertainty <= 1.0
    assert model.thresholds_ is not None and model.thresholds_.shape == (3,)


def test_multilabel_detected_from_data_and_thresholds_overridden() -> None:
    control = choices("sports", "finance", "weather")  # not marked multiple: the data decides
    model = TextLinearModel(control)
    model.fit(multilabel_data())
    assert model.multilabel_
    text = [Example(text="the football club shares rose")]
    # a control threshold of 0 proposes every label; one above 1 proposes none
    model.control = replace(control, score_threshold=0.0)
    assert set(model.predict(text)[0].labels) == {"sports", "finance", "weather"}
    model.control = replace(control, score_threshold=1.01)
    none = model.predict(text)[0]
    assert none.labels == ()
    assert none.probs is not None
    assert none.score == pytest.approx(1.0 - max(none.probs.values()))
    # a per-label threshold wins over the control's
    labels = tuple(
        LabelSpec(value=v, score_threshold=0.0 if v == "weather" else None) for v in ("sports", "finance", "weather")
    )
    model.control = replace(control, labels=labels, score_threshold=1.01)
    assert model.predict(text)[0].labels == ("weather",)


# -- taxonomy -----------------------------------------------------------------------------------


def taxonomy_control() -> ControlSpec:
    paths = [("Animals",), ("Animals", "Cat"), ("Animals", "Dog"), ("Vehicles",), ("Vehicles", "Car")]
    return ControlSpec(
        name="taxonomy",
        type="Taxonomy",
        to_name="text",
        object_type="Text",
        value_key="text",
        kind=TaskKind.TEXT_TAXONOMY,
        labels=tuple(LabelSpec(value=p[-1], path=p) for p in paths),
    )


def taxonomy_data() -> list[Example]:
    cats = ["the cat meows", "a kitten chased the mouse", "my cat sleeps all day", "小猫在喵喵叫", "猫咪抓老鼠"]
    dogs = ["the dog barks", "a puppy fetched the ball", "my dog loves walks", "小狗汪汪叫", "狗狗在院子里跑"]
    cars = ["the car engine roars", "a new electric car", "he drives his car", "汽车在高速公路上行驶", "新能源汽车"]
    data = [ex(t, "Animals/Cat") for t in cats]
    # an example that lists the parent and the leaf trains the leaf
    data += [ex(t, "Animals", "Animals/Dog") for t in dogs]
    data += [ex(t, "Vehicles/Car") for t in cars]
    return data


def test_taxonomy_with_output_parent() -> None:
    model = TextLinearModel(taxonomy_control(), output_parent=True)
    report = model.fit(taxonomy_data())
    assert not model.multilabel_
    assert report.labels == ["Animals/Cat", "Animals/Dog", "Vehicles/Car"]
    cat, car, dog = model.predict(
        [Example(text="the cat chased a mouse"), Example(text="an electric car"), Example(text="小狗在叫")]
    )
    assert cat.labels == ("Animals/Cat", "Animals")
    assert car.labels == ("Vehicles/Car", "Vehicles")
    assert dog.labels == ("Animals/Dog", "Animals")
    assert cat.probs is not None and set(cat.probs) == {"Animals/Cat", "Animals/Dog", "Vehicles/Car"}

    plain = TextLinearModel(taxonomy_control())
    plain.fit(taxonomy_data())
    assert plain.predict([Example(text="the cat chased a mouse")])[0].labels == ("Animals/Cat",)


# -- text pair ----------------------------------------------------------------------------------


def test_text_pair_is_used() -> None:
    # the main text says nothing; only the pair (keywords) tells the classes apart
    sports_kw = ["足球,比赛", "篮球,球员", "网球,冠军", "football,match", "goal,league", "马拉松,纪录"]
    finance_kw = ["股票,股市", "银行,利率", "财报,利润", "stock,shares", "bank,rates", "基金,投资"]
    data = [ex("今日新闻 news of the day", "sports", pair=k) for k in sports_kw]
    data += [ex("今日新闻 news of the day", "finance", pair=k) for k in finance_kw]
    model = TextLinearModel(choices("sports", "finance"))
    model.fit(data)
    with_pair = model.predict(
        [
            Example(text="今日新闻 news of the day", text_pair="足球,球员"),
            Example(text="今日新闻 news of the day", text_pair="股市,银行"),
            Example(text="今日新闻 news of the day", text_pair="football,goal"),
            Example(text="今日新闻 news of the day", text_pair="stock,bank"),
        ]
    )
    assert [p.labels[0] for p in with_pair] == ["sports", "finance", "sports", "finance"]
    # the pair is its own feature group: the same words as main text are different features
    assert model.col_group_ is not None and {2, 4} <= set(np.unique(model.col_group_).tolist())


# -- persistence and embeddings -----------------------------------------------------------------


def test_save_load_round_trip(single_model: TextLinearModel, tmp_path: Path) -> None:
    single_model.save(tmp_path / "m")
    loaded = TextLinearModel.load(tmp_path / "m", single_model.control)
    assert loaded.is_fitted
    assert loaded.classes_ == single_model.classes_
    assert loaded.get_params() == single_model.get_params()
    batch = [Example(text=t) for t in ["the goal", "股市大跌", "", "rates and shares"]]
    for a, b in zip(single_model.predict(batch), loaded.predict(batch), strict=True):
        assert a.labels == b.labels
        assert a.probs == b.probs  # bit-identical
        assert a.score == b.score
    e1, e2 = single_model.embed(batch), loaded.embed(batch)
    assert e1 is not None and e2 is not None
    np.testing.assert_array_equal(e1, e2)
    meta = json.loads((tmp_path / "m" / "text_linear.json").read_text(encoding="utf-8"))
    assert meta["family"] == "text-linear"
    # a loaded model can be trained again
    report = loaded.fit(single_label_data())
    assert report.n_train == 32


def test_multilabel_save_load(tmp_path: Path) -> None:
    model = TextLinearModel(choices("sports", "finance", "weather", multiple=True))
    model.fit(multilabel_data())
    model.save(tmp_path)
    loaded = TextLinearModel.load(tmp_path, model.control)
    assert loaded.multilabel_
    batch = [Example(text="the football club shares rose"), Example(text="rain")]
    assert [p.probs for p in model.predict(batch)] == [p.probs for p in loaded.predict(batch)]
    assert [p.labels for p in model.predict(batch)] == [p.labels for p in loaded.predict(batch)]


def test_embed(single_model: TextLinearModel) -> None:
    texts = ["the football team won", "the football team won the match", "股市大跌", ""]
    v = single_model.embed([Example(text=t) for t in texts])
    assert v is not None
    assert v.shape[0] == 4 and 1 <= v.shape[1] <= 64
    assert np.isfinite(v).all()
    norms = np.linalg.norm(v, axis=1)
    np.testing.assert_allclose(norms[:3], 1.0, atol=1e-5)
    # similar texts are closer than different ones
    assert float(v[0] @ v[1]) > float(v[0] @ v[2])


# -- real data ----------------------------------------------------------------------------------


@pytest.mark.shared_data
@pytest.mark.skipif(not TNEWS.exists(), reason="../shared/data not present")
def test_tnews_subset() -> None:
    labels = [json.loads(line)["label_desc"] for line in (TNEWS / "labels.json").open(encoding="utf-8")]
    control = ControlSpec(
        name="category",
        type="Choices",
        to_name="text",
        object_type="Text",
        value_key="sentence",
        kind=TaskKind.TEXT_CHOICES,
        labels=tuple(LabelSpec(value=v) for v in labels),
    )

    def read(name: str, limit: int) -> list[Example]:
        rows = []
        with (TNEWS / name).open(encoding="utf-8") as fh:
            for line in fh:
                r = json.loads(line)
                rows.append(ex(r["sentence"], r["label_desc"], pair=r["keywords"] or None))
                if len(rows) == limit:
                    break
        return rows

    train, dev = read("train.json", 2500), read("dev.json", 800)
    # one held-out slice and no refit keep this test fast
    model = TextLinearModel(control, cv_max_n=0, refit=False)
    report = model.fit(train)
    assert 200 <= report.n_val <= 300
    assert report.n_train + report.n_val == 2500
    preds = model.predict(dev)
    accuracy = np.mean([p.labels[0] == e.target.labels[0] for p, e in zip(preds, dev, strict=True) if e.target])
    # measured 0.54 with keywords on this subset (held-out 0.51); 15 classes, chance is below 0.1
    assert accuracy > 0.45
    assert report.metrics["accuracy"] > 0.4


def test_loaded_for_an_edited_config_never_proposes_a_removed_label(single_model: TextLinearModel) -> None:
    edited = choices("finance", "weather")  # "sports" was removed from the config
    single_model_control = single_model.control
    try:
        single_model.control = edited
        pred = single_model.predict([Example(text="the football team won the match")])[0]
        # with the encoder the model also knows "weather" (never annotated): either remaining label is fine
        allowed = {("finance",), ("weather",)} if single_model.zero_shot_ready() else {("finance",)}
        assert pred.labels in allowed
        assert pred.probs is not None and "sports" in pred.probs  # the model still reports what it knows
    finally:
        single_model.control = single_model_control
    assert single_model.predict([Example(text="the football team won the match")])[0].labels == ("sports",)


def test_refit_and_time_budget() -> None:
    data = single_label_data() * 4  # 128 examples: above cv_max_n=0, so one held-out slice
    refitted = TextLinearModel(choices("sports", "finance"), cv_max_n=0).fit(data)
    assert refitted.n_train == len(data)  # refitted on everything after the held-out slice
    assert 0 < refitted.n_val < len(data)
    hurried = TextLinearModel(choices("sports", "finance"), cv_max_n=0, time_budget=0.0).fit(data)
    assert hurried.n_train == len(data) - hurried.n_val
    assert any("refit on all examples skipped" in note for note in hurried.notes)
    # the same data and seed give the same model
    a, b = (TextLinearModel(choices("sports", "finance"), cv_max_n=0) for _ in range(2))
    a.fit(data)
    b.fit(data)
    assert a.weights_ is not None and b.weights_ is not None
    np.testing.assert_array_equal(a.weights_, b.weights_)
