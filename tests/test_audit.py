"""The label audit: planted label errors rank on top, agreement against hand-computed values, the CLI end to end.

Real model families (text-linear without the encoder, ner-crf) on synthetic data with planted errors; the box
scorer gets hand-made out-of-fold predictions (training a detector does not fit a fast test).
"""

from __future__ import annotations

import csv
import json
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from labelpilot.audit.agreement import agreement, box_f1
from labelpilot.audit.oof import OutOfFold, assign_folds, choose_folds, out_of_fold
from labelpilot.audit.suspects import confident_learning, find_suspects, suspects_from_oof
from labelpilot.data.types import Box, Example, Prediction, Span, Target
from labelpilot.errors import InputError
from labelpilot.schema import make_label_config, parse_label_config
from labelpilot.schema.types import ControlSpec, LabelSpec, TaskKind

FAST = {"encoder": False}

WORDS = {
    "sport": ["match", "goal", "team", "player", "score", "league", "coach", "stadium"],
    "tech": ["software", "chip", "computer", "phone", "app", "code", "internet", "robot"],
    "food": ["pizza", "bread", "cheese", "soup", "salad", "dinner", "recipe", "sugar"],
}
FILLER = ["the", "a", "today", "news", "about", "new", "big", "report", "people", "city"]


def _topic_examples(n: int, seed: int) -> list[Example]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        lab = list(WORDS)[i % 3]
        text = " ".join(rng.sample(FILLER, 3) + rng.sample(WORDS[lab], 3))
        out.append(Example(text=text, id=f"t{i}", target=Target(labels=(lab,))))
    return out


def _control(labels: list[str], kind: str = "choices", multiple: bool = False) -> ControlSpec:
    return parse_label_config(make_label_config(labels, kind=kind, multiple=multiple)).controls[0]


def test_folds_are_stratified_and_small_sets_get_fewer() -> None:
    ex = _topic_examples(90, 0)
    fold = assign_folds(ex, 5, seed=1, stratify=True)
    for lab in WORDS:
        per = np.bincount(fold[[i for i, e in enumerate(ex) if e.target.labels[0] == lab]], minlength=5)
        assert per.tolist() == [6, 6, 6, 6, 6]
    assert choose_folds(1000, 5) == 5 and choose_folds(20, 5) == 2 and choose_folds(30, 5) == 3
    with pytest.raises(InputError):
        out_of_fold(_control(list(WORDS)), ex[:3], options=FAST)
    # two fold splits, probabilities averaged: still one distribution per example, labels from the mean
    oof = out_of_fold(_control(list(WORDS)), ex[:48], folds=3, repeats=2, options=FAST)
    assert "probabilities averaged over 2 fold splits" in oof.notes and oof.folds == 3
    for p in oof.predictions:
        assert sum(p.probs.values()) == pytest.approx(1.0, abs=1e-6) and p.labels[0] == max(p.probs, key=p.probs.get)


def test_rank_temperature_by_hand() -> None:
    """T = 2 reorders many-class suspects (square roots, renormalized) but not two-class ones; flags stay raw."""
    probs = np.array([[0.03, 0.97, 0.0], [0.04, 0.48, 0.48], [0.9, 0.1, 0.0]])
    given = np.array([0, 0, 0])
    raw, flag_raw, _ = confident_learning(probs, given)
    soft, flag_soft, _ = confident_learning(probs, given, temperature=2.0)
    assert raw[0] > raw[1]  # raw: 0.03 < 0.04, example 0 more suspect
    r = np.sqrt(probs)
    expect = 1 - r[:, 0] / r.sum(axis=1)
    assert np.allclose(soft, expect) and soft[1] > soft[0]  # softened: 0.03 against one sure class is less odd
    assert flag_raw.tolist() == flag_soft.tolist()
    two = np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4]])
    g2 = np.array([0, 0, 1])
    assert np.argsort(confident_learning(two, g2)[0]).tolist() == np.argsort(
        confident_learning(two, g2, temperature=2.0)[0]).tolist()
    with pytest.raises(ValueError):
        confident_learning(two, g2, temperature=0.0)


