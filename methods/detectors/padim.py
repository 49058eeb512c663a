"""PaDiM: a multivariate Gaussian per patch position on frozen ImageNet features.

Defard, Setkov, Loesch, Audigier, "PaDiM: a Patch Distribution Modeling Framework for Anomaly
Detection and Localization", ICPR workshops 2021 (arXiv 2011.08785); reference implementation
xiahaifeng1995/PaDiM-Anomaly-Detection-Localization-master. "Each patch position (i, j) is
associated with a multivariate Gaussian N(mu_ij, Sigma_ij) ... the regularisation term
epsilon * I makes the sample covariance full rank and invertible" (epsilon = 0.01).

Recipe: the feature maps of three stages (strides 4/8/16) are brought to the finest resolution
(nearest upsampling, as the reference ``embedding_concat``), concatenated, and a seeded random
subset of ``d_reduced`` channels is kept (100 of 448 for ResNet-18 in the paper). The map is the
Mahalanobis distance per patch, bilinearly upsampled to the input and smoothed with a Gaussian of
sigma 4; the image score is its maximum. The default backbone is ``tf_efficientnet_lite0``, the one
model with real ImageNet weights offline (``methods/backbones.py``), with ``out_indices=(1, 2, 3)``
(24 + 40 + 112 = 176 channels at strides 4/8/16).
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from datasets.base import Split, to_float
from methods.backbones import ImageNetInput, create_backbone, imagenet_stats
from methods.base import Detector, MethodError, Prediction, seed_everything
from methods.detectors._maps import (SCORE_REDUCTIONS, check_choice, check_finite, check_images, chunks,
                                     gaussian_smooth, reduce_maps, resize, upsample)
from methods.registry import register_detector


class FrozenFeatures(nn.Module):
    """Frozen timm ``features_only`` backbone for [0, 1] images: gray -> RGB, its own normalisation.

    Shared by PaDiM and PatchCore. ``input_size`` resizes the images first (None keeps them).
    """

    def __init__(self, backbone: str, out_indices: tuple[int, ...], *, pretrained: bool = True,
                 weights: str | None = None, input_size: int | None = None):
        super().__init__()
        self.model = create_backbone(backbone, pretrained=pretrained, weights=weights, features_only=True,
                                     out_indices=tuple(out_indices))
        self.normalize = ImageNetInput(*imagenet_stats(self.model))
        self.input_size = input_size
        self.channels = list(self.model.feature_info.channels())
        self.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> "FrozenFeatures":
        """Frozen means frozen: BatchNorm keeps its ImageNet statistics."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.shape[1] not in (1, 3):
            raise MethodError(f"ImageNet backbones take 1 or 3 channels, got {x.shape[1]}")
        if self.input_size:
            x = resize(x, self.input_size)
        return self.model(self.normalize(x))


