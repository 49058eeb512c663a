"""The benchmark: grids of datasets x encoders x heads (and detectors) x seeds, run, scored, reported.

Subpackages, each for one job (the package docstrings say what each may import):

* :mod:`bench.run` — the run machinery: a grid file is validated, expanded once into a plan, checked
  by the preflight, executed unit by unit (locally or on Ray) and written as records.
* :mod:`bench.metrics` — the one metric implementation every cell is scored with (a registry).
* :mod:`bench.report` and :mod:`bench.analysis` — tables, figures, statistics and diagnostics built
  from records alone (no torch).
* :mod:`bench.cost` — what a grid costs: throughput figures and wall-time estimates.
* :mod:`bench.tools` — checks of the suite itself (e.g. bit identity across a refactoring).
* :mod:`bench.cli` — ``python -m bench``.

Layers: ``bench`` -> ``methods`` -> ``datasets`` (bottom: ``datasets._shared``), never the reverse;
``tests/test_layers.py`` walks every import to keep it so.
"""
