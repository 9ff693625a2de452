"""The seed-003 operator: split, train with early stop, predict, query hard examples, save, in rounds.

``run_loop`` is one round over the files in ``input_dir``; ``loop_command`` (in :mod:`labelpilot.loop.cli`)
is the same as the ``labelpilot loop`` CLI command; ``bench_al_command`` (:mod:`labelpilot.loop.simulate`)
is the pool-based simulation behind ``labelpilot bench al``.
"""

from labelpilot.loop.runner import LOOP_OPTIONS, LoopResult, run_loop
from labelpilot.loop.split import split_train_val

__all__ = ["LOOP_OPTIONS", "LoopResult", "run_loop", "split_train_val"]
