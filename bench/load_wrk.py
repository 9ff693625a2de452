"""Load benchmark of the Label Studio backend's /predict (issue 11, item 12): wrk against `labelpilot serve`.

    .venv/bin/python bench/load_wrk.py [--data ../shared/data] [--workers 1] [--duration 60] [--connections 32]

Trains a text-linear model on TNEWS (a small built-in set without ../shared/data), registers it for a Label
Studio project, starts `labelpilot serve` on 127.0.0.1 and drives `POST /predict` with one-task bodies in
Label Studio's shape, first from one connection (the single-client latency), then from 32 (wrk -t2 -c32).
wrk (Debian package `wrk`) only ever targets 127.0.0.1. Prints and writes bench/out/load_wrk.json.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchutil import run_wrk, wait_healthy, wrk_script

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
LP = Path(sys.executable).parent / "labelpilot"
UID = "1.1700000000"
CONFIG = """<View>
  <Text name="sentence" value="$sentence"/>
  <Choices name="label" toName="sentence">{choices}</Choices>
</View>"""



def training_rows(data: Path, limit: int) -> list[tuple[str, str]]:
    path = data / "tnews" / "train.json"
    if path.exists():
        rows = [json.loads(line) for _, line in zip(range(limit), path.open(encoding="utf-8"), strict=False)]
        return [(r["sentence"], r["label_desc"]) for r in rows]
    words = {"pos": "good great fine love", "neg": "bad awful poor hate"}
    return [(f"sample {i} {words['pos' if i % 2 else 'neg'].split()[i % 4]}", "pos" if i % 2 else "neg")
            for i in range(400)]


def prepare(work: Path, data: Path, limit: int) -> tuple[Path, str, list[tuple[str, str]]]:
    """A data dir whose project UID serves a trained text-linear model."""
    from labelpilot.jobs.state import ProjectStore
    from labelpilot.jobs.training import model_name, train_bundle
    from labelpilot.registry import Registry

    rows = training_rows(data, limit)
    config = CONFIG.format(choices="".join(f'<Choice value="{lab}"/>' for lab in sorted({r[1] for r in rows})))
    tasks = [{"id": i, "data": {"sentence": text},
              "annotations": [{"id": i, "result": [{"from_name": "label", "to_name": "sentence", "type": "choices",
                                                    "value": {"choices": [label]}}]}]}
             for i, (text, label) in enumerate(rows)]
    bundle, report = train_bundle(config, tasks)
    data_dir = work / "data"
    Registry(data_dir / "registry").register(model_name(UID), bundle, report=report)
    ProjectStore(data_dir).upsert_project(UID, label_config=config)
    return data_dir, config, rows


def server_processes(pgid: int) -> int:
    """Processes in the server's process group (uvicorn's supervisor, its workers, training children)."""
    n = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        n += int(fields[2]) == pgid  # field 5 of /proc/<pid>/stat: the process group
    return n


def warm_up(url: str, body: str, timeout: float = 120) -> None:
    """Until 50 calls in a row, each on a new connection (so every worker process is reached), take < 50 ms:
    each worker has loaded the model."""
    deadline, fast = time.monotonic() + timeout, 0
    host, port = url.rsplit("/", 1)[1].split(":")
    while fast < 50:
        assert time.monotonic() < deadline, "the server did not warm up"
        t0 = time.perf_counter()
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        conn.request("POST", "/predict", body=body.encode(), headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        assert resp.status == 200 and json.loads(data)["results"][0]["result"], data
        fast = fast + 1 if time.perf_counter() - t0 < 0.05 else 0
    time.sleep(1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--workers", type=int, default=1, help="uvicorn worker processes of labelpilot serve")
    ap.add_argument("--duration", type=int, default=60)
    ap.add_argument("--single-duration", type=int, default=20)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--train-limit", type=int, default=20000)
    args = ap.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed (apt-get install wrk)")
    work = Path(tempfile.mkdtemp(prefix="lp-wrk-"))
    data_dir, config, rows = prepare(work, args.data, args.train_limit)
    bodies = work / "bodies.txt"
    with bodies.open("w", encoding="utf-8") as fh:
        for i, (text, _) in enumerate(rows[:500]):
            fh.write(json.dumps({"tasks": [{"id": i, "data": {"sentence": text}}], "project": UID,
                                 "label_config": config}, ensure_ascii=False) + "\n")
    lua = work / "predict.lua"
    wrk_script(lua, bodies)
    port = 9500 + os.getpid() % 400
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [str(LP), "serve", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir),
         "--workers", str(args.workers), "--log-level", "warning"],
        stdout=(work / "server.log").open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        wait_healthy(url, proc, timeout=60)
        warm_up(url, bodies.read_text().splitlines()[0])
        load_before = os.getloadavg()
        single = run_wrk(lua, url + "/predict", 1, 1, args.single_duration)
        print("1 client:", single, flush=True)
        many = run_wrk(lua, url + "/predict", 2, args.connections, args.duration)
        load_after = os.getloadavg()
        print(f"{args.connections} clients:", many, flush=True)
        procs = server_processes(proc.pid)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    out = {
        "workers": args.workers, "server_processes": procs, "train_rows": len(rows), "single": single,
        f"c{args.connections}": many, "p99_ratio": round(many["p99_ms"] / single["p99_ms"], 1),
        "load_before": load_before, "load_after": load_after,
    }
    print(json.dumps(out, indent=1))
    (ROOT / "bench" / "out").mkdir(exist_ok=True)
    (ROOT / "bench" / "out" / f"load_wrk_w{args.workers}.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
