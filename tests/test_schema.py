"""Label config parsing: controls, labels, attributes, and clear errors for what is not supported."""

from __future__ import annotations

import pytest

from labelpilot.errors import SchemaError
from labelpilot.schema import TaskKind, make_label_config, parse_label_config, require_supported

TNEWS = """<View>
  <Text name="sentence" value="$sentence"/>
  <Text name="keywords" value="$keywords"/>
  <Choices name="label" toName="sentence" choice="single" model_score_threshold="0.3">
    <Choice value="news_tech" predicted_values="tech,science"/>
    <Choice value="news_car" alias="car"/>
  </Choices>
</View>"""


def test_choices_with_pair_field_alias_threshold_and_predicted_values() -> None:
    schema = parse_label_config(TNEWS)
    (c,) = schema.controls
    assert (c.name, c.to_name, c.value_key, c.kind) == ("label", "sentence", "sentence", TaskKind.TEXT_CHOICES)
    assert c.pair_key == "keywords"
    assert c.label_keys == ["news_tech", "car"]  # alias is what Label Studio stores
    assert c.score_threshold == 0.3 and not c.multiple
    assert c.map_predicted("science") == "news_tech"
    assert c.map_predicted("CAR") == "car" and c.map_predicted("boat") is None


def test_multi_label_taxonomy_labels_rectangles() -> None:
    cfg = """<View><Text name="t" value="$text"/><Image name="img" value="$image"/>
      <Choices name="tags" toName="t" choice="multiple"><Choice value="a" model_score_threshold="0.7"/>
        <Choice value="b"/></Choices>
      <Taxonomy name="tax" toName="t"><Choice value="音乐"><Choice value="翻唱"/><Choice value="原创"/></Choice>
        <Choice value="美食"><Choice value="火锅"/></Choice></Taxonomy>
      <Labels name="ner" toName="t"><Label value="PER" predicted_values="PERSON"/><Label value="LOC"/></Labels>
      <RectangleLabels name="box" toName="img"><Label value="raccoon"/></RectangleLabels>
    </View>"""
    schema = parse_label_config(cfg)
    kinds = {c.name: c.kind for c in schema.controls}
    assert kinds == {
        "tags": TaskKind.TEXT_CHOICES, "tax": TaskKind.TEXT_TAXONOMY,
        "ner": TaskKind.TEXT_SPANS, "box": TaskKind.IMAGE_BOXES,
    }
    tags = schema.control("tags")
    assert tags.multiple and tags.label("a").score_threshold == 0.7
    tax = schema.control("tax")
    assert tax.label_keys == ["音乐", "音乐/翻唱", "音乐/原创", "美食", "美食/火锅"]
    assert tax.label("音乐/翻唱").path == ("音乐", "翻唱")
    assert schema.control("ner").map_predicted("PERSON") == "PER"
    assert schema.control("box").value_key == "image"


def test_unsupported_controls_are_listed_with_reasons_and_never_crash() -> None:
    cfg = """<View><Text name="t" value="$text"/><Audio name="a" value="$audio"/>
      <TextArea name="comment" toName="t"/>
      <Labels name="sounds" toName="a"><Label value="x"/></Labels>
      <Choices name="skip" toName="t" model_skip="true"><Choice value="x"/></Choices>
      <Choices name="dyn" toName="t" value="$options"/>
      <Choices name="empty" toName="t"/>
      <Choices name="ghost" toName="nowhere"><Choice value="x"/></Choices>
    </View>"""
    schema = parse_label_config(cfg)
    assert schema.controls == ()
    reasons = {u.name: u.reason for u in schema.unsupported}
    assert "cannot pre-label <TextArea>" in reasons["comment"]
    assert "<Labels> on <Audio>" in reasons["sounds"]
    assert "model_skip" in reasons["skip"] and "dynamic" in reasons["dyn"]
    assert "no labels" in reasons["empty"] and "nowhere" in reasons["ghost"]
    with pytest.raises(SchemaError) as err:
        require_supported(schema)
    assert "comment" in err.value.message and "<Choices> on <Text>" in err.value.message


@pytest.mark.parametrize("bad", ["", "   ", "<View><Text", "<!DOCTYPE x [<!ENTITY e SYSTEM 'file:///etc/passwd'>]><View>&e;</View>"])
def test_bad_xml_is_a_schema_error(bad: str) -> None:
    try:
        schema = parse_label_config(bad)
    except SchemaError as exc:
        assert exc.field == "label_config"
        return
    # an entity that is not resolved leaves no control: still not usable, and nothing was read from disk
    assert schema.controls == () and "root:" not in str(schema)


def test_no_control_config_has_a_clear_error() -> None:
    with pytest.raises(SchemaError, match="no control tag"):
        require_supported(parse_label_config("<View><Text name='t' value='$text'/></View>"))


def test_threshold_must_be_a_number() -> None:
    with pytest.raises(SchemaError, match="model_score_threshold"):
        parse_label_config('<View><Text name="t" value="$x"/><Choices name="c" toName="t" '
                           'model_score_threshold="high"><Choice value="a"/></Choices></View>')


@pytest.mark.parametrize(
    ("kind", "labels", "multiple", "expected"),
    [
        ("choices", ["好", "坏 & <ugly>"], False, TaskKind.TEXT_CHOICES),
        ("choices", ["a", "b"], True, TaskKind.TEXT_CHOICES),
        ("taxonomy", ["音乐/翻唱", "美食/火锅"], False, TaskKind.TEXT_TAXONOMY),
        ("labels", ["PER", "LOC"], False, TaskKind.TEXT_SPANS),
        ("image-choices", ["ants", "bees"], False, TaskKind.IMAGE_CHOICES),
        ("rectangles", ["raccoon"], False, TaskKind.IMAGE_BOXES),
    ],
)
def test_make_label_config_round_trips(kind, labels, multiple, expected) -> None:
    schema = parse_label_config(make_label_config(labels, kind=kind, multiple=multiple, pair=True))
    (c,) = schema.controls
    assert c.kind is expected and c.multiple is multiple
    if kind == "taxonomy":
        assert set(labels) <= set(c.label_keys)
    else:
        assert c.label_keys == labels
