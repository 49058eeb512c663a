"""Batched, on-device view augmentations for grayscale medical images.

Why not lightly's PIL/torchvision transforms: they run per sample on the CPU and would dominate a
small encoder's training step. Here one affine grid per batch draws *per-sample* parameters, so a
whole batch of views costs a couple of tensor ops on the device. The defaults follow CRADL's
pretext recipe (random crop/translation, rotation about ±0.1 rad, scale 0.9-1.2, multiplicative
brightness 0.95-1.1, Gaussian noise), which suits MRI/X-ray intensities better than colour jitter,
grayscale conversion or solarisation from natural-image recipes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.transforms.functional import gaussian_blur


@dataclass
class ViewAugment:
    """Draw a random view of each image in a batch (float [N, C, H, W] in [0, 1]).

    Args:
        translate: max shift as a fraction of the image side (CRADL: ±22 px of 128).
        rotate: max rotation in radians.
        scale: (min, max) factor on the *sampling coordinates*, as batchgenerators' ``SpatialTransform``
            (CRADL's pipeline) applies it: > 1 samples a larger field of view (content shrinks), < 1 zooms in.
        flip: probability of a horizontal flip (0 by default: brain hemispheres are not
            interchangeable in every dataset, and CRADL's mirror transform was a no-op in 2D).
        brightness: (min, max) multiplicative factor.
        contrast: (min, max) factor around the image mean (1, 1 disables it).
        noise: max std of additive Gaussian noise (drawn per image in [0, noise]).
        blur: probability of a light Gaussian blur (sigma in [0.1, 1.0] px).
    """

    translate: float = 0.17
    rotate: float = 0.1
    scale: tuple[float, float] = (0.9, 1.2)
    flip: float = 0.0
    brightness: tuple[float, float] = (0.95, 1.1)
    contrast: tuple[float, float] = (1.0, 1.0)
    noise: float = 0.05
    blur: float = 0.0

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        n, device = x.shape[0], x.device

        def uniform(lo: float, hi: float) -> torch.Tensor:
            return (torch.rand(n, generator=generator) * (hi - lo) + lo).to(device)

        angle = uniform(-self.rotate, self.rotate)
        zoom = uniform(*self.scale)
        tx, ty = uniform(-self.translate, self.translate) * 2, uniform(-self.translate, self.translate) * 2
        sign = torch.where(uniform(0, 1) < self.flip, -1.0, 1.0)
        # batchgenerators multiplies the sampling coordinates by the scale (scale_coords: coords *= scale)
        cos, sin = torch.cos(angle) * zoom, torch.sin(angle) * zoom
        theta = torch.stack([torch.stack([cos * sign, -sin, tx], 1),
                             torch.stack([sin * sign, cos, ty], 1)], 1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        if self.blur > 0:
            out = _random_blur(out, self.blur, uniform)
        view = out * uniform(*self.brightness).view(-1, 1, 1, 1)
        if self.contrast != (1.0, 1.0):
            mean = view.mean(dim=(1, 2, 3), keepdim=True)
            view = (view - mean) * uniform(*self.contrast).view(-1, 1, 1, 1) + mean
        if self.noise > 0:
            std = uniform(0, self.noise).view(-1, 1, 1, 1)
            view = view + noise_like(x, generator) * std
        return view.clamp_(-0.5, 1.5)


def noise_like(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard normal noise shaped like ``x``, drawn on ``x``'s device.

    On the CPU it comes from ``generator`` itself (the draws every CPU result so far used). On a GPU
    a device generator seeded from ``generator`` draws it there: no image-sized tensor is made on
    the host and copied each batch, and the stream stays fixed by the seed.
    """
    if x.device.type == "cpu":
        return torch.randn(x.shape, generator=generator)
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return torch.randn(x.shape, generator=torch.Generator(x.device).manual_seed(seed), device=x.device)


def _random_blur(x: torch.Tensor, p: float, uniform) -> torch.Tensor:
    """With probability ``p`` per image, a 5x5 Gaussian blur (reflect padding) of std U(0.1, 1.0)."""
    sigma = uniform(0.1, 1.0)
    apply = uniform(0, 1) < p
    out = x.clone()
    for i in apply.nonzero().flatten().tolist():
        s = float(sigma[i])
        out[i] = gaussian_blur(x[i], kernel_size=[5, 5], sigma=[s, s])
    return out


def warmup_cosine(step: int, total: int, warmup: int) -> float:
    """Linear warm-up then cosine decay to 0 (CRADL: 5 warm-up epochs, then cosine)."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
