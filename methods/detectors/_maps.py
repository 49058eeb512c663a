"""Helpers the end-to-end detectors share: resizing, map upsampling, smoothing, pooling.

Why one place: ReContrast, PaDiM and PatchCore all post-process the same way (bilinear upsampling
of a low-resolution map to the input, then a Gaussian with sigma 4 as in their official code), and
input checks and batching live in :mod:`methods.inputs`. The CRADL gradient-map
post-processing lives in ``methods/localization.py``; this module is for feature- and
reconstruction-based detectors.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

from methods.base import MethodError

SCORE_REDUCTIONS = ("max", "mean")


def resize(x: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``[N, C, H, W]`` (no-op when the size already matches)."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def upsample(maps: torch.Tensor, size: int | tuple[int, int], *, align_corners: bool = False) -> torch.Tensor:
    """Bilinear upsampling of ``[N, H, W]`` or ``[N, 1, H, W]`` maps to ``size``; returns ``[N, H', W']``.

    ReContrast upsamples with ``align_corners=True``, PaDiM and PatchCore with ``False``.
    """
    if maps.ndim == 3:
        maps = maps[:, None]
    size = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(maps.shape[-2:]) != size:
        maps = F.interpolate(maps.float(), size=size, mode="bilinear", align_corners=align_corners)
    return maps[:, 0]


def gaussian_smooth(maps: np.ndarray, sigma: float) -> np.ndarray:
    """Per-map Gaussian blur of ``[N, H, W]`` exactly as ``scipy.ndimage.gaussian_filter(map, sigma)``.

    The official ReContrast, PaDiM and PatchCore code smooth each upsampled map with scipy's filter
    (reflect border, truncate 4 sigma); the batch axis gets sigma 0 so maps never mix.
    """
    maps = np.asarray(maps, dtype=np.float32)
    if not sigma:
        return maps
    return gaussian_filter(maps, sigma=(0, sigma, sigma)).astype(np.float32, copy=False)


def reduce_maps(maps: np.ndarray, how: str = "max") -> np.ndarray:
    """Image score from its map: ``max`` (ReContrast, PaDiM, PatchCore) or ``mean`` (MedIAnomaly, DDAD)."""
    flat = np.asarray(maps, dtype=np.float64).reshape(len(maps), -1)
    if how == "max":
        return flat.max(axis=1)
    if how == "mean":
        return flat.mean(axis=1)
    raise MethodError(f"unknown score reduction '{how}'; choose from {SCORE_REDUCTIONS}")
