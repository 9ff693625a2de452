"""/predict latency and serving memory with the text encoder on and off (a real ``labelpilot serve``).

    PYTHONPATH=src .venv/bin/python bench/encoder_serve.py [--train 2000] [--n 300] [--batches 20]

Trains text-linear on the first ``--train`` TNEWS rows (with the encoder, so the few-shot head is mixed in),
serves it, and measures over HTTP with keep-alive: 1-task requests on texts never seen (each needs encoding),
100-task requests on texts never seen ("first sight"), the same 100-task requests again (vectors cached),
and the zero-shot path of a second, untrained project. Then the same on a server with
``LABELPILOT_ENCODER=none``; the difference of the two servers' peak RSS is what the encoder adds.
"""

from __future__ import annotations

import argparse
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
from labelpilot.jobs.state import ProjectStore
from labelpilot.jobs.training import model_name, train_bundle
from labelpilot.registry import Registry
from textdata import label_config, load

ROOT = Path(__file__).resolve().parents[1]
UID, ZS_UID = "1.1700000000", "2.1700000000"


def p50(values: list[float]) -> float:
    return round(statistics.median(values) * 1e3, 2)


def body(texts: list[str], config: str, uid: str) -> dict:
    return {"tasks": [{"id": i, "data": {"text": t}} for i, t in enumerate(texts)], "label_config": config,
            "project": uid}


def measure(data_dir: Path, config: str, dev: list[str], args: argparse.Namespace, **env: str) -> dict:
    port = 9800 + os.getpid() % 150
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "labelpilot"), "serve", "--port", str(port), "--data-dir", str(data_dir),
         "--log-level", "warning"], stdout=(data_dir / "server.log").open("w"), stderr=subprocess.STDOUT,
        start_new_session=True, env={**os.environ, **env},
    )
    url = f"http://127.0.0.1:{port}"
    out: dict = {}
    try:
        wait_healthy(url, proc, timeout=60)
        with httpx.Client(base_url=url, timeout=60) as client:
            client.post("/setup", json={"project": UID, "schema": config}).raise_for_status()
            out["setup"] = client.post("/setup", json={"project": ZS_UID, "schema": config}).json()
            client.post("/predict", json=body(["预热"], config, UID)).raise_for_status()
            pos = 0

            def timed(texts: list[str], uid: str) -> float:
                t = time.perf_counter()
                r = client.post("/predict", json=body(texts, config, uid))
                r.raise_for_status()
                return time.perf_counter() - t

            single = []
            for _ in range(args.n):
                single.append(timed([dev[pos]], UID))
                pos += 1
            batches = [dev[pos + 100 * b : pos + 100 * (b + 1)] for b in range(args.batches)]
            pos += 100 * args.batches
            first = [timed(b, UID) for b in batches]
            again = [timed(b, UID) for b in batches]
            zs_batches = [dev[pos + 100 * b : pos + 100 * (b + 1)] for b in range(args.batches)]
            zs_first = [timed(b, ZS_UID) for b in zs_batches]
            zs_single = [timed([dev[pos + 100 * args.batches + i]], ZS_UID) for i in range(args.n // 3)]
            out["version"] = client.post("/predict", json=body(["x"], config, ZS_UID)).json()["results"][0][
                "model_version"]
        status = Path(f"/proc/{proc.pid}/status").read_text()
        hwm = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
        out.update({
            "trained_1_task_new_text_ms_p50": p50(single), "trained_100_first_sight_ms_p50": p50(first),
            "trained_100_cached_ms_p50": p50(again), "zero_shot_100_first_sight_ms_p50": p50(zs_first),
            "zero_shot_1_task_ms_p50": p50(zs_single), "peak_rss_mb": round(hwm / 1024, 1),
        })
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", type=int, default=2000)
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--batches", type=int, default=20)
    args = ap.parse_args()
    print("load average", Path("/proc/loadavg").read_text().strip())
    texts, labels = load("tnews", "train")
    dev, _ = load("tnews", "dev")
    config = label_config("tnews", True)
    tasks = [{"id": i, "data": {"text": t}, "annotations": [{"id": i, "result": [
        {"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [lab]}}]}]}
        for i, (t, lab) in enumerate(zip(texts[: args.train], labels[: args.train], strict=True))]
    results = {}
    for name, env in (("encoder", {}), ("no_encoder", {"LABELPILOT_ENCODER": "none"})):
        data_dir = Path(tempfile.mkdtemp(prefix=f"lp-enc-{name}-"))
        if name == "no_encoder":
            os.environ["LABELPILOT_ENCODER"] = "none"
            from labelpilot import encoders

            encoders.reset()
        bundle, report = train_bundle(config, tasks)
        Registry(data_dir / "registry").register(model_name(UID), bundle, report=report)
        ProjectStore(data_dir).upsert_project(UID, label_config=config)
        results[name] = measure(data_dir, config, dev, args, **env)
        results[name]["mix"] = report.metrics.get("encoder_mix")
        print(name, json.dumps(results[name], ensure_ascii=False), flush=True)
    results["encoder_adds_rss_mb"] = round(results["encoder"]["peak_rss_mb"] - results["no_encoder"]["peak_rss_mb"], 1)
    print("encoder adds", results["encoder_adds_rss_mb"], "MB")
    print("load average", Path("/proc/loadavg").read_text().strip())
    (ROOT / "bench" / "out").mkdir(exist_ok=True)
    (ROOT / "bench" / "out" / "encoder_serve.json").write_text(json.dumps(results, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
