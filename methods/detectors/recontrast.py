"""ReContrast: RD4AD-style feature reconstruction with a trainable encoder and cross-reconstruction.

Guo, Lu, Jia, Wang, Li, Zhang, Li, Wang, "ReContrast: Domain-Specific Anomaly Detection via
Contrastive Reconstruction", NeurIPS 2023 (arXiv 2306.02602); official code guojiajeremy/ReContrast.
The encoder is optimised on the target domain to shed ImageNet bias; collapse is avoided by

* a frozen copy of the pretrained encoder and a decoder that runs on the concatenated batch
  ``[E(x); E_frozen(x)]`` (shared BatchNorm statistics) with two 1x1 output heads that
  *cross*-reconstruct: head 0 on the E half predicts E_frozen's features, head 1 on the frozen half
  predicts E's;
* a *global* cosine loss per level (one cosine over the flattened C x H x W map per sample) with
  stop-gradient on the targets, halved over the two directions;
* hard mining: per-location cosine distances below ``mean + alpha std`` (over the batch) pass no
  gradient, with alpha rising linearly from -3 to 1 over the first 10% of iterations.

Between encoder and decoder sits RD4AD's one-class bottleneck (OCBE: the two finer levels are
strided down to the coarsest, concatenated, then ResNet blocks at stride 2). For ResNet backbones
the decoder is a reverse ResNet of the encoder's block type (2x2 transposed-conv upsampling, stage
sizes as the official ``de_wide_resnet50_2``: the encoder's block counts [3, 4, 6] used from deep to
shallow); other backbones (e.g. ``tf_efficientnet_lite0``) get a generic decoder of basic upsampling
blocks matched to the feature channels.

Training follows the medical scripts: AdamW lr 2e-3 (bottleneck + decoder) and 1e-5 (encoder),
betas (0.9, 0.999), weight decay 1e-5, batch 32, 1,000 iterations, no augmentation; the encoder's
BatchNorm in train mode (APTOS, ISIC; OCT2017 used eval: ``encoder_bn_train=False``). The map is
the sum of the six per-location cosine distances, each bilinearly upsampled (``align_corners=True``)
to the input and smoothed with a Gaussian of sigma 4; the image score is its max (APTOS, OCT) or
mean (ISIC).
"""

from __future__ import annotations

import copy
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from datasets.base import Split, to_float
from methods.backbones import ImageNetInput, create_backbone, imagenet_stats
from methods.base import Detector, MethodError, Prediction, seed_everything
from methods.detectors._maps import (SCORE_REDUCTIONS, check_choice, check_finite, check_images, chunks,
                                     epoch_batches, gaussian_smooth, reduce_maps, resize, upsample)
from methods.registry import register_detector


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


