"""Run a grid: every cell once, every encoder and detector fitted once, every result kept.

Order of work: the driver validates the grid (``bench.run.validate``), takes the run directory's lock,
runs the preflight (``bench.run.preflight``: every dataset loads, every component builds, pools and
weights are there) and only then plans *units* of work:

* an **encoder unit** is one (dataset, encoder config, seed): load the encoder and its embeddings
  from the cache or train and embed once, then every head cell on those embeddings;
* a **detector unit** is one detector cell: load its fit from the cache or fit it (and cache it
  at once), then predict, make maps and score.

A unit is a plain picklable value and :func:`bench.run.units.execute_unit` a module-level function, so an
executor (``bench.run.executors``: in this process, or Ray tasks on a cluster) runs units anywhere
and streams back one :class:`Outcome` per cell.

**Who writes what.** Workers write *cache entries* only (encoders with their embeddings, fitted
detectors): each is content-addressed (dataset fingerprint, component config, seed), written to a
temporary name and renamed into place, never replaced while valid, and verified by checksum on
read, so two workers that build the same entry on a shared filesystem cannot corrupt it. The
*driver* alone writes records (one atomic JSON + ``.npz`` per cell), in the order outcomes
arrive: a worker that dies mid-unit leaves no partial record, and the unit runs again.

A cell is done when its record is ``ok`` (or ``degenerate``) for the same configuration and the
same dataset content; a record of another configuration is kept aside (``records/superseded/``),
never overwritten. Failures are recorded as ``failed`` with the stage that failed and the grid
goes on; a fit that succeeded stays in the cache whatever fails after it.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.run.grid import Component
from bench.run.plan import Plan, Unit
from bench.plugins import LOADED
from bench.run.provenance import git_sha, versions
from bench.run.store import ResultStore, RunLock
from bench.run.work import FINISHED, Outcome, RunContext, failed, load_dataset, now


class DeviceError(RuntimeError):
    """The requested device is not there; one line for the CLI."""


def resolve_device(device: str | None) -> str:
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(f"--device {device} requested but torch sees no CUDA device (use --device cpu or auto)")
    if device != "cpu" and not device.startswith("cuda"):
        raise DeviceError(f"--device {device}: expected cpu, cuda, cuda:N or auto")
    return device


@dataclass
class RunSummary:
    run_dir: Path
    total: int = 0
    ok: int = 0
    failed: int = 0
    degenerate: int = 0
    resumed: int = 0
    resumed_degenerate: int = 0
    not_applicable: int = 0
    wall_s: float = 0.0
    failures: list = field(default_factory=list)
    set_aside: list = field(default_factory=list)      # paths of the records this run moved aside
    why_not: dict = field(default_factory=dict)      # reason -> cells not applicable for it

    def count(self, outcome: Outcome) -> None:
        if outcome.status == "not_applicable":
            self.not_applicable += 1
            self.why_not[outcome.why or "?"] = self.why_not.get(outcome.why or "?", 0) + 1
            return
        setattr(self, outcome.status, getattr(self, outcome.status) + 1)
        if outcome.status != "ok":
            self.failures.append(f"{outcome.cell.cell_id} [{outcome.status}]: {outcome.message}")

    def count_resumed(self, finished: dict) -> None:
        """Cells found finished (``ResultStore.finished``) count too: a degenerate one stays degenerate."""
        for cell_id, record in finished.items():
            if record.get("status") == "degenerate":
                self.resumed_degenerate += 1
                self.failures.append(f"{cell_id} [degenerate, finished earlier]: {record.get('error') or ''}")

    @property
    def clean(self) -> bool:
        return self.failed == 0 and self.degenerate == 0 and self.resumed_degenerate == 0

    def line(self) -> str:
        return (f"{self.total} cells: {self.ok} ok, {self.failed} failed"
                + (f", {self.degenerate} degenerate" if self.degenerate else "")
                + f", {self.resumed} already done"
                + (f" ({self.resumed_degenerate} of them degenerate)" if self.resumed_degenerate else "")
                + (f", {self.not_applicable} not applicable ("
                   + "; ".join(f"{why}: {n}" for why, n in self.why_not.items()) + ")" if self.not_applicable else "")
                + f" — {self.wall_s:.1f} s")


# ---------------------------------------------------------------------------------------------
# The driver
# ---------------------------------------------------------------------------------------------


class Runner:
    """Runs the cells of ``plan`` (a grid expanded once) into ``out_dir`` (a run directory of records)."""

    def __init__(self, plan: Plan, out_dir: str | Path, *, data_root: str | Path | None = None,
                 device: str | None = "auto", cache_dir: str | Path | None = None, progress: bool = True,
                 embed_batch_size: int = 256, executor=None):
        from bench.run.cache import default_cache_dir

        self.plan = plan
        self.grid = grid = plan.grid
        self.store = ResultStore(out_dir)
        self.data_root = data_root
        self.device = resolve_device(device)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.progress = progress
        self.context = RunContext.for_grid(grid, data_root=str(data_root) if data_root is not None else None,
                                           cache_dir=str(self.cache_dir), device=self.device, progress=progress,
                                           embed_batch_size=embed_batch_size)
        self.executor = executor
        self.write_s = 0.0              # seconds the driver spent writing records (``bench perf --profile``)

    def load_dataset(self, comp: Component):
        return load_dataset(comp, self.context)

    def write_run_info(self) -> None:
        import json

        from bench.run.store import atomic_write_bytes

        info_path = self.store.run_dir / "run.json"
        info = {"grid": self.grid.name, "grid_file": str(self.grid.path) if self.grid.path else None,
                "grid_source": self.grid.source, "overrides": self.grid.overrides, "argv": sys.argv,
                "device": self.device, "cells": len(self.plan), "versions": versions(), "git_sha": git_sha(),
                "plugins": {p.module: p.fingerprint for p in LOADED.values()}}
        first = None
        if info_path.exists():
            try:
                first = json.loads(info_path.read_text()).get("first_started")
            except ValueError:
                first = None
        info["first_started"] = first or now()
        info["last_started"] = now()
        atomic_write_bytes(info_path, json.dumps(info, indent=1, default=str).encode())

    def pending(self, fingerprints: dict[Component, str]) -> tuple[list[Unit], int]:
        """Units for the cells not yet finished with this configuration and this data."""
        todo, resumed = [], 0
        for cell in self.plan.cells:
            if cell.dataset not in fingerprints:       # its dataset failed the preflight: recorded there
                continue
            if self.store.done(cell.cell_id, cell.config_hash(), fingerprints[cell.dataset], FINISHED):
                resumed += 1
            else:
                todo.append(cell)
        return self.plan.units(todo, fingerprints.__getitem__), resumed

    def accept(self, outcome: Outcome, summary: RunSummary) -> None:
        """Write one outcome (driver only) and count it."""
        summary.count(outcome)
        if outcome.record is not None:
            t0 = time.perf_counter()
            self.store.write(outcome.record, outcome.arrays)
            self.write_s += time.perf_counter() - t0
        if outcome.status in ("failed", "degenerate") and self.progress:
            from tqdm.auto import tqdm

            tqdm.write(f"{outcome.status.upper()} {outcome.cell.cell_id} — {outcome.message}", file=sys.stderr)

    def run(self, checked=None) -> RunSummary:
        """Run every pending cell. ``checked`` is a :class:`bench.run.preflight.PreflightResult` already
        computed (the CLI refuses to start on problems); without it the preflight runs here and
        cells of datasets that do not load are recorded as failed."""
        from tqdm.auto import tqdm

        from bench.run.executors import LocalExecutor
        from bench.run.preflight import preflight

        started = time.perf_counter()
        summary = RunSummary(self.store.run_dir, total=len(self.plan))
        with RunLock(self.store.run_dir):
            self.store.remove_stale_temporaries()
            self.write_run_info()
            checked = checked or preflight(self.plan, self.context)
            stamp = now()
            for comp, exc in checked.dataset_errors.items():
                for cell in (c for c in self.plan.cells if c.dataset == comp):
                    self.accept(failed(cell, self.context, exc, f"dataset {comp.id}", stamp, None), summary)
            units, summary.resumed = self.pending(checked.fingerprints)
            summary.count_resumed(self.store.finished)
            pending = sum(len(u.cells) for u in units)
            bar = tqdm(total=pending, desc=f"grid {self.grid.name}", unit="cell", disable=not self.progress)

            def on_outcome(outcome: Outcome) -> None:
                self.accept(outcome, summary)
                bar.update()

            try:
                (self.executor or LocalExecutor()).run(units, self.context, on_outcome)
            finally:
                bar.close()
        summary.wall_s = time.perf_counter() - started
        summary.set_aside = list(self.store.moved_aside)
        return summary