def test_size_aware_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without ``repeats``/options, a small set of class labels gets SMALL_SET_REPEATS fold splits and
    SMALL_SET_OPTIONS; above SMALL_SET one split and the fast options; the caller's values always win."""
    import labelpilot.audit.oof as oof_mod

    ex = _topic_examples(48, 0)
    control = _control(list(WORDS))
    small = out_of_fold(control, ex, folds=3, options=FAST)
    assert small.repeats == oof_mod.SMALL_SET_REPEATS
    for key, value in oof_mod.SMALL_SET_OPTIONS.get("text-linear", {}).items():
        assert small.options[key] == value
    assert small.options["encoder"] is False and small.options["cv_folds"] == 3  # caller's and FAST_OPTIONS
    if small.repeats > 1:
        assert f"probabilities averaged over {small.repeats} fold splits" in small.notes
    monkeypatch.setattr(oof_mod, "SMALL_SET", 40)  # 48 examples are now a large set
    large = out_of_fold(control, ex, folds=3, options=FAST)
    assert large.repeats == 1 and large.options["refit"] is False
    assert not any("averaged" in note for note in large.notes)
    forced = out_of_fold(control, ex, folds=3, repeats=2, options={**FAST, "refit": True})
    assert forced.repeats == 2 and forced.options["refit"] is True
    # the defaults' figures are reproducible: same data, same seed, same ranking
    again = out_of_fold(control, ex, folds=3, options=FAST)
    assert [p.probs for p in again.predictions] == [p.probs for p in large.predictions]


def test_confident_learning_by_hand() -> None:
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.2, 0.8]])
    given = np.array([0, 0, 1, 1, 0])
    # thresholds: class 0 = mean(0.9, 0.8, 0.2) = 0.633; class 1 = mean(0.7, 0.4) = 0.55
    score, flagged, confident = confident_learning(probs, given)
    assert np.allclose(score, [0.1, 0.2, 0.3, 0.6, 0.8])
    assert flagged.tolist() == [False, False, False, False, True]  # example 3: 0.6 < 0.633, nothing confident
    assert confident.tolist() == [0, 0, 1, 0, 1]
    margin, _, _ = confident_learning(probs, given, rank_by="normalized_margin")
    assert np.allclose(margin, 1 - (np.array([0.8, 0.6, 0.4, -0.2, -0.6]) + 1) / 2)


def test_flipped_labels_rank_first() -> None:
    ex = _topic_examples(150, 0)
    planted = {7, 23, 58, 91, 120, 144}
    for i in planted:
        ex[i].target = Target(labels=(list(WORDS)[(i + 1) % 3],))
    seen: list[str] = []
    sus = find_suspects(_control(list(WORDS)), ex, options=FAST, progress=lambda d, t, m: seen.append(m))
    assert len(sus) == 150 and seen[-1] == "out-of-fold predictions done"
    assert {s.example_id for s in sus[:6]} == {f"t{i}" for i in planted}
    top = sus[0]
    assert top.flagged and top.suggested[0] != top.given[0] and 0.5 < top.score <= 1.0 and "confident" in top.reason
    assert [s.score for s in sus] == sorted((s.score for s in sus), reverse=True)


def test_multilabel_missing_and_extra_labels_rank_first() -> None:
    rng = random.Random(3)
    ex = []
    for i in range(150):
        labs = sorted(rng.sample(list(WORDS), rng.choice([1, 2])))
        words = [w for lab in labs for w in rng.sample(WORDS[lab], 3)] + rng.sample(FILLER, 3)
        rng.shuffle(words)
        ex.append(Example(text=" ".join(words), id=f"m{i}", target=Target(labels=tuple(labs))))
    planted = {5, 40, 77, 130}
    for i in planted:  # drop a label (or swap the only one for an absent one)
        labs = ex[i].target.labels
        ex[i].target = Target(labels=labs[:1] if len(labs) == 2 else (next(w for w in WORDS if w not in labs),))
    sus = find_suspects(_control(list(WORDS), multiple=True), ex, options=FAST)
    assert {s.example_id for s in sus[:6]} >= {f"m{i}" for i in planted}


