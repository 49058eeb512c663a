"""DDAD-ASR's networks and maths (no training loop, no data handling): see the package docstring.

The pure PyTorch side of :mod:`methods.detectors.ddad_asr`: the ASR-Net, its focal loss, the
synthetic anomalies it trains on and the discrepancy maps of the two AE ensembles (the AE itself is
:class:`methods.detectors.ae.ConvAutoencoder`). The detector (:mod:`.detector`) holds the glue.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn



class RefineNet(nn.Module):
    """ASR-Net: three 3x3 convs (``in -> mid -> mid -> 2``) with BN + ReLU between; logits out."""

    def __init__(self, in_channels: int = 2, mid_channels: int = 128):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, mid_channels, 3, padding=1), nn.BatchNorm2d(mid_channels), nn.ReLU(),
            nn.Conv2d(mid_channels, mid_channels, 3, padding=1), nn.BatchNorm2d(mid_channels), nn.ReLU(),
            nn.Conv2d(mid_channels, 2, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def focal_loss(probs: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, smooth: float = 1e-5) -> torch.Tensor:
    """Focal loss (Lin et al. 2017) on *probabilities* ``[N, 2, H, W]`` against a {0, 1} mask ``[N, H, W]``.

    As in the official code: the one-hot target is clamped to ``[smooth, 1 - smooth]``,
    ``p_t = <target, p> + smooth`` and the loss is ``-(1 - p_t)^gamma log p_t`` averaged over pixels.
    """
    one_hot = F.one_hot(target.long(), probs.shape[1]).permute(0, 3, 1, 2).to(probs.dtype)
    one_hot = one_hot.clamp(smooth / (probs.shape[1] - 1), 1.0 - smooth)
    pt = (one_hot * probs).sum(1) + smooth
    return (-(1 - pt).pow(gamma) * pt.log()).mean()


def blend_squares(x: torch.Tensor, pool: torch.Tensor, index: torch.Tensor, generator: torch.Generator,
                  probability: float = 0.5, core: float = 0.8) -> tuple[torch.Tensor, torch.Tensor]:
    """DDAD-ASR's synthetic anomalies for a batch ``x`` (rows ``index`` of ``pool``), all in [-1, 1].

    Each image gets, with ``probability``, a square of side ``2w`` (``w`` uniform in
    ``[round(0.05 S), round(0.2 S))``) centred uniformly in the central ``core`` fraction, filled by
    ``(1 - a) x + a y`` with ``y`` the same region of another random image of ``pool`` and a scalar
    ``a ~ U(0, 1)``. Returns the images and the {0, 1} masks ``[N, H, W]``.
    """
    n, size = len(x), x.shape[-1]
    device = x.device

    def uniform_int(low: int, high: int) -> torch.Tensor:
        return torch.randint(low, max(high, low + 1), (n,), generator=generator).to(device)

    offset = int((1 - core) * size / 2)
    centre_y, centre_x = uniform_int(offset, offset + int(core * size)), uniform_int(offset, offset + int(core * size))
    half = uniform_int(int(round(0.05 * size)), int(round(0.2 * size)))
    alpha = torch.rand(n, generator=generator).to(device)
    chosen = (torch.rand(n, generator=generator) < probability).to(device)
    others = torch.randint(1, len(pool), (n,), generator=generator).to(device)     # never the image itself
    source = pool[(index.to(device) + others) % len(pool)]
    coords = torch.arange(size, device=device)
    rows = (coords[None] >= centre_y[:, None] - half[:, None]) & (coords[None] < centre_y[:, None] + half[:, None])
    cols = (coords[None] >= centre_x[:, None] - half[:, None]) & (coords[None] < centre_x[:, None] + half[:, None])
    mask = (rows[:, :, None] & cols[:, None, :] & chosen[:, None, None])              # [N, S, S]
    weight = (alpha[:, None, None] * mask)[:, None]                                   # [N, 1, S, S]
    return x * (1 - weight) + source * weight, (weight[:, 0] > 0).long()


@torch.no_grad()
def discrepancies(ndm: nn.ModuleList, udm: nn.ModuleList, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-pixel maps ``[B, 1, S, S]`` (mean over channels) for inputs in [-1, 1] at the AEs' size.

    ``intra`` = unbiased std over the NDM reconstructions, ``inter`` = |mean_UDM - mean_NDM|,
    ``rec`` = squared error of the mean NDM reconstruction.
    """
    ndm_out = torch.stack([model(x) for model in ndm])          # [K, B, C, S, S]
    udm_out = torch.stack([model(x) for model in udm])
    mean_ndm = ndm_out.mean(0)
    return {"intra": ndm_out.std(0, unbiased=True).mean(1, keepdim=True),
            "inter": (udm_out.mean(0) - mean_ndm).abs().mean(1, keepdim=True),
            "rec": (x - mean_ndm).pow(2).mean(1, keepdim=True)}


def refine_input(maps: dict[str, torch.Tensor], score: str) -> torch.Tensor:
    """ASR-Net's input: ``[inter, intra]`` for ``asr_dual``, ``intra`` alone for ``asr_intra``."""
    if score == "asr_dual":
        return torch.cat([maps["inter"], maps["intra"]], dim=1)
    return maps["intra"]
