"""CLUENER JSON lines <-> Example (inclusive end offsets)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from labelpilot.data.cluener import (
    example_to_row,
    format_cluener,
    parse_cluener,
    read_cluener,
    row_to_example,
    write_cluener,
)
from labelpilot.data.types import Example, Span, Target
from labelpilot.errors import InputError
from tests.conftest import SHARED_DATA

SHARED = SHARED_DATA / "cluener2020"

ROW = {
    "text": "浙商银行企业信贷部叶老桂博士则从另一个角度对五道门槛进行了解读。叶老桂认为，",
    "label": {"name": {"叶老桂": [[9, 11], [32, 34]]}, "company": {"浙商银行": [[0, 3]]}},
}


def test_inclusive_end_offsets_become_exclusive() -> None:
    ex = row_to_example(ROW)
    got = [(s.start, s.end, s.label, s.text) for s in ex.target.spans]
    assert got == [(0, 4, "company", "浙商银行"), (9, 12, "name", "叶老桂"), (32, 35, "name", "叶老桂")]
    assert all(ex.text[s.start : s.end] == s.text for s in ex.target.spans)


def test_round_trip_row_example_row() -> None:
    row = example_to_row(row_to_example(ROW))
    assert row["text"] == ROW["text"]
    assert row["label"] == {"company": {"浙商银行": [[0, 3]]}, "name": {"叶老桂": [[9, 11], [32, 34]]}}


def test_round_trip_with_emoji_fullwidth_and_latin(tmp_path: Path) -> None:
    text = "😀👍🏽 ＡＢＣ公司的CEO Tim Cook在《三体》发布会上说：iPhone真好"
    spans = (
        Span(4, 9, "company"),  # ＡＢＣ公司
        Span(14, 22, "name"),  # Tim Cook
        Span(23, 27, "book"),  # 《三体》
        Span(33, 39, "game"),  # iPhone
    )
    ex = Example(text=text, target=Target(spans=spans))
    assert [text[s.start : s.end] for s in spans] == ["ＡＢＣ公司", "Tim Cook", "《三体》", "iPhone"]
    path = tmp_path / "x.json"
    write_cluener([ex, Example(text="没有实体", target=Target())], path)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert json.loads(lines[0])["label"]["name"] == {"Tim Cook": [[14, 21]]}
    assert "😀" in lines[0]  # not ASCII-escaped
    back = read_cluener(path)
    assert back[0].text == text
    assert [(s.start, s.end, s.label) for s in back[0].target.spans] == [(s.start, s.end, s.label) for s in spans]
    assert back[1].target is not None and back[1].target.spans == ()


def test_bad_spans_are_left_out_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    row = {"text": "张三在北京", "label": {"name": {"张三": [[0, 1]], "李四": [[0, 1]]}, "address": {"北京": [[3, 9]]}}}
    with caplog.at_level(logging.WARNING):
        ex = row_to_example(row, index=7)
    assert [(s.start, s.end, s.label) for s in ex.target.spans] == [(0, 2, "name")]
    assert "differs from mention" in caplog.text and "outside the text" in caplog.text


def test_unlabeled_rows_and_pretty_printed_concatenated_json() -> None:
    text = '{\n  "id": 0,\n  "text": "四川敦煌学"\n}\n{\n  "id": 1,\n  "text": "尼日利亚"\n}\n'
    exs = parse_cluener(text)
    assert [(e.id, e.text, e.target) for e in exs] == [("0", "四川敦煌学", None), ("1", "尼日利亚", None)]
    assert json.loads(format_cluener(exs).splitlines()[0]) == {"text": "四川敦煌学", "id": "0"}


def test_invalid_json_reports_the_line() -> None:
    with pytest.raises(InputError, match="line 2"):
        parse_cluener('{"text": "a"}\n{"text": \n')
    with pytest.raises(InputError):
        row_to_example({"label": {}})


def test_shared_cluener_dev_round_trips_byte_for_byte() -> None:
    dev = SHARED / "dev.json"
    if not dev.is_file():
        pytest.skip(f"shared data missing: {dev}")
    exs = read_cluener(dev)
    assert len(exs) == 1343
    assert sum(len(e.target.spans) for e in exs) == 3072
    original = [json.loads(line) for line in dev.read_text(encoding="utf-8").splitlines()]
    again = [json.loads(line) for line in format_cluener(exs).splitlines()]
    norm = [{k: {m: sorted(v) for m, v in d.items()} for k, d in row["label"].items()} for row in original]
    assert [{k: {m: sorted(v) for m, v in d.items()} for k, d in r["label"].items()} for r in again] == norm
