"""Figures drawn in worker processes while the report goes on.

Why: on a fresh report most of the time is matplotlib drawing and saving PNG + PDF files (issue 27
item 4), the figures are independent of one another, and drawing is pure Python that one process
runs on one core. Inside :func:`figure_pool` a figure function returns its two paths at once and is
drawn by a worker; :meth:`FigurePool.finish` waits for all of them and says which failed.

The workers are forked from a fork server that imported the drawing modules once, so each starts
warm and none inherits the parent's torch/OpenMP threads (a plain fork after them is unsafe). With
one core, or where the platform has no fork server (Windows), figures are drawn inline, as outside
a pool.
"""

from __future__ import annotations

import importlib
import inspect
import multiprocessing
import os
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

#: what every worker needs before its first figure (imported once, in the fork server; seaborn draws
#: the heatmaps, scikit-learn the ROC/PR curves)
DRAWING_MODULES = ["bench.analysis.figures", "bench.analysis.overlays", "seaborn", "sklearn.metrics"]

_POOL: ContextVar[FigurePool | None] = ContextVar("figure_pool", default=None)


@dataclass
class FigureJob:
    name: str
    paths: list[Path]
    future: Future
    after: Callable[[], None] | None
    spec: tuple


@dataclass
class FigureFailure:
    """A figure that could not be drawn: its function, the files it should have written, why."""

    name: str
    paths: list[Path]
    error: BaseException


def _draw(module: str, qualname: str, options: dict, args: tuple, kwargs: dict) -> list[str]:
    """In a worker: the undecorated figure function, drawn as the parent would have drawn it."""
    from bench.analysis.figure_style import draw_styled

    fn = importlib.import_module(module)
    for part in qualname.split("."):
        fn = getattr(fn, part)
    return [str(p) for p in draw_styled(inspect.unwrap(fn), options, args, kwargs)]


class FigurePool:
    """At most ``workers`` figures drawn at once, lazily started on the first figure to draw."""

    def __init__(self, workers: int):
        self.workers = workers
        self.jobs: list[FigureJob] = []
        self._executor: ProcessPoolExecutor | None = None

    def _start(self) -> ProcessPoolExecutor:
        if self._executor is None:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(DRAWING_MODULES)
            self._executor = ProcessPoolExecutor(self.workers, mp_context=context)
        return self._executor

    def submit(self, fn: Callable, options: dict, args: tuple, kwargs: dict, paths: list[Path],
               after: Callable[[], None] | None = None) -> list[Path]:
        """Draw ``fn(*args, **kwargs)`` in a worker; ``after`` runs here once it is drawn."""
        spec = (fn.__module__, fn.__qualname__, options, args, kwargs)
        try:
            future = self._start().submit(_draw, *spec)
        except (OSError, BrokenProcessPool):   # no worker could start here: draw it in this process
            future = Future()
            future.set_exception(BrokenProcessPool("no figure worker"))
        self.jobs.append(FigureJob(f"{fn.__module__}.{fn.__qualname__}", list(paths), future, after, spec))
        return list(paths)

    def finish(self) -> list[FigureFailure]:
        """Wait for every figure; the failed ones, in the order they were asked for."""
        failures = []
        for job in self.jobs:
            try:
                try:
                    job.future.result()
                except BrokenProcessPool:      # a worker died (or none started): the figure is drawn here
                    _draw(*job.spec)
                if job.after is not None:
                    job.after()
            except Exception as exc:  # noqa: BLE001 - reported per figure by the caller
                failures.append(FigureFailure(job.name, job.paths, exc))
        self.jobs = []
        return failures

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None


def default_workers() -> int:
    """One worker per core this process may use (0: draw inline)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:                # macOS
        cores = os.cpu_count() or 1
    return cores if cores > 1 and "forkserver" in multiprocessing.get_all_start_methods() else 0


@contextmanager
def figure_pool(workers: int | None = None) -> Iterator[FigurePool | None]:
    """Within the block, figures are drawn by a pool (None when ``workers`` is 0: inline). The caller
    must call :meth:`FigurePool.finish` before it uses the files; leaving the block shuts the pool."""
    workers = default_workers() if workers is None else workers
    pool = FigurePool(workers) if workers > 0 else None
    token = _POOL.set(pool)
    try:
        yield pool
    finally:
        _POOL.reset(token)
        if pool is not None:
            pool.close()


def active_pool() -> FigurePool | None:
    return _POOL.get()
