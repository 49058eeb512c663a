"""CRADL's contrastive encoder: SimCLR on normal images with a DCGAN-style conv encoder.

Lüth, Zimmerer, Koehler, Jaeger, Isensee, Petersen, Maier-Hein, "Contrastive Representations for
Unsupervised Anomaly Detection and Localisation", BVM 2023 (arXiv:2301.02126); official code is the
early history of MIC-DKFZ/cOOpD (last CRADL-only commit 8c894950). "We propose CRADL whose core
idea is to model the distribution of normal samples directly in the low-dimensional
representation space of an encoder trained with a contrastive pretext-task." [abstract]

What this module reproduces (see methods/README.md for every deviation):

* Encoder ``dcgan`` (the code default): ``log2(size) - 1`` convolutions k4; the first maps the
  image to ``width`` channels (stride 2), each middle one is ``BN -> ReLU -> conv s2`` doubling the
  channels, the last is ``BN -> ReLU -> conv k4 s1 p0`` to ``z_dim`` (1x1), with no BN or activation
  after it; every conv has a bias. At 128 px with width 64: 64/128/256/512/1024 -> 512.
  ``backbone="resnet18"`` (or another timm ResNet) is the later cOOpD default: random init, a
  1-channel 7x7 stem, a 3x3 stride-1 stem without max-pool below 64 px (CRADL's "CIFAR stem").
* Projection ``Linear(z, z) -> ReLU -> Linear(z, z/2)`` without BatchNorm; NT-Xent, temperature
  0.5; Adam lr 1e-4, weight decay 1e-6 except biases/BN; 5 warm-up epochs then cosine; batch 512;
  100 epochs. Density heads see the encoder output (``z_dim``), never the projection.
* Views per CRADL: random translation of about +-22 px at 128 px (its resize-to-129 + random
  crop with ``patch_center_dist_from_border=42``), rotation +-0.1 rad, scale 0.9-1.2,
  multiplicative brightness 0.95-1.1, Gaussian noise with std drawn in [0, 0.05], clipping to
  [-1.5, 1.5], and optional random "noise" squares (off, as at the final CRADL commit).

Input units. CRADL feeds z-scored MR slices clipped to [-1.5, 1.5]; the suite's images are in
[0, 1]. The encoder maps them affinely, ``u = lo + (hi - lo) x`` with ``(lo, hi) = (-1.5, 1.5)``, so
the network sees CRADL's value range and the noise std and clipping keep CRADL's units (noise of
0.05 is 1/60 of the range, as in CRADL, not 1/20). Geometry and brightness are applied before the
mapping, in [0, 1], where the background is 0 as in CRADL's z-scored brains, so the
multiplicative brightness scales tissue and leaves the background alone. Because BatchNorm
follows the first conv, the affine map matters only through the noise scale and the clipping.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import timm
import torch
from torch import nn

from methods.encoders._augment import ViewAugment
from methods.encoders.simclr import SimCLREncoder
from methods.backbones import timm_feature_maps
from methods.registry import register_encoder


class DCGANEncoder(nn.Module):
    """CRADL's conv encoder for square images whose side is a power of two (>= 8).

    ``stages`` holds the ``log2(size) - 1`` layers; their outputs halve the side down to 4x4, and the
    last maps 4x4 to 1x1 with ``z_dim`` channels. ``forward`` returns ``[N, z_dim]``.
    """

    def __init__(self, in_chans: int = 1, image_size: int = 128, width: int = 64, z_dim: int = 512):
        super().__init__()
        if image_size < 8 or image_size & (image_size - 1):
            raise ValueError(f"cradl: the dcgan encoder needs a power-of-two image_size >= 8 (log2(size) - 1 "
                             f"layers down to 1x1), got {image_size}; use backbone='resnet18' for other sizes")
        if width < 1 or z_dim < 1:
            raise ValueError(f"cradl: width and z_dim must be >= 1, got width={width}, z_dim={z_dim}")
        n_layers = int(math.log2(image_size)) - 1
        stages: list[nn.Module] = [nn.Conv2d(in_chans, width, 4, 2, 1, bias=True)]
        channels = width
        for _ in range(n_layers - 2):
            stages.append(nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(),
                                        nn.Conv2d(channels, 2 * channels, 4, 2, 1, bias=True)))
            channels *= 2
        stages.append(nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(), nn.Conv2d(channels, z_dim, 4, 1, 0, bias=True)))
        self.stages = nn.ModuleList(stages)
        self.num_features = z_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x)
        return x.flatten(1)

    def stage_maps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Outputs of the stride-2 convs ``conv1..conv{K-1}`` (down to 4x4; the 1x1 ``z`` is left out)."""
        maps = {}
        for i, stage in enumerate(self.stages[:-1]):
            x = stage(x)
            maps[f"conv{i + 1}"] = x
        return maps


