"""Retrain wall time through the real server, at 20 / 200 / 1,000 annotations, warm and cold trainer.

    PYTHONPATH=src .venv/bin/python bench/retrain_speed.py [--sizes 20,200,1000] [--families text-linear,ner-crf]
        [--modes warm,cold] [--server-pythonpath /work/main/src --modes cold]   # the code of another tree

One server per (family, mode), fresh data dir, ``LABELPILOT_RETRAIN_EVERY=0``. Annotations arrive as
Label Studio's bulk ``ANNOTATIONS_CREATED`` webhook (TNEWS titles for text-linear, CLUENER sentences for
ner-crf); at each size, ``START_TRAINING`` is sent twice (the first retrain at a size may include the warm
trainer's start-up; the second is the steady state) and timed from the webhook to the job's end
(``wall``), with the job's own start-to-end (``job``) and the fit seconds from its report (``fit``), then
the first ``/predict`` after the new version (it loads the bundle in the server). Meanwhile another thread
calls ``/health`` on a new connection every 50 ms (``/training`` is polled every 50 ms); its p95 and max
are reported.

``--in-process``: the warm trainer's work alone (preload, then text-linear fit + registry write at each
size), wall and CPU seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from labelpilot.prelabel import datasets as dsets  # noqa: E402
from labelpilot.prelabel.server import ServedBackend, project_object  # noqa: E402

DATASET = {"text-linear": "tnews", "ner-crf": "cluener"}


class HealthProbe(threading.Thread):
    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.stop, self.lat = url, threading.Event(), []

    def run(self) -> None:
        while not self.stop.is_set():
            t0 = time.perf_counter()
            try:
                with httpx.Client(timeout=5) as c:
                    c.get(self.url + "/health")
                self.lat.append(time.perf_counter() - t0)
            except httpx.HTTPError:
                self.lat.append(5.0)
            time.sleep(0.05)


def retrain(b: ServedBackend, project: dict, uid: str, config: str, probe_task: dict, timeout: float) -> dict:
    before = {j["id"] for j in b.training(uid)["jobs"]}
    probe = HealthProbe(b.url)
    probe.start()
    t0 = time.perf_counter()
    b.start_training(project)
    while True:
        jobs = [j for j in b.training(uid)["jobs"] if j["id"] not in before]
        if jobs and jobs[0]["state"] not in ("queued", "running"):
            break
        if time.perf_counter() - t0 > timeout:
            raise RuntimeError(f"no retrain within {timeout} s: {b.tail()}")
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    t1 = time.perf_counter()
    b.predict(uid, config, probe_task)
    first_predict = time.perf_counter() - t1
    probe.stop.set()
    probe.join()
    job = jobs[0]
    lat = sorted(probe.lat)
    return {
        "state": job["state"], "error": job["error"], "wall_s": wall,
        "job_s": (job["finished"] - job["started"]) if job["started"] else None,
        "fit_s": (job["report"] or {}).get("seconds"), "first_predict_s": first_predict,
        "health_p95_ms": 1000 * lat[int(0.95 * (len(lat) - 1))] if lat else None,
        "health_max_ms": 1000 * lat[-1] if lat else None, "health_calls": len(lat),
    }


def run(family: str, mode: str, sizes: list[int], root: Path, server_pythonpath: str | None, timeout: float,
        audit: str = "start") -> list:
    ds = dsets.load(DATASET[family], root, max(sizes) + 1)
    config = ds.label_config
    env = {"LABELPILOT_RETRAIN_EVERY": "0", "LABELPILOT_WARM_TRAINER": "1" if mode == "warm" else "0",
           "LABELPILOT_AUDIT": audit}
    if server_pythonpath:
        env["PYTHONPATH"] = server_pythonpath
    project = project_object(1, config, f"retrain {family}")
    uid = "1.1700000000"
    out = []
    with ServedBackend(env) as b:
        b.setup(uid, config)
        time.sleep(2.0)  # let a warm trainer finish its start-up, as on a server that has been up a while
        sent = 0
        for n in sizes:
            anns = []
            for i in range(sent, n):
                task = {**ds.tasks[i], "project": 1}
                anns.append({"id": 100_000 + i, "result": ds.gold[i], "task": task, "project": 1,
                             "was_cancelled": False, "ground_truth": False})
            if anns:
                b.post("/webhook", {"action": "ANNOTATIONS_CREATED", "annotations": anns, "project": project})
            sent = n
            for rep in (1, 2):
                row = {"family": family, "mode": mode, "n": n, "rep": rep,
                       **retrain(b, project, uid, config, ds.tasks[-1], timeout)}
                print(json.dumps(row), flush=True)
                out.append(row)
    return out


def in_process(sizes: list[int], root: Path) -> None:
    """The warm trainer's work without the server: preload, then fit + register at each size, wall and CPU
    seconds (CPU time hardly depends on how many other processes share the cores)."""
    import tempfile

    from labelpilot.jobs.training import train_bundle
    from labelpilot.jobs.warm import preload
    from labelpilot.registry import Registry

    t, c = time.perf_counter(), time.process_time()
    preload()
    print(f"preload: wall {time.perf_counter() - t:.2f} s, cpu {time.process_time() - c:.2f} s")
    ds = dsets.load("tnews", root, max(sizes) + 1)
    tasks = [{**t, "annotations": [{"id": i + 1, "result": g}]}
             for i, (t, g) in enumerate(zip(ds.tasks, ds.gold, strict=True))]
    reg = Registry(Path(tempfile.mkdtemp()) / "registry")
    print("| annotations | fit wall s | fit cpu s | registry write wall s | stages |\n|---|---|---|---|---|")
    for n in [m for size in sizes for m in (size, size + 1)]:  # then one more annotation: the steady state
        t, c = time.perf_counter(), time.process_time()
        bundle, report = train_bundle(ds.label_config, tasks[:n])
        fit_wall, fit_cpu = time.perf_counter() - t, time.process_time() - c
        t = time.perf_counter()
        reg.register("bench", bundle, report=report, parent=None, promote=True)
        print(f"| {n} | {fit_wall:.2f} | {fit_cpu:.2f} | {time.perf_counter() - t:.3f} | {report.notes[-1]} |")
    print(f"load average: {os.getloadavg()}")


def table(rows: list[dict], load: str) -> str:
    lines = ["| family | trainer | annotations | retrain wall s (1st / 2nd) | job s | fit s | first /predict after, s "
             "| /health p95 / max ms |", "|---|---|---|---|---|---|---|---|"]
    keys = sorted({(r["family"], r["mode"], r["n"]) for r in rows}, key=lambda k: (k[0], k[1] != "cold", k[2]))
    for fam, mode, n in keys:
        rs = [r for r in rows if (r["family"], r["mode"], r["n"]) == (fam, mode, n)]
        r2 = rs[-1]

        def f(v: float | None) -> str:
            return "–" if v is None else f"{v:.2f}"

        walls = " / ".join(f(r["wall_s"]) for r in rs)
        health = f"{max(r['health_p95_ms'] or 0 for r in rs):.0f} / {max(r['health_max_ms'] or 0 for r in rs):.0f}"
        lines.append(f"| {fam} | {mode} | {n} | {walls} | {f(r2['job_s'])} | {f(r2['fit_s'])} | "
                     f"{f(r2['first_predict_s'])} | {health} |")
    return "\n".join(lines) + f"\n\nload average at the end: {load}\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="20,200,1000")
    ap.add_argument("--families", default="text-linear,ner-crf")
    ap.add_argument("--modes", default="cold,warm")
    ap.add_argument("--data", type=Path, default=None, help="the shared datasets (default: ../shared/data)")
    ap.add_argument("--server-pythonpath", default=None, help="PYTHONPATH for the server (another tree's src)")
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--out", type=Path, default=None, help="also write the rows as JSON here")
    ap.add_argument("--audit", default="start", choices=("start", "always", "off"),
                    help="LABELPILOT_AUDIT of the server: a Start Training job audits the labels after the new version"
                         " serves (the product's default 'start'); 'off' times the retrain alone")
    ap.add_argument("--in-process", action="store_true", help="text-linear fit + registry write, no server")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.data is None:
        from labelpilot.testing.corpora import default_data_root

        args.data = default_data_root()
    if args.in_process:
        in_process(sizes, args.data)
        return
    rows = []
    print(f"load average at the start: {os.getloadavg()}", flush=True)
    for family in args.families.split(","):
        why = dsets.missing(DATASET[family], args.data)
        if why:
            print(f"skipping {family}: {why}")
            continue
        for mode in args.modes.split(","):
            rows += run(family, mode, sizes, args.data, args.server_pythonpath, args.timeout, args.audit)
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    if args.out:
        args.out.write_text(json.dumps({"load_average": load, "rows": rows}, indent=1))
    print(table(rows, load))
    if rows:
        print("median wall:", statistics.median(r["wall_s"] for r in rows))


if __name__ == "__main__":
    main()
