"""Reconstruction-error maps, the classic generative localisation baseline (encoders that decode)."""

from __future__ import annotations

import numpy as np
from torch import nn

from methods.localization import reconstruction_maps
from methods.maps import MapKind, register_map_kind


@register_map_kind("reconstruction")
class ReconstructionMaps(MapKind):
    """Squared error of ``encoder.reconstruct(x)``; the same for every head on the encoder."""

    head_dependent = False
    requires = "an encoder that reconstructs (vae, ...)"

    def applies(self, encoder: nn.Module) -> bool:
        return bool(encoder.reconstructs)

    def make(self, encoder: nn.Module, head: nn.Module, images: np.ndarray, *, device: str = "cpu",
             batch_size: int = 64) -> np.ndarray:
        return reconstruction_maps(encoder, images, batch_size=batch_size, device=device)
