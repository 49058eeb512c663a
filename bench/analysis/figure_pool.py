"""Figures drawn in worker processes while the report goes on.

Why: on a fresh report most of the time is matplotlib drawing and saving PNG + PDF files (issue 27
item 4), the figures are independent of one another, and drawing is pure Python that one process
runs on one core. Inside :func:`figure_pool` a figure function hands its figure to a worker and
returns its two paths at once; :meth:`FigurePool.finish` waits for all of them and says which failed.
The dense grid's report (96 records) took 70 s drawn in one process and 49 s with two workers.

The workers are forked from a fork server that imported the drawing modules once, so each starts
warm and none inherits the parent's torch/OpenMP threads (a plain fork after them is unsafe). They
start in the background; until they are up (about a second), and wherever they cannot start (one
core, no fork server as on Windows, a plain script that workers would run again), figures are drawn
here as without a pool, so a 2-cell report is not slowed by the start. ``bench run`` calls
:func:`warm_figure_workers` before its cells, so the workers start while the encoders train and a
report built at the end of the run finds them up.
"""

from __future__ import annotations

import atexit
import importlib
import inspect
import multiprocessing
import os
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

from bench.analysis.figure_style import draw_styled

#: what every worker needs before its first figure (imported once, in the fork server; seaborn draws
#: the heatmaps, scikit-learn the ROC/PR curves)
DRAWING_MODULES = ["bench.analysis.figures", "bench.analysis.overlays", "seaborn", "sklearn.metrics"]

_POOL: ContextVar[FigurePool | None] = ContextVar("figure_pool", default=None)
_WARM: list[FigurePool] = []          # a pool started ahead of the report that will use it


@dataclass
class FigureJob:
    """One figure asked for: what draws it, the files it writes, and (in a worker) its future."""

    fn: Callable
    drawing: dict
    args: tuple
    kwargs: dict
    paths: list[Path]
    after: Callable[[], None] | None
    future: Future | None = None

    @property
    def name(self) -> str:
        return f"{self.fn.__module__}.{self.fn.__qualname__}"

    def draw_here(self) -> list[Path]:
        """Draw it in this process, as without a pool."""
        return draw_styled(self.fn, self.drawing, self.args, self.kwargs)


@dataclass
class FigureFailure:
    """A figure that could not be drawn: its function, the files it should have written, why."""

    name: str
    paths: list[Path]
    error: BaseException


def _draw(module: str, qualname: str, options: dict, args: tuple, kwargs: dict) -> list[str]:
    """In a worker: the undecorated figure function, drawn as the parent would have drawn it."""
    fn = importlib.import_module(module)
    for part in qualname.split("."):
        fn = getattr(fn, part)
    return [str(p) for p in draw_styled(inspect.unwrap(fn), options, args, kwargs)]


def _ready() -> bool:
    return True


