"""The worker side of a run: one unit of work at a time, in any process (``bench.run.runner`` drives).

A :class:`~bench.run.plan.Unit` (an encoder group or one detector cell) and the :class:`RunContext`
are plain picklable values and :func:`bench.run.units.execute_unit` (the cell path itself) is a
module-level function, so the local executor and Ray tasks run exactly the same code. Workers write
cache entries only (``bench.run.cache``); every cell's result comes back as an :class:`Outcome`
(record + arrays) for the driver to write. This module holds what every unit shares.
"""

from __future__ import annotations

import hashlib
import os
import traceback
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from bench.run.grid import DEFAULT_MAP_KIND, Cell, Component, Grid
from bench.run.provenance import git_sha, host, versions

#: Store full test maps with a record only up to this many pixels (float32, compressed .npz); the
#: compact per-case summaries (``test_pixsum_*``, bench.analysis.pixsum) are stored at any size.
MAX_STORED_PIXELS = 4_000_000
#: Record statuses that count as finished (a degenerate result is a result; rerunning repeats it).
FINISHED = ("ok", "degenerate")


def now() -> str:
    # microseconds: "the most recently finished record" (bench.analysis.rows) must not tie when two runs
    # finish within one second
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def dataset_fingerprint(dataset) -> str:
    """Content hash of the splits: caches and resume follow the data, not its path or name."""
    h = hashlib.sha1()
    for split in (dataset.train, dataset.val, dataset.test):
        h.update(np.ascontiguousarray(split.images).data)
        h.update(split.labels.tobytes())
        if split.masks is not None:
            h.update(np.ascontiguousarray(split.masks).data)
    if dataset.pool is not None:
        h.update(np.ascontiguousarray(dataset.pool.images).data)
        h.update(dataset.pool.labels.tobytes())
    return h.hexdigest()[:16]


def panel_indices(split, n_anomalous: int = 4, n_normal: int = 2) -> np.ndarray:
    """Test cases for qualitative panels, chosen by a rule (never by hand).

    Anomalous cases at the 10/40/70/95 % quantiles of lesion area (of index order when there are
    no masks) and the first normal cases in index order; identical for every method of a dataset.
    """
    anomalous = np.flatnonzero(split.labels == 1)
    normal = np.flatnonzero(split.labels == 0)[:n_normal]
    if len(anomalous):
        if split.masks is not None:
            area = split.masks[anomalous].reshape(len(anomalous), -1).sum(1)
            anomalous = anomalous[np.lexsort((anomalous, area))]
        q = np.unique(np.round(np.linspace(0.1, 0.95, n_anomalous) * (len(anomalous) - 1)).astype(int))
        anomalous = anomalous[q]
    return np.concatenate([anomalous, normal]).astype(np.int64)


# ---------------------------------------------------------------------------------------------
# Units of work and what they return
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunContext:
    """Everything a worker needs besides the unit; picklable, identical on every executor."""

    run_name: str
    data_root: str | None
    cache_dir: str
    device: str
    progress: bool = False
    embed_batch_size: int = 256
    #: torch intra-op threads while a unit runs (None: leave the process's setting, as before). Float
    #: reductions split over threads, so the same thread count is part of "bit-identical".
    threads: int | None = None
    #: mixed precision for training loops on CUDA (None: on where CUDA is used); ignored on CPU.
    amp: bool | None = None
    #: ``torch.use_deterministic_algorithms(True)`` (+ cuBLAS workspace, cuDNN flags) while a unit runs.
    deterministic: bool = False
    #: channels-last memory format for conv trunks on CUDA (None: on where CUDA is used); ignored on CPU.
    channels_last: bool | None = None
    #: which executor ran the unit (recorded in each record's host info).
    executor: str = "local"
    #: label-free selection settings (``bench.run.synth.selection_settings``); None: off.
    selection: dict | None = None
    #: the driver's plugins as ``(spec, search_dir)`` pairs (``bench.plugins.worker_specs``): a worker
    #: imports them before its first unit, so their entries are registered there too.
    plugins: tuple = ()

    @classmethod
    def for_grid(cls, grid: Grid, **kwargs) -> "RunContext":
        """The context of ``grid``: its ``[resources]`` table, ``amp`` and ``deterministic`` keys."""
        import torch

        # The thread count every unit runs with is pinned, on every executor: float reductions split
        # over threads, so this is what makes a Ray run give the local run's bits by default.
        resources = grid.data.get("resources", {})
        threads = resources.get("cpus_per_task") or torch.get_num_threads()
        from bench.plugins import worker_specs
        from bench.run.synth import selection_settings

        kwargs.setdefault("selection", selection_settings(grid.data.get("selection")))
        return cls(grid.name, **kwargs, threads=threads, amp=grid.data.get("amp"),
                   deterministic=bool(grid.data.get("deterministic", False)), plugins=worker_specs())

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    @property
    def fit_device(self):
        """The device every fit and predict receives, carrying the run's precision choices."""
        from methods.precision import Device

        return Device(self.device, amp=self.amp, channels_last=self.channels_last)

    def fit_precision(self, trains: bool = True):
        """The autocast dtype a fit runs under (part of its cache key), or None for fp32 (every CPU fit)."""
        from methods.precision import amp_dtype

        return amp_dtype(self.fit_device) if self.cuda and trains else None

    def runtime(self) -> dict:
        """What the record's host info says about how the unit ran (effective values)."""
        import torch

        return {"executor": self.executor, "torch_threads": torch.get_num_threads(), "worker_pid": os.getpid(),
                "amp": bool(self.cuda and self.amp is not False), "deterministic": self.deterministic,
                "channels_last": bool(self.cuda and self.channels_last is not False)}


