"""Document fields (doc-fields): OCR segments, the label-config hook, the model on synthetic report pages."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from labelpilot.data.labelstudio import prediction_regions
from labelpilot.data.types import Box, Example, Prediction, Target
from labelpilot.errors import InputError
from labelpilot.models.base import family_for
from labelpilot.ocr import OcrLine, OcrPage, Word
from labelpilot.schema import parse_label_config
from labelpilot.schema.types import TaskKind
from tests.conftest import cache_folder

FIELDS = ("日期", "编号", "姓名", "单位", "结论")
OCR_CONFIG = """<View>
  <Image name="image" value="$ocr"/>
  <RectangleLabels name="label" toName="image">
    <Label value="日期"/><Label value="编号"/><Label value="姓名"/><Label value="单位"/><Label value="结论"/>
  </RectangleLabels>
  <TextArea name="transcription" toName="image" editable="true" perRegion="true" required="false"
            maxSubmissions="1" rows="3" placeholder="Recognized Text" displayMode="region-list"/>
</View>"""


def _chars(text: str, x0: float, y0: float, step: float, h: float = 40) -> tuple[Word, ...]:
    return tuple(Word(ch, (x0 + i * step, y0, x0 + (i + 1) * step, y0 + h)) for i, ch in enumerate(text))


# ---------------------------------------------------------------------------------- segments (no OCR needed)


def test_segments_split_keys_and_values() -> None:
    from labelpilot.models.document import segments_of

    zh = OcrLine("报告日期：2024-03-05", (100, 100, 500, 140), 0.99,
                 (*_chars("报告日期：", 100, 100, 30), Word("2024-03-05", (260, 102, 420, 138))))
    en = OcrLine(
        "Organization: City Lab Patient Name: John Wilson", (100, 200, 1000, 240), 0.98,
        (Word("Organization:", (100, 200, 280, 240)), Word("City", (292, 200, 350, 240)),
         Word("Lab", (360, 200, 410, 240)), Word("Patient", (440, 200, 540, 240)),
         Word("Name:", (550, 200, 630, 240)), Word("John", (650, 200, 720, 240)),
         Word("Wilson", (730, 200, 820, 240))),
    )
    plain = OcrLine("Name: Bob", (100, 300, 300, 340), 0.9)  # no word boxes: split by character widths
    gap = OcrLine("Item 12.5", (100, 400, 700, 440), 0.9,
                  (Word("Item", (100, 400, 170, 440)), Word("12.5", (600, 400, 660, 440))))
    segs = segments_of(OcrPage(1240, 1754, (zh, en, plain, gap)))
    texts = [s.text for s in segs]
    assert texts == ["报告日期：", "2024-03-05", "Organization:", "City Lab", "Patient Name:", "John Wilson",
                     "Name:", "Bob", "Item", "12.5"]
    by = {s.text: s for s in segs}
    assert by["2024-03-05"].box == (260, 102, 420, 138) and by["2024-03-05"].split_value
    assert by["报告日期："].is_key and by["报告日期："].box[2] == pytest.approx(250)
    assert by["City Lab"].box[0] == 292 and by["City Lab"].box[2] == 410
    assert by["John Wilson"].box[0] == 650 and by["Patient Name:"].is_key
    assert 150 < by["Bob"].box[0] < by["Bob"].box[2] == pytest.approx(300)
    assert by["12.5"].box[0] == 600


def test_groups_join_paragraph_lines_but_not_rows_apart() -> None:
    from labelpilot.models.document import Segment, _groups

    segs = [Segment("first line of the conclusion", (100, 500, 900, 540), 1.0),
            Segment("second line", (100, 555, 500, 595), 1.0),
            Segment("far below", (100, 900, 400, 940), 1.0),
            Segment("a key:", (100, 100, 200, 140), 1.0, is_key=True)]
    groups = _groups(segs, ["结论", "结论", "结论", "O"])
    assert sorted(members for _, members in groups) == [[0, 1], [2]]


def test_field_scores_match_label_and_iou() -> None:
    from labelpilot.models.document import field_scores

    gold = Example(target=Target(boxes=(Box(0.1, 0.1, 0.2, 0.05, "日期"), Box(0.1, 0.5, 0.6, 0.1, "结论"))))
    pred = Prediction(boxes=(Box(0.11, 0.1, 0.2, 0.05, "日期"), Box(0.1, 0.5, 0.6, 0.1, "编号"),
                             Box(0.7, 0.7, 0.1, 0.1, "结论")))
    assert field_scores([pred], [gold]) == {"precision": pytest.approx(1 / 3, abs=1e-4),
                                            "recall": 0.5, "f1": pytest.approx(0.4, abs=1e-4)}


# ---------------------------------------------------------------------------------- label config hook


def test_ocr_template_selects_the_document_family_and_fills_the_textarea() -> None:
    schema = parse_label_config(OCR_CONFIG)
    (control,) = schema.controls
    assert control.kind is TaskKind.IMAGE_BOXES and control.transcription == "transcription"
    assert schema.problems() == []  # the per-region TextArea is not reported as unsupported
    cls = family_for(control)
    assert cls is not None and cls.name == "doc-fields"
    plain = parse_label_config(OCR_CONFIG.replace('perRegion="true"', 'perRegion="false"'))
    assert plain.controls[0].transcription is None and family_for(plain.controls[0]).name == "image-detector"
    chosen = parse_label_config(
        '<View><Image name="image" value="$image"/><RectangleLabels name="f" toName="image" model_family="doc-fields">'
        '<Label value="日期"/></RectangleLabels></View>'
    )
    assert family_for(chosen.controls[0]).name == "doc-fields"
    pred = Prediction(boxes=(Box(0.1, 0.2, 0.3, 0.04, "日期", 0.9, text="2024-03-05"),), score=0.9)
    rect, text = prediction_regions(pred, control, image_size=(1240, 1754))
    assert rect["id"] == text["id"] and rect["type"] == "rectanglelabels" and text["type"] == "textarea"
    assert text["from_name"] == "transcription" and text["value"]["text"] == ["2024-03-05"]
    assert {k: text["value"][k] for k in ("x", "y", "width", "height")} == {
        k: rect["value"][k] for k in ("x", "y", "width", "height")}
    assert rect["value"]["rectanglelabels"] == ["日期"] and "rectanglelabels" not in text["value"]
    assert text["original_width"] == 1240


# ---------------------------------------------------------------------------------- the model (rapidocr)


@pytest.fixture(scope="module", autouse=True)
def _ocr_cache(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """OCR results go to pytest's cache directory (reused by later runs), not the user's."""
    mp = pytest.MonkeyPatch()
    mp.setenv("LABELPILOT_CACHE_DIR", str(cache_folder(request, tmp_path_factory, "labelpilot-ocr")))
    yield
    mp.undo()


def _needs_ocr() -> None:
    pytest.importorskip("rapidocr", reason="document models need rapidocr (the 'ocr' extra)")
    from labelpilot.testing.synthdocs import FONT_HINT, available_fonts

    for lang in _langs():
        if not available_fonts(lang):
            pytest.skip(f"no {lang} font to draw synthetic pages with: {FONT_HINT[lang]}")


def _langs() -> tuple[str, ...]:
    """Always both languages: the pages (and so what these tests assert) never depend on the machine's fonts."""
    return ("en", "zh")


