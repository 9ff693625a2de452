"""``labelpilot bench prelabel``: how much the pre-labels help from the first task of a new project.

Why here: the harness is a *client* of the server (it speaks HTTP to a real ``labelpilot serve``, as Label
Studio and an annotator would) and of the shared datasets, so it sits at the top of the layering, next to
``cli.py`` (the in-process active-learning simulation, without a server, is ``bench/al/simulate.py``). It
is a package of its own rather than a ``bench/`` script (the issue asks for a CLI command, and the tests
import it); its text tasks come from the simulation's pools (:mod:`labelpilot.testing.corpora`):

- ``datasets.py``: the shared datasets as label config + ordered tasks + gold annotations;
- ``server.py``: a server on loopback with a fresh data dir and the calls Label Studio makes;
- ``metrics.py``: pre-label quality and the edits saved (defined there);
- ``harness.py``: the task loop (predict, score, annotate, let it retrain);
- ``report.py``: windows of tasks, JSON, markdown and the PNG;
- ``command.py``: the typer command (``cli.py`` only mounts it).
"""
