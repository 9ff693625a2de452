"""CoNLL/BIO/IOB1/BMES converters and the tagging tokenizer (hand-written data)."""

from __future__ import annotations

from pathlib import Path

import pytest

from labelpilot.data.bio import (
    convert_tags,
    example_to_tags,
    format_conll,
    iob1_to_iob2,
    join_tokens,
    parse_conll,
    read_conll,
    read_weibo,
    refine_tokens,
    resolve_overlaps,
    spans_to_tags,
    strip_seg_index,
    tags_to_spans,
    tokenize,
)
from labelpilot.data.types import Example, Span, Target
from labelpilot.errors import InputError
from tests.conftest import SHARED_DATA

SHARED = SHARED_DATA


def _key(spans: tuple[Span, ...] | list[Span]) -> list[tuple[int, int, str]]:
    return [(s.start, s.end, s.label) for s in spans]


def test_tokenize_offsets_are_exact_for_mixed_scripts_emoji_fullwidth() -> None:
    text = "蒂姆·库克在U.S.说：“iPhone-15 卖了1,000.5万台😀👍🏽” don't  ＡＢＣ１２３。\tété"
    offs = tokenize(text)
    toks = [text[s:e] for s, e in offs]
    assert toks == [
        "蒂", "姆", "·", "库", "克", "在", "U.S.", "说", "：", "“", "iPhone-15", "卖", "了",
        "1,000.5", "万", "台", "😀", "👍", "🏽", "”", "don't", "ＡＢＣ１２３", "。", "été",
    ]  # fmt: skip
    # every non-space character is covered exactly once, whitespace never
    covered = [i for s, e in offs for i in range(s, e)]
    assert covered == sorted(covered)
    assert {i for i, ch in enumerate(text) if not ch.isspace()} == set(covered)


def test_refine_tokens_cuts_inside_tokens_only() -> None:
    assert refine_tokens([(0, 7), (8, 10)], [0, 6, 8, 9]) == [(0, 6), (6, 7), (8, 9), (9, 10)]
    assert refine_tokens([(0, 3)], []) == [(0, 3)]


def test_resolve_overlaps_keeps_longest_and_drops_contained() -> None:
    spans = [Span(1, 5, "company"), Span(0, 20, "book"), Span(18, 22, "name"), Span(0, 20, "book")]
    kept, dropped = resolve_overlaps(spans)
    assert _key(kept) == [(0, 20, "book")]
    assert sorted(_key(dropped)) == [(1, 5, "company"), (18, 22, "name")]  # duplicate merged silently


def test_tags_to_spans_reads_every_scheme_to_the_same_spans() -> None:
    offs = [(i, i + 1) for i in range(8)]
    want = [(0, 2, "PER"), (2, 3, "PER"), (4, 5, "LOC"), (5, 8, "ORG")]
    iob2 = ["B-PER", "I-PER", "B-PER", "O", "B-LOC", "B-ORG", "I-ORG", "I-ORG"]
    iob1 = ["I-PER", "I-PER", "B-PER", "O", "I-LOC", "I-ORG", "I-ORG", "I-ORG"]
    bmes = ["B-PER", "E-PER", "S-PER", "O", "S-LOC", "B-ORG", "M-ORG", "E-ORG"]
    bioes = ["B-PER", "E-PER", "S-PER", "O", "S-LOC", "B-ORG", "I-ORG", "E-ORG"]
    bilou = ["B_PER", "L_PER", "U_PER", "O", "U_LOC", "B_ORG", "I_ORG", "L_ORG"]
    for tags in (iob2, iob1, bmes, bioes, bilou):
        assert _key(tags_to_spans(offs, tags)) == want, tags
    assert convert_tags(iob1, "iob2") == iob2
    assert iob1_to_iob2(iob1) == iob2
    assert convert_tags(iob2, "iob1") == iob1
    assert convert_tags(iob1, "bmes") == bmes
    assert convert_tags(bmes, "bioes") == bioes
    assert convert_tags(bioes, "bilou") == ["B-PER", "L-PER", "U-PER", "O", "U-LOC", "B-ORG", "I-ORG", "L-ORG"]


def test_lenient_decoding_of_broken_sequences() -> None:
    offs = [(i, i + 1) for i in range(5)]
    # I- after O starts an entity; a type change inside starts a new one; E- without B- is one token
    assert _key(tags_to_spans(offs, ["O", "I-A", "I-B", "O", "E-C"])) == [(1, 2, "A"), (2, 3, "B"), (4, 5, "C")]
    with pytest.raises(InputError):
        tags_to_spans(offs, ["O", "X-A", "O", "O", "O"])


def test_spans_to_tags_rejects_misaligned_and_overlapping() -> None:
    offs = [(0, 3), (4, 7)]
    with pytest.raises(InputError):
        spans_to_tags(offs, [Span(1, 3, "A")])
    with pytest.raises(InputError):
        spans_to_tags(offs, [Span(0, 7, "A"), Span(4, 7, "B")])