@register_detector("recontrast")
class ReContrast(Detector):
    """ReContrast (Guo et al., NeurIPS 2023): contrastive feature reconstruction with a tuned encoder.

    Args:
        backbone, pretrained, weights: timm model (``features_only``) and ImageNet weights; the paper
            uses ``wide_resnet50_2.tv_in1k`` (torchvision V1 weights, pass ``weights=``/
            ``$UAD_BENCH_WEIGHTS`` offline); ``resnet18`` and ``tf_efficientnet_lite0`` work too.
        out_indices: three encoder levels (strides 4/8/16).
        input_size: side the images are resized to (a multiple of 32; None = ``image_size`` rounded
            up to one; the paper uses 256).
        iterations, epochs: training length in iterations (1,000) or, if ``epochs`` is set, epochs.
        batch_size, lr, encoder_lr, weight_decay, betas: AdamW settings (32, 2e-3, 1e-5, 1e-5).
        alpha_start, alpha_end, alpha_warmup: hard-mining schedule (-3 -> 1 over 10% of iterations).
        encoder_bn_train: encoder BatchNorm in train mode while training (True; OCT2017 used False).
        decoder_blocks: blocks per decoder stage, deep to shallow (None: as the official decoder).
        sigma, score: map smoothing (4) and image score ``max`` | ``mean``.
    """

    setting = "uad"

    def __init__(self, in_chans: int = 1, image_size: int = 64, *, backbone: str = "wide_resnet50_2.tv_in1k",
                 pretrained: bool = True, weights: str | None = None, out_indices: tuple[int, ...] = (1, 2, 3),
                 input_size: int | None = None, iterations: int = 1000, epochs: int | None = None,
                 batch_size: int = 32, lr: float = 2e-3, encoder_lr: float = 1e-5, weight_decay: float = 1e-5,
                 betas: tuple[float, float] = (0.9, 0.999), alpha_start: float = -3.0, alpha_end: float = 1.0,
                 alpha_warmup: float = 0.1, encoder_bn_train: bool = True,
                 decoder_blocks: tuple[int, int, int] | None = None, sigma: float = 4.0, score: str = "max"):
        size = input_size or max(32, 32 * math.ceil(image_size / 32))
        if size % 32:
            raise MethodError(f"recontrast: input_size must be a multiple of 32 (encoder stride 16 + OCBE), got {size}")
        self.in_chans = in_chans
        self.image_size = image_size
        self.backbone = backbone
        self.pretrained = pretrained
        self.weights = weights
        self.out_indices = tuple(out_indices)
        self.input_size = size
        self.iterations = iterations
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.encoder_lr = encoder_lr
        self.weight_decay = weight_decay
        self.betas = tuple(betas)
        self.alpha_start = alpha_start
        self.alpha_end = alpha_end
        self.alpha_warmup = alpha_warmup
        self.encoder_bn_train = encoder_bn_train
        self.decoder_blocks = decoder_blocks
        self.sigma = sigma
        self.score = check_choice(score, SCORE_REDUCTIONS, "score", "recontrast")

    def _input(self, images: np.ndarray, device: str) -> torch.Tensor:
        return resize(to_float(images, device), self.input_size)

    def required_weights(self) -> list[tuple[str, bool, str | None]]:
        return [(self.backbone, self.pretrained, self.weights)]

    def fit(self, train: Split, *, seed: int = 0, device: str = "cpu", progress: bool = False) -> "ReContrast":
        self.progress = progress
        from tqdm.auto import tqdm

        images = check_images(train.images, self.in_chans, "recontrast (train)")
        if self.in_chans not in (1, 3):
            raise MethodError(f"recontrast: ImageNet backbones take 1 or 3 channels, got in_chans={self.in_chans}")
        if len(images) < 2:
            raise MethodError(f"recontrast: needs at least 2 training images, got {len(images)}")
        started = time.perf_counter()
        generator = seed_everything(seed)
        encoder = create_backbone(self.backbone, pretrained=self.pretrained, weights=self.weights,
                                  features_only=True, out_indices=self.out_indices)
        self.model_ = ReContrastNet(encoder, decoder_blocks=self.decoder_blocks,
                                    encoder_bn_train=self.encoder_bn_train).to(device)
        model = self.model_
        opt_decoder = torch.optim.AdamW([*model.bottleneck.parameters(), *model.decoder.parameters()], lr=self.lr,
                                        betas=self.betas, weight_decay=self.weight_decay)
        opt_encoder = torch.optim.AdamW(model.encoder.parameters(), lr=self.encoder_lr, betas=self.betas,
                                        weight_decay=self.weight_decay)
        data = torch.from_numpy(np.ascontiguousarray(images)).to(device)           # uint8, moved once
        steps_per_epoch = max(1, len(data) // min(self.batch_size, len(data)))
        total = self.epochs * steps_per_epoch if self.epochs else self.iterations
        warmup = max(1.0, self.alpha_warmup * total)
        self.history_: list[float] = []
        model.train()
        bar = tqdm(total=total, desc="recontrast", leave=False, disable=not self.progress, unit="it")
        it = 0
        while it < total:
            for index in epoch_batches(len(data), self.batch_size, generator):
                alpha = min(self.alpha_start + (self.alpha_end - self.alpha_start) * it / warmup, self.alpha_end)
                x = resize(data[index.to(device)].float().div_(255.0), self.input_size)
                targets, recons = model(x)
                loss = (global_cosine_hard_mining(targets[:3], recons[:3], alpha) / 2
                        + global_cosine_hard_mining(targets[3:], recons[3:], alpha) / 2)
                if not torch.isfinite(loss):
                    raise MethodError(f"recontrast diverged at iteration {it} (loss={loss.item()}); lower lr={self.lr}")
                opt_decoder.zero_grad(set_to_none=True)
                opt_encoder.zero_grad(set_to_none=True)
                loss.backward()
                opt_decoder.step()
                opt_encoder.step()
                self.history_.append(loss.item())
                it += 1
                bar.update(1)
                if it == total:
                    break
        bar.close()
        model.eval()
        self.fit_seconds_ = time.perf_counter() - started
        return self

    @torch.no_grad()
    def predict(self, images: np.ndarray, *, device: str = "cpu") -> Prediction:
        if not hasattr(self, "model_"):
            raise MethodError("recontrast: predict() called before fit()")
        images = check_images(images, self.in_chans, "recontrast")
        model = self.model_.eval().to(device)
        size = images.shape[-2:]
        maps = []
        for s in chunks(len(images), self.batch_size):
            targets, recons = model(self._input(images[s], device))
            amap = sum(upsample(1 - F.cosine_similarity(t, r, dim=1), size, align_corners=True)
                       for t, r in zip(targets, recons))
            maps.append(amap.cpu().numpy())
        maps = gaussian_smooth(np.concatenate(maps), self.sigma)
        return Prediction(check_finite(reduce_maps(maps, self.score), "scores", "recontrast"),
                          check_finite(maps, "maps", "recontrast"))