def _example(page) -> Example:
    boxes = tuple(Box(b[0] / page.width, b[1] / page.height, (b[2] - b[0]) / page.width, (b[3] - b[1]) / page.height,
                      label) for label, b, _ in page.fields)
    return Example(image=page.path, id=Path(page.path).name, target=Target(boxes=boxes))


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Example], list[Example]]:
    _needs_ocr()
    from labelpilot.testing.synthdocs import make_pages

    d = tmp_path_factory.mktemp("pages")
    langs = _langs()
    layouts = ("form", "grid")
    train = [_example(p) for p in make_pages(d / "train", 6 * len(langs), langs=langs, layouts=layouts, seed=1)]
    test = [_example(p) for p in make_pages(d / "test", 2 * len(langs), langs=langs, layouts=layouts, seed=2)]
    return train, test


def test_doc_fields_learns_fields_and_round_trips(pages, tmp_path: Path) -> None:
    from labelpilot.models.document import DocumentFieldModel, field_scores

    train, test = pages
    control = parse_label_config(OCR_CONFIG).controls[0]
    with pytest.raises(InputError, match=r"unknown doc-fields options: \['Cee'\]; known: \['C', "):
        DocumentFieldModel(control, Cee=1)
    model = DocumentFieldModel(control)
    assert not model.is_fitted
    # untrained without key/value proposals: nothing, with a reason (zero-shot: tests/test_doc_zeroshot.py)
    assert DocumentFieldModel(control, zero_shot=False).predict(test[:1])[0].error
    odd = [Example(image=train[0].image, id="unlabelled"),
           Example(image=str(tmp_path / "missing.png"), id="missing", target=Target(boxes=train[0].target.boxes))]
    report = model.fit([*train, *odd])
    assert report.n_train == len(train) and sorted(report.labels) == sorted(FIELDS)
    assert any("no annotation" in s for s in report.skipped) and any("missing" in s for s in report.skipped)
    assert report.metrics["train_f1"] >= 0.9
    preds = model.predict(test)
    scores = field_scores(preds, test)
    assert scores["f1"] >= 0.75, scores
    for p in preds:
        assert p.error is None and p.boxes and 0 < p.score <= 1 and p.uncertainty is not None
        for b in p.boxes:
            assert b.label in FIELDS and b.text and 0 <= b.x < b.x + b.width <= 1 and (b.score or 0) >= model.threshold
        assert len({b.label for b in p.boxes}) == len(p.boxes)  # one box per field on these pages
    model.save(tmp_path / "m")
    assert {f.name for f in (tmp_path / "m").iterdir()} == {"doc_fields.json", "doc_fields.npz"}
    again = DocumentFieldModel.load(tmp_path / "m", control)
    for a, b in zip(again.predict(test), preds, strict=True):
        assert [(x.label, round(x.x, 5), round(x.score or 0, 5), x.text) for x in a.boxes] == [
            (x.label, round(x.x, 5), round(x.score or 0, 5), x.text) for x in b.boxes]
    emb = model.embed(test)
    assert emb.shape == (len(test), 512) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-4)


