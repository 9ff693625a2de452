"""The one loader of pluggable things: entry points and ``package.module:attr`` references.

Three kinds of plug-in are found the same way, each in its own entry-point group:

- model families, ``labelpilot.models`` (:func:`labelpilot.models.base.families`);
- seed-003 plug-ins, ``labelpilot.plugins`` (:func:`labelpilot.loop.plugin.load_object`);
- query strategies, ``labelpilot.strategies`` (:func:`labelpilot.strategies.registry.get_strategy`).

A package registers one in its ``pyproject.toml``::

    [project.entry-points."labelpilot.strategies"]
    my_strategy = "my_package.strategies:MyStrategy"

Built-ins win over an entry point of the same name, and the first entry point of a name wins over later ones
(the order :func:`importlib.metadata.entry_points` gives), so installing a package never replaces a built-in.
Each kind keeps its own error messages: this module raises only :class:`ImportError`
(or :class:`AttributeError`) and :class:`PluginNotFound`, and the callers turn them into a 4xx naming their field.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Mapping
from importlib import import_module
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, TypeVar

MODEL_FAMILIES = "labelpilot.models"
SEED003_PLUGINS = "labelpilot.plugins"
STRATEGIES = "labelpilot.strategies"

T = TypeVar("T")


class PluginNotFound(LookupError):
    """No built-in and no entry point of that name (an error while importing a plug-in is not this)."""


def entry_point_refs(group: str) -> dict[str, str]:
    """``name -> "package.module:attr"`` for every installed entry point of ``group``."""
    found: dict[str, str] = {}
    for ep in entry_points(group=group):
        found.setdefault(ep.name, ep.value)
    return found


def with_entry_points(group: str, builtins: Mapping[str, T]) -> dict[str, T | str]:
    """The built-ins, then the entry points of ``group`` whose names are not built in (as reference strings)."""
    found: dict[str, T | str] = dict(builtins)
    for name, ref in entry_point_refs(group).items():
        found.setdefault(name, ref)
    return found


def import_object(ref: str, *, files: bool = False) -> Any:
    """``package.module:attr`` (``attr`` may be dotted) -> the object.

    With ``files=True`` the module part may also be a path ending in ``.py`` (``path/to/file.py:Class``),
    imported from that file with its folder put on ``sys.path`` so it can import its own helper modules.
    A ``ref`` without ``:`` is a module (as an entry point may name one). Raises :class:`ImportError` or
    :class:`AttributeError`."""
    module_name, sep, attr = ref.rpartition(":")
    if not sep:
        return import_module(ref)
    obj: Any = _import_file(Path(module_name)) if files and module_name.endswith(".py") else import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def load_named(group: str, name: str, builtins: Mapping[str, Any] | None = None) -> Any:
    """The object registered as ``name``: a built-in (a reference string among them is imported) or the
    entry point of that name in ``group``. Raises :class:`PluginNotFound` when neither has it."""
    refs = with_entry_points(group, builtins or {})
    if name not in refs:
        raise PluginNotFound(name)
    found = refs[name]
    return import_object(found) if isinstance(found, str) else found


def _import_file(path: Path) -> Any:
    if not path.is_file():
        raise ImportError(f"{path} not found")
    name = path.stem
    if name in sys.modules and getattr(sys.modules[name], "__file__", None) == str(path.resolve()):
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path.resolve())
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.resolve().parent))  # so the plug-in can import its own helper modules
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
