"""Analysis of finished records: statistics (bootstrap, paired tests, ranks), representation
diagnostics, figures, claims and their verdicts.

May import: ``bench.metrics`` and ``bench.run.store`` (records); numpy/scipy/pandas/matplotlib.
Never torch at import time: a report is built from records alone.
"""
