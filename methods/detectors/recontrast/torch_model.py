"""ReContrast's networks and maths (no training loop, no data handling): see the package docstring.

The pure PyTorch side of :mod:`methods.detectors.recontrast`: the trainable encoder with its frozen
copy, RD4AD's one-class bottleneck, the two-headed reverse decoder, the global cosine loss with
hard mining and the anomaly map. The detector (:mod:`.detector`) holds the training glue.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from methods.backbones import ImageNetInput, imagenet_stats
from methods.base import MethodError
from methods.detectors._maps import upsample


def _conv(resample: str, cin: int, cout: int, kernel: int = 3) -> nn.Module:
    """3x3 (or 1x1) conv keeping ('same') or halving ('down') the size; 2x2 transposed conv for 'up'."""
    if resample == "up":
        return nn.ConvTranspose2d(cin, cout, 2, stride=2, bias=False)
    return nn.Conv2d(cin, cout, kernel, stride=2 if resample == "down" else 1, padding=kernel // 2, bias=False)


class ResBlock(nn.Module):
    """ResNet basic or bottleneck block that keeps, halves or doubles the resolution."""

    def __init__(self, kind: str, cin: int, cout: int, width: int, resample: str = "same"):
        super().__init__()
        if kind == "basic":
            self.body = nn.Sequential(_conv(resample, cin, cout), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                                      _conv("same", cout, cout), nn.BatchNorm2d(cout))
        else:
            self.body = nn.Sequential(
                nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                _conv(resample, width, width), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.skip = (nn.Identity() if resample == "same" and cin == cout else
                     nn.Sequential(_conv(resample, cin, cout, kernel=1), nn.BatchNorm2d(cout)))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.skip(x))


def _stage(kind: str, cin: int, cout: int, width: int, blocks: int, resample: str) -> nn.Sequential:
    return nn.Sequential(ResBlock(kind, cin, cout, width, resample),
                         *[ResBlock(kind, cout, cout, width) for _ in range(blocks - 1)])


class OneClassBottleneck(nn.Module):
    """RD4AD's OCBE: fuse three encoder levels at the coarsest grid, then ResNet blocks at stride 2."""

    def __init__(self, channels: list[int], kind: str, width: int, blocks: int):
        super().__init__()
        c1, c2, c3 = channels
        self.from_fine = nn.Sequential(_conv("down", c1, c2), nn.BatchNorm2d(c2), nn.ReLU(inplace=True),
                                       _conv("down", c2, c3), nn.BatchNorm2d(c3), nn.ReLU(inplace=True))
        self.from_mid = nn.Sequential(_conv("down", c2, c3), nn.BatchNorm2d(c3), nn.ReLU(inplace=True))
        self.fuse = _stage(kind, 3 * c3, 2 * c3, width, blocks, "down")
        self.out_channels = 2 * c3

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        fine, mid, coarse = feats
        fine, mid = self.from_fine(fine), self.from_mid(mid)
        if fine.shape[-2:] != coarse.shape[-2:] or mid.shape[-2:] != coarse.shape[-2:]:   # odd feature grids
            fine = F.interpolate(fine, size=coarse.shape[-2:], mode="bilinear", align_corners=False)
            mid = F.interpolate(mid, size=coarse.shape[-2:], mode="bilinear", align_corners=False)
        return self.fuse(torch.cat([fine, mid, coarse], dim=1))


class ReverseDecoder(nn.Module):
    """Upsampling stages back to the encoder's three levels, plus two sets of 1x1 output heads."""

    def __init__(self, in_channels: int, channels: list[int], kind: str, widths: list[int], blocks: list[int]):
        super().__init__()
        stages, prev = [], in_channels
        for cout, width, n in zip(channels[::-1], widths[::-1], blocks):       # deep -> shallow
            stages.append(_stage(kind, prev, cout, width, n, "up"))
            prev = cout
        self.stages = nn.ModuleList(stages)
        self.heads = nn.ModuleList([nn.ModuleList([nn.Conv2d(c, c, 1) for c in channels]) for _ in range(2)])

    def forward(self, z: torch.Tensor, sizes: list[torch.Size]) -> list[torch.Tensor]:
        """Decoded features, shallow level first, resized to ``sizes`` if a grid is odd."""
        out = []
        for stage, size in zip(self.stages, sizes[::-1]):
            z = stage(z)
            if z.shape[-2:] != size:
                z = F.interpolate(z, size=size, mode="bilinear", align_corners=False)
            out.append(z)
        return out[::-1]


