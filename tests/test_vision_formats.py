"""Round trips of the detection formats (Pascal VOC, YOLO, COCO) <-> Examples with relative boxes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from labelpilot.data.types import Box, Example, Target
from labelpilot.data.vision_formats import (
    box_corners,
    box_from_corners,
    clip_box,
    image_size,
    parse_coco,
    parse_voc,
    parse_yolo,
    read_voc_dir,
    read_yolo_dir,
    to_coco,
    to_voc,
    to_yolo,
    write_yolo_dir,
)
from labelpilot.errors import InputError, MediaError
from tests.conftest import SHARED_DATA

SHARED = SHARED_DATA / "raccoon_detection"

VOC = """<annotation verified="yes">
  <folder>images</folder>
  <filename>pic.jpg</filename>
  <size><width>{w}</width><height>{h}</height><depth>3</depth></size>
  <object><name>raccoon</name><pose>Unspecified</pose><truncated>1</truncated><difficult>0</difficult>
    <bndbox><xmin>10</xmin><ymin>20</ymin><xmax>110</xmax><ymax>70</ymax></bndbox></object>
  <object><name>dog</name><difficult>1</difficult>
    <bndbox><xmin>0</xmin><ymin>0</ymin><xmax>200</xmax><ymax>100</ymax></bndbox></object>
