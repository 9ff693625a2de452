"""The seed-003 operator: split, train with early stop, predict, query hard examples, save, in rounds.

``run_loop`` is one round over the files in ``input_dir``; ``loop_command`` (in :mod:`labelpilot.loop.cli`)
is the same as the ``labelpilot loop`` CLI command; ``run_span_loop`` (:mod:`labelpilot.loop.span_round`) is
the round of span (NER) tasks, ``labelpilot loop --task spans``. (The pool-based active-learning simulation that was
``labelpilot bench al`` is a benchmark script now: ``bench/al/simulate.py``.)

The names below are resolved on first use (PEP 562): importing :mod:`labelpilot.loop.cli` (which the
``labelpilot`` command does for every call, to list ``loop`` in its help) must not pull in the runner and,
through it, sklearn/scipy/pandas — that took ``labelpilot --version`` from ~0.3 s to several seconds.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from labelpilot.loop.runner import LOOP_OPTIONS, LoopResult, run_loop
    from labelpilot.loop.span_round import run_span_loop
    from labelpilot.split import split_train_val

_LAZY = {
    "LOOP_OPTIONS": "labelpilot.loop.runner",
    "LoopResult": "labelpilot.loop.runner",
    "run_loop": "labelpilot.loop.runner",
    "run_span_loop": "labelpilot.loop.span_round",
    "split_train_val": "labelpilot.split",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'labelpilot.loop' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


__all__ = ["LOOP_OPTIONS", "LoopResult", "run_loop", "run_span_loop", "split_train_val"]