PER = ["John", "Mary", "Peter", "Anna", "Lucas", "Emma", "Oliver", "Sophia"]
LOC = ["Paris", "London", "Berlin", "Madrid", "Rome", "Vienna", "Lisbon", "Dublin"]


def test_span_errors_rank_first() -> None:
    rng = random.Random(5)
    templates = ["{p} flew to {l} on Monday .", "Yesterday {p} visited {l} again .", "{p} said {l} was cold ."]
    ex = []
    for i in range(120):
        p, loc, t = rng.choice(PER), rng.choice(LOC), templates[i % 3]
        text = t.format(p=p, l=loc)
        a, b = text.index(p), text.index(loc)
        spans = (Span(a, a + len(p), "PER"), Span(b, b + len(loc), "LOC"))
        ex.append(Example(text=text, id=f"s{i}", target=Target(spans=spans)))
    retyped, dropped = {10, 50, 90}, {31, 71, 111}
    for i in retyped:
        s = ex[i].target.spans
        ex[i].target = Target(spans=(Span(s[0].start, s[0].end, "LOC"), s[1]))
    for i in dropped:
        ex[i].target = Target(spans=ex[i].target.spans[:1])
    control = ControlSpec(name="ner", type="Labels", to_name="text", object_type="Text", value_key="text",
                          kind=TaskKind.TEXT_SPANS, labels=(LabelSpec("PER"), LabelSpec("LOC")))
    oof = out_of_fold(control, ex, folds=4)
    assert oof.marginals is not None and all(m is not None for m in oof.marginals)
    sus = suspects_from_oof(oof)
    top = {s.example_id for s in sus[:8]}
    assert {f"s{i}" for i in retyped | dropped} <= top
    by_id = {s.example_id: s for s in sus}
    assert "=LOC" in by_id["s10"].given[0] and "=PER" in by_id["s10"].suggested[0]
    assert by_id["s31"].given == () and by_id["s31"].suggested[0].endswith("=LOC")


def test_box_suspects_from_out_of_fold_predictions() -> None:
    control = ControlSpec(name="box", type="RectangleLabels", to_name="image", object_type="Image",
                          value_key="image", kind=TaskKind.IMAGE_BOXES, labels=(LabelSpec("cat"), LabelSpec("dog")))
    cat = Box(0.1, 0.1, 0.3, 0.3, "cat")
    ex = [Example(image=f"{i}.jpg", id=str(i), target=Target(boxes=(cat,))) for i in range(4)]
    preds = [
        Prediction(boxes=(Box(0.11, 0.1, 0.3, 0.3, "cat", score=0.9),)),  # agrees
        Prediction(boxes=(Box(0.1, 0.12, 0.3, 0.3, "dog", score=0.95),)),  # same object, other label
        Prediction(boxes=(Box(0.1, 0.1, 0.3, 0.3, "cat", score=0.9), Box(0.6, 0.6, 0.2, 0.2, "dog", score=0.7))),
        Prediction(boxes=()),  # the annotated box is not found
    ]
    oof = OutOfFold(control, "image-detector", ex, preds, np.zeros(4, dtype=int), 2, 0.0)
    sus = suspects_from_oof(oof)
    assert [s.example_id for s in sus] == ["1", "2", "3", "0"]
    assert sus[0].score == pytest.approx(0.95) and sus[0].suggested[0].startswith("dog@")
    assert sus[1].score == pytest.approx(0.7) and sus[1].given == ()
    assert sus[2].score == pytest.approx(0.5) and sus[3].score == 0.0