</annotation>"""


def _close(a: Box, b: Box, tol: float = 1e-6) -> bool:
    return a.label == b.label and all(
        abs(u - v) <= tol for u, v in zip((a.x, a.y, a.width, a.height), (b.x, b.y, b.width, b.height), strict=True)
    )


def _image(path: Path, size: tuple[int, int] = (200, 100), exif_orientation: int | None = None) -> Path:
    img = Image.new("RGB", size, (10, 200, 30))
    if exif_orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        img.save(path, exif=exif.tobytes())
    else:
        img.save(path)
    return path


def test_voc_parse_and_round_trip() -> None:
    ex = parse_voc(VOC.format(w=200, h=100), image_dir="/imgs")
    assert ex.image == "/imgs/pic.jpg" and ex.id == "pic"
    assert ex.meta["width"] == 200 and ex.meta["height"] == 100
    boxes = ex.target.boxes
    assert _close(boxes[0], Box(0.05, 0.2, 0.5, 0.5, "raccoon"))
    assert _close(boxes[1], Box(0.0, 0.0, 1.0, 1.0, "dog"))
    assert ex.meta["voc_difficult"] == [False, True] and ex.meta["voc_truncated"] == [True, False]
    again = parse_voc(to_voc(ex), image_dir="/imgs")
    assert [(b.label, b.x, b.y, b.width, b.height) for b in again.target.boxes] == [
        (b.label, b.x, b.y, b.width, b.height) for b in boxes
    ]
    assert again.meta["voc_difficult"] == [False, True]


def test_voc_zero_size_reads_the_image(tmp_path: Path) -> None:
    _image(tmp_path / "pic.jpg", (400, 200))
    ex = parse_voc(VOC.format(w=0, h=0), image_dir=tmp_path)
    assert (ex.meta["width"], ex.meta["height"]) == (400, 200)
    assert _close(ex.target.boxes[0], Box(10 / 400, 20 / 200, 100 / 400, 50 / 200, "raccoon"))
    with pytest.raises(InputError, match="not available"):
        parse_voc(VOC.format(w=0, h=0), image_dir=tmp_path / "missing")


def test_voc_zero_size_uses_upright_size(tmp_path: Path) -> None:
    _image(tmp_path / "pic.jpg", (400, 200), exif_orientation=6)  # stored landscape, shown portrait
    assert image_size(tmp_path / "pic.jpg") == (200, 400)
    ex = parse_voc(VOC.format(w=0, h=0), image_dir=tmp_path)
    assert (ex.meta["width"], ex.meta["height"]) == (200, 400)


def test_voc_errors() -> None:
    with pytest.raises(InputError, match="not valid XML"):
        parse_voc("<annotation>")
    with pytest.raises(InputError, match="<annotation>"):
        parse_voc("<foo/>")
    bad = VOC.format(w=200, h=100).replace("<xmin>10</xmin>", "<xmin>ten</xmin>")
    with pytest.raises(InputError, match="xmin"):
        parse_voc(bad)
    entity = '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY e SYSTEM "file:///etc/passwd">]><annotation>&e;</annotation>'
    ex = parse_voc(entity.replace("</annotation>", "<size><width>1</width><height>1</height></size></annotation>"))
    assert ex.target.boxes == ()


def test_voc_dir_and_example_round_trip(tmp_path: Path) -> None:
    _image(tmp_path / "a.png", (300, 150))
    ex = Example(image=str(tmp_path / "a.png"),
                 target=Target(boxes=(Box(0.1, 0.2, 0.3, 0.4, "cat"), Box(0.5, 0.5, 0.5, 0.5, "dog"))), id="a")
    (tmp_path / "ann").mkdir()
    (tmp_path / "ann" / "a.xml").write_text(to_voc(ex))  # size read from the image
    [back] = read_voc_dir(tmp_path / "ann", tmp_path)
    assert back.image == str(tmp_path / "a.png")
    for a, b in zip(back.target.boxes, ex.target.boxes, strict=True):
        assert _close(a, b, tol=1 / 150)


def test_yolo_round_trip_and_variants() -> None:
    names = ["cat", "dog"]
    boxes = [Box(0.1, 0.2, 0.3, 0.4, "dog"), Box(0.0, 0.0, 1.0, 1.0, "cat")]
    text = to_yolo(boxes, names)
    assert text.splitlines()[0].startswith("1 0.250000 0.400000 0.300000 0.400000")
    back = parse_yolo(text, names)
    assert all(_close(a, b) for a, b in zip(back, boxes, strict=True))
    # polygon line -> its bounding box; confidence column -> score; comments and blanks skipped
    poly = parse_yolo("# c\n\n0 0.1 0.1 0.5 0.2 0.3 0.6\n1 0.5 0.5 0.2 0.2 0.9\n", names)
    assert _close(poly[0], Box(0.1, 0.1, 0.4, 0.5, "cat"))
    assert poly[1].score == pytest.approx(0.9)
    assert "0.9" in to_yolo(poly[1:], names, scores=True)
    with pytest.raises(InputError, match="class 5"):
        parse_yolo("5 0.5 0.5 0.1 0.1", names)
    with pytest.raises(InputError, match="fields"):
        parse_yolo("0 0.5 0.5", names)
    with pytest.raises(InputError, match="not in names"):
        to_yolo([Box(0, 0, 1, 1, "bird")], names)


def test_yolo_dirs(tmp_path: Path) -> None:
    names = ["cat", "dog"]
    (tmp_path / "img").mkdir()
    _image(tmp_path / "img" / "x.jpg")
    _image(tmp_path / "img" / "y.png")
    exs = [
        Example(image=str(tmp_path / "img" / "x.jpg"), target=Target(boxes=(Box(0.1, 0.1, 0.2, 0.2, "cat"),))),
        Example(image=str(tmp_path / "img" / "y.png"), target=Target(boxes=())),
    ]
    write_yolo_dir(exs, tmp_path / "labels", names)
    assert (tmp_path / "labels" / "classes.txt").read_text().split() == names
    back = read_yolo_dir(tmp_path / "img", tmp_path / "labels", names)
    assert [b.id for b in back] == ["x", "y"]
    assert _close(back[0].target.boxes[0], exs[0].target.boxes[0])
    assert back[1].target.boxes == ()


def test_coco_round_trip(tmp_path: Path) -> None:
    _image(tmp_path / "b.jpg", (640, 480))
    data = {
        "images": [
            {"id": 7, "file_name": "a.jpg", "width": 200, "height": 100},
            {"id": 8, "file_name": "b.jpg", "width": 0, "height": 0},  # size read from the file
            {"id": 9, "file_name": "c.jpg", "width": 50, "height": 50},  # no annotations: a negative
        ],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 3, "bbox": [20, 10, 100, 50], "iscrowd": 0},
            {"id": 2, "image_id": 8, "category_id": 5, "bbox": [0, 0, 320, 240], "iscrowd": 1, "score": 0.7},
        ],
        "categories": [{"id": 3, "name": "cat"}, {"id": 5, "name": "dog"}],
    }
    exs = parse_coco(json.dumps(data), image_root=tmp_path)
    assert [e.id for e in exs] == ["7", "8", "9"]
    assert _close(exs[0].target.boxes[0], Box(0.1, 0.1, 0.5, 0.5, "cat"))
    assert _close(exs[1].target.boxes[0], Box(0.0, 0.0, 0.5, 0.5, "dog"))
    assert exs[1].target.boxes[0].score == pytest.approx(0.7)
    assert exs[1].meta["coco_iscrowd"] == [True]
    assert exs[2].target.boxes == ()
    out = to_coco(exs, categories=["cat", "dog"])
    assert [i["width"] for i in out["images"]] == [200, 640, 50]
    assert out["annotations"][0]["bbox"] == [20.0, 10.0, 100.0, 50.0]
    assert out["annotations"][1]["iscrowd"] == 1
    again = parse_coco(out, image_root=tmp_path)
    for a, b in zip(again, exs, strict=True):
        assert len(a.target.boxes) == len(b.target.boxes)
        assert all(_close(x, y) for x, y in zip(a.target.boxes, b.target.boxes, strict=True))
    with pytest.raises(InputError, match="category_id"):
        parse_coco({"images": [{"id": 1, "width": 1, "height": 1}],
                    "annotations": [{"id": 1, "image_id": 1, "category_id": 2, "bbox": [0, 0, 1, 1]}]})
    with pytest.raises(InputError, match="JSON"):
        parse_coco("{nope")


def test_formats_agree() -> None:
    """VOC -> Example -> YOLO -> Example -> COCO -> Example keeps the boxes."""
    ex = parse_voc(VOC.format(w=200, h=100))
    names = ["dog", "raccoon"]
    via_yolo = Example(target=Target(boxes=tuple(parse_yolo(to_yolo(ex.target.boxes, names), names))),
                       meta={"width": 200, "height": 100}, id="pic")
    [via_coco] = parse_coco(to_coco([via_yolo]))
    for a, b in zip(via_coco.target.boxes, ex.target.boxes, strict=True):
        assert _close(a, b, tol=1e-5)


def test_box_helpers() -> None:
    b = box_from_corners(110, 70, 10, 20, 200, 100, "x")  # corners in any order
    assert _close(b, Box(0.05, 0.2, 0.5, 0.5, "x"))
    assert box_corners(b, 200, 100) == (10, 20, 110, 70)
    assert clip_box(Box(-0.5, 0.5, 1.0, 1.0, "x")) == Box(0.0, 0.5, 0.5, 0.5, "x")
    assert clip_box(Box(1.2, 0.0, 0.1, 0.1, "x")) is None
    with pytest.raises(InputError):
        box_from_corners(0, 0, 1, 1, 0, 10, "x")
    with pytest.raises(MediaError):
        image_size("/nonexistent/file.png")


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data/raccoon_detection not present")
def test_raccoon_voc_files_parse() -> None:
    exs = read_voc_dir(SHARED / "annotations", SHARED / "images")
    assert len(exs) == 200
    assert sum(len(e.target.boxes) for e in exs) == 217
    assert {b.label for e in exs for b in e.target.boxes} == {"raccoon"}
    assert all(0 <= b.x <= 1 and 0 <= b.y <= 1 and b.x + b.width <= 1.001 for e in exs for b in e.target.boxes)
