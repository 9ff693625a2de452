"""Training from files other than tables: Pascal VOC detection (train, then mAP on another folder) and CoNLL
spans."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from labelpilot.batch import evaluate_file, train_file
from labelpilot.data.types import Box, Example, Target
from labelpilot.registry import Registry


def voc_dataset(root: Path, n: int, seed: int) -> Path:
    from PIL import Image

    from labelpilot.data.vision_formats import to_voc

    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    for i in range(n):
        w, h = 160, 120
        pixels = (rng.random((h, w, 3)) * 90).astype(np.uint8)
        s = int(rng.integers(24, 44))
        x, y = int(rng.integers(0, w - s)), int(rng.integers(0, h - s))
        pixels[y : y + s, x : x + s] = (250, 250, 40)
        img = root / "images" / f"sq{i}.png"
        Image.fromarray(pixels).save(img)
        ex = Example(image=str(img), target=Target(boxes=(Box(x / w, y / h, s / w, s / h, "square"),)))
        (root / "annotations" / f"sq{i}.xml").write_text(to_voc(ex, size=(w, h)), encoding="utf-8")
    return root / "annotations"


def test_train_and_evaluate_detection_from_voc(tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="the vision extra is not installed")
    registry = Registry(tmp_path / "dd")
    train = voc_dataset(tmp_path / "train", 20, seed=0)
    test = voc_dataset(tmp_path / "test", 8, seed=1)
    mv, report, bad = train_file(registry, "squares", train, kind="boxes", val_size=0,
                                 options={"image_size": 128, "variants": 4, "epochs": 15, "batch_size": 16})
    assert mv.families == ["image-detector"] and report.labels == ["square"] and not bad
    result = evaluate_file(registry, "squares", test)
    assert result["metrics"]["n"] == 8 and result["metrics"]["map50"] >= 0.6
    assert registry.evaluations("squares")[0]["result"]["metrics"]["map50"] == result["metrics"]["map50"]


def test_train_spans_from_conll(tmp_path: Path) -> None:
    lines = []
    for i in range(12):
        name, city = ["Alice", "Bob", "Carol"][i % 3], ["Paris", "Berlin", "Rome"][i % 3]
        for tok, tag in ((name, "B-PER"), ("lives", "O"), ("in", "O"), (city, "B-LOC"), (".", "O")):
            lines.append(f"{tok}\t{tag}")
        lines.append("")
    conll = tmp_path / "train.conll"
    conll.write_text("\n".join(lines), encoding="utf-8")
    registry = Registry(tmp_path / "dd")
    mv, report, _ = train_file(registry, "ner", conll, kind="spans", val_size=0)
    assert mv.families == ["ner-crf"] and sorted(report.labels) == ["LOC", "PER"]
    result = evaluate_file(registry, "ner", conll)
    assert result["metrics"]["f1"] >= 0.9
