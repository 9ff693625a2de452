"""Document fields end to end on a real Label Studio: the OCR template (boxes + a per-region TextArea) on
uploaded report pages; before any annotation, field values found next to their printed keys (zero-shot), then,
after training on annotated pages, field boxes with their text; Label Studio stores both as valid predictions."""

from __future__ import annotations

from pathlib import Path

import pytest

from labelpilot.data.types import Box, Example, Prediction, Target
from tests.test_document import OCR_CONFIG as CONFIG
from tests.test_document import _langs, _needs_ocr

from .helpers import NewVersionWaiter, Project, connect
from .validation import LabelConfig, assert_valid_predictions

pytest.importorskip("rapidocr", reason="document models need rapidocr (the 'ocr' extra)")

CFG = LabelConfig.parse(CONFIG)
N_ANNOTATED = 10


@pytest.fixture(scope="module")
def backend(labelpilot, tmp_path_factory):
    return labelpilot.start("documents", LABELPILOT_RETRAIN_EVERY=0,
                            LABELPILOT_CACHE_DIR=str(tmp_path_factory.mktemp("ocr-cache")))


def _prediction(result: list[dict]) -> Prediction:
    boxes = [Box(r["value"]["x"] / 100, r["value"]["y"] / 100, r["value"]["width"] / 100, r["value"]["height"] / 100,
                 r["value"]["rectanglelabels"][0], r.get("score")) for r in result if r["type"] == "rectanglelabels"]
    return Prediction(boxes=tuple(boxes))


def _gold(page) -> Example:
    return Example(target=Target(boxes=tuple(
        Box(b[0] / page.width, b[1] / page.height, (b[2] - b[0]) / page.width, (b[3] - b[1]) / page.height, lab)
        for lab, b, _ in page.fields)))


def _retrieve_all(ls, project_id: int, task_ids: list[int], version: str, tries: int = 4) -> list[dict]:
    """Retrieve predictions until every task has one of ``version``: on a loaded machine a batch of OCR pages
    answers the pages it finished within LABELPILOT_PREDICT_TIMEOUT and leaves the rest without a prediction,
    which Label Studio asks for again (as it does when the Data Manager shows them)."""
    preds: list[dict] = []
    for _ in range(tries):
        ls.retrieve_predictions(project_id, task_ids)
        preds = [p for p in ls.predictions(project=project_id) if p["model_version"] == version]
        if {p["task"] for p in preds} >= set(task_ids):
            break
    return preds


def test_ocr_template_project(ls, backend, tmp_path):
    from labelpilot.models.document import field_scores
    from labelpilot.testing.synthdocs import make_pages

    _needs_ocr()
    langs = _langs()
    pages = make_pages(tmp_path / "pages", 14, langs=langs, layouts=("form", "grid"), seed=7)
    by_name = {Path(p.path).name: p for p in pages}
    created = ls.create_project("live documents", CONFIG, min_annotations_to_start_training=0)
    ls.import_files(created["id"], {n: Path(p.path).read_bytes() for n, p in by_name.items()
                                    if n.endswith(".png")}, "image/png")
    ls.import_files(created["id"], {n: Path(p.path).read_bytes() for n, p in by_name.items()
                                    if n.endswith(".jpg")}, "image/jpeg")
    tasks = {t["id"]: t["data"] for t in ls.tasks(created["id"])}
    assert len(tasks) == len(pages) and all(d["ocr"].startswith("/data/upload/") for d in tasks.values())
    page_of = {tid: next(p for n, p in by_name.items() if d["ocr"].endswith("-" + n)) for tid, d in tasks.items()}
    project = Project(id=created["id"], uid=ls.project_uid(created["id"]), label_config=CONFIG,
                      task_ids=sorted(tasks), tasks=tasks)
    ml = connect(ls, project, backend, title="labelpilot documents")
    initial = ls.ml_backend(ml["id"])["model_version"]
    # before any annotation: field values next to their printed keys (zero-shot), valid for Label Studio
    assert initial.startswith("zero-shot-doc-fields"), initial
    before = _retrieve_all(ls, project.id, project.task_ids, initial)
    assert_valid_predictions(before, CFG, project.tasks, allow_empty=True)
    first = {p["task"]: _prediction(p["result"]) for p in before}  # a task without a stored prediction got none
    assert len(first) >= len(project.task_ids) // 2, sorted(first)
    zero_shot = field_scores([first.get(t, Prediction()) for t in project.task_ids],
                             [_gold(page_of[t]) for t in project.task_ids])
    assert zero_shot["f1"] >= 0.5, zero_shot

    for tid in project.task_ids[:N_ANNOTATED]:
        ls.annotate(tid, page_of[tid].ls_result(from_name="label", to_name="image", transcription="transcription"))
        project.annotated_ids.append(tid)
    waiter = NewVersionWaiter(ls, ml["id"], backend, project.uid)
    ls.train(ml["id"])
    after = waiter.wait(timeout=300)
    version = after["model_version"]
    assert version != initial and version.startswith("doc-fields-v1-") and after["state"] == "CO", after

    rest = project.task_ids[N_ANNOTATED:]
    preds = _retrieve_all(ls, project.id, rest, version)
    assert sorted(p["task"] for p in preds) == sorted(rest)
    assert_valid_predictions(preds, CFG, project.tasks, allow_empty=False)
    for p in preds:  # every box came with its text, under the same region id
        rect_ids = {r["id"] for r in p["result"] if r["type"] == "rectanglelabels"}
        text_ids = {r["id"] for r in p["result"] if r["type"] == "textarea"}
        assert rect_ids and rect_ids == text_ids
    scores = field_scores([_prediction(p["result"]) for p in preds], [_gold(page_of[p["task"]]) for p in preds])
    assert scores["f1"] >= 0.7, scores
    # Label Studio keeps an unknown control attribute such as model_family (it ignores it)
    chosen = CONFIG.replace('<RectangleLabels name="label" toName="image">',
                            '<RectangleLabels name="label" toName="image" model_family="doc-fields">')
    assert ls.create_project("live documents (model_family)", chosen)["id"]