def test_agreement_by_hand() -> None:
    choices = _control(["x", "y"])
    a, b = ["x", "x", "y", "y", "x", "y"], ["x", "y", "y", "y", "x", "x"]
    tasks = [{"ann1": Target(labels=(p,)), "ann2": Target(labels=(q,))} for p, q in zip(a, b, strict=True)]
    tasks.append({"ann1": Target(labels=("x",))})  # one annotator only: not counted
    res = agreement(choices, tasks)
    # po = 4/6, pe = 0.5 * 0.5 + 0.5 * 0.5 = 0.5 -> kappa = (2/3 - 1/2) / (1/2) = 1/3
    assert res.n_tasks == 6 and res.metric == "cohen_kappa"
    assert res.pairs[0].value == pytest.approx(1 / 3) and res.pairs[0].observed == pytest.approx(4 / 6)
    assert res.overall == pytest.approx(1 / 3)

    # three annotators: ann3 agrees with ann1 (x, y) on tasks 0 and 2 -> kappa 1; ann1's figure = (1/3*6 + 1*2) / 8
    tasks[0]["ann3"], tasks[2]["ann3"] = Target(labels=("x",)), Target(labels=("y",))
    res = agreement(choices, tasks)
    ann1 = next(x for x in res.annotators if x.annotator == "ann1")
    assert ann1.value == pytest.approx((1 / 3 * 6 + 1.0 * 2) / 8)

    spans_ctl = ControlSpec(name="ner", type="Labels", to_name="text", object_type="Text", value_key="text",
                            kind=TaskKind.TEXT_SPANS, labels=(LabelSpec("PER"), LabelSpec("LOC"), LabelSpec("ORG")))
    span_tasks = [
        {"a": Target(spans=(Span(0, 5, "PER"), Span(10, 15, "LOC"))), "b": Target(spans=(Span(0, 5, "PER"),
                                                                                       Span(10, 15, "ORG")))},
        {"a": Target(spans=()), "b": Target(spans=(Span(3, 6, "PER"),))},
    ]
    assert agreement(spans_ctl, span_tasks).overall == pytest.approx(2 * 1 / (2 + 3))  # tp 1, 2 vs 3 spans

    ta = [Target(boxes=(Box(0, 0, 0.5, 0.5, "cat"), Box(0.6, 0.6, 0.2, 0.2, "dog")))]
    tb = [Target(boxes=(Box(0.05, 0, 0.5, 0.5, "cat"), Box(0.6, 0.6, 0.2, 0.2, "cat")))]
    assert box_f1(ta, tb) == pytest.approx(0.5)  # IoU 0.818 matches the cats; the second pair's labels differ


@dataclass
class Ran:
    returncode: int
    stdout: str


@pytest.fixture
def run_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Callable[..., Ran]:
    """``labelpilot audit ...`` through the real entry point (``cli.main``: argument parsing, errors as exit
    code 2), in this process: a subprocess per call cost 15+ s of imports on a busy machine."""
    from labelpilot.cli import main

    monkeypatch.setenv("LABELPILOT_ENCODER", "none")
    monkeypatch.setenv("COLUMNS", "200")

    def run(*args: str, cwd: Path) -> Ran:
        monkeypatch.chdir(cwd)
        monkeypatch.setattr(sys, "argv", ["labelpilot", "audit", *args])
        capsys.readouterr()
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        return Ran(code, capsys.readouterr().out)

    return run


