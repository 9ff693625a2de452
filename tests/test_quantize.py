"""``labelpilot export --quantize int8``: a small image classifier exported with its backbone quantized (static
QDQ, calibrated on its training images), smaller on disk, loaded and predicting like the fp32 model, served by
``labelpilot serve-model`` over HTTP; bad requests leave no folder behind."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.conftest import LABELPILOT, free_port

pytest.importorskip("torch", reason="the vision extra is not installed")
pytest.importorskip("efficientnet_lite_pytorch", reason="the vision extra is not installed")
pytest.importorskip("onnxruntime.quantization", reason="onnxruntime's quantization tools are missing")
Image = pytest.importorskip("PIL.Image")

from labelpilot.batch import export_model, read_export, train_file  # noqa: E402
from labelpilot.errors import InputError  # noqa: E402
from labelpilot.quantize import QUANT_GRAPH  # noqa: E402
from labelpilot.registry import Registry  # noqa: E402

COLOURS = {"red": (220, 40, 30), "blue": (30, 50, 220)}


def folder(root: Path, per_class: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    for name, rgb in COLOURS.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            px = (rng.random((72, 96, 3)) * 60).astype(np.uint8) + np.array(rgb, dtype=np.uint8) // 2
            x = int(rng.integers(0, 60))
            px[20:50, x : x + 30] = rgb
            Image.fromarray(px).save(root / name / f"{name}{i}.png")
    return root


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Registry, Path]:
    root = tmp_path_factory.mktemp("quant")
    train, test = folder(root / "train", 8, 1), folder(root / "test", 5, 2)
    reg = Registry(root / "dd" / "registry")
    train_file(reg, "colours", train, kind="image", options={"Cs": [30.0], "flip_augment": False}, val_size=0)
    # through the command line, as an operator would
    done = subprocess.run([str(LABELPILOT), "export", "colours", "int8", "--quantize", "int8", "--calibration",
                           str(train), "--eval-data", str(test), "--data-dir", "dd"], cwd=root, capture_output=True,
                          text=True, env={**os.environ, "COLUMNS": "200"}, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "size_ratio" in done.stdout
    return root / "int8", reg, test


def test_int8_export_is_smaller_and_predicts(exported: tuple[Path, Registry, Path]) -> None:
    out, _, test = exported
    manifest = json.loads((out / "manifest.json").read_text())
    info = manifest["quantization"]["controls"]["label"]
    assert info["quantized"] and info["method"] == "static" and info["calibration_inputs"] == 16
    assert info["graph_bytes_int8"] < 0.35 * info["graph_bytes_fp32"] and info["size_ratio"] < 0.35
    assert info["latency_ms_fp32"] > 0 and info["latency_ms_int8"] > 0
    assert info["n_eval"] == 10 and info["accuracy_fp32"] >= 0.9 and info["accuracy_int8"] >= 0.9
    model_dir = next((out / "model").rglob(QUANT_GRAPH)).parent
    assert (model_dir / QUANT_GRAPH).stat().st_size == info["graph_bytes_int8"]
    _, bundle = read_export(out)
    model = bundle.models["label"]
    assert model._features.graph is not None and model._features.net.engine == "onnx-int8"
    from labelpilot.data.types import Example

    files = sorted(test.rglob("*.png"))
    preds = model.predict([Example(image=str(f)) for f in files])
    assert sum(p.labels == (f.parent.name,) for p, f in zip(preds, files, strict=True)) >= 9


def test_serve_model_serves_the_int8_model(exported: tuple[Path, Registry, Path], tmp_path: Path) -> None:
    out, _, test = exported
    _, bundle = read_export(out)
    from labelpilot.data.types import Example

    red = sorted((test / "red").glob("*.png"))[0]
    local = bundle.models["label"].predict([Example(image=str(red))])[0]
    port = free_port()
    env = {**os.environ, "LABELPILOT_API_TOKENS": "tok"}
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen([str(LABELPILOT), "serve-model", str(out), "--port", str(port)], env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        auth = {"Authorization": "Bearer tok"}
        body = {"id": "r", "image": base64.b64encode(red.read_bytes()).decode()}
        got = httpx.post(f"{url}/v1/models/colours/predict", json=body, headers=auth, timeout=60).json()
        assert got["class_name"] == "red" and got["id"] == "r"
        # the served probabilities are the int8 model's
        assert abs(got["class_probs"]["red"] - local.probs["red"]) < 1e-4
        bad = httpx.post(f"{url}/v1/models/colours/predict", json={"image": "%%%"}, headers=auth, timeout=30)
        assert bad.status_code == 422 and bad.json()["field"] == "instances.0.image"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def test_bad_quantize_requests_leave_nothing(exported: tuple[Path, Registry, Path], tmp_path: Path) -> None:
    _, reg, _ = exported
    with pytest.raises(InputError) as err:
        export_model(reg, "colours", tmp_path / "a", quantize="int4")
    assert err.value.field == "quantize"
    with pytest.raises(InputError) as err:
        export_model(reg, "colours", tmp_path / "b", quantize="int8")  # no calibration images
    assert err.value.field == "calibration"
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert not list(tmp_path.glob(".*.tmp"))


def _boxes_registry(tmp_path: Path) -> tuple[Registry, list[Any]]:
    """A small detector (yellow squares on noise) registered as "boxes"; its images in ``tmp_path/imgs``."""
    from labelpilot.data.types import Box, Example, Target
    from labelpilot.models.bundle import Bundle
    from labelpilot.schema import make_label_config, parse_label_config

    rng = np.random.default_rng(3)
    (tmp_path / "imgs").mkdir()
    examples = []
    for i in range(8):
        px = (rng.random((96, 96, 3)) * 80).astype(np.uint8)
        x, y = int(rng.integers(0, 56)), int(rng.integers(0, 56))
        px[y : y + 40, x : x + 40] = (250, 240, 30)
        path = tmp_path / "imgs" / f"s{i}.png"
        Image.fromarray(px).save(path)
        examples.append(Example(image=str(path), target=Target(boxes=(Box(x / 96, y / 96, 40 / 96, 40 / 96, "sq"),))))
    schema = parse_label_config(make_label_config(["sq"], kind="rectangles"))
    from labelpilot.models.vision.detector import ImageDetector

    model = ImageDetector(schema.controls[0], image_size=64, variants=2, epochs=2, batch_size=8)
    model.fit(examples)
    reg = Registry(tmp_path / "reg")
    reg.register("boxes", Bundle(schema, {"label": model}))
    return reg, examples


def test_detector_backbone_quantized(tmp_path: Path) -> None:
    from labelpilot.quantize import QUANT_TAPS

    reg, examples = _boxes_registry(tmp_path)
    out = export_model(reg, "boxes", tmp_path / "int8", quantize="int8", calibration=tmp_path / "imgs")
    info = json.loads((out / "manifest.json").read_text())["quantization"]["controls"]["label"]
    assert info["graph"] == QUANT_TAPS and info["size_ratio"] < 0.35 and info["calibration_inputs"] == 8
    assert info["keep_fp32"] == "block1" and "stem" in info["kept_fp32"][0]  # the detector's default
    assert any("blocks.1/" in n for n in info["kept_fp32"]) and not any("blocks.2/" in n for n in info["kept_fp32"])
    _, bundle = read_export(out)
    loaded = bundle.models["label"]
    assert loaded.taps_graph_ is not None and loaded._taps().engine == "onnx-int8"
    preds = loaded.predict(examples[:2], threshold=0.0)
    assert all(p.error is None for p in preds)
    # the stem and the nodes at the outputs kept in fp32: larger than all-int8, still loads and predicts
    kept = export_model(reg, "boxes", tmp_path / "kept", quantize="int8", calibration=tmp_path / "imgs",
                        keep_fp32="boundary")
    kinfo = json.loads((kept / "manifest.json").read_text())["quantization"]["controls"]["label"]
    assert any("stem" in n for n in kinfo["kept_fp32"]) and kinfo["graph_bytes_int8"] > info["graph_bytes_int8"]
    assert all(p.error is None for p in read_export(kept)[1].models["label"].predict(examples[:2]))
    with pytest.raises(InputError) as err:
        export_model(reg, "boxes", tmp_path / "bad", quantize="int8", calibration=tmp_path / "imgs", keep_fp32="x")
    assert err.value.field == "keep_fp32" and not (tmp_path / "bad").exists()
    plain = export_model(reg, "boxes", tmp_path / "plain", quantize="int8", calibration=tmp_path / "imgs",
                         keep_fp32="none")
    assert "kept_fp32" not in json.loads((plain / "manifest.json").read_text())["quantization"]["controls"]["label"]


def _write_voc(folder: Path, examples: list[Any]) -> Path:
    """``folder/annotations`` (Pascal VOC, the labelled format ``--guard-data`` reads) beside ``folder/images``."""
    from labelpilot.data.vision_formats import to_voc

    (folder / "annotations").mkdir(parents=True)
    (folder / "images").symlink_to(Path(examples[0].image).parent)
    for ex in examples:
        (folder / "annotations" / (Path(ex.image).stem + ".xml")).write_text(to_voc(ex, size=(96, 96)))
    return folder / "annotations"


def test_detector_accuracy_guard(tmp_path: Path) -> None:
    from labelpilot.quantize import GUARD_ORDER

    reg, examples = _boxes_registry(tmp_path)
    guard = _write_voc(tmp_path / "guard", examples[4:])
    kw: dict[str, Any] = {"quantize": "int8", "calibration": tmp_path / "imgs", "keep_fp32": "auto",
                          "guard_data": guard}
    # a tolerance no candidate can meet (a planted drop): every candidate is tried in order, the best is kept
    out = export_model(reg, "boxes", tmp_path / "strict", guard_tolerance=-1000.0, **kw)
    info = json.loads((out / "manifest.json").read_text())["quantization"]["controls"]["label"]
    g = info["guard"]
    assert [t["keep_fp32"] for t in g["trials"]] == list(GUARD_ORDER) and g["passed"] is False
    assert g["n_guard"] == 4 and g["choice"] == info["keep_fp32"]
    assert g["choice"] == min(reversed(g["trials"]), key=lambda t: t["drop_points"])["keep_fp32"]
    assert any("blocks.0/" in n for n in info["kept_fp32"]) == (g["choice"] != "stem")
    assert all(p.error is None for p in read_export(out)[1].models["label"].predict(examples[:2]))
    # a tolerance every candidate meets: the first (smallest, fastest) one, after one trial
    loose = export_model(reg, "boxes", tmp_path / "loose", guard_tolerance=1000.0, **kw)
    linfo = json.loads((loose / "manifest.json").read_text())["quantization"]["controls"]["label"]
    assert linfo["guard"]["choice"] == "stem" and len(linfo["guard"]["trials"]) == 1 and linfo["guard"]["passed"]
    # fixed choices: the first block(s) kept fp32 by name
    b1 = export_model(reg, "boxes", tmp_path / "b1", quantize="int8", calibration=tmp_path / "imgs",
                      keep_fp32="block1")
    kept = json.loads((b1 / "manifest.json").read_text())["quantization"]["controls"]["label"]["kept_fp32"]
    assert any("blocks.1/" in n for n in kept) and not any("blocks.2/" in n for n in kept)
    with pytest.raises(InputError) as err:  # auto without validation data: a clear error, nothing written
        export_model(reg, "boxes", tmp_path / "noguard", quantize="int8", calibration=tmp_path / "imgs",
                     keep_fp32="auto")
    assert err.value.field == "guard_data" and not (tmp_path / "noguard").exists()
