"""Benchmark the Label Studio backend over HTTP: /predict latency (1 task and batches of 100) and the
serving process's memory, with a text-linear model trained on TNEWS.

    .venv/bin/python bench/serve_latency.py [--data ../shared/data] [--train-limit 0] [--n 1000]

Label Studio opens a new connection for every call, so single-task latency is measured that way
("new connection") and also with keep-alive.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from benchutil import wait_healthy

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

CONFIG = """<View>
  <Text name="sentence" value="$sentence"/>
  <Text name="keywords" value="$keywords"/>
  <Choices name="label" toName="sentence">{choices}</Choices>
</View>"""
UID = "1.1700000000"


def load_tnews(path: Path, limit: int) -> list[dict]:
    rows = [json.loads(line) for line in path.open(encoding="utf-8")]
    return rows[:limit] if limit else rows


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--train-limit", type=int, default=0, help="0 = all 53k rows")
    ap.add_argument("--n", type=int, default=1000, help="single-task requests")
    ap.add_argument("--batches", type=int, default=100, help="100-task requests")
    args = ap.parse_args()
    tnews = args.data / "tnews"
    if not (tnews / "train.json").exists():
        sys.exit(f"TNEWS not found under {tnews} (../shared/data is needed for this benchmark)")

    from labelpilot.jobs.state import ProjectStore
    from labelpilot.jobs.training import model_name, train_bundle
    from labelpilot.registry import Registry

    train = load_tnews(tnews / "train.json", args.train_limit)
    dev = load_tnews(tnews / "dev.json", 0)
    labels = sorted({r["label_desc"] for r in train})
    config = CONFIG.format(choices="".join(f'<Choice value="{lab}"/>' for lab in labels))
    tasks = [
        {"id": i, "data": {"sentence": r["sentence"], "keywords": r["keywords"]},
         "annotations": [{"id": i, "result": [{"from_name": "label", "to_name": "sentence", "type": "choices",
                                               "value": {"choices": [r["label_desc"]]}}]}]}
        for i, r in enumerate(train)
    ]
    data_dir = Path(tempfile.mkdtemp(prefix="lp-bench-"))
    t0 = time.perf_counter()
    bundle, report = train_bundle(config, tasks)
    train_s = time.perf_counter() - t0
    Registry(data_dir / "registry").register(model_name(UID), bundle, report=report)
    ProjectStore(data_dir).upsert_project(UID, label_config=config)

    port = 9300 + os.getpid() % 500
    log = (data_dir / "server.log").open("w")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "labelpilot"), "serve", "--port", str(port), "--data-dir", str(data_dir),
         "--log-level", "warning"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
        body_of = lambda rows: {  # noqa: E731
            "tasks": [{"id": i, "data": {"sentence": r["sentence"], "keywords": r["keywords"]}} for i, r in rows],
            "label_config": config, "project": UID,
        }
        # warm-up (loads the model once)
        httpx.post(url + "/predict", json=body_of([(0, dev[0])]), timeout=60).raise_for_status()
        single_new, single_keep, batch = [], [], []
        for i in range(args.n):  # a new TCP connection per request, as Label Studio does
            row = dev[i % len(dev)]
            payload = json.dumps(body_of([(i, row)])).encode()
            t = time.perf_counter()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("POST", "/predict", body=payload, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
            conn.close()
            single_new.append(time.perf_counter() - t)
            assert resp.status == 200 and json.loads(data)["results"][0]["result"]
        with httpx.Client() as client:
            for i in range(args.n):
                payload = json.dumps(body_of([(i, dev[i % len(dev)])]))
                t = time.perf_counter()
                r = client.post(url + "/predict", content=payload, headers={"Content-Type": "application/json"})
                single_keep.append(time.perf_counter() - t)
            for b in range(args.batches):
                rows = [(j, dev[(b * 100 + j) % len(dev)]) for j in range(100)]
                payload = json.dumps(body_of(rows))
                t = time.perf_counter()
                r = client.post(url + "/predict", content=payload, headers={"Content-Type": "application/json"})
                batch.append(time.perf_counter() - t)
                assert len(r.json()["results"]) == 100
        status = Path(f"/proc/{proc.pid}/status").read_text()
        rss = {k: int(line.split()[1]) / 1024 for line in status.splitlines()
               for k in ("VmRSS", "VmHWM") if line.startswith(k + ":")}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    out = {
        "train_rows": len(train), "train_seconds_in_process": round(train_s, 1), "metrics": report.metrics,
        "single_new_conn_ms": {"p50": pct(single_new, 50) * 1e3, "p99": pct(single_new, 99) * 1e3},
        "single_keepalive_ms": {"p50": pct(single_keep, 50) * 1e3, "p99": pct(single_keep, 99) * 1e3},
        "batch100_ms": {"p50": pct(batch, 50) * 1e3, "p99": pct(batch, 99) * 1e3,
                        "mean_per_task": statistics.mean(batch) * 10},
        "serving_rss_mb": round(rss["VmRSS"], 1), "serving_peak_rss_mb": round(rss["VmHWM"], 1),
        "load": os.getloadavg(),
    }
    print(json.dumps(out, indent=1))
    (ROOT / "bench" / "out").mkdir(exist_ok=True)
    (ROOT / "bench" / "out" / "serve_latency.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
