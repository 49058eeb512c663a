"""Dataset loaders; each module registers one source or layout (see ``registry.py``).

Not Hugging Face's ``datasets``: this package is the suite's own and never imports that one.
"""

from datasets.base import AnomalyDataset, DatasetCard, DatasetError, Split
from datasets.registry import DATASETS, create_dataset, list_datasets, register_dataset

__all__ = ["AnomalyDataset", "DatasetCard", "DatasetError", "Split", "DATASETS",
           "create_dataset", "list_datasets", "register_dataset"]
