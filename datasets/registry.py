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
    """
    root = Path(root).expanduser() if root is not None else default_data_root()
    return DATASETS.create(name, root=root, **kwargs)


def list_datasets(pattern: str = "*") -> list[str]:
    return DATASETS.names(pattern)
