"""The grid expanded once: every cell, and the units of work that group them.

Why one object: validation, the preflight, the executors' warm-up, the driver, the cost estimate
and the report must all see the same cells. ``Plan.of(grid)`` expands the grid once; everything
downstream receives the plan instead of expanding the grid again.

A **unit** is what one worker does at once: an *encoder group* (one dataset x encoder
configuration x seed: the encoder is trained or loaded once and every head cell on it follows) or
one *detector* cell (an end-to-end method fits by itself).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterable

from bench.run.grid import Cell, Component, Grid, GridError


@dataclass(frozen=True)
class Unit:
    """One encoder group (``encoder`` set, head cells) or one detector cell (``encoder`` None)."""

    dataset: Component
    seed: int
    cells: tuple[Cell, ...]
    fingerprint: str
    #: the shared encoder of an encoder group; None for a detector unit
    encoder: Component | None = None

    @property
    def component(self) -> Component:
        return self.encoder if self.encoder is not None else self.cells[0].detector

    @property
    def label(self) -> str:
        return f"{self.dataset.id} × {self.component.id} (seed {self.seed})"


@dataclass(frozen=True)
class Plan:
    """The cells of one grid in a stable order, with the lookups every stage needs."""

    grid: Grid
    cells: tuple[Cell, ...]

    @classmethod
    def of(cls, grid: Grid) -> "Plan":
        """Expand ``grid``; two cells that would share one record (ids that differ only in characters
        a file name cannot hold) are refused here, before any work."""
        cells = tuple(grid.cells())
        ids = Counter(c.cell_id for c in cells)
        clash = sorted(k for k, n in ids.items() if n > 1)
        if clash:
            raise GridError(f"two cells share the record name '{clash[0]}' (ids that differ only in characters "
                            "outside A-Z a-z 0-9 _ . + -); give the entries distinct ids")
        return cls(grid, cells)

    @property
    def name(self) -> str:
        return self.grid.name

    def __len__(self) -> int:
        return len(self.cells)

    def datasets(self) -> list[Component]:
        return list(dict.fromkeys(c.dataset for c in self.cells))

    def heads(self) -> list[Component]:
        return list(dict.fromkeys(c.head for c in self.cells if c.head is not None))

    def encoders(self, dataset: Component | None = None) -> list[Component]:
        return list(dict.fromkeys(c.encoder for c in self.cells
                                  if c.encoder is not None and (dataset is None or c.dataset == dataset)))

    def detector_cells(self, dataset: Component | None = None) -> list[Cell]:
        return [c for c in self.cells if c.detector is not None and (dataset is None or c.dataset == dataset)]

    def units(self, cells: Iterable[Cell], fingerprint: Callable[[Component], str]) -> list[Unit]:
        """Group ``cells`` (a subset of this plan, e.g. the pending ones) into units, in plan order."""
        groups: dict[tuple, list[Cell]] = {}
        for cell in cells:
            key = ((cell.dataset, cell.encoder, cell.seed, None) if cell.detector is None
                   else (cell.dataset, None, cell.seed, cell.cell_id))
            groups.setdefault(key, []).append(cell)
        return [Unit(ds, seed, tuple(group), fingerprint(ds), encoder=enc)
                for (ds, enc, seed, _), group in groups.items()]
