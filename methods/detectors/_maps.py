"""Helpers the detectors and patch heads share: resizing, map upsampling, smoothing.

Why one place: ReContrast and the patch heads (PaDiM, PatchCore; ``methods/heads/_patch.py``)
post-process the same way as their official code (bilinear upsampling of a low-resolution map to
the input, then ``scipy.ndimage.gaussian_filter``); input checks and batching live in
:mod:`methods.inputs`. The patch heads scale the blur with the map side
(:func:`relative_sigma`: the references' 4 px at 224 px); ReContrast passes its absolute sigma 4.
The CRADL gradient-map post-processing lives in ``methods/localization.py``; this module is for
feature- and reconstruction-based detectors.
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

    ReContrast and CFlow-AD upsample with ``align_corners=True``, PaDiM and PatchCore with ``False``.
    Floating maps keep their dtype (CFlow's likelihood maps are float64).
    """
    if maps.ndim == 3:
        maps = maps[:, None]
    size = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(maps.shape[-2:]) != size:
        maps = F.interpolate(maps if maps.is_floating_point() else maps.float(), size=size, mode="bilinear",
                             align_corners=align_corners)
    return maps[:, 0]


#: The official PaDiM, PatchCore and ReContrast code blur by sigma = 4 px maps of 224 (256) px.
REFERENCE_SIGMA, REFERENCE_SIDE = 4.0, 224


def relative_sigma(size: tuple[int, int], sigma: float = REFERENCE_SIGMA,
                   reference: int = REFERENCE_SIDE) -> tuple[float, float]:
    """Per-axis sigma that blurs an ``(H, W)`` map as ``sigma`` px blur a ``reference`` px one.

    A fixed 4 px would be 3.5x wider, relative to the image, at 64 px than the references' 4 px at
    224 px; scaling keeps the blur the same fraction of the image at every size.
    """
    return sigma * size[0] / reference, sigma * size[1] / reference


def gaussian_smooth(maps: np.ndarray, sigma: float | tuple[float, float]) -> np.ndarray:
    """Per-map Gaussian blur of ``[N, H, W]`` exactly as ``scipy.ndimage.gaussian_filter(map, sigma)``.

    The official ReContrast, PaDiM and PatchCore code smooth each upsampled map with scipy's filter
    (``mode='reflect'``, which repeats the edge pixel, truncate 4 sigma); the batch axis gets sigma
    0 so maps never mix. ``sigma`` is one value or ``(sigma_H, sigma_W)``; 0 returns the maps.
    """
    maps = np.asarray(maps, dtype=np.float32)
    sy, sx = (sigma, sigma) if np.isscalar(sigma) else sigma
    if not (sy or sx):
        return maps
    return gaussian_filter(maps, sigma=(0, sy, sx), mode="reflect", truncate=4.0).astype(np.float32, copy=False)


def reduce_maps(maps: np.ndarray, how: str = "max") -> np.ndarray:
    """Image score from its map: ``max`` (ReContrast) or ``mean`` (MedIAnomaly AE, DDAD-ASR).

    The patch heads score in torch (``PatchHead.image_scores``: also ``topk``, and PatchCore's raw
    patch maximum).
    """
    flat = np.asarray(maps, dtype=np.float64).reshape(len(maps), -1)
    if how == "max":
        return flat.max(axis=1)
    if how == "mean":
        return flat.mean(axis=1)
    raise MethodError(f"unknown score reduction '{how}'; choose from {SCORE_REDUCTIONS}")
