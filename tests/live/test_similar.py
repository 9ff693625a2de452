""""Pull the tasks most similar to this one" in a real Label Studio (issue 15).

``labelpilot index build NAME --from-project P`` indexes every task of the project (read through Label Studio's
export with the token); ``labelpilot index similar NAME --task T --to-project P`` imports one prediction per
task under the version ``similar-to-<T>`` with the cosine similarity as its score. The annotator selects that
version as the project's model version and sorts the Data Manager by "Prediction score": done here through
the same API the UI uses (``PATCH /api/projects/{id}``, ``GET /api/tasks?query={"ordering": ...}``).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from .helpers import make_project
from .lsenv import labelpilot_executable
from .validation import LabelConfig, assert_valid_predictions

TOPIC_CONFIG = """<View>
  <Text name="text" value="$text"/>
  <Choices name="topic" toName="text" choice="single">
    <Choice value="food"/>
    <Choice value="sport"/>
    <Choice value="weather"/>
  </Choices>
</View>"""
CFG = LabelConfig.parse(TOPIC_CONFIG)
TEXTS = {
    "food": ["Simmer the tomato sauce for twenty minutes, then stir in fresh basil.",
             "Knead the bread dough until smooth and let it rise for an hour.",
             "This noodle soup recipe needs ginger, garlic and a little soy sauce.",
             "Whisk the eggs with sugar before folding in the flour for the cake.",
             "把土豆切块，和牛肉一起炖两个小时。",
             "Roast the vegetables with olive oil and salt until golden."],
    "sport": ["The striker scored twice in the second half to win the football match.",
              "She won the tennis final in three sets after saving a match point.",
              "The marathon runners crossed the finish line in under two hours.",
              "The basketball team lost in overtime after a late three-pointer.",
              "他在游泳比赛中打破了世界纪录。",
              "The cyclist attacked on the last mountain climb of the race."],
    "weather": ["Heavy rain and strong winds are expected along the coast tonight.",
                "Tomorrow will be sunny with a high of twenty-eight degrees.",
                "A snowstorm closed the mountain roads and schools stayed shut.",
                "Fog will lift by noon, followed by scattered afternoon showers.",
                "明天有大雨，气温将下降到十度左右。",
                "The heatwave continues with temperatures above forty degrees."],
}


def _needs_encoder() -> None:
    from labelpilot.encoders import encoder_problem

    if encoder_problem():
        pytest.skip(f"text encoder unavailable: {encoder_problem()}")
    pytest.importorskip("faiss", reason="similarity search needs faiss (the retrieval extra)")


def run_cli(ls_server, data_dir: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "300", "LABEL_STUDIO_URL": ls_server.url,
           "LABEL_STUDIO_API_KEY": ls_server.legacy_token}
    out = subprocess.run([str(labelpilot_executable()), "index", *args, "--data-dir", str(data_dir)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert (out.returncode == 0) == ok, f"exit {out.returncode}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


def last_json(stdout: str) -> dict:
    return json.loads(stdout[stdout.index("{"):])


def test_similar_tasks_sort_the_data_manager(ls, ls_server, tmp_path: Path):
    _needs_encoder()
    items = [(text, topic) for topic, texts in TEXTS.items() for text in texts]
    project = make_project(ls, "live similar", TOPIC_CONFIG, [{"text": t} for t, _ in items])
    topic_of = {tid: topic for tid, (_, topic) in zip(project.task_ids, items, strict=True)}
    data = tmp_path / "lp-data"

    built = last_json(run_cli(ls_server, data, "build", "tasks", "--from-project", str(project.id)).stdout)
    assert built["count"] == len(items) and built["failed"] == 0 and built["kind"] == "text", built

    anchor = project.task_ids[0]  # a cooking text
    pushed = last_json(run_cli(ls_server, data, "similar", "tasks", "--task", str(anchor),
                               "--to-project", str(project.id)).stdout)
    version = f"similar-to-{anchor}"
    assert pushed["model_version"] == version and pushed["created"] == pushed["scored"] == len(items), pushed

    preds = [p for p in ls.predictions(project=project.id) if p["model_version"] == version]
    assert sorted(p["task"] for p in preds) == project.task_ids
    assert_valid_predictions(preds, CFG, project.tasks)  # an empty result, a numeric score
    assert all(0.0 <= p["score"] <= 1.0 for p in preds)
    assert {p["task"]: p["score"] for p in preds}[anchor] == 1.0

    # the annotator's view: that version selected, tasks sorted by prediction score, the most similar first
    ls.patch(f"/api/projects/{project.id}", json={"model_version": version})
    query = json.dumps({"ordering": ["-tasks:predictions_score"]})
    tasks = ls.get("/api/tasks", params={"project": project.id, "fields": "all", "page_size": 100,
                                         "query": query})["tasks"]
    order = [t["id"] for t in tasks]
    scores = [t.get("predictions_score") for t in tasks]
    shown = [(o, topic_of[o], round(s, 3)) for o, s in zip(order[:8], scores[:8], strict=True)]
    print(f"\n[live] similar to {anchor}: {shown}")
    assert order[0] == anchor and scores == sorted(scores, reverse=True), (order, scores)
    same = sum(topic_of[t] == "food" for t in order[1:6])
    assert same >= 3, f"only {same} of the 5 nearest tasks share the anchor's topic: {shown}"
    by_topic = {topic: [s for o, s in zip(order, scores, strict=True) if topic_of[o] == topic and o != anchor]
                for topic in TEXTS}
    mean = {topic: sum(v) / len(v) for topic, v in by_topic.items()}
    assert mean["food"] > max(mean["sport"], mean["weather"]), mean

    # a second anchor with --k: only the k nearest get a score; the first version is left alone
    other = project.task_ids[6]  # a sport text
    pushed = last_json(run_cli(ls_server, data, "similar", "tasks", "--task", str(other), "--k", "4",
                               "--to-project", str(project.id)).stdout)
    assert pushed["scored"] == pushed["created"] == 4 and pushed["top"][0] == {"task": other, "score": 1.0}
    got = [p for p in ls.predictions(project=project.id) if p["model_version"] == f"similar-to-{other}"]
    assert len(got) == 4 and sum(topic_of[p["task"]] == "sport" for p in got) >= 3, got
    assert len([p for p in ls.predictions(project=project.id) if p["model_version"] == version]) == len(items)

    # bad input: a task that is not in the index, a data field the tasks do not have
    bad = run_cli(ls_server, data, "similar", "tasks", "--task", "999999", "--to-project", str(project.id), ok=False)
    assert "999999" in bad.stdout + bad.stderr
    bad = run_cli(ls_server, data, "build", "other", "--from-project", str(project.id), "--text-col", "body",
                  ok=False)
    assert "data.body" in bad.stdout + bad.stderr
