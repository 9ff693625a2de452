"""/predict latency through the server for a ~100-character Chinese text with a trained ner-crf model.

    .venv/bin/python bench/ner.py --dataset cluener --model-dir /tmp/ner-models    # trains and saves
    .venv/bin/python bench/ner_serve_latency.py --model-dir /tmp/ner-models/cluener

Registers the saved model as a Label Studio project's version, starts `labelpilot serve` and sends N one-task
requests, each on a new TCP connection (as Label Studio does).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from benchutil import wait_healthy  # noqa: E402
from labelpilot.jobs.state import ProjectStore  # noqa: E402
from labelpilot.jobs.training import model_name  # noqa: E402
from labelpilot.models.bundle import Bundle  # noqa: E402
from labelpilot.models.ner_crf import NerCrfModel  # noqa: E402
from labelpilot.registry import Registry  # noqa: E402
from labelpilot.schema import make_label_config, parse_label_config  # noqa: E402
from ner import LATENCY_TEXT  # noqa: E402

LABELS = ["address", "book", "company", "game", "government", "movie", "name", "organization", "position", "scene"]
UID = "7.1700000000"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", type=Path, required=True)
    ap.add_argument("--n", type=int, default=500)
    args = ap.parse_args()
    config = make_label_config(LABELS, kind="labels")
    control = parse_label_config(config).controls[0]
    model = NerCrfModel.load(args.model_dir, control)
    data = Path(tempfile.mkdtemp(prefix="lp-nerlat-"))
    Registry(data / "registry").register(model_name(UID), Bundle(parse_label_config(config), {control.name: model}))
    ProjectStore(data).upsert_project(UID, label_config=config)
    port = 9700 + os.getpid() % 200
    proc = subprocess.Popen([str(ROOT / ".venv/bin/labelpilot"), "serve", "--port", str(port), "--data-dir",
                             str(data), "--log-level", "warning"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc)
        text = LATENCY_TEXT["cluener"][:100]
        body = json.dumps({"tasks": [{"id": 1, "data": {"text": text}}], "label_config": config,
                           "project": UID}).encode()
        times = []
        for i in range(args.n + 20):
            t = time.perf_counter()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("POST", "/predict", body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            out = json.loads(resp.read())
            conn.close()
            if i >= 20:
                times.append(time.perf_counter() - t)
        assert out["results"][0]["result"], out
        times.sort()
        print(json.dumps({"chars": len(text), "n": len(times), "p50_ms": round(times[len(times) // 2] * 1e3, 2),
                          "p99_ms": round(times[int(0.99 * (len(times) - 1))] * 1e3, 2),
                          "spans": len(out["results"][0]["result"]), "load": os.getloadavg()}))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)


if __name__ == "__main__":
    main()
