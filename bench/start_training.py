"""Start Training on a 53k-task TNEWS project in a real Label Studio 1.23.2: button → new version's predictions.

    PYTHONPATH=src nice -n 5 .venv/bin/python bench/start_training.py [--root /tmp/lp-bench-st] [--tasks 53360]

Why a benchmark of its own: issue 14 asks for ≤ 30 s from Start Training to predictions of the new version on
a 53k-task project, which only a real Label Studio shows (its export and task-list costs are the question).
The first run imports ``tnews/train.json`` as tasks *with annotations* (LS JSON, one bulk import) into a Label
Studio started from the live suite's cached venv and template (``tests/live/lsenv.py``); its data dir stays in
``--root`` so re-runs skip the import. Each run starts a fresh ``labelpilot serve`` (own data dir), connects it
and presses Start Training twice: the first press has no copy yet (the full export); then ``--annotate`` new
annotations are made through the LS API (webhooks reach the backend) and the second press takes the incremental
path. For each press it prints: seconds from ``POST /api/ml/{id}/train`` until ``POST /predict`` of the backend
answers with the new ``model_version``, and the parts read from the job (queued → started, the sync note's check
and fetch, the job's own time, finished → first prediction).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.live import lsenv  # noqa: E402  (the live suite's LS venv, template and process helpers)
from tests.live.lsapi import LabelStudioAPI  # noqa: E402

DATA = Path(os.environ.get("LABELPILOT_SHARED_DATA", REPO.parent / "shared" / "data")) / "tnews"


def tnews_config() -> str:
    labels = [json.loads(line)["label_desc"] for line in (DATA / "labels.json").read_text().splitlines() if line]
    choices = "".join(f'<Choice value="{lab}"/>' for lab in labels)
    return f'<View><Text name="text" value="$text"/><Choices name="topic" toName="text">{choices}</Choices></View>'


def result(label: str) -> list[dict]:
    return [{"from_name": "topic", "to_name": "text", "type": "choices", "value": {"choices": [label]}}]


def start_ls(root: Path) -> lsenv.LabelStudioProcess:
    venv = lsenv.ensure_ls_venv()
    if not (root / "data").exists():
        return lsenv.start_label_studio(venv, root)
    port = lsenv.free_port()
    env = lsenv.ls_environment(root, root / "data", root / "files", port)
    cmd = [str(venv / "bin" / "label-studio"), "start", "--no-browser", "--data-dir", str(root / "data"),
           "--internal-host", "127.0.0.1", "--port", str(port)]
    base = f"http://127.0.0.1:{port}"
    proc, waited = lsenv._launch(cmd, env, root, root / "label-studio.log", base + "/health", 300.0, "Label Studio")
    return lsenv.LabelStudioProcess(base_url=base, port=port, root=root, data_dir=root / "data",
                                    files_root=root / "files", log_path=root / "label-studio.log", proc=proc,
                                    started_from_template=False, startup_seconds=waited, env=env)


def ensure_project(ls: LabelStudioAPI, root: Path, n: int) -> int:
    state = root / "project.json"
    if state.exists():
        return int(json.loads(state.read_text())["id"])
    rows = [json.loads(line) for line in DATA.joinpath("train.json").read_text().splitlines()[:n] if line.strip()]
    pid = ls.create_project("tnews 53k", tnews_config(), min_annotations_to_start_training=0)["id"]
    t0 = time.perf_counter()
    for i in range(0, len(rows), 10_000):
        tasks = [{"data": {"text": r["sentence"]}, "annotations": [{"result": result(r["label_desc"])}]}
                 for r in rows[i:i + 10_000]]
        ls.post(f"/api/projects/{pid}/import", json=tasks)
    print(f"imported {len(rows)} annotated tasks in {time.perf_counter() - t0:.1f} s")
    state.write_text(json.dumps({"id": pid}))
    return pid


def predict_version(backend_url: str, uid: str, task: dict) -> str | None:
    resp = httpx.post(f"{backend_url}/predict", json={"tasks": [task], "project": uid}, timeout=30)
    results = resp.json().get("results") or [] if resp.status_code == 200 else []
    return results[0].get("model_version") if results and isinstance(results[0], dict) else None


def press(ls: LabelStudioAPI, ml_id: int, backend_url: str, uid: str, task: dict) -> dict:
    """Start Training; poll /predict until a new version answers; the job's parts."""
    before = predict_version(backend_url, uid, task)
    t0 = time.time()
    ls.post(f"/api/ml/{ml_id}/train", expect=200)
    while (version := predict_version(backend_url, uid, task)) in (None, before):
        if time.time() - t0 > 900:
            raise SystemExit("no new version after 900 s")
        time.sleep(0.2)
    t_pred = time.time()
    job = httpx.get(f"{backend_url}/training", params={"project": uid}, timeout=10).json()["jobs"][0]
    notes = " | ".join((job.get("report") or {}).get("notes") or [])
    parts = {"total_s": round(t_pred - t0, 2), "queued_after_s": round(job["queued"] - t0, 2),
             "wait_s": round(job["started"] - job["queued"], 2), "job_s": round(job["finished"] - job["started"], 2),
             "to_first_predict_s": round(t_pred - job["finished"], 2), "version": version}
    for key, pat in (("check_s", r"check ([\d.]+) s"), ("fetch_s", r"fetch ([\d.]+) s"),
                     ("full_export_s", r"full export, ([\d.]+) s")):
        if m := re.search(pat, notes):
            parts[key] = float(m.group(1))
    parts["notes"] = notes
    return parts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=Path, default=Path("/tmp/lp-bench-st"))
    ap.add_argument("--tasks", type=int, default=53_360)
    ap.add_argument("--annotate", type=int, default=20)
    args = ap.parse_args()
    args.root.mkdir(parents=True, exist_ok=True)
    ls_proc = start_ls(args.root)
    backend = None
    try:
        ls = LabelStudioAPI(ls_proc.base_url, lsenv.LEGACY_TOKEN, timeout=1200)
        pid = ensure_project(ls, args.root, args.tasks)
        broot = Path(f"/tmp/lp-bench-st-backend-{int(time.time())}")
        backend = lsenv.start_backend(broot, {"LABELPILOT_RETRAIN_EVERY": "1000000", "LABELPILOT_RETRAIN_SCHEDULE": "",
                                              "LABEL_STUDIO_URL": ls_proc.base_url,
                                              "LABEL_STUDIO_API_KEY": lsenv.LEGACY_TOKEN})
        ml = ls.connect_backend(pid, backend.url, title=f"labelpilot {broot.name}")
        uid = ls.project_uid(pid)
        page = ls.get("/api/tasks", params={"project": pid, "page_size": args.annotate + 1})["tasks"]
        probe = {"id": page[0]["id"], "data": page[0]["data"]}
        out = {"load_before": os.getloadavg(), "first": press(ls, ml["id"], backend.url, uid, probe)}
        for t in page[1:]:
            ls.post(f"/api/tasks/{t['id']}/annotations", json={"result": result("news_sports")})
        out["second"] = press(ls, ml["id"], backend.url, uid, probe)
        out["load_after"] = os.getloadavg()
        print(json.dumps(out, indent=1, ensure_ascii=False))
    finally:
        if backend is not None:
            backend.stop()
        ls_proc.stop()


if __name__ == "__main__":
    main()