def test_parse_conll_iob1_docstart_anywhere_and_columns() -> None:
    text = (
        "EU NNP I-NP I-ORG\nrejects VBZ I-VP O\nGerman JJ I-NP I-MISC\ncall NN I-NP O\n\n"
        "-DOCSTART- -X- -X- O\n\n"
        "Peter NNP I-NP I-PER\nBlackburn NNP I-NP I-PER\nBob NNP I-NP B-PER\n\n"
        "-DOCSTART- -X- -X- O"  # at the very end, no trailing newline (the shared copy does this)
    )
    exs = parse_conll(text)
    assert [e.text for e in exs] == ["EU rejects German call", "Peter Blackburn Bob"]
    assert _key(exs[0].target.spans) == [(0, 2, "ORG"), (11, 17, "MISC")]
    assert _key(exs[1].target.spans) == [(0, 15, "PER"), (16, 19, "PER")]
    assert exs[1].meta["doc"] == 1
    # written back as IOB2 then as IOB1: the same examples come back
    for scheme in ("iob2", "iob1", "bmes", "bioes"):
        again = parse_conll(format_conll(exs, scheme=scheme))
        assert [(e.text, _key(e.target.spans)) for e in again] == [(e.text, _key(e.target.spans)) for e in exs]
    assert "B-PER" in format_conll(exs, scheme="iob2") and "I-ORG" in format_conll(exs, scheme="iob1")


def test_parse_conll_errors_carry_line_numbers() -> None:
    with pytest.raises(InputError, match="line 2"):
        parse_conll("a O\nlonely\n")
    with pytest.raises(InputError, match="line 1"):
        parse_conll("a Q-PER\n")


def test_chinese_char_level_bmes_with_emoji_and_fullwidth() -> None:
    chars = list("我在北京大学读书😀，ＩＢＭ公司")
    tags = ["O", "O", "B-ORG", "M-ORG", "M-ORG", "E-ORG", "O", "O", "O", "O"]
    tags += ["B-ORG", "M-ORG", "M-ORG", "M-ORG", "E-ORG"]
    lines = "\n".join(f"{c}\t{t}" for c, t in zip(chars, tags, strict=True))
    (ex,) = parse_conll(lines)
    assert ex.text == "我在北京大学读书😀，ＩＢＭ公司"
    assert [(s.text, s.label) for s in ex.target.spans] == [("北京大学", "ORG"), ("ＩＢＭ公司", "ORG")]
    assert [ex.text[s.start : s.end] for s in ex.target.spans] == ["北京大学", "ＩＢＭ公司"]
    # round trip through BMES keeps characters and tags
    assert format_conll([ex], scheme="bmes") == lines + "\n\n"


def test_join_tokens_auto_separator() -> None:
    assert join_tokens(["New", "York", "is", "big"])[0] == "New York is big"
    assert join_tokens(list("李开复"))[0] == "李开复"
    text, offs = join_tokens(["我", "爱", "New", "York", "。"])
    assert text == "我爱New York。"
    assert [text[s:e] for s, e in offs] == ["我", "爱", "New", "York", "。"]
    assert join_tokens(["a", "b"], sep=" ")[0] == "a b"


def test_weibo_segmentation_index_is_stripped() -> None:
    assert strip_seg_index("科0") == "科"
    assert strip_seg_index("Z10") == "Z"
    assert strip_seg_index("110") == "1"  # the character "1" at segment position 10
    (ex,) = parse_conll("李0\tB-PER.NAM\n开1\tI-PER.NAM\n复2\tI-PER.NAM\n说0\tO\n", token_transform=strip_seg_index)
    assert ex.text == "李开复说"
    assert _key(ex.target.spans) == [(0, 3, "PER.NAM")]


def test_example_to_tags_from_free_text() -> None:
    text = "Tim Cook visited 北京 on Monday 😀."
    ex = Example(
        text=text,
        target=Target(spans=(Span(0, 8, "PER"), Span(17, 19, "LOC"), Span(22, 30, "DATE"), Span(0, 3, "X"))),
    )
    toks, tags = example_to_tags(ex, scheme="iob2")
    assert toks == ["Tim", "Cook", "visited", "北", "京", "on", "Monday", "😀", "."]
    assert tags == ["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "O", "B-DATE", "O", "O"]
    # a span whose edges are whitespace is shrunk to its tokens; a boundary inside a word cuts it
    ex2 = Example(text="see iPhone15 now", target=Target(spans=(Span(3, 10, "P"),)))
    toks2, tags2 = example_to_tags(ex2)
    assert toks2 == ["see", "iPhone", "15", "now"] and tags2 == ["O", "B-P", "O", "O"]


def test_label_map_renames_and_drops() -> None:
    (ex,) = parse_conll("a B-PER\nb B-MISC\n", label_map=lambda t: None if t == "MISC" else t.lower())
    assert _key(ex.target.spans) == [(0, 1, "per")]


def test_shared_conll_and_weibo_files(tmp_path: Path) -> None:
    testb = SHARED / "conll2003" / "eng.testb"
    weibo = SHARED / "weibo_ner" / "weiboNER_2nd_conll.test"
    if not testb.is_file() or not weibo.is_file():
        pytest.skip(f"shared data missing: {testb} / {weibo}")
    exs = read_conll(testb)
    assert len(exs) == 3453  # SOURCES.md: eng.testb has 3,453 sentences
    assert sum(len(e.target.spans) for e in exs) == 5648  # the standard test-set entity count
    w = read_weibo(weibo)
    assert len(w) == 270
    assert all(sp.text == e.text[sp.start : sp.end] for e in w for sp in e.target.spans)
