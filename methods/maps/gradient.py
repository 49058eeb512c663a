"""CRADL's gradient maps: |d head(encoder(x)) / dx|, for every encoder x head pair."""

from __future__ import annotations

import numpy as np
from torch import nn

from methods.localization import gradient_maps, gradient_maps_heads
from methods.maps import MapKind, register_map_kind


@register_map_kind("gradient")
class GradientMaps(MapKind):
    """Input gradient of the head's score (CRADL); options ``smooth_samples``, ``noise``, ``shifts``
    (SmoothGrad and shift-averaging against the fixed hot spots of strided trunks, see
    ``methods/localization.py``)."""

    head_dependent = True

    def make(self, encoder: nn.Module, head: nn.Module, images: np.ndarray, *, device: str = "cpu",
             batch_size: int = 64, smooth_samples: int = 0, noise: float = 0.1, shifts: int = 1,
             seed: int = 0) -> np.ndarray:
        return gradient_maps(encoder, head, images, batch_size=batch_size, device=device,
                             smooth_samples=smooth_samples, noise=noise, shifts=shifts, seed=seed)

    def make_many(self, encoder: nn.Module, heads: list, images: np.ndarray, *, device: str = "cpu",
                  batch_size: int = 64, smooth_samples: int = 0, noise: float = 0.1, shifts: int = 1,
                  seed: int = 0) -> list[np.ndarray]:
        """Every head's maps from one encoder forward pass per batch (one backward pass per head)."""
        return gradient_maps_heads(encoder, heads, images, batch_size=batch_size, device=device,
                                   smooth_samples=smooth_samples, noise=noise, shifts=shifts, seed=seed)
