"""Video classification (``video-frames``): synthetic videos of moving shapes written with OpenCV's VideoWriter
(mp4 and avi), trained and evaluated from files; corrupt and oversized videos get an error and the rest of the
batch is served; ``<Video>`` + ``<Choices>`` projects through a real server on loopback."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import wait_for

pytest.importorskip("torch", reason="the vision extra is not installed")
pytest.importorskip("efficientnet_lite_pytorch", reason="the vision extra is not installed")
cv2 = pytest.importorskip("cv2", reason="OpenCV (opencv-python-headless) is not installed")

from labelpilot.batch import evaluate_file, predict_file, train_file  # noqa: E402
from labelpilot.data.types import Example, Target  # noqa: E402
from labelpilot.models.base import family_for  # noqa: E402
from labelpilot.models.video import VideoClassifier, probe  # noqa: E402
from labelpilot.registry import Registry  # noqa: E402
from labelpilot.schema import TaskKind, parse_label_config  # noqa: E402

SHAPES = ("circle", "square", "triangle")
COLOURS = {"circle": (40, 40, 230), "square": (230, 60, 30), "triangle": (40, 200, 40)}  # BGR
FAST = {"frames": 4, "Cs": [30.0], "cv_folds": 2}


def draw(frame: np.ndarray, shape: str, x: int, y: int, r: int) -> None:
    colour = COLOURS[shape]
    if shape == "circle":
        cv2.circle(frame, (x, y), r, colour, -1)
    elif shape == "square":
        cv2.rectangle(frame, (x - r, y - r), (x + r, y + r), colour, -1)
    else:
        pts = np.array([[x, y - r], [x - r, y + r], [x + r, y + r]], dtype=np.int32)
        cv2.fillPoly(frame, [pts], colour)


def write_video(path: Path, shapes: dict[str, tuple[int, int]], seed: int, *, n: int = 12, size: int = 96) -> Path:
    """A short video: each shape moves across a noisy background; ``shapes`` maps a shape to the frame range
    [first, last) in which it is visible."""
    rng = np.random.default_rng(seed)
    fourcc = cv2.VideoWriter_fourcc(*("mp4v" if path.suffix == ".mp4" else "MJPG"))
    writer = cv2.VideoWriter(str(path), fourcc, 8.0, (size, size))
    assert writer.isOpened(), f"OpenCV cannot write {path.suffix}"
    bg = (rng.random((size, size, 3)) * 70 + 40).astype(np.uint8)
    motion = {s: (rng.integers(15, size - 15, 2), rng.integers(-4, 5, 2), int(rng.integers(10, 16))) for s in shapes}
    for t in range(n):
        frame = bg.copy()
        for shape, (first, last) in shapes.items():
            if first <= t < last:
                (x0, y0), (dx, dy), r = motion[shape]
                draw(frame, shape, int(np.clip(x0 + dx * t, r, size - r)), int(np.clip(y0 + dy * t, r, size - r)), r)
        writer.write(frame)
    writer.release()
    return path


def video_folder(root: Path, per_class: int, seed: int) -> Path:
    for k, shape in enumerate(SHAPES):
        (root / shape).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            suffix = ".mp4" if i % 2 else ".avi"
            write_video(root / shape / f"{shape}{i}{suffix}", {shape: (0, 12)}, seed * 1000 + k * 100 + i)
    return root


def test_schema_reads_video_choices_with_text() -> None:
    config = ('<View><Video name="video" value="$video"/><Text name="title" value="$title"/>'
              '<Choices name="tag" toName="video" choice="multiple"><Choice value="a"/><Choice value="b"/>'
              '</Choices></View>')
    (control,) = parse_label_config(config).controls
    assert control.kind is TaskKind.VIDEO_CHOICES and control.multiple and control.pair_key == "title"
    assert family_for(control).name == "video-frames"


def test_train_and_evaluate_from_folders(tmp_path: Path) -> None:
    train = video_folder(tmp_path / "train", 6, seed=1)
    test = video_folder(tmp_path / "test", 4, seed=2)
    reg = Registry(tmp_path / "reg")
    mv, report, bad = train_file(reg, "shapes", train, kind="video", options=FAST, val_size=0)
    assert not bad and report.n_train == 18 and mv.families == ["video-frames"]
    result = evaluate_file(reg, "shapes", test)
    assert result["metrics"]["accuracy"] >= 0.9, result["metrics"]
    # batch prediction straight from a folder of videos, with a corrupt file among them
    (test / "circle" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x17" * 500)
    out = tmp_path / "pred.jsonl"
    stats = predict_file(reg, "shapes", test, out, workers=1)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert stats.predicted == len(rows) == 13
    by_id = {r["id"]: r for r in rows}
    assert by_id["circle/broken.mp4"]["error"] and not by_id["circle/broken.mp4"]["predictions"]
    good = [r for r in rows if not r.get("error")]
    assert len(good) == 12 and sum(r["predictions"] == r["id"].split("/")[0] for r in good) >= 11


def test_multilabel_and_limits(tmp_path: Path) -> None:
    config = ('<View><Video name="video" value="$video"/><Choices name="tag" toName="video" choice="multiple">'
              '<Choice value="circle"/><Choice value="square"/></Choices></View>')
    control = parse_label_config(config).controls[0]
    rng = np.random.default_rng(5)

    def examples(n: int, seed: int) -> list[Example]:
        out = []
        for i in range(n):
            which = [("circle",), ("square",), ("circle", "square")][i % 3]
            # a shape that shows up for a few frames only still counts (max pooling over time)
            spans = {s: ((0, 12) if len(which) == 1 else (int(rng.integers(0, 6)), 12)) for s in which}
            path = write_video(tmp_path / f"m{seed}-{i}.mp4", spans, seed * 100 + i)
            out.append(Example(image=str(path), target=Target(labels=which), id=str(i)))
        return out

    model = VideoClassifier(control, **FAST)
    model.fit(examples(24, 1))
    test = examples(9, 2)
    preds = model.predict(test)
    exact = np.mean([set(p.labels) == set(ex.target.labels) for p, ex in zip(preds, test, strict=True)])
    assert exact >= 0.85, [(p.labels, ex.target.labels) for p, ex in zip(preds, test, strict=True)]
    model.save(tmp_path / "saved")
    again = VideoClassifier.load(tmp_path / "saved", control)
    assert [p.labels for p in again.predict(test)] == [p.labels for p in preds]

    # limits: an oversized file, too many pixels per frame, too long, and a corrupt file -> errors, others served
    big = write_video(tmp_path / "big.avi", {"circle": (0, 12)}, 7, size=128)

    def error(**limits: float) -> str | None:
        return VideoClassifier(control, **FAST, **limits)._features.compute([str(big)])[1][0]

    assert error() is None and probe(str(big), again.options)["frames"] == 12
    assert "larger than 2000 bytes" in error(max_bytes=2_000)
    assert "pixels" in error(max_pixels=100 * 100)
    assert "max_seconds" in error(max_seconds=1.0)
    assert "max_frames" in error(max_frames=10)
    (tmp_path / "junk.mp4").write_bytes(b"not a video at all" * 50)
    batch = [Example(image=str(tmp_path / "junk.mp4")), test[0], Example(image=str(tmp_path / "missing.mp4"))]
    out = again.predict(batch)
    assert out[0].error and out[2].error and out[1].error is None and out[1].labels == preds[0].labels


CONFIG = ('<View><Video name="video" value="$video"/><Choices name="shape" toName="video">'
          '<Choice value="circle"/><Choice value="square"/><Choice value="triangle"/></Choices></View>')
UID = "31.1700000000"
PROJECT = {"id": 31, "created_at": "2023-11-14T22:13:20Z", "label_config": CONFIG}


def test_video_project_through_the_server(start_server, fake_ls, tmp_path: Path) -> None:
    fake_ls.tokens.add("Token t")
    tasks = []
    for i in range(12):
        shape = SHAPES[i % 3]
        path = f"/data/upload/31/v{i}.mp4"
        fake_ls.files[path] = write_video(tmp_path / f"v{i}.mp4", {shape: (0, 12)}, 300 + i).read_bytes()
        tasks.append({"id": i + 1, "data": {"video": path}, "annotations": [{"id": 900 + i, "result": [
            {"from_name": "shape", "to_name": "video", "type": "choices", "value": {"choices": [shape]}}]}]})
    fake_ls.tasks[31] = tasks
    fake_ls.files["/data/upload/31/new.avi"] = write_video(tmp_path / "new.avi", {"square": (0, 12)}, 999).read_bytes()
    fake_ls.files["/data/upload/31/corrupt.mp4"] = b"\x00\x00\x00\x18ftypisom" + b"\x01" * 300
    server = start_server(LABELPILOT_RETRAIN_EVERY="0")
    setup = {"project": UID, "schema": CONFIG, "hostname": fake_ls.url, "access_token": "t",
             "extra_params": {"model_options": {"video-frames": FAST}}}
    with server.client(timeout=60) as client:
        v0 = client.post("/setup", json=setup).json()["model_version"]
        assert client.post("/webhook", json={"action": "START_TRAINING", "project": PROJECT}).status_code == 201
        v1 = wait_for(lambda: (v := client.post("/setup", json=setup).json()["model_version"]) != v0 and v,
                      timeout=180, what="the video model")
        assert v1.startswith("video-frames-v1-")
        batch = [
            {"id": 50, "data": {"video": "/data/upload/31/new.avi"}},
            {"id": 51, "data": {"video": "/data/upload/31/corrupt.mp4"}},
            {"id": 52, "data": {"video": "http://example.invalid/not-allowed.mp4"}},
        ]
        out = client.post("/predict", json={"tasks": batch, "label_config": CONFIG, "project": UID}).json()
        # the same model on the /v1 predict service: a base64 video, and a bad one naming the field
        video = base64.b64encode(fake_ls.files["/data/upload/31/new.avi"]).decode()
        v1_url = f"/v1/models/ls-project-{UID}/predict"
        one = client.post(v1_url, json={"id": "n", "video": video}).json()
        assert one["class_name"] == "square" and one["id"] == "n"
        bad = client.post(v1_url, json={"image": video})
        assert bad.status_code == 422 and bad.json()["field"] == "instances.0.video"
    results = out["results"]
    assert len(results) == 3 and all(r["model_version"] == v1 for r in results)
    (region,) = results[0]["result"]
    assert region["type"] == "choices" and region["value"] == {"choices": ["square"]}
    assert region["from_name"] == "shape" and region["to_name"] == "video"
    assert results[1]["result"] == [] and results[2]["result"] == []
    assert "corrupt.mp4" in server.log.read_text(errors="replace")


def test_text_beside_the_video_is_fused(tmp_path: Path) -> None:
    from labelpilot.encoders import encoder_problem

    if encoder_problem():
        pytest.skip(f"text encoder unavailable: {encoder_problem()}")
    config = ('<View><Video name="video" value="$video"/><Text name="title" value="$title"/>'
              '<Choices name="topic" toName="video"><Choice value="food"/><Choice value="sport"/></Choices></View>')
    control = parse_label_config(config).controls[0]
    titles = {
        "food": ["cooking pasta at home", "how to bake bread", "a spicy noodle soup recipe", "grilling vegetables",
                 "chocolate cake in ten minutes", "making sushi rolls", "我在厨房做红烧肉", "breakfast pancakes"],
        "sport": ["football match highlights", "tennis final last set", "marathon runners at the finish",
                  "basketball dunk contest", "cycling race in the mountains", "swimming world record",
                  "篮球比赛精彩集锦", "boxing title fight"],
    }
    # the same four videos for both topics: only the text can tell them apart
    videos = [write_video(tmp_path / f"t{i}.mp4", {SHAPES[i % 3]: (0, 12)}, 700 + i) for i in range(4)]
    examples = [Example(image=str(videos[i % 4]), text_pair=t, target=Target(labels=(topic,)))
                for topic, ts in titles.items() for i, t in enumerate(ts)]
    test = [ex for i, ex in enumerate(examples) if i % 4 == 3]
    train = [ex for i, ex in enumerate(examples) if i % 4 != 3]
    model = VideoClassifier(control, **FAST)
    report = model.fit(train)
    assert "fused with text" in report.notes[0]
    preds = model.predict(test)
    assert np.mean([p.labels == ex.target.labels for p, ex in zip(preds, test, strict=True)]) >= 0.75
    model.save(tmp_path / "m")
    again = VideoClassifier.load(tmp_path / "m", control)
    assert [p.labels for p in again.predict(test)] == [p.labels for p in preds]
    off = VideoClassifier(control, **FAST, text="off")
    assert "fused" not in off.fit(train).notes[0]