class FigurePool:
    """At most ``workers`` figures drawn at once by worker processes that start in the background.

    Until the workers are up (about a second of imports in the fork server), and if they never come
    up, figures are drawn here at once: a small report is not slowed by waiting for them, a large one
    hands its figures to them as soon as they are ready.
    """

    def __init__(self, workers: int):
        self.workers = workers
        self.jobs: list[FigureJob] = []
        self._executor: ProcessPoolExecutor | None = None
        self._closed = False
        self._lock = threading.Lock()
        self.ready = threading.Event()
        threading.Thread(target=self._start, name="figure-pool-start", daemon=True).start()

    def _start(self) -> None:
        executor = None
        try:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(DRAWING_MODULES)
            executor = ProcessPoolExecutor(self.workers, mp_context=context)
            executor.submit(_ready).result()          # a worker is up, the drawing modules imported
        except Exception:  # noqa: BLE001 - no workers here (a sandbox, no fork server): draw inline
            if executor is not None:
                executor.shutdown(wait=False, cancel_futures=True)
            executor = None
        with self._lock:
            if self._closed and executor is not None:
                executor.shutdown(wait=False, cancel_futures=True)
            elif not self._closed:
                self._executor = executor
            self.ready.set()

    def submit(self, fn: Callable, options: dict, args: tuple, kwargs: dict, paths: list[Path],
               after: Callable[[], None] | None = None) -> list[Path]:
        """Draw ``fn(*args, **kwargs)`` in a worker (``after`` runs here once it is drawn), or here and
        now while no worker is ready (its error, if any, raised to the caller as without a pool)."""
        job = FigureJob(fn, options, args, kwargs, list(paths), after)
        with self._lock:
            executor = self._executor
        if executor is None:
            drawn = job.draw_here()
            if after is not None:
                after()
            return drawn
        try:
            job.future = executor.submit(_draw, fn.__module__, fn.__qualname__, options, args, kwargs)
        except (RuntimeError, BrokenProcessPool):   # the pool broke or shut down: drawn at finish
            job.future = Future()
            job.future.set_exception(BrokenProcessPool("no figure worker"))
        self.jobs.append(job)
        return job.paths

    def finish(self) -> list[FigureFailure]:
        """Wait for every figure given to a worker; the failed ones, in the order they were asked for."""
        failures = []
        for job in self.jobs:
            try:
                try:
                    job.future.result()
                except BrokenProcessPool:      # a worker died: the figure is drawn here
                    job.draw_here()
                if job.after is not None:
                    job.after()
            except Exception as exc:  # noqa: BLE001 - reported per figure by the caller
                failures.append(FigureFailure(job.name, job.paths, exc))
        self.jobs = []
        return failures

    def close(self) -> None:
        """Shut the workers down (a start still under way shuts its own down when it ends)."""
        with self._lock:
            self._closed = True
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)


def _main_runs_again_in_workers() -> bool:
    """Whether a worker process would import this program's main file again: a plain script
    (``python script.py``) runs its top level in every worker unless it has a ``__main__`` guard.
    ``python -m package`` (``bench``, ``pytest``) and interactive sessions do not."""
    main = sys.modules.get("__main__")
    name = getattr(getattr(main, "__spec__", None), "name", None)
    if name is not None:
        return not (name == "__main__" or name.endswith(".__main__"))
    return getattr(main, "__file__", None) is not None


def default_workers() -> int:
    """One worker per core this process may use; 0 (draw inline) on one core, without a fork server,
    or when workers would run the main script again (pass ``figure_workers`` to choose)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:                # macOS
        cores = os.cpu_count() or 1
    if cores < 2 or "forkserver" not in multiprocessing.get_all_start_methods() or _main_runs_again_in_workers():
        return 0
    return cores


def warm_figure_workers(workers: int | None = None) -> None:
    """Start the figure workers now, for the next :func:`figure_pool` of this process to take over.

    Why: a small run's report used to draw its first figures here while its workers were still
    importing (about a second of a 3 s report); started before the cells, they are up when the
    report begins. A pool nobody takes is shut down at exit.
    """
    workers = default_workers() if workers is None else workers
    if workers > 0 and not _WARM:
        _WARM.append(FigurePool(workers))


def _take_warm(workers: int) -> FigurePool | None:
    """The warm pool if it has ``workers`` workers (another size is shut down), else None."""
    if not _WARM:
        return None
    pool = _WARM.pop()
    if pool.workers == workers:
        return pool
    pool.close()
    return None


@atexit.register
def _close_warm() -> None:
    while _WARM:
        _WARM.pop().close()


@contextmanager
def figure_pool(workers: int | None = None) -> Iterator[FigurePool | None]:
    """Within the block, figures are drawn by a pool (None when ``workers`` is 0: inline), the warm
    one if :func:`warm_figure_workers` started one of that size. The caller must call
    :meth:`FigurePool.finish` before it uses the files; leaving the block shuts the pool."""
    workers = default_workers() if workers is None else workers
    pool = (_take_warm(workers) or FigurePool(workers)) if workers > 0 else None
    token = _POOL.set(pool)
    try:
        yield pool
    finally:
        _POOL.reset(token)
        if pool is not None:
            pool.close()


def active_pool() -> FigurePool | None:
    return _POOL.get()
