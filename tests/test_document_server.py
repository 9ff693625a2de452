"""A Label Studio OCR project through the server: no boxes before training, field boxes with their text after
training on annotated pages, and bad pages in a batch get empty predictions while the rest are served."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from labelpilot.data.types import Box, Example, Prediction, Target
from tests.conftest import cache_folder, wait_for
from tests.test_document import OCR_CONFIG, _langs, _needs_ocr

UID = "31.1700000000"
PROJECT = {"id": 31, "created_at": "2023-11-14T22:13:20Z", "label_config": OCR_CONFIG}


def _boxes_of(results: list[dict]) -> Prediction:
    boxes = []
    for r in results:
        if r["type"] == "rectanglelabels":
            v = r["value"]
            boxes.append(Box(v["x"] / 100, v["y"] / 100, v["width"] / 100, v["height"] / 100, v["rectanglelabels"][0],
                             r.get("score")))
    return Prediction(boxes=tuple(boxes))


def test_ocr_project_learns_field_boxes(start_server, fake_ls, tmp_path: Path, request: pytest.FixtureRequest,
                                        tmp_path_factory: pytest.TempPathFactory) -> None:
    _needs_ocr()
    from PIL import Image

    from labelpilot.models.document import field_scores
    from labelpilot.testing.synthdocs import make_pages

    langs = _langs()
    layouts = ("form", "two-column")
    train = make_pages(tmp_path / "train", 6 * len(langs), langs=langs, layouts=layouts, seed=3)
    new = make_pages(tmp_path / "new", 2 * len(langs), langs=langs, layouts=layouts, seed=4)
    fake_ls.tokens.add("Token t")
    tasks = []
    for i, page in enumerate(train):
        path = f"/data/upload/31/{Path(page.path).name}"
        fake_ls.files[path] = Path(page.path).read_bytes()
        tasks.append({"id": i + 1, "data": {"ocr": path}, "annotations": [
            {"id": 500 + i, "result": page.ls_result(transcription="transcription")}]})
    fake_ls.tasks[31] = tasks
    for page in new:
        fake_ls.files[f"/data/upload/31/{Path(page.path).name}"] = Path(page.path).read_bytes()
    buf = io.BytesIO()
    Image.new("L", (1240, 1754), 255).save(buf, format="PNG")
    fake_ls.files["/data/upload/31/blank.png"] = buf.getvalue()
    fake_ls.files["/data/upload/31/truncated.jpg"] = b"\xff\xd8\xff\xe0" + b"\x00" * 40

    cache_dir = cache_folder(request, tmp_path_factory, "labelpilot-ocr")
    server = start_server(LABELPILOT_RETRAIN_EVERY="0", LABELPILOT_CACHE_DIR=str(cache_dir))
    setup = {"project": UID, "schema": OCR_CONFIG, "hostname": fake_ls.url, "access_token": "t"}
    batch = [{"id": 100 + k, "data": {"ocr": f"/data/upload/31/{Path(p.path).name}"}} for k, p in enumerate(new)]
    batch += [{"id": 200, "data": {"ocr": "/data/upload/31/blank.png"}},
              {"id": 201, "data": {"ocr": "/data/upload/31/truncated.jpg"}},
              {"id": 202, "data": {"ocr": "http://example.invalid/page.png"}}]
    body = {"tasks": batch, "label_config": OCR_CONFIG, "project": UID}
    with server.client(timeout=120) as client:
        setup_out = client.post("/setup", json=setup).json()
        v0 = setup_out["model_version"]
        before = client.post("/predict", json=body).json()["results"]
        assert client.post("/webhook", json={"action": "START_TRAINING", "project": PROJECT}).status_code == 201
        v1 = wait_for(lambda: (v := client.post("/setup", json=setup).json()["model_version"]) != v0 and v,
                      timeout=300, what="the document model")
        after = client.post("/predict", json=body).json()["results"]
    # before any annotation: values next to keys named like the labels (tests/test_doc_zeroshot.py), none on bad pages
    assert v0 == "zero-shot-doc-fields" and all(r["model_version"] == v0 for r in before)
    assert any(r["result"] for r in before[: len(new)]) and all(r["result"] == [] for r in before[len(new):])
    assert v1.startswith("doc-fields-v1-")
    assert len(after) == len(batch) and all(r["model_version"] == v1 for r in after)
    gold = [Example(target=Target(boxes=tuple(
        Box(b[0] / p.width, b[1] / p.height, (b[2] - b[0]) / p.width, (b[3] - b[1]) / p.height, lab)
        for lab, b, _ in p.fields))) for p in new]
    preds = [_boxes_of(r["result"]) for r in after[: len(new)]]
    scores = field_scores(preds, gold)
    assert scores["f1"] >= 0.75, scores
    for r in after[: len(new)]:
        rects = {x["id"]: x for x in r["result"] if x["type"] == "rectanglelabels"}
        texts = {x["id"]: x for x in r["result"] if x["type"] == "textarea"}
        assert rects and rects.keys() == texts.keys()  # every box carries its transcription, same region id
        for rid, t in texts.items():
            assert t["from_name"] == "transcription" and t["to_name"] == "image" and t["value"]["text"][0]
            assert t["value"]["x"] == rects[rid]["value"]["x"]
            assert (rects[rid]["original_width"], rects[rid]["original_height"]) == (1240, 1754)
        assert 0 < r["score"] <= 1
    assert [r["result"] for r in after[len(new):]] == [[], [], []]
    assert not any("example.invalid" in req[1] for req in fake_ls.requests)
