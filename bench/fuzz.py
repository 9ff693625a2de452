"""Fuzz `labelpilot serve` and `labelpilot serve-model` with schemathesis against their own OpenAPI description.

    python bench/fuzz.py [--serve-examples 130] [--model-examples 80] [--seed 0] [--out bench/out/fuzz.json]
    python bench/fuzz.py --serve-examples 13 --phases examples,fuzzing --no-model --out smoke.json  # the smoke test

Starts the servers on loopback (fresh data dirs; `serve` with basic auth so the docs route is exercised the way
a deployment runs; training jobs may start and fail quickly: no Label Studio is reachable), runs the
schemathesis CLI (all phases: examples, coverage incl. negative data, fuzzing, stateful) with the
`not_a_server_error` check, and counts every request schemathesis sent from its HAR report, by status class.
`serve-model` is fuzzed twice: with generated model names (mostly 404s) and with the served model's name fixed,
so the predict code itself gets the generated bodies. Results go to bench/out/fuzz.json; the exit code is 1
when any 5xx was answered.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LP, SCHEMATHESIS = BIN / "labelpilot", BIN / "schemathesis"
AUTH = ("fuzz", "fuzz-pass")
TRAIN = [("great quality, fast delivery", "pos"), ("love it, works perfectly", "pos"), ("excellent value", "pos"),
         ("terrible, broke in a day", "neg"), ("awful, waste of money", "neg"), ("bad service, slow", "neg"),
         ("很满意，质量很好", "pos"), ("太差了，很失望", "neg")] * 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], env: dict[str, str], log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([*cmd, "--host", "127.0.0.1", "--port", str(port)], env=env, stdout=log.open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd[1]} exited {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    stop(proc)
    raise RuntimeError(f"{cmd[1]} not healthy in 60 s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def schemathesis(url: str, work: Path, name: str, examples: int, seed: int, *, auth: tuple[str, str] | None = None,
                 parameters: dict[str, str] | None = None, phases: str = "") -> dict[str, Any]:
    """One schemathesis run; returns the requests it sent, counted by status class and by operation."""
    har = work / f"{name}.har"
    config = work / f"{name}.toml"
    lines = ["[parameters]", *(f'"{k}" = "{v}"' for k, v in (parameters or {}).items())] if parameters else []
    config.write_text("\n".join(lines) + "\n")
    cmd = [str(SCHEMATHESIS), "--config-file", str(config), "run", f"{url}/openapi.json", "--checks",
           "not_a_server_error", "--max-examples", str(examples), "--seed", str(seed), "--workers", "1",
           "--request-timeout", "30", "--report", "har", "--report-har-path", str(har), "--no-color"]
    if auth:
        cmd += ["--auth", ":".join(auth)]
    if phases:
        cmd += ["--phases", phases]
    t0 = time.monotonic()
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=work)
    seconds = time.monotonic() - t0
    (work / f"{name}.out").write_text(run.stdout + run.stderr)
    entries = json.loads(har.read_text())["log"]["entries"] if har.exists() else []
    classes = collections.Counter(f"{e['response']['status'] // 100}xx" for e in entries)
    ops = collections.Counter(f"{e['request']['method']} {_route(e['request']['url'], url)}" for e in entries)
    five = [f"{e['request']['method']} {e['request']['url']} -> {e['response']['status']}" for e in entries
            if e["response"]["status"] >= 500]
    return {"requests": len(entries), "status_classes": dict(sorted(classes.items())), "operations": dict(ops),
            "server_errors": five[:20], "schemathesis_exit": run.returncode, "seconds": round(seconds, 1)}


def _route(full: str, base: str) -> str:
    path = full.removeprefix(base).split("?")[0]
    if path.startswith("/v1/models/") and path != "/v1/models":
        return "/v1/models/{name}/versions/{version}/predict" if "/versions/" in path else "/v1/models/{name}/predict"
    return path


def export_model(work: Path, env: dict[str, str]) -> Path:
    data = work / "train.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": y}, ensure_ascii=False) + "\n" for t, y in TRAIN))
    for cmd in (["train", str(data), "--name", "news", "--data-dir", str(work / "dd")],
                ["export", "news", str(work / "export"), "--data-dir", str(work / "dd")]):
        subprocess.run([str(LP), *cmd], check=True, capture_output=True, env=env)
    return work / "export"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--serve-examples", type=int, default=130)
    ap.add_argument("--model-examples", type=int, default=80)
    ap.add_argument("--phases", default="", help="schemathesis phases (default: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-model", action="store_true", help="fuzz `serve` only")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "fuzz.json")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lp-fuzz-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABELPILOT_", "BASIC_AUTH", "LABEL_STUDIO"))}
    env |= {"LABELPILOT_RETRAIN_EVERY": "3", "LABELPILOT_CACHE_DIR": str(work / "cache")}
    load_before = os.getloadavg()
    out: dict[str, Any] = {"seed": args.seed, "load_before": load_before, "work": str(work)}
    serve_env = {**env, "BASIC_AUTH_USER": AUTH[0], "BASIC_AUTH_PASS": AUTH[1]}
    proc, url = start([str(LP), "serve", "--data-dir", str(work / "serve-data")], serve_env, work / "serve.log")
    try:
        out["serve"] = schemathesis(url, work, "serve", args.serve_examples, args.seed, auth=AUTH,
                                    phases=args.phases)
    finally:
        stop(proc)
    if not args.no_model:
        export = export_model(work, env)
        proc, url = start([str(LP), "serve-model", str(export), "--workers", "1"], env, work / "model.log")
        try:
            runs = [schemathesis(url, work, "model-names", args.model_examples, args.seed, phases=args.phases),
                    schemathesis(url, work, "model-news", args.model_examples, args.seed, phases=args.phases,
                                 parameters={"path.name": "news", "path.version": "1"})]
        finally:
            stop(proc)
        out["serve_model"] = _merge(runs)
    out["load_after"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1, ensure_ascii=False))
    for key in ("serve", "serve_model"):
        if key in out:
            r = out[key]
            print(f"{key}: {r['requests']} requests {r['status_classes']} in {r['seconds']} s")
    bad = sum(out[k]["status_classes"].get("5xx", 0) for k in ("serve", "serve_model") if k in out)
    return 1 if bad else 0


def _merge(runs: list[dict[str, Any]]) -> dict[str, Any]:
    classes: collections.Counter = collections.Counter()
    ops: collections.Counter = collections.Counter()
    for r in runs:
        classes.update(r["status_classes"])
        ops.update(r["operations"])
    return {"requests": sum(r["requests"] for r in runs), "status_classes": dict(sorted(classes.items())),
            "operations": dict(ops), "server_errors": [e for r in runs for e in r["server_errors"]][:20],
            "seconds": round(sum(r["seconds"] for r in runs), 1), "runs": runs}


if __name__ == "__main__":
    sys.exit(main())
