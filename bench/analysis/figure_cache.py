"""Figures redrawn only when what they show changed: a content-addressed cache of PNG/PDF files.

Why: drawing and embedding fonts in PDFs is most of a small report's time (issue 24 item 10,
issue 27 item 4), and a report is rebuilt after every resume or ``bench report`` with mostly the
same numbers. A figure function's inputs (arrays, frames, titles: everything but the output
path), the source of the module that draws it, matplotlib's version and the output options are
hashed; a hit copies the stored files to the requested path, a miss draws and stores them.

The cache is off unless a report build opens one with :func:`figure_cache` (tests and direct
calls always draw). :func:`paper_style` is the decorator that makes a figure function go through it.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import shutil
from collections.abc import Callable, Iterable, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache
from pathlib import Path

import numpy as np

from bench.analysis.figure_pool import active_pool
from bench.analysis.figure_style import DPI, PAPER_STYLE, _style_digest, draw_styled, width

_ROOT: ContextVar[Path | None] = ContextVar("figure_cache_root", default=None)
SUFFIXES = (".png", ".pdf")


@contextmanager
def figure_cache(root: str | Path | None):
    """Within the block, figure functions reuse files stored under ``root`` (None: always draw)."""
    token = _ROOT.set(Path(root) if root is not None else None)
    try:
        yield
    finally:
        _ROOT.reset(token)


def _feed(h, obj) -> None:
    """Hash ``obj`` by content (type-tagged, order-preserving: plotting order is part of a figure)."""
    import pandas as pd

    if isinstance(obj, np.ndarray) or isinstance(obj, np.generic):
        arr = np.ascontiguousarray(obj)
        h.update(f"nd{arr.dtype.str}{arr.shape}".encode())
        h.update(arr.tobytes() if arr.dtype != object else repr(arr.tolist()).encode())
    elif isinstance(obj, (pd.DataFrame, pd.Series)):
        h.update(f"pd{type(obj).__name__}{obj.shape}".encode())
        h.update(obj.to_csv().encode())        # floats at full precision, index and columns included
    elif isinstance(obj, Mapping):
        h.update(f"map{len(obj)}".encode())
        for key, value in obj.items():
            _feed(h, key)
            _feed(h, value)
    elif isinstance(obj, (list, tuple)):
        h.update(f"seq{len(obj)}".encode())
        for value in obj:
            _feed(h, value)
    else:
        h.update(f"{type(obj).__name__}:{obj!r}".encode())


@lru_cache(maxsize=None)
def _source_digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def content_key(sources: Iterable[str], inputs: object) -> str:
    """24 hex digits naming ``inputs`` by content together with the source files of the code that
    computes from them: the key of the report's content-addressed caches (bootstrap, Wilcoxon)."""
    h = hashlib.sha256()
    for source in sources:
        h.update(_source_digest(source).encode())
    _feed(h, inputs)
    return h.hexdigest()[:24]


def figure_key(fn: Callable, inputs: Mapping, options: object = None) -> str:
    """The cache key of one figure: function, its module's source, matplotlib, options, inputs."""
    import matplotlib

    h = hashlib.sha256()
    h.update(f"{fn.__module__}.{fn.__qualname__}|{matplotlib.__version__}|".encode())
    h.update(_source_digest(inspect.getsourcefile(fn)).encode())
    _feed(h, options)
    _feed(h, dict(inputs))
    return h.hexdigest()[:24]


def cached_render(fn: Callable, args: tuple, kwargs: dict, drawing: dict,
                  options: object = None) -> list[Path]:
    """The files ``stem.png``/``stem.pdf`` of ``fn(*args, **kwargs)`` drawn in the paper style
    (:func:`bench.analysis.figure_style.draw_styled` with ``drawing``), or the stored files of the
    same inputs. Inside a figure pool a figure to draw goes to a worker and its paths come back at
    once; it is stored in the cache when the pool has finished it."""
    root, pool = _ROOT.get(), active_pool()
    if root is None and pool is None:
        return draw_styled(fn, drawing, args, kwargs)
    bound = inspect.signature(fn).bind(*args, **kwargs)
    bound.apply_defaults()
    stem = Path(bound.arguments["stem"])
    targets = [stem.with_suffix(s) for s in SUFFIXES]
    store = None                               # what keeps the drawn files (with the cache open)
    if root is not None:
        inputs = dict(bound.arguments)
        inputs.pop("stem")
        entry = root / figure_key(fn, inputs, options)
        stored = [entry.with_suffix(s) for s in SUFFIXES]
        if all(p.is_file() for p in stored):
            from bench.run.store import atomic_write_bytes

            for src, dst in zip(stored, targets, strict=True):
                atomic_write_bytes(dst, src.read_bytes(), sync=False)
            return targets
        store = functools.partial(_store, targets, stored)
    if pool is not None:
        return pool.submit(fn, drawing, args, kwargs, targets, after=store)
    paths = draw_styled(fn, drawing, args, kwargs)
    store()                                    # here the cache is open (neither pool nor cache: drawn above)
    return paths


def _store(drawn: list[Path], entries: list[Path]) -> None:
    """Copy a figure's drawn files into its cache entry."""
    entries[0].parent.mkdir(parents=True, exist_ok=True)
    for src, dst in zip(drawn, entries, strict=True):
        tmp = dst.with_name(f".{dst.name}.tmp")
        shutil.copyfile(src, tmp)
        tmp.replace(dst)               # a killed build leaves no half entry


def paper_style(fn: Callable) -> Callable:
    """Make ``fn`` (which draws and saves one figure, ``stem`` its output path) a report figure: drawn
    in the paper style (:func:`bench.analysis.figure_style.draw_styled`); within a report build, an
    unchanged figure is copied from the figure cache instead of drawn, and a new one drawn by a
    figure worker when the build has them."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return cached_render(fn, args, kwargs, {"width": width()},
                             options=(PAPER_STYLE, DPI, width(), _style_digest()))

    return wrapper
