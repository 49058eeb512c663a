"""k-nearest-neighbour head: mean distance to the k closest training embeddings.

Why: the non-parametric baseline of deep anomaly detection on frozen features (Bergman, Cohen &
Hoshen, 2020, "Deep Nearest Neighbor Anomaly Detection"); it assumes no density shape, so it tells
whether a parametric head (Gaussian, GMM, flow) loses information on a representation.
"""

from __future__ import annotations

import warnings

import torch

from methods.base import DensityHead
from methods.registry import register_head


@register_head("knn")
class KNNHead(DensityHead):
    """Mean Euclidean distance to the ``k`` nearest training embeddings (after ``preprocess``, default ``none``).

    Neighbours are searched chunk by chunk over the queries (``chunk_size`` rows of ``cdist`` at a
    time) so 10k x 10k never materialises at once; distances to the chosen neighbours are then
    recomputed exactly, which keeps the score differentiable in ``z``. A query equal to a training
    point counts itself as a neighbour at distance 0.

    Args:
        k: number of neighbours; clamped to the training-set size with a warning.
        max_train: keep at most this many training embeddings (seeded random subsample).
        chunk_size: queries per distance block.
    """

    deterministic_fit = True       # the training set itself, unless ``max_train`` subsamples it (seeded)

    def __init__(self, k: int = 5, max_train: int | None = None, chunk_size: int = 1024, preprocess: str | None = None):
        super().__init__(preprocess)
        if k < 1:
            raise ValueError(f"knn head: k must be >= 1, got {k}")
        if max_train is not None and max_train < 1:
            raise ValueError(f"knn head: max_train must be >= 1 or None, got {max_train}")
        if chunk_size < 1:
            raise ValueError(f"knn head: chunk_size must be >= 1, got {chunk_size}")
        self.k = k
        self.max_train = max_train
        if max_train is not None:
            self.deterministic_fit = False
        self.chunk_size = chunk_size
        self.k_: int | None = None
        self.register_buffer("train_", torch.zeros(0, 0))

    def _fit(self, z: torch.Tensor, *, seed: int, device: str = "cpu", progress: bool = False) -> None:
        if self.max_train is not None and len(z) > self.max_train:
            generator = torch.Generator().manual_seed(seed)
            keep = torch.randperm(len(z), generator=generator)[:self.max_train].sort().values
            z = z[keep]
        if self.k > len(z):
            warnings.warn(f"knn head: k={self.k} > {len(z)} training embeddings; using k={len(z)}",
                          stacklevel=3)
        self.k_ = min(self.k, len(z))
        self.train_ = z.clone()

    def _score(self, z: torch.Tensor) -> torch.Tensor:
        train = self.train_.to(device=z.device, dtype=z.dtype)
        scores = []
        for start in range(0, len(z), self.chunk_size):
            query = z[start:start + self.chunk_size]
            with torch.no_grad():
                nearest = torch.cdist(query.detach(), train).topk(self.k_, dim=1, largest=False).indices
            distances = torch.linalg.vector_norm(query[:, None, :] - train[nearest], dim=-1)
            scores.append(distances.mean(1))
        return torch.cat(scores) if scores else z.new_zeros(0)