def test_bad_pages_give_empty_or_low_predictions_never_a_failed_batch(pages, tmp_path: Path) -> None:
    from PIL import Image

    from labelpilot.models.document import DocumentFieldModel

    train, test = pages
    control = parse_label_config(OCR_CONFIG).controls[0]
    model = DocumentFieldModel(control)
    report = model.fit(train, val=test[:2])
    assert report.n_val == 2 and 0 <= report.metrics["val_f1"] <= 1 and "val_precision" in report.metrics
    blank = tmp_path / "blank.png"
    Image.new("L", (1240, 1754), 255).save(blank)
    rotated = tmp_path / "rotated.png"
    Image.open(test[0].image).rotate(90, expand=True).save(rotated)
    photo = tmp_path / "photo.jpg"
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((480, 640, 3)) * 255).astype("uint8")).save(photo)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 40)
    batch = [Example(image=str(p), id=p.name) for p in (blank, rotated, photo, broken)] + [test[0]]
    preds = model.predict(batch)
    assert len(preds) == 5
    assert preds[0].error is None and preds[0].boxes == ()
    assert preds[1].error is None and preds[2].error is None
    good = {b.label for b in preds[4].boxes}
    assert preds[4].error is None and len(good) >= 4
    # a photo gives at most a stray box; a rotated page is read upright when the orientation model is there
    from labelpilot.orientation import orientation_available

    if orientation_available():
        assert [(b.label, b.text) for b in preds[1].boxes] == [(b.label, b.text) for b in preds[4].boxes]
    else:
        assert len(preds[1].boxes) < len(preds[4].boxes)
    assert len(preds[2].boxes) <= 1
    assert preds[3].error and not preds[3].boxes