def _init_weights(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def resnet_layout(encoder: nn.Module) -> tuple[str, list[int], list[int]] | None:
    """(block kind, bottleneck widths, block counts) of a timm ResNet's feature stages, else None."""
    names = encoder.feature_info.module_name()
    if not all(name.startswith("layer") for name in names):
        return None
    layers = [getattr(encoder, name) for name in names]
    kind = "bottleneck" if hasattr(layers[0][0], "conv3") else "basic"
    return kind, [layer[0].conv2.out_channels for layer in layers], [len(layer) for layer in layers]


class ReContrastNet(nn.Module):
    """Trainable encoder, its frozen copy, OCBE and the two-headed reverse decoder."""

    def __init__(self, encoder: nn.Module, *, decoder_blocks: tuple[int, int, int] | None = None,
                 encoder_bn_train: bool = True):
        super().__init__()
        channels = list(encoder.feature_info.channels())
        if len(channels) != 3:
            raise MethodError(f"recontrast: needs exactly three encoder levels (out_indices), got {len(channels)}")
        layout = resnet_layout(encoder)
        if layout is not None:
            kind, widths, blocks = layout
            ocbe_width, ocbe_blocks = 2 * widths[-1], (2 if blocks[0] == 2 else 3)   # RD4AD: R18 2, else 3
        else:
            kind, widths, blocks, ocbe_width, ocbe_blocks = "basic", channels, [2, 2, 2], 0, 2
        self.normalize = ImageNetInput(*imagenet_stats(encoder))
        self.encoder = encoder
        self.frozen = copy.deepcopy(encoder).requires_grad_(False)
        self.bottleneck = OneClassBottleneck(channels, kind, ocbe_width, ocbe_blocks)
        self.decoder = ReverseDecoder(self.bottleneck.out_channels, channels, kind, widths,
                                      list(decoder_blocks or blocks))
        _init_weights(self.bottleneck)
        _init_weights(self.decoder)
        self.encoder_bn_train = encoder_bn_train

    def train(self, mode: bool = True) -> "ReContrastNet":
        super().train(mode)
        self.encoder.train(mode and self.encoder_bn_train)
        self.frozen.eval()
        return self

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(targets, reconstructions) for six pairs: [frozen levels 1-3, trained levels 1-3]."""
        x = self.normalize(x)
        trained = self.encoder(x)
        with torch.no_grad():
            frozen = self.frozen(x)
        both = [torch.cat([a, b]) for a, b in zip(trained, frozen)]
        decoded = self.decoder(self.bottleneck(both), [f.shape[-2:] for f in trained])
        n = len(x)
        recon = ([head(d[:n]) for head, d in zip(self.decoder.heads[0], decoded)]      # E half -> frozen
                 + [head(d[n:]) for head, d in zip(self.decoder.heads[1], decoded)])   # frozen half -> E
        return list(frozen) + list(trained), recon


def global_cosine_hard_mining(targets: list[torch.Tensor], recons: list[torch.Tensor], alpha: float) -> torch.Tensor:
    """Sum over levels of the batch mean of ``1 - cos(flatten(target), flatten(recon))``.

    Targets are detached (stop-gradient). Locations whose channel-wise cosine distance is below
    ``mean + alpha * std`` of the batch keep their forward value but pass no gradient (the
    official gradient hook with factor 0).
    """
    loss = 0.0
    for target, recon in zip(targets, recons):
        target = target.detach()
        with torch.no_grad():
            point = 1 - F.cosine_similarity(target, recon, dim=1)                 # [B, H, W]
            hard = (point >= point.mean() + alpha * point.std())[:, None]
        recon = torch.where(hard, recon, recon.detach())
        loss = loss + (1 - F.cosine_similarity(target.flatten(1), recon.flatten(1), dim=1)).mean()
    return loss


def contrastive_loss(targets: list[torch.Tensor], recons: list[torch.Tensor], alpha: float) -> torch.Tensor:
    """Both reconstruction directions of :meth:`ReContrastNet.forward`, each halved (the official loss)."""
    return (global_cosine_hard_mining(targets[:3], recons[:3], alpha) / 2
            + global_cosine_hard_mining(targets[3:], recons[3:], alpha) / 2)


def anomaly_map(targets: list[torch.Tensor], recons: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
    """``[B, *size]``: the six per-location cosine distances, each upsampled (``align_corners=True``), summed."""
    return sum(upsample(1 - F.cosine_similarity(t, r, dim=1), size, align_corners=True)
               for t, r in zip(targets, recons))
