"""MSACL's lesion simulator (Tian et al. 2021/2023), batched in torch: pure image synthesis, no network.

It lives in the datasets layer because two users need it: the MSACL encoder (``methods/encoders/msacl.py``,
which imports it from here and behaves exactly as before the move) and the ``msacl_lesion`` anomaly
generator of the label-free selection set (``datasets/generators/msacl_lesion.py``). The underscore keeps
the generator registry from importing torch when it discovers its entries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class LesionSynthesis:
    """Paste ``n_lesions[i]`` synthetic lesions into image ``i`` (float [N, C, H, W] in [0, 1]).

    Each lesion is a patch of the same image taken around a random source point, warped (fisheye
    with probability 1/2, otherwise a horizontal sine wave), given a random gain around its mean,
    a signed intensity offset and Gaussian noise, and blended into a random target point through
    an irregular blob mask with a soft edge. Points are drawn from the central ``1 - 2 * margin``
    of the image; the radius is a fraction of the side drawn from ``radius``.

    Returns the images and the binary lesion masks ``[N, max_lesions, H, W]`` (one channel per
    lesion slot, empty where a sample has fewer lesions).
    """

    max_lesions: int = 3
    radius: tuple[float, float] = (0.04, 0.14)
    margin: float = 0.2
    gain: tuple[float, float] = (0.6, 1.4)
    offset: tuple[float, float] = (0.1, 0.4)
    noise: float = 0.05
    warp: float = 0.5
    edge_px: float = 1.5

    def __call__(self, x: torch.Tensor, n_lesions: torch.Tensor, generator: torch.Generator | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        n, c, h, w = x.shape
        n_lesions = torch.as_tensor(n_lesions).view(-1).long()
        if len(n_lesions) != n:
            raise ValueError(f"LesionSynthesis: got {len(n_lesions)} lesion counts for {n} images")
        if len(n_lesions) and (n_lesions.min() < 0 or n_lesions.max() > self.max_lesions):
            raise ValueError(f"LesionSynthesis: lesion counts must be in [0, {self.max_lesions}], "
                             f"got {n_lesions.min().item()}..{n_lesions.max().item()}")
        device = x.device

        def uniform(lo: float, hi: float, *shape: int) -> torch.Tensor:
            return (torch.rand(*(shape or (n,)), generator=generator) * (hi - lo) + lo).to(device)

        ys = torch.linspace(-1 + 1 / h, 1 - 1 / h, h, device=device).view(1, h, 1).expand(n, h, w)
        xs = torch.linspace(-1 + 1 / w, 1 - 1 / w, w, device=device).view(1, 1, w).expand(n, h, w)
        lim = 1 - 2 * self.margin
        out = x.clone()
        masks = torch.zeros(n, self.max_lesions, h, w, device=device)
        for k in range(self.max_lesions):
            active = (n_lesions > k).to(device).float().view(-1, 1, 1)
            target = uniform(-lim, lim, n, 2)
            source = uniform(-lim, lim, n, 2)
            radius = uniform(*self.radius) * 2                                    # normalised units (side = 2)
            # Irregular outline: radius modulated by two low-order harmonics and an aspect ratio.
            dx, dy = xs - target[:, 0].view(-1, 1, 1), ys - target[:, 1].view(-1, 1, 1)
            aspect = uniform(0.7, 1.0).view(-1, 1, 1)
            angle = torch.atan2(dy, dx)
            wobble = (1 + 0.15 * torch.cos(angle + uniform(0, 2 * math.pi).view(-1, 1, 1))
                      + 0.1 * torch.cos(2 * angle + uniform(0, 2 * math.pi).view(-1, 1, 1)))
            dist = torch.sqrt(dx ** 2 + (dy / aspect) ** 2)
            reach = radius.view(-1, 1, 1) * wobble
            edge = 2 * self.edge_px / min(h, w)
            soft = ((reach - dist) / edge + 0.5).clamp(0, 1) * active              # [N, H, W]
            # Warp the local offsets (fisheye or wave), then read the source patch.
            qx, qy = dx / radius.view(-1, 1, 1), dy / radius.view(-1, 1, 1)
            fisheye = uniform(0, 1).view(-1, 1, 1) < 0.5
            power = uniform(-self.warp, self.warp).view(-1, 1, 1)
            scale = torch.where(fisheye, (qx ** 2 + qy ** 2 + 1e-6).pow(power / 2), torch.ones_like(qx))
            wave = torch.where(fisheye, torch.zeros_like(qx),
                               self.warp * 0.5 * torch.sin(math.pi * uniform(1, 3).view(-1, 1, 1) * qy
                                                           + uniform(0, 2 * math.pi).view(-1, 1, 1)))
            sx = source[:, 0].view(-1, 1, 1) + (qx * scale + wave) * radius.view(-1, 1, 1)
            sy = source[:, 1].view(-1, 1, 1) + qy * scale * radius.view(-1, 1, 1)
            patch = F.grid_sample(out, torch.stack([sx, sy], -1), mode="bilinear", padding_mode="border",
                                  align_corners=False)
            weight = soft[:, None]
            mean = (patch * weight).sum((2, 3), keepdim=True) / weight.sum((2, 3), keepdim=True).clamp_min(1e-6)
            sign = torch.where(uniform(0, 1) < 0.5, -1.0, 1.0).view(-1, 1, 1, 1)
            lesion = ((patch - mean) * uniform(*self.gain).view(-1, 1, 1, 1) + mean
                      + sign * uniform(*self.offset).view(-1, 1, 1, 1)
                      + torch.randn(patch.shape, generator=generator).to(device) * uniform(0, self.noise).view(-1, 1, 1, 1))
            out = out * (1 - weight) + lesion.clamp(0, 1) * weight
            masks[:, k] = (soft > 0.5).float()
        return out, masks
