"""Pixel anomaly maps for encoder x head pairs: CRADL's gradient maps and reconstruction errors.

CRADL (Lüth et al. 2022) localises with the input gradient of the latent NLL,
|d NLL(f(x)) / dx|, then masks the background (x != 0), applies a 5x5 median filter and a 7x7
Gaussian (sigma 3). Dropping that post-processing changes pixel AP and Dice a lot, so it is the
default for every map this module makes; ``postprocess=False`` gives the raw map.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from datasets.base import to_float


def median_filter(x: torch.Tensor, size: int = 5) -> torch.Tensor:
    """Same-size median filter with reflect padding over ``[N, 1, H, W]``."""
    pad = size // 2
    patches = F.unfold(F.pad(x, (pad, pad, pad, pad), mode="reflect"), size)   # [N, size², H*W]
    return patches.median(dim=1).values.view_as(x)


def gaussian_filter(x: torch.Tensor, sigma: float = 3.0, size: int = 7) -> torch.Tensor:
    """Separable Gaussian blur with reflect padding over ``[N, 1, H, W]``."""
    t = torch.arange(size, dtype=x.dtype, device=x.device) - (size - 1) / 2
    k = torch.exp(-t ** 2 / (2 * sigma ** 2))
    k = (k / k.sum()).view(1, 1, 1, -1)
    pad = size // 2
    x = F.conv2d(F.pad(x, (pad, pad, 0, 0), mode="reflect"), k)
    return F.conv2d(F.pad(x, (0, 0, pad, pad), mode="reflect"), k.transpose(2, 3))


def postprocess(maps: torch.Tensor, images: torch.Tensor, *, median: int = 5, sigma: float = 3.0,
                kernel: int = 7) -> torch.Tensor:
    """CRADL's order: foreground mask (any channel != 0) -> median -> Gaussian. ``[N, 1, H, W]``."""
    foreground = (images != 0).any(dim=1, keepdim=True)
    maps = maps * foreground
    if median:
        maps = median_filter(maps, median)
    if sigma:
        maps = gaussian_filter(maps, sigma, kernel)
    return maps


def gradient_maps(encoder: torch.nn.Module, head: torch.nn.Module, images: np.ndarray, *,
                  batch_size: int = 64, device: str = "cpu", post: bool = True) -> np.ndarray:
    """``|d head(encoder(x)) / dx|`` per pixel (mean over channels), ``[N, H, W]`` float32.

    Both modules are in eval mode, so BatchNorm uses running statistics and a sample's map does
    not depend on the rest of its batch.
    """
    encoder.eval().to(device)
    head.eval().to(device)
    out = []
    for start in range(0, len(images), batch_size):
        x = to_float(images[start:start + batch_size], device).requires_grad_(True)
        score = head(encoder(x)).sum()
        (grad,) = torch.autograd.grad(score, x)
        maps = grad.abs().mean(dim=1, keepdim=True)
        if post:
            maps = postprocess(maps, x.detach())
        out.append(maps[:, 0].float().cpu())
    return torch.cat(out).numpy()


@torch.no_grad()
def reconstruction_maps(encoder: torch.nn.Module, images: np.ndarray, *, batch_size: int = 128,
                        device: str = "cpu", post: bool = True) -> np.ndarray:
    """Squared reconstruction error per pixel (mean over channels) for encoders with ``reconstruct``."""
    encoder.eval().to(device)
    out = []
    for start in range(0, len(images), batch_size):
        x = to_float(images[start:start + batch_size], device)
        maps = (encoder.reconstruct(x) - x).pow(2).mean(dim=1, keepdim=True)
        if post:
            maps = postprocess(maps, x)
        out.append(maps[:, 0].float().cpu())
    return torch.cat(out).numpy()


LOCALIZATIONS = ("gradient", "reconstruction")


def supports(encoder: torch.nn.Module, localization: str) -> bool:
    """Whether ``encoder`` can make maps of this kind."""
    if localization == "gradient":
        return True
    if localization == "reconstruction":
        return bool(encoder.reconstructs)
    raise ValueError(f"unknown localization '{localization}'; choose from {LOCALIZATIONS}")
