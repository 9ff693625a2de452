"""Video classification (``<Choices>`` on ``<Video>``) end to end on a real Label Studio: synthetic videos of
moving shapes are uploaded to Label Studio (``/data/upload/...``), the backend downloads them with the /setup
token, trains ``video-frames`` on the annotated ones, and Label Studio stores one valid prediction per task; a
corrupt video gets an empty prediction while the rest of the batch is served."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tests.test_video import FAST, SHAPES, write_video

from .helpers import NewVersionWaiter, Project
from .validation import LabelConfig, assert_valid_predictions

VIDEO_CONFIG = """<View>
  <Video name="video" value="$video"/>
  <Choices name="shape" toName="video" choice="single">
    <Choice value="circle"/>
    <Choice value="square"/>
    <Choice value="triangle"/>
  </Choices>
</View>"""
CFG = LabelConfig.parse(VIDEO_CONFIG)
PER_SHAPE = 6
N_ANNOTATED_PER_SHAPE = 4
CORRUPT = "corrupt.mp4"


@pytest.fixture(scope="module")
def backend(labelpilot):
    return labelpilot.start("video", LABELPILOT_RETRAIN_EVERY=0)


def shape_result(shape: str) -> list[dict]:
    return [{"from_name": "shape", "to_name": "video", "type": "choices", "value": {"choices": [shape]}}]


def shape_of(data: dict) -> str | None:
    """The shape a task's video shows, from its uploaded file name (``/data/upload/<p>/<hex>-<shape>_<i>.mp4``)."""
    name = data["video"].rsplit("/", 1)[-1]
    return next((s for s in SHAPES if f"-{s}_" in name), None)


def test_video_classification_with_uploaded_files(ls, ls_server, backend, tmp_path: Path):
    created = ls.create_project("live video", VIDEO_CONFIG, min_annotations_to_start_training=0)
    files = {
        f"{shape}_{i:02d}.mp4": write_video(tmp_path / f"{shape}_{i:02d}.mp4", {shape: (0, 12)},
                                            seed=40 + 10 * k + i).read_bytes()
        for k, shape in enumerate(SHAPES)
        for i in range(PER_SHAPE)
    }
    files[CORRUPT] = b"\x00\x00\x00\x18ftypisom" + b"\x01" * 600  # an mp4 header, then junk
    ls.import_files(created["id"], files, "video/mp4")
    tasks = {t["id"]: t["data"] for t in ls.tasks(created["id"])}
    assert len(tasks) == len(files), tasks
    assert all(d["video"].startswith("/data/upload/") for d in tasks.values()), list(tasks.values())[:2]
    (corrupt_id,) = [tid for tid, d in tasks.items() if d["video"].endswith(CORRUPT)]
    project = Project(id=created["id"], uid=ls.project_uid(created["id"]), label_config=VIDEO_CONFIG,
                      task_ids=sorted(tasks), tasks=tasks,
                      gold={tid: shape_of(d) for tid, d in tasks.items() if tid != corrupt_id})

    # connect with fewer sampled frames (extra_params reach the backend in /setup): the live suite shares 2 cores
    ml = ls.post("/api/ml", {"url": backend.url, "project": project.id, "title": "labelpilot video",
                             "extra_params": {"model_options": {"video-frames": FAST}}}, expect=201)
    assert ml["state"] == "CO", ml
    assert any(h["url"].rstrip("/") == backend.url + "/webhook" for h in ls.webhooks(project.id))
    initial = ls.ml_backend(ml["id"])["model_version"]

    log_mark = ls_server.log_mark()
    done: Counter[str] = Counter()
    for tid in project.task_ids:
        shape = project.gold.get(tid)
        if shape is not None and done[shape] < N_ANNOTATED_PER_SHAPE:
            ls.annotate(tid, shape_result(shape))
            done[shape] += 1
            project.annotated_ids.append(tid)
    assert sum(done.values()) == N_ANNOTATED_PER_SHAPE * len(SHAPES)
    waiter = NewVersionWaiter(ls, ml["id"], backend, project.uid)
    ls.train(ml["id"])
    after = waiter.wait(timeout=300)
    version = after["model_version"]
    assert version != initial and version.startswith("video-frames-"), after
    assert after["state"] == "CO", after

    out = ls.retrieve_predictions(project.id)
    assert out["processed_items"] == len(project.task_ids), out
    preds = [p for p in ls.predictions(project=project.id) if p["model_version"] == version]
    per_task = Counter(p["task"] for p in preds)
    assert per_task == Counter(project.task_ids), f"one prediction per task expected, got {per_task}"
    assert_valid_predictions(preds, CFG, project.tasks)  # Choices on the Video object, labels of the config
    by_task = {p["task"]: p for p in preds}
    assert by_task[corrupt_id]["result"] == [], by_task[corrupt_id]  # the corrupt video: an empty prediction
    good = [by_task[tid] for tid in project.gold]
    assert all(p["result"] and 0.0 <= p["score"] <= 1.0 for p in good), [p for p in good if not p["result"]][:2]
    right = sum(p["result"][0]["value"]["choices"] == [project.gold[p["task"]]] for p in good)
    unseen = [p for p in good if p["task"] not in project.annotated_ids]
    right_unseen = sum(p["result"][0]["value"]["choices"] == [project.gold[p["task"]]] for p in unseen)
    assert right >= 0.9 * len(good) and right_unseen >= len(unseen) - 1, (
        f"{right}/{len(good)} right, {right_unseen}/{len(unseen)} of the unannotated videos")
    log = backend.log_path.read_text(errors="replace")  # the backend says which task's video was bad, and why
    assert any(f"task {corrupt_id}:" in line and "not a video" in line for line in log.splitlines()), log[-2000:]
    assert not ls_server.log_errors_about(backend.url, since=log_mark)
