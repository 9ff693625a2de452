"""Helpers shared by the benchmark scripts (run as ``python bench/<script>.py``, so importable as siblings)."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import httpx


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """Poll ``url``/health until it answers 200. Raises when the server process exits or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server at {url} exited with code {proc.returncode} before it was healthy")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the server at {url} was not healthy within {timeout:.0f} s")


_WRK_LUA = r"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
%(headers)s
local bodies = {}
local i = 0
init = function(args)
  for line in io.lines("%(bodies)s") do bodies[#bodies + 1] = line end
end
request = function()
  i = i + 1
  return wrk.format(nil, nil, nil, bodies[(i %% #bodies) + 1])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %%d %%d %%d %%.3f %%.3f %%.3f %%.3f\n", summary.requests, e.status,
    e.connect + e.read + e.write + e.timeout, latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000, summary.duration / 1e6))
end
"""


def wrk_script(path: Path, bodies: Path, headers: dict[str, str] | None = None) -> Path:
    """Write a wrk Lua script that POSTs the JSON bodies of ``bodies`` (one a line) in turn and prints one
    RESULT line (requests, non-2xx, socket errors, p50/p99/max ms, seconds)."""
    extra = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in (headers or {}).items())
    path.write_text(_WRK_LUA % {"headers": extra, "bodies": bodies})
    return path


def run_wrk(lua: Path, url: str, threads: int, connections: int, seconds: int) -> dict[str, float]:
    """One wrk run (127.0.0.1 only: ``url`` is a local server); its figures as a dict."""
    cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--timeout", "10s",
           "-s", str(lua), url]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    m = re.search(r"RESULT (\d+) (\d+) (\d+) ([\d.]+) ([\d.]+) ([\d.]+) ([\d.]+)", out)
    if not m:
        raise RuntimeError(f"wrk printed no RESULT line: {out}")
    n, dur = int(m[1]), float(m[7])
    return {"requests": n, "non_2xx": int(m[2]), "socket_errors": int(m[3]), "rps": round(n / dur, 1),
            "p50_ms": float(m[4]), "p99_ms": float(m[5]), "max_ms": float(m[6])}


def batch_input(data: Path, work: Path, rows: int, lp: Path, name: str) -> Path:
    """For the batch-prediction benches: train text-linear ``name`` on TNEWS train (synthetic text when
    ``data``/tnews is absent) into ``work``/dd, and write ``work``/big.csv of ``rows`` rows (``id``, ``text``:
    the training texts repeated). ``name`` must not be a folder in the working directory (it would be taken
    for a model folder)."""
    import csv
    import json

    tnews = data / "tnews" / "train.json"
    if tnews.exists():
        src = [json.loads(line) for line in tnews.open(encoding="utf-8")]
        train = [{"text": r["sentence"], "label": r["label_desc"]} for r in src]
    else:
        print(f"{tnews} not found: synthetic text instead")
        train = [{"text": f"sample {i} {'good' if i % 2 else 'bad'} text", "label": "pos" if i % 2 else "neg"}
                 for i in range(2000)]
    with (work / "train.jsonl").open("w", encoding="utf-8") as fh:
        for r in train:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    subprocess.run([str(lp), "train", str(work / "train.jsonl"), "--name", name, "--data-dir", str(work / "dd")],
                   check=True, capture_output=True)
    big = work / "big.csv"
    with big.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "text"])
        for i in range(rows):
            w.writerow([i, train[i % len(train)]["text"]])
    return big
