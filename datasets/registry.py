"""Dataset registry: ``@register_dataset("synthetic")`` and ``create_dataset(name, ...)``."""

from __future__ import annotations

import os
from pathlib import Path

from datasets._shared.registry import Registry

DATASETS = Registry("dataset", "datasets")
register_dataset = DATASETS.register

#: Where loaders look for data when ``--data-root`` is not given.
DATA_ROOT_ENV = "UAD_BENCH_DATA"


def default_data_root() -> Path:
    return Path(os.environ.get(DATA_ROOT_ENV, "data")).expanduser()


def create_dataset(name: str, root: str | Path | None = None, **kwargs):
    """Build dataset ``name`` (e.g. ``synthetic``, ``medmnist/pneumoniamnist``).

    ``root`` defaults to ``$UAD_BENCH_DATA`` or ``./data``. Loader kwargs (``image_size``,
    ``seed``, ...) come from the grid's ``[dataset.<name>]`` table.

    ``split_seed`` is every loader's ``seed`` under a name that says what it does: which images go to
    train, val and test (and, for generated data, which images are drawn). A grid's ``seeds`` do not
    touch it: they vary the training randomness of every cell on the *same* split (fixed, default 0).
    """
    if "split_seed" in kwargs:
        from datasets.base import DatasetError

        if "seed" in kwargs:
            raise DatasetError(f"{name}: give split_seed or seed, not both (they are the same setting)")
        kwargs["seed"] = kwargs.pop("split_seed")
    root = Path(root).expanduser() if root is not None else default_data_root()
    return DATASETS.create(name, root=root, **kwargs)


def list_datasets(pattern: str = "*") -> list[str]:
    return DATASETS.names(pattern)