@register_detector("padim")
class PaDiM(Detector):
    """PaDiM (Defard et al. 2021): per-patch Gaussian + Mahalanobis distance on frozen features.

    Args:
        backbone, pretrained, weights: timm model and ImageNet weights (``methods/backbones.py``).
        out_indices: feature stages to concatenate (finest first).
        d_reduced: size of the seeded random channel subset (None or >= total: all channels).
        epsilon: covariance regulariser (``Sigma + epsilon I``, 0.01).
        input_size: resize images to this side before the backbone (None keeps ``image_size``).
        sigma: Gaussian smoothing of the upsampled map (4); score: ``max`` (paper) or ``mean``.
    """

    setting = "uad"

    def __init__(self, in_chans: int = 1, image_size: int = 64, *, backbone: str = "tf_efficientnet_lite0",
                 pretrained: bool = True, weights: str | None = None, out_indices: tuple[int, ...] = (1, 2, 3),
                 d_reduced: int | None = 100, epsilon: float = 0.01, input_size: int | None = None,
                 sigma: float = 4.0, score: str = "max", batch_size: int = 32):
        self.in_chans = in_chans
        self.image_size = image_size
        self.backbone = backbone
        self.pretrained = pretrained
        self.weights = weights
        self.out_indices = tuple(out_indices)
        self.d_reduced = d_reduced
        self.epsilon = epsilon
        self.input_size = input_size
        self.sigma = sigma
        self.score = check_choice(score, SCORE_REDUCTIONS, "score", "padim")
        self.batch_size = batch_size

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, P, d]`` patch embeddings (stages concatenated at the finest resolution, channel subset)."""
        feats = self.features_(x)
        size = feats[0].shape[-2:]
        feats = torch.cat([f if f.shape[-2:] == size else F.interpolate(f, size=size, mode="nearest")
                           for f in feats], dim=1)
        self.grid_ = tuple(size)
        return feats[:, self.channels_.to(feats.device)].flatten(2).transpose(1, 2)

    def _fit_patch_gaussians(self, images: np.ndarray, d: int, device: str) -> None:
        """Mean and precision of each patch position's ``d``-dim embedding (``mean_``, ``precision_``).

        Streamed sums in float64: memory stays O(P d^2) however many training images there are.
        """
        sum_x = sum_xx = None
        for s in chunks(len(images), self.batch_size):
            emb = self._embed(to_float(images[s], device)).double()           # [B, P, d]
            bx, bxx = emb.sum(0), torch.einsum("bpi,bpj->pij", emb, emb)
            sum_x, sum_xx = (bx, bxx) if sum_x is None else (sum_x + bx, sum_xx + bxx)
        n = len(images)
        mean = sum_x / n
        cov = (sum_xx - n * mean[:, :, None] * mean[:, None, :]) / (n - 1)
        cov = cov + self.epsilon * torch.eye(d, dtype=cov.dtype, device=cov.device)
        self.mean_ = mean.float()
        self.precision_ = torch.linalg.inv(cov).float()                        # [P, d, d]

    def required_weights(self) -> list[tuple[str, bool, str | None]]:
        return [(self.backbone, self.pretrained, self.weights)]

    def fit(self, train: Split, *, seed: int = 0, device: str = "cpu", progress: bool = False) -> "PaDiM":
        self.progress = progress
        images = check_images(train.images, self.in_chans, "padim (train)")
        if len(images) < 2:
            raise MethodError(f"padim: needs at least 2 training images for a covariance, got {len(images)}")
        started = time.perf_counter()
        generator = seed_everything(seed)
        self.features_ = FrozenFeatures(self.backbone, self.out_indices, pretrained=self.pretrained,
                                        weights=self.weights, input_size=self.input_size).to(device)
        total = sum(self.features_.channels)
        d = total if self.d_reduced is None else min(self.d_reduced, total)
        self.channels_ = torch.randperm(total, generator=generator)[:d].sort().values
        self._fit_patch_gaussians(images, d, device)
        self.fit_seconds_ = time.perf_counter() - started
        return self

    @torch.no_grad()
    def predict(self, images: np.ndarray, *, device: str = "cpu") -> Prediction:
        if not hasattr(self, "precision_"):
            raise MethodError("padim: predict() called before fit()")
        images = check_images(images, self.in_chans, "padim")
        self.features_.to(device)
        mean, precision = self.mean_.to(device), self.precision_.to(device)
        maps = []
        for s in chunks(len(images), self.batch_size):
            diff = self._embed(to_float(images[s], device)) - mean                # [B, P, d]
            dist = (torch.einsum("bpi,pij->bpj", diff, precision) * diff).sum(-1).clamp_min(0).sqrt()
            maps.append(upsample(dist.view(-1, *self.grid_), images.shape[-2:]).cpu().numpy())
        maps = gaussian_smooth(np.concatenate(maps), self.sigma)
        return Prediction(check_finite(reduce_maps(maps, self.score), "scores", "padim"),
                          check_finite(maps, "maps", "padim"))
