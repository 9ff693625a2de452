"""Keyword extraction (TF-IDF + TextRank mixed by alpha) and the keywords model family."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from labelpilot.data.types import Example
from labelpilot.errors import InputError
from labelpilot.keywords import (
    Keyword,
    detect_lang,
    extract_keywords,
    keywords_file,
    load_userdict,
    textrank,
)
from labelpilot.models.base import Model
from labelpilot.models.keywords import KeywordModel
from labelpilot.schema.types import ControlSpec, LabelSpec, TaskKind

EN = (
    "Solar panels convert sunlight into electricity. Solar energy is clean, and solar farms "
    "store electricity in batteries. Batteries make solar power reliable at night."
)
ZH = (
    "自然语言处理是人工智能的重要方向。机器学习推动了自然语言处理的发展，"
    "深度学习让机器翻译和语音识别的效果大幅提升。机器学习需要大量数据。"
)


def words(kws: list[Keyword]) -> list[str]:
    return [k.word for k in kws]


def test_keyword_is_a_word_score_tuple_with_offsets() -> None:
    (kws,) = extract_keywords([EN], top_k=3)
    word, score = kws[0]
    assert isinstance(word, str) and 0.0 < score <= 1.0
    for k in kws:
        assert EN[k.start : k.end].lower() == k.word.lower()
        assert all(EN[s:e].lower() == k.word.lower() for s, e in k.occurrences)
    solar = next(k for k in extract_keywords(EN, top_k=10)[0] if k.word.lower() == "solar")
    assert solar.start == 0 and len(solar.occurrences) == 4


def test_alpha_one_is_tf_idf_and_alpha_zero_is_textrank_en() -> None:
    # one text, no corpus: TF-IDF is pure term frequency for English, scaled by the maximum
    (tfidf,) = extract_keywords([EN], alpha=1.0, top_k=50)
    got = {k.word.lower(): k.score for k in tfidf}
    assert got["solar"] == 1.0  # 4 occurrences, the most frequent candidate
    assert got["electricity"] == pytest.approx(2 / 4)
    assert got["sunlight"] == pytest.approx(1 / 4)
    # alpha=0: exactly the normalised TextRank scores
    (tr_kws,) = extract_keywords([EN], alpha=0.0, top_k=50)
    from labelpilot.keywords import analyse

    tr = textrank(analyse(EN, "en", {}))
    top = max(tr.values())
    assert {k.word.lower(): k.score for k in tr_kws} == pytest.approx({w: v / top for w, v in tr.items()})
    # alpha=0.5: the average of both, for every word
    (mixed,) = extract_keywords([EN], alpha=0.5, top_k=50)
    tr_scores = {k.word.lower(): k.score for k in tr_kws}
    for k in mixed:
        w = k.word.lower()
        assert k.score == pytest.approx(0.5 * got[w] + 0.5 * tr_scores[w])
    assert words(mixed)[:1] == ["Solar"]


def test_alpha_changes_ranking_zh() -> None:
    r1 = extract_keywords([ZH], alpha=1.0, top_k=20)[0]
    r0 = extract_keywords([ZH], alpha=0.0, top_k=20)[0]
    rh = extract_keywords([ZH], alpha=0.5, top_k=20)[0]
    assert words(r1) != words(r0)  # the two scores disagree on this text
    s1, s0 = dict(r1), dict(r0)
    for w, s in rh:
        assert s == pytest.approx(0.5 * s1.get(w, 0) + 0.5 * s0.get(w, 0))
    for kws in (r1, r0, rh):
        assert all(ZH[k.start : k.end] == k.word for k in kws)
        assert all(len(k.word) >= 2 for k in kws)  # single characters are not candidates
        assert not {"的", "了", "和"} & set(words(kws))


def test_userdict_keeps_words_whole_and_boosts() -> None:
    plain = words(extract_keywords([ZH], top_k=20)[0])
    assert "机器学习" not in plain and "学习" in plain  # jieba splits it
    (kws,) = extract_keywords([ZH], top_k=20, userdict=["机器学习", "语音识别"])
    assert "机器学习" in words(kws) and "语音识别" in words(kws)
    ml = next(k for k in kws if k.word == "机器学习")
    first, last = ZH.index("机器学习"), ZH.rindex("机器学习")
    assert ml.occurrences == ((first, first + 4), (last, last + 4))
    # a boost moves a low word to the top; English phrases match case-insensitively
    base = extract_keywords([EN], top_k=50)[0]
    assert words(base)[0] != "night"
    (boosted,) = extract_keywords([EN], top_k=3, userdict={"night": 10.0, "solar power": 1.0})
    assert boosted[0].word == "night" and boosted[0].score == 1.0
    full = extract_keywords([EN], top_k=50, userdict={"Solar Power": 1.0})[0]
    phrase = next(k for k in full if k.word.lower() == "solar power")  # one keyword, not two words
    assert EN[phrase.start : phrase.end] == phrase.word == "solar power"  # surface form of the text


def test_userdict_forms(tmp_path: Path) -> None:
    f = tmp_path / "dict.txt"
    f.write_text("# comment\n机器学习\n深度学习\t2.5\n", encoding="utf-8")
    assert load_userdict(f) == {"机器学习": 1.0, "深度学习": 2.5}
    assert load_userdict(["a", " b "]) == {"a": 1.0, "b": 1.0}
    assert load_userdict({"x": 3}) == {"x": 3.0}
    with pytest.raises(InputError):
        load_userdict(tmp_path / "missing.txt")


def test_corpus_idf_downweights_common_words() -> None:
    docs = [f"Report {i}: the market grew and the market fell." for i in range(12)]
    docs.append("The market welcomed quantum computing, and quantum computing stocks soared.")
    last = extract_keywords(docs, alpha=1.0, top_k=3)[-1]
    assert words(last)[0].lower() == "quantum"  # "market" is in every document


def test_lang_detection_and_validation() -> None:
    assert detect_lang(ZH) == "zh" and detect_lang(EN) == "en" and detect_lang("123 !!") == "en"
    assert detect_lang("我爱 New York 和 Paris") == "zh"
    assert extract_keywords(["", "!!! 123"]) == [[], []]
    with pytest.raises(InputError):
        extract_keywords(["x"], alpha=1.5)
    with pytest.raises(InputError):
        extract_keywords(["x"], top_k=0)


def test_keywords_file_csv_jsonl_txt(tmp_path: Path) -> None:
    csv_in = tmp_path / "in.csv"
    with csv_in.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "content"])
        w.writerow(["a1", ZH])
        w.writerow(["a2", EN])
    out = tmp_path / "out.jsonl"
    assert keywords_file(csv_in, out, column="content", top_k=3) == 2
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in rows] == ["a1", "a2"]
    assert len(rows[0]["keywords"]) == 3
    k = rows[0]["keywords"][0]
    assert ZH[k["start"] : k["end"]] == k["word"]

    jl = tmp_path / "in.jsonl"
    jl.write_text(json.dumps({"text": EN}) + "\n\n" + json.dumps({"text": ZH}) + "\n", encoding="utf-8")
    assert keywords_file(jl, out, top_k=2) == 2
    txt = tmp_path / "in.txt"
    txt.write_text(f"{EN}\n\n{ZH}\n", encoding="utf-8")
    assert keywords_file(txt, out, top_k=2, alpha=0.0) == 2
    assert [r["row"] for r in map(json.loads, out.read_text(encoding="utf-8").splitlines())] == [0, 1]
    with pytest.raises(InputError):
        keywords_file(csv_in, out, column="missing")


def _control(*labels: LabelSpec) -> ControlSpec:
    return ControlSpec(
        name="kw", type="Labels", to_name="text", object_type="Text", value_key="text",
        kind=TaskKind.TEXT_SPANS, labels=labels,
    )  # fmt: skip


def test_keyword_model_prelabels_all_occurrences(tmp_path: Path) -> None:
    ctl = _control(LabelSpec(value="人名"), LabelSpec(value="关键词", predicted_values=("keyword",)))
    model = KeywordModel(ctl, top_k=3, userdict=["机器学习"])
    assert isinstance(model, Model) and model.is_fitted and model.name == "keywords"
    (pred,) = model.predict([Example(text=ZH)])
    assert pred.error is None and pred.spans
    assert {s.label for s in pred.spans} == {"关键词"}
    assert all(ZH[s.start : s.end] == s.text and 0 < s.score <= 1 for s in pred.spans)
    assert [s.start for s in pred.spans] == sorted(s.start for s in pred.spans)
    assert sum(s.text == "机器学习" for s in pred.spans) == 2  # every occurrence
    assert 0 < pred.score <= 1

    report = model.fit([Example(text=ZH), Example(text=EN), Example(text=" ")])
    assert model.n_docs_ == 2 and report.n_train == 2 and len(report.skipped) == 1
    model.save(tmp_path / "m")
    loaded = KeywordModel.load(tmp_path / "m", ctl)
    assert loaded.n_docs_ == 2 and loaded.doc_freq_ == model.doc_freq_
    assert loaded.predict([Example(text=EN)])[0].spans == model.predict([Example(text=EN)])[0].spans


def test_keyword_model_without_keyword_label_reports_an_error() -> None:
    model = KeywordModel(_control(LabelSpec(value="人名")))
    (pred,) = model.predict([Example(text=ZH)])
    assert pred.error and 'predicted_values="keyword"' in pred.error