@dataclass
class Outcome:
    """The result of one cell: a record (and arrays) to write, or a cell that does not apply."""

    cell: Cell
    status: str                       # ok | degenerate | failed | not_applicable
    record: dict | None = None
    arrays: dict | None = None
    why: str = ""                      # not_applicable: the reason (:func:`not_applicable_reason`)

    @property
    def message(self) -> str:
        return (self.record or {}).get("error") or self.why


def not_applicable_reason(cell: Cell, encoder, has_masks: bool) -> str | None:
    """Why an encoder x head cell is not computed (None: it is), the one rule the worker, the preflight
    and the cost estimate share. ``encoder``: the built encoder (its declared capabilities are read)."""
    from methods.maps import map_kind
    from methods.registry import is_patch_head

    if cell.detector is not None:
        return None
    default_maps = cell.localization in (None, DEFAULT_MAP_KIND)
    if is_patch_head(cell.head.name):
        return None if default_maps else f"{cell.localization} maps: a patch head makes its own maps (cell run once)"
    kind = map_kind(cell.localization)
    if not kind.applies(encoder):
        return f"{cell.localization} maps need {kind.requires}"
    if not (default_maps or has_masks):
        return f"{cell.localization} maps: the dataset has no masks to score them"
    return None


# ---------------------------------------------------------------------------------------------
# The worker side: one unit at a time, anywhere
# ---------------------------------------------------------------------------------------------

_DATASETS: dict[tuple, object] = {}


def load_dataset(comp: Component, ctx: RunContext):
    """Load (once per process) the dataset of ``comp``; decoded-image caches follow ``--cache``."""
    from datasets import DATASETS, create_dataset

    key = (comp, ctx.data_root, ctx.cache_dir)
    if key not in _DATASETS:
        kwargs = dict(comp.kwargs)
        entry, _ = DATASETS.lookup(comp.name)
        if entry.tags.get("decodes_files") and "cache_dir" not in kwargs:     # declared at registration
            kwargs["cache_dir"] = str(Path(ctx.cache_dir) / "datasets")
        _DATASETS[key] = create_dataset(comp.name, root=ctx.data_root, **kwargs)
    return _DATASETS[key]


_POOLS: dict[tuple, tuple] = {}


def unlabeled_pool_for(dataset, request, seed: int):
    """The unlabeled pool a detector asks for, assembled once per process (the preflight's is reused)."""
    from methods.detectors._pool import unlabeled_pool

    key = (id(dataset), request.anomaly_rate, request.size, seed)
    hit = _POOLS.get(key)
    if hit is None or hit[0] is not dataset:
        hit = _POOLS[key] = (dataset, unlabeled_pool(dataset, anomaly_rate=request.anomaly_rate, size=request.size,
                                                     seed=seed))
    return hit[1]


@contextmanager
def unit_settings(ctx: RunContext):
    """Thread count, deterministic algorithms and mixed precision for one unit, restored afterwards.

    Applied the same way by every executor (inside :func:`bench.run.units.execute_unit`), so a unit computes the
    same bits in this process and in a Ray worker given the same ``ctx``.
    """
    import torch

    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    stack = ExitStack()
    try:
        if ctx.threads is not None:
            torch.set_num_threads(ctx.threads)
            # numpy/scipy BLAS and OpenMP pools too (scikit-learn's GMM, Ledoit-Wolf): Ray sets
            # OMP_NUM_THREADS=1 in its workers, so without this the same unit differs in its last bits
            from threadpoolctl import threadpool_limits

            stack.enter_context(threadpool_limits(limits=ctx.threads))
        if ctx.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")   # cuBLAS reproducibility
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        yield
    finally:
        stack.close()
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn


def base_record(cell: Cell, ctx: RunContext, fingerprint: str) -> dict:
    return {
        "cell_id": cell.cell_id, "run": ctx.run_name, "kind": cell.kind, "method": cell.method,
        "dataset": cell.dataset.id, "seed": cell.seed, "setting": "uad",
        "encoder": cell.encoder.id if cell.encoder else None,
        "head": cell.head.id if cell.head else None,
        "detector": cell.detector.id if cell.detector else None,
        "localization": cell.localization,
        "config": cell.config(), "config_hash": cell.config_hash(), "dataset_fingerprint": fingerprint,
        "versions": versions(), "git_sha": git_sha(), "host": {**host(ctx.device), **ctx.runtime()},
    }


def failed(cell: Cell, ctx: RunContext, exc: BaseException, stage: str, started: str, fingerprint: str,
           timings: dict | None = None) -> Outcome:
    record = base_record(cell, ctx, fingerprint)
    message = f"{stage}: {type(exc).__name__}: {exc}"
    record.update(status="failed", stage=stage, error=message, traceback="".join(traceback.format_exception(exc)),
                  started=started, finished=now(), metrics={}, timings=timings or {})
    return Outcome(cell, "failed", record)


