"""Tools for checking labelpilot itself, importable by the tests and the benchmarks; not used when serving.

Nothing in the product (server, jobs, CLI commands) imports this package except ``labelpilot bench prelabel``
and the benchmark scripts, which read the shared corpora through :mod:`labelpilot.testing.corpora`:

- :mod:`labelpilot.testing.imports`: the import-graph checker (no cycles, imports only downward, local imports
  of labelpilot modules only with a ``# lazy: <reason>`` comment), ``python -m labelpilot.testing.imports``.
- :mod:`labelpilot.testing.check_model`: the model contract check run over every registered family.
- :mod:`labelpilot.testing.synthetic`: tiny data sets per task kind for ``check_model``.
- :mod:`labelpilot.testing.synthdocs`: synthetic report pages for the document tests and benchmarks.
- :mod:`labelpilot.testing.corpora`: readers of the shared text corpora with the benchmark's fixed subsamples.
"""