def test_cli_on_a_csv(tmp_path: Path, run_cli: Callable[..., Ran]) -> None:
    ex = _topic_examples(90, 1)
    planted = {4, 40, 80}
    with (tmp_path / "data.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["key", "text", "label"])
        for i, e in enumerate(ex):
            lab = list(WORDS)[(i + 1) % 3] if i in planted else e.target.labels[0]
            w.writerow([f"row{i}", e.text, lab])
    res = run_cli("data.csv", "--id-col", "key", "--out", "out", "--top", "20", "--options", "encoder=false",
               cwd=tmp_path)
    assert res.returncode == 0, res.stdout
    rows = list(csv.DictReader((tmp_path / "out" / "suspects.csv").open(encoding="utf-8")))
    assert list(rows[0]) == ["rank", "id", "control", "given", "suggested", "score", "reason", "text"]
    assert len(rows) == 20 and {r["id"] for r in rows[:3]} == {f"row{i}" for i in planted}
    assert rows[0]["text"] and float(rows[0]["score"]) > 0.5
    summary = json.loads((tmp_path / "out" / "summary.json").read_text(encoding="utf-8"))
    assert summary["examples"] == 90 and summary["agreement"] is None
    assert {r["label"] for r in summary["per_class"]} == set(WORDS)
    assert "per class" in res.stdout and "flagged" in res.stdout

    # bad input: a missing column and a missing file are clear errors, and nothing is written
    bad = run_cli("data.csv", "--text-col", "body", "--out", "out2", cwd=tmp_path)
    assert bad.returncode == 2 and "no 'body' column" in bad.stdout and not (tmp_path / "out2").exists()
    missing = run_cli("nope.csv", cwd=tmp_path)
    assert missing.returncode == 2 and "no such file" in missing.stdout


CONFIG = """<View><Text name="text" value="$text"/>
<Choices name="topic" toName="text"><Choice value="sport"/><Choice value="tech"/><Choice value="food"/></Choices>
</View>"""


def test_cli_on_a_label_studio_export_with_two_annotators(tmp_path: Path, run_cli: Callable[..., Ran]) -> None:
    ex = _topic_examples(60, 2)
    planted = {6, 33}  # the annotation audited (the latest) is wrong
    disagree = {6, 33, 12, 45}  # annotator 2 (latest) differs from annotator 1 here
    tasks = []
    for i, e in enumerate(ex):
        truth = e.target.labels[0]
        second = list(WORDS)[(list(WORDS).index(truth) + 1) % 3] if i in disagree else truth
        if i in {12, 45}:  # here annotator 1 is the wrong one: swap who is right, the latest stays correct
            first, second = second, truth
        else:
            first = truth
        anns = [
            {"id": 2 * i + 1, "completed_by": 1, "updated_at": "2026-01-01T00:00:00Z",
             "result": [{"from_name": "topic", "to_name": "text", "type": "choices", "value": {"choices": [first]}}]},
            {"id": 2 * i + 2, "completed_by": {"id": 2, "email": "b@example.org"}, "updated_at": "2026-01-02T00:00:00Z",
             "result": [{"from_name": "topic", "to_name": "text", "type": "choices", "value": {"choices": [second]}}]},
        ]
        tasks.append({"id": 100 + i, "data": {"text": e.text}, "annotations": anns})
    (tmp_path / "export.json").write_text(json.dumps(tasks), encoding="utf-8")
    (tmp_path / "config.xml").write_text(CONFIG, encoding="utf-8")
    res = run_cli("export.json", "--config", "config.xml", "--out", "out", "--options", "encoder=false", cwd=tmp_path)
    assert res.returncode == 0, res.stdout
    rows = list(csv.DictReader((tmp_path / "out" / "suspects.csv").open(encoding="utf-8")))
    assert len(rows) == 60 and {r["id"] for r in rows[:2]} == {str(100 + i) for i in planted}
    agree = json.loads((tmp_path / "out" / "summary.json").read_text(encoding="utf-8"))["agreement"]
    # 56 of 60 identical; marginals: annotator 1 and 2 each give every class 20 times, except the 4 changed
    # tasks; kappa from the tables, computed here without sklearn
    a1, a2 = [], []
    for t in tasks:
        a1.append(t["annotations"][0]["result"][0]["value"]["choices"][0])
        a2.append(t["annotations"][1]["result"][0]["value"]["choices"][0])
    po = sum(x == y for x, y in zip(a1, a2, strict=True)) / 60
    pe = sum((a1.count(c) / 60) * (a2.count(c) / 60) for c in WORDS)
    assert agree["metric"] == "cohen_kappa" and agree["n_tasks"] == 60
    assert agree["pairs"][0]["value"] == pytest.approx((po - pe) / (1 - pe))
    assert {a["annotator"] for a in agree["annotators"]} == {"annotator 1", "b@example.org"}
    assert "per pair" in res.stdout and "per annotator" in res.stdout

    (tmp_path / "broken.json").write_text("[{", encoding="utf-8")
    bad = run_cli("broken.json", "--config", "config.xml", cwd=tmp_path)
    assert bad.returncode == 2 and "not a JSON file" in bad.stdout
    bad = run_cli("export.json", "--config", "config.xml", "--control", "nope", cwd=tmp_path)
    assert bad.returncode == 2 and "no control 'nope'" in bad.stdout

    image_config = ('<View><Image name="img" value="$image"/><Choices name="kind" toName="img">'
                    '<Choice value="cat"/><Choice value="dog"/></Choices></View>')
    (tmp_path / "image.xml").write_text(image_config, encoding="utf-8")
    (tmp_path / "images.json").write_text(json.dumps([
        {"id": i, "data": {"image": f"http://ls.example/data/{i}.jpg"}, "annotations": [{"id": i, "result": [
            {"from_name": "kind", "to_name": "img", "type": "choices", "value": {"choices": ["cat"]}}]}]}
        for i in range(6)]), encoding="utf-8")
    bad = run_cli("images.json", "--config", "image.xml", cwd=tmp_path)
    assert bad.returncode == 2 and "not on this machine" in bad.stdout


PROJECT_CONFIG = """<View><Text name="text" value="$text"/>
<Choices name="topic" toName="text"><Choice value="sport"/><Choice value="tech"/><Choice value="food"/></Choices>
<Labels name="ner" toName="text"><Label value="THING"/></Labels>
</View>"""


def test_audit_project_on_label_studio_tasks() -> None:
    from labelpilot.audit import audit_project

    ex = _topic_examples(60, 4)
    planted = {9, 44}
    tasks = []
    for i, e in enumerate(ex):
        lab = list(WORDS)[(i + 2) % 3] if i in planted else e.target.labels[0]
        result = [{"from_name": "topic", "to_name": "text", "type": "choices", "value": {"choices": [lab]}}]
        if i < 3:  # too few span annotations for an audit of "ner": a note, not an error
            result.append({"from_name": "ner", "to_name": "text", "type": "labels",
                           "value": {"start": 0, "end": 3, "labels": ["THING"]}})
        anns = [{"id": i + 1, "completed_by": 1, "result": result}]
        if i % 2 == 0:
            anns.append({"id": 1000 + i, "completed_by": 2, "result": [
                {"from_name": "topic", "to_name": "text", "type": "choices", "value": {"choices": [lab]}}]})
        tasks.append({"id": 500 + i, "data": {"text": e.text}, "annotations": anns})
    res = audit_project(PROJECT_CONFIG, tasks, options={"encoder": False})
    topic, ner = res.controls
    assert topic.control == "topic" and topic.family == "text-linear" and topic.examples == 60
    assert {s.example_id for s in topic.suspects[:2]} == {str(500 + i) for i in planted}
    assert topic.agreement is not None and topic.agreement.n_tasks == 30 and topic.agreement.overall == 1.0
    assert ner.suspects == [] and any("at least 4" in n for n in ner.notes)
    scores = res.score_by_task()
    assert len(scores) == 60 and scores["509"] > 0.5 > scores["501"]
    body = json.loads(json.dumps(res.to_dict(top=5)))
    assert len(body["controls"][0]["suspects"]) == 5 and body["controls"][0]["agreement"]["metric"] == "cohen_kappa"


def test_cli_on_a_conll_file(tmp_path: Path, run_cli: Callable[..., Ran]) -> None:
    rng = random.Random(8)
    lines, planted = [], {7, 29}
    for i in range(60):
        p, loc = rng.choice(PER), rng.choice(LOC)
        tags = {p: "B-PER", loc: "B-LOC"} if i not in planted else {p: "B-LOC", loc: "B-LOC"}  # PER retyped
        for tok in f"{p} flew to {loc} today .".split():
            lines.append(f"{tok} {tags.get(tok, 'O')}")
        lines.append("")
    (tmp_path / "ner.conll").write_text("\n".join(lines) + "\n", encoding="utf-8")
    res = run_cli("ner.conll", "--kind", "spans", "--out", "out", cwd=tmp_path)
    assert res.returncode == 0, res.stdout
    rows = list(csv.DictReader((tmp_path / "out" / "suspects.csv").open(encoding="utf-8")))
    # ids are the file and the line where the sentence starts (7 lines a sentence)
    assert len(rows) == 60 and {r["id"] for r in rows[:2]} == {f"ner.conll:{7 * i + 1}" for i in planted}
    assert rows[0]["given"].endswith("=LOC") and rows[0]["suggested"].endswith("=PER")
