"""The one tabular reader (``files.read_rows``) and the layers on it: a row's line is the line it starts on
(quoted cells may hold newlines), ``on_header`` refuses a file before any row, the seed-003 checks and
``labelpilot keywords`` report problems by that line."""

from __future__ import annotations

from pathlib import Path

import pytest

from labelpilot.errors import InputError
from labelpilot.files import read_rows, split_labels
from labelpilot.keywords import keywords_file
from labelpilot.loop.files import read_seed_rows


def test_rows_carry_their_start_line_and_the_header_is_checked_first(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text('id,text\n1,"two\nlines"\n\n2,one\n3,too,many\n', encoding="utf-8")
    rows = list(read_rows(path))
    assert [(r.line, r.values.get("id"), r.error) for r in rows] == [
        (2, "1", None), (5, "2", None), (6, None, "3 fields where the header has 2")]
    assert rows[0].values["text"] == "two\nlines"
    seen: list[list[str]] = []
    assert len(list(read_rows(path, on_header=seen.append))) == 3 and seen == [["id", "text"]]

    def refuse(header: list[str]) -> None:
        raise InputError("no label column", field="label")

    with pytest.raises(InputError, match="no label column"):
        next(read_rows(path, on_header=refuse))
    assert split_labels("a| b |a||c") == ("a", "b", "c") and split_labels(["x", " ", "x"]) == ("x",)


def test_seed_003_checks_name_the_start_line(tmp_path: Path) -> None:
    (tmp_path / "input_label.csv").write_text(
        'sampleId,text,label\ns1,"a text\nover two lines",sports\ns2,another,\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"input_label.csv line 4 \(sampleId='s2'\): empty label"):
        read_seed_rows(tmp_path, "input_label.csv", labelled=True)
    (tmp_path / "input_label.csv").write_text("sampleId,text,label\ns1,x,a|b|a\n", encoding="utf-8")
    (row,) = read_seed_rows(tmp_path, "input_label.csv", labelled=True)
    assert row.labels == ("a", "b") and row.line == 2 and row.text == "x"
    (tmp_path / "input_unlabel.csv").write_text("sampleId,path,extra\n", encoding="utf-8")
    with pytest.raises(InputError, match="unexpected column"):
        read_seed_rows(tmp_path, "input_unlabel.csv", labelled=False)


def test_keywords_reads_through_the_same_reader(tmp_path: Path) -> None:
    jl = tmp_path / "in.json"  # keywords reads .json as one object a line, as it always did
    jl.write_text('{"text": "deep learning models"}\n{"text": 3}\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"in.json:2: no string field 'text'"):
        keywords_file(jl, tmp_path / "out.jsonl")
    bad = tmp_path / "in.csv"
    bad.write_text("id,content\n1,deep learning\n2,x,y\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"in.csv:3: 3 fields"):
        keywords_file(bad, tmp_path / "out.jsonl", column="content")
    empty = tmp_path / "header-only.csv"
    empty.write_text("id,body\n", encoding="utf-8")
    with pytest.raises(InputError, match="no column 'content'"):
        keywords_file(empty, tmp_path / "out.jsonl", column="content")