def resnet_trunk(name: str, in_chans: int, image_size: int) -> nn.Module:
    """Random-init timm ResNet with pooled output; CRADL's 3x3 stride-1 stem below 64 px."""
    model = timm.create_model(name, pretrained=False, in_chans=in_chans, num_classes=0)
    if image_size < 64:
        if not (hasattr(model, "conv1") and hasattr(model, "maxpool")):
            raise ValueError(f"cradl: backbone '{name}' has no ResNet stem to adapt to {image_size} px inputs")
        stem = nn.Conv2d(in_chans, model.conv1.out_channels, 3, 1, 1, bias=False)
        nn.init.kaiming_normal_(stem.weight, mode="fan_out", nonlinearity="relu")
        model.conv1, model.maxpool = stem, nn.Identity()
    return model


@dataclass
class CRADLAugment:
    """CRADL's pretext views, batched: [0, 1] images in, CRADL units (``value_range``) out.

    Geometry and brightness come from :class:`ViewAugment` (its noise switched off); then the
    images are mapped to ``value_range``, Gaussian noise with a per-image std in [0, ``noise``] is
    added, values are clipped, and with ``noise_masks`` 0-3 squares of side up to half the image
    are filled with a uniform value from the range (CRADL's ``BlankSquareNoiseTransform``; the
    official helper overwrote earlier squares so only the last survived, here all are kept).
    """

    view: dict = field(default_factory=dict)
    noise: float = 0.05
    value_range: tuple[float, float] = (-1.5, 1.5)
    noise_masks: bool = False
    max_squares: int = 3

    def __post_init__(self):
        self.geometry = ViewAugment(**{**self.view, "noise": 0.0})

    def to_units(self, x: torch.Tensor) -> torch.Tensor:
        lo, hi = self.value_range
        return (lo + (hi - lo) * x).clamp(lo, hi)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        n, device = x.shape[0], x.device
        lo, hi = self.value_range
        # ViewAugment clamps to [-0.5, 1.5] in [0, 1] units, which maps outside CRADL's range.
        view = lo + (hi - lo) * self.geometry(x, generator)
        if self.noise > 0:
            std = (torch.rand(n, generator=generator) * self.noise).view(-1, 1, 1, 1).to(device)
            view = view + torch.randn(x.shape, generator=generator).to(device) * std
        view = view.clamp(lo, hi)
        if self.noise_masks:
            view = self._squares(view, generator)
        return view

    def _squares(self, view: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        n, c, h, w = view.shape
        lo, hi = self.value_range
        count = torch.randint(0, self.max_squares + 1, (n,), generator=generator)
        ys, xs = torch.arange(h).view(1, h, 1), torch.arange(w).view(1, 1, w)
        for k in range(self.max_squares):
            side = (torch.rand(n, generator=generator) * (min(h, w) // 2)).long()
            top = (torch.rand(n, generator=generator) * (h - side)).long()
            left = (torch.rand(n, generator=generator) * (w - side)).long()
            fill = torch.rand(n, c, generator=generator) * (hi - lo) + lo
            inside = ((ys >= top.view(-1, 1, 1)) & (ys < (top + side).view(-1, 1, 1))
                      & (xs >= left.view(-1, 1, 1)) & (xs < (left + side).view(-1, 1, 1))
                      & (k < count).view(-1, 1, 1))
            inside = inside[:, None].to(view.device)
            view = torch.where(inside, fill.view(n, c, 1, 1).to(view), view)
        return view


@register_encoder("cradl", tiny=dict(epochs=1, batch_size=8, warmup_epochs=0))
class CRADLEncoder(SimCLREncoder):
    """CRADL (Lüth et al. 2022): SimCLR pretext on a DCGAN encoder (or a ResNet); paper defaults.

    Args:
        backbone: ``dcgan`` (CRADL's default) or a timm ResNet name such as ``resnet18``.
        width, z_dim: first-stage channels F and representation size of the dcgan encoder (64, 512).
        temperature: NT-Xent temperature (0.5).
        proj_hidden, proj_dim: projection sizes (default z -> z -> z/2, no BatchNorm).
        augment: overrides of the :class:`ViewAugment` geometry/brightness parameters.
        noise, noise_masks: max Gaussian noise std in CRADL units (0.05); random noise squares (off).
        value_range: CRADL's clipping range that [0, 1] images are mapped onto ((-1.5, 1.5)).
        epochs, batch_size, lr, weight_decay, warmup_epochs: CRADL's 100, 512, 1e-4, 1e-6, 5.
    """

    def __init__(self, in_chans: int = 1, image_size: int = 128, *, backbone: str = "dcgan", width: int = 64,
                 z_dim: int = 512, temperature: float = 0.5, proj_hidden: int | None = None,
                 proj_dim: int | None = None, augment: dict | None = None, noise: float = 0.05,
                 noise_masks: bool = False, value_range: tuple[float, float] = (-1.5, 1.5), epochs: int = 100,
                 batch_size: int = 512, lr: float = 1e-4, weight_decay: float = 1e-6, warmup_epochs: int = 5,
                 optimizer: str = "adam"):
        # Read by build_backbone, which SimCLREncoder.__init__ calls.
        self._dcgan_size = (width, z_dim)
        super().__init__(in_chans, image_size, backbone=backbone, temperature=temperature, proj_hidden=proj_hidden,
                         proj_dim=proj_dim, proj_batch_norm=False, augment=None, epochs=epochs,
                         batch_size=batch_size, lr=lr, weight_decay=weight_decay, warmup_epochs=warmup_epochs,
                         optimizer=optimizer)
        lo, hi = value_range
        if not lo < hi:
            raise ValueError(f"cradl: value_range must be (low, high) with low < high, got {value_range}")
        self.augment = CRADLAugment(view=dict(augment or {}), noise=noise, value_range=(float(lo), float(hi)),
                                    noise_masks=noise_masks)

    def build_backbone(self, name: str, in_chans: int) -> nn.Module:
        if name == "dcgan":
            width, z_dim = self._dcgan_size
            return DCGANEncoder(in_chans, self.image_size, width, z_dim)
        return resnet_trunk(name, in_chans, self.image_size)

    dense = True

    def feature_maps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Named stages of the trunk in CRADL units: DCGAN ``conv1..`` or the ResNet's timm stages."""
        u = self.augment.to_units(x)
        if isinstance(self.backbone, DCGANEncoder):
            return self.backbone.stage_maps(u)
        return timm_feature_maps(self.backbone, u)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, z_dim]`` representation of [0, 1] images (no projection head)."""
        return self.backbone(self.augment.to_units(x))

    def training_step(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        views = torch.cat([self.augment(x, generator), self.augment(x, generator)])
        z0, z1 = self.projection(self.backbone(views)).chunk(2)
        return self.criterion(z0, z1)
