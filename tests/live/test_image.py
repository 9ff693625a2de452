"""Image classification (``<Choices>`` on ``<Image>``) end to end: the backend downloads uploaded
images from Label Studio (``/data/upload/...``) with the token LS gave it at /setup."""

from __future__ import annotations

import pytest

from .corpus import IMAGE_CONFIG, png_bytes
from .helpers import NewVersionWaiter, Project, connect
from .validation import LabelConfig, assert_valid_predictions

CFG = LabelConfig.parse(IMAGE_CONFIG)
COLOURS = {"red": (220, 30, 30), "blue": (30, 40, 220)}
PER_COLOUR = 8
N_ANNOTATED_PER_COLOUR = 6


@pytest.fixture(scope="module")
def backend(labelpilot):
    return labelpilot.start("image", LABELPILOT_RETRAIN_EVERY=0)


def colour_result(colour: str) -> list[dict]:
    return [{"from_name": "colour", "to_name": "image", "type": "choices", "value": {"choices": [colour.title()]}}]


def test_image_classification_with_uploaded_files(ls, backend):
    created = ls.create_project("live image", IMAGE_CONFIG, min_annotations_to_start_training=0)
    files = {
        f"{colour}_{i:02d}.png": png_bytes(32, 24, rgb, noise_seed=i)
        for i in range(PER_COLOUR)
        for colour, rgb in COLOURS.items()
    }
    ls.import_files(created["id"], files, "image/png")
    tasks = {t["id"]: t["data"] for t in ls.tasks(created["id"])}
    assert len(tasks) == len(files)
    assert all(d["image"].startswith("/data/upload/") for d in tasks.values()), list(tasks.values())[:2]
    project = Project(
        id=created["id"],
        uid=ls.project_uid(created["id"]),
        label_config=IMAGE_CONFIG,
        task_ids=sorted(tasks),
        tasks=tasks,
        gold={tid: ("red" if "red_" in d["image"] else "blue") for tid, d in tasks.items()},
    )
    ml = connect(ls, project, backend, title="labelpilot image")  # /setup accepts an <Image> config
    initial = ls.ml_backend(ml["id"])["model_version"]

    done = {"red": 0, "blue": 0}
    for tid in project.task_ids:
        colour = project.gold[tid]
        if done[colour] < N_ANNOTATED_PER_COLOUR:
            ls.annotate(tid, colour_result(colour))
            done[colour] += 1
            project.annotated_ids.append(tid)
    waiter = NewVersionWaiter(ls, ml["id"], backend, project.uid)
    ls.train(ml["id"])
    after = waiter.wait(timeout=240)
    version = after["model_version"]
    assert version != initial and after["state"] == "CO", after

    ls.retrieve_predictions(project.id)
    preds = [p for p in ls.predictions(project=project.id) if p["model_version"] == version]
    assert len(preds) == len(project.task_ids)
    assert_valid_predictions(preds, CFG, project.tasks, allow_empty=False)
    right = sum(p["result"][0]["value"]["choices"][0].lower() == project.gold[p["task"]] for p in preds)
    assert right >= 0.75 * len(preds), f"{right}/{len(preds)} solid-colour images classified right"
