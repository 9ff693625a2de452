"""Install a real entry point for a test: a ``*.dist-info`` folder with ``entry_points.txt`` in a folder put
on ``sys.path``, which is what ``pip install`` leaves behind, so :func:`importlib.metadata.entry_points`
finds it with no patching of labelpilot."""

from __future__ import annotations

from pathlib import Path

import pytest


def install_entry_points(site: Path, monkeypatch: pytest.MonkeyPatch, dist: str,
                         groups: dict[str, dict[str, str]], modules: dict[str, str] | None = None) -> Path:
    """Write distribution ``dist`` (version 0.1) with ``groups`` (group -> {name: "module:attr"}) and the
    given ``modules`` (file name without ``.py`` -> source) into ``site``, and put ``site`` first on
    ``sys.path`` for the rest of the test."""
    info = site / f"{dist}-0.1.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n", encoding="utf-8")
    lines = []
    for group, entries in groups.items():
        lines.append(f"[{group}]")
        lines += [f"{name} = {ref}" for name, ref in entries.items()]
        lines.append("")
    (info / "entry_points.txt").write_text("\n".join(lines), encoding="utf-8")
    for name, source in (modules or {}).items():
        (site / f"{name}.py").write_text(source, encoding="utf-8")
    monkeypatch.syspath_prepend(str(site))
    return site
