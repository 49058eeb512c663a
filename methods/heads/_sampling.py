"""Seeded subsampling of patch vectors for heads that fit in memory (GMM, flow).

Why: a training set of N images yields N x P patch vectors; sampling a fixed number per image
bounds memory and time (2-core CPU) while covering every image and, in expectation, every position.
"""

from __future__ import annotations

import torch


def sample_patches(patches, per_image: int | None, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``(vectors [M, d], positions [M])`` with at most ``per_image`` random patches of each image."""
    vectors, positions = [], []
    for emb in patches:
        b, p, _ = emb.shape
        if per_image is None or per_image >= p:
            index = torch.arange(p).repeat(b, 1)
        else:
            index = torch.rand(b, p, generator=generator).argsort(dim=1)[:, :per_image]
        vectors.append(torch.gather(emb, 1, index.to(emb.device)[..., None].expand(-1, -1, emb.shape[-1])).flatten(0, 1))
        positions.append(index.flatten())
    return torch.cat(vectors), torch.cat(positions)
