"""Executors run units of work (``bench.runner.Unit``) and hand each cell's outcome to the driver.

``LocalExecutor`` runs them one after another in this process (no extra dependency). The Ray
executor (``--executor ray``) ships the same units to Ray tasks. Either way the driver alone
writes records, in the order outcomes arrive, so both give the same records for the same grid.
"""

from __future__ import annotations

from typing import Callable, Iterable


class LocalExecutor:
    """Units in grid order, in this process: today's behaviour and the reference for every other."""

    name = "local"

    def run(self, units: Iterable, ctx, on_outcome: Callable) -> None:
        from bench.runner import execute_unit

        for unit in units:
            for outcome in execute_unit(unit, ctx):
                on_outcome(outcome)
