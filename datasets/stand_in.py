"""Stand-ins for planning: random images in a dataset's declared split sizes, nothing read or generated.

Why: ``bench run --check`` plans a grid's cost and checks its components; neither needs the pixels.
Generating the ``full`` grid's 21 400 phantoms took 132 s of a check, and a dataset whose files are
not on this machine (yet) left the whole grid without a planned time. A loader declares its sizes at
registration (``plan_sizes=fn``: the loader's keyword arguments -> :class:`PlannedSizes`); the stand-in
holds random images of that shape (the cost of a unit depends on sizes, not contents). Stand-ins are
never scored: the runner builds the real dataset.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import numpy as np

from datasets.base import AnomalyDataset, DatasetCard, Split

#: Distinct random images a stand-in repeats (its splits index into them: little memory, varied pixels).
BASE_IMAGES = 64


@dataclass(frozen=True)
class PlannedSizes:
    """Split sizes a loader would give for its arguments: ``(images, anomalous)`` per split."""

    train: int
    val: tuple[int, int]
    test: tuple[int, int]
    channels: int
    image_size: int
    masks: bool
    pool: tuple[int, int] = (0, 0)
    #: how exact the sizes are, said beside the plan (e.g. "train: all training images, an upper bound")
    note: str = ""


def loader_arguments(factory, family: bool, kwargs: dict) -> dict:
    """The loader's defaults overlaid with ``kwargs`` (what it would run with)."""
    params = list(inspect.signature(factory).parameters.values())[1 if family else 0:]
    out = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
    out.update(kwargs)
    return out


def planned_sizes(name: str, **kwargs) -> PlannedSizes | None:
    """The sizes dataset ``name`` declares for ``kwargs``, or None where it declares none."""
    from datasets.registry import DATASETS

    entry, member = DATASETS.lookup(name)
    plan = entry.tags.get("plan_sizes")
    if plan is None:
        return None
    kwargs = {("seed" if k == "split_seed" else k): v for k, v in kwargs.items()}
    args = loader_arguments(entry.factory, entry.family, kwargs)
    return plan(member, **args) if entry.family else plan(**args)


def is_generated(name: str) -> bool:
    """Whether dataset ``name`` is generated, not read (its stand-in is as good as the real one for planning)."""
    from datasets.registry import DATASETS

    return bool(DATASETS.lookup(name)[0].tags.get("generated"))


def _split(name: str, n: int, n_anomalous: int, sizes: PlannedSizes, base: np.ndarray) -> Split:
    index = np.arange(n) % len(base)
    labels = np.zeros(n, np.int64)
    labels[n - n_anomalous:] = 1
    masks = None
    if sizes.masks:
        masks = np.zeros((n, 1, sizes.image_size, sizes.image_size), np.uint8)
        s = sizes.image_size
        masks[labels == 1, :, s // 4: s // 2, s // 4: s // 2] = 1
    return Split(base[index], labels, masks, np.array([f"{name}-{i}" for i in range(n)]), name)


def stand_in(name: str, **kwargs) -> tuple[AnomalyDataset, PlannedSizes] | None:
    """A dataset of random images in ``name``'s declared sizes for ``kwargs`` (None: none declared)."""
    sizes = planned_sizes(name, **kwargs)
    if sizes is None:
        return None
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (BASE_IMAGES, sizes.channels, sizes.image_size, sizes.image_size), dtype=np.uint8)
    pool = _split("pool", *sizes.pool, sizes, base) if sizes.pool[0] else None
    dataset = AnomalyDataset(name, _split("train", sizes.train, 0, sizes, base), _split("val", *sizes.val, sizes, base),
                             _split("test", *sizes.test, sizes, base),
                             DatasetCard(name, description="stand-in for planning (random images)"),
                             {"stand_in": True, "note": sizes.note}, pool=pool)
    return dataset, sizes
