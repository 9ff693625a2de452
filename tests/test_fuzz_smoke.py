"""A short schemathesis run against a real `labelpilot serve` (bench/fuzz.py, the examples and fuzzing phases,
~100 generated requests): no 5xx. The full run (>= 2,000 + 1,000 requests) is `python bench/fuzz.py`."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"


@pytest.mark.skipif(not SCHEMATHESIS.exists(), reason="schemathesis is not installed (pip install '.[dev]')")
def test_schemathesis_finds_no_server_error_on_serve(tmp_path: Path) -> None:
    out = tmp_path / "fuzz.json"
    t0 = time.monotonic()
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "fuzz.py"), "--serve-examples", "13", "--phases", "examples,fuzzing",
         "--no-model", "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )
    seconds = time.monotonic() - t0
    assert out.exists(), run.stdout + run.stderr
    serve = json.loads(out.read_text())["serve"]
    assert serve["requests"] >= 100, serve
    assert serve["status_classes"].get("5xx", 0) == 0, serve["server_errors"]
    wanted = {"POST /setup", "POST /predict", "POST /webhook", "POST /v1/models/{name}/predict"}
    assert wanted <= set(serve["operations"]), serve["operations"]
    assert run.returncode == 0, run.stdout + run.stderr
    assert seconds < 60, f"the smoke fuzz took {seconds:.0f} s"
