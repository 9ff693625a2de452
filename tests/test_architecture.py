"""The package's import graph (``labelpilot.testing.imports``): no cycles, imports only downward, and every
function-local import of a labelpilot module says why it is lazy. The checker's own parts are tested on a
small package written here, so a checker that found nothing would fail too."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from labelpilot.testing import imports

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "labelpilot"


@pytest.fixture(scope="module")
def report() -> imports.Report:
    return imports.check(PACKAGE)


def test_checker_sees_the_whole_package(report: imports.Report) -> None:
    files = set(PACKAGE.rglob("*.py"))
    assert len(report.modules) == len(files) > 60
    assert {"labelpilot.server.app", "labelpilot.server.predictor", "labelpilot.ocr", "labelpilot.imaging",
            "labelpilot.testing.imports"} <= set(report.modules)
    # known edges, module-level and function-local, absolute and relative
    pairs = {(e.source, e.target) for e in report.edges}
    assert ("labelpilot.server.app", "labelpilot.server.predictor") in pairs
    assert ("labelpilot.ocr", "labelpilot.imaging") in pairs
    assert any(e.local and e.source == "labelpilot.cli" and e.target == "labelpilot.batch" for e in report.edges)
    assert report.unlayered == []


def test_no_import_cycles(report: imports.Report) -> None:
    assert report.cycles == [], report.format()


def test_imports_only_downward(report: imports.Report) -> None:
    assert report.upward == [], report.format()


def test_local_imports_of_labelpilot_modules_are_marked(report: imports.Report) -> None:
    assert report.unmarked_local == [], report.format()
    assert report.ok


def test_benchmark_code_is_out_of_the_package() -> None:
    for gone in ("loop/simulate.py", "loop/simulate_ner.py", "loop/peer_smalltext.py", "data/synthdocs.py",
                 "models/vision/imageio.py"):
        assert not (PACKAGE / gone).exists(), gone
    assert (ROOT / "bench" / "al" / "simulate.py").is_file()


def _write(root: Path, files: dict[str, str]) -> Path:
    pkg = root / "labelpilot"
    for rel, text in files.items():
        path = pkg / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return pkg


def test_checker_finds_cycles_upward_and_unmarked_imports(tmp_path: Path) -> None:
    pkg = _write(tmp_path, {
        "__init__.py": "",
        "errors.py": "from labelpilot.server import app  # base importing the top layer\n",
        "server/__init__.py": "",
        "server/app.py": "from . import predictor\n",
        "server/predictor.py": (
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from labelpilot.cli import main\n"
            "def load():\n    from labelpilot.server.app import x\n"
            "def fine():\n    # lazy: heavy on purpose\n    from ..models import base\n"
            "def also_fine():\n    import torch  # third-party, not checked\n"
        ),
        "models/__init__.py": "",
        "models/base.py": "",
        "cli.py": "",
    })
    rep = imports.check(pkg)
    assert rep.cycles == [["labelpilot.server.app", "labelpilot.server.predictor"]]
    assert [(e.source, e.target) for e in rep.upward] == [("labelpilot.errors", "labelpilot.server.app")]
    assert [(e.source, e.target, e.line) for e in rep.unmarked_local] == [
        ("labelpilot.server.predictor", "labelpilot.server.app", 5)
    ]
    marked = [e for e in rep.edges if e.marked]
    assert [(e.target, e.local) for e in marked] == [("labelpilot.models.base", True)]
    # the TYPE_CHECKING import is no edge: cli is imported by nobody
    assert not any(e.target == "labelpilot.cli" for e in rep.edges)
    assert not rep.ok and "FAILED" in rep.format()


def test_strongly_connected_handles_long_chains() -> None:
    n = 5000  # deeper than the recursion limit
    nodes = [f"m{i}" for i in range(n)]
    chain = [(nodes[i], nodes[i + 1]) for i in range(n - 1)]
    assert all(len(c) == 1 for c in imports.strongly_connected(nodes, chain))
    loop = imports.strongly_connected(nodes, [*chain, (nodes[-1], nodes[0])])
    assert len(loop) == 1 and len(loop[0]) == n


def test_module_command_exit_codes(tmp_path: Path) -> None:
    ok = subprocess.run([sys.executable, "-m", "labelpilot.testing.imports", "--root", str(PACKAGE)],
                        capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert ok.returncode == 0 and ok.stdout.strip().endswith("OK"), ok.stdout + ok.stderr
    bad = _write(tmp_path, {"__init__.py": "", "errors.py": "import labelpilot.config\n",
                            "config.py": "from labelpilot import errors\n", "extra.py": ""})
    res = subprocess.run([sys.executable, "-m", "labelpilot.testing.imports", "--root", str(bad)],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert res.returncode == 1
    assert "labelpilot.config <-> labelpilot.errors" in res.stdout
    assert "modules in no layer of LAYERS (1):\n  labelpilot.extra\n" in res.stdout and "FAILED" in res.stdout
