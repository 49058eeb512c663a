"""MSACL features + a PaDiM-like Gaussian per patch: the pairing (P)MSACL reports for segmentation.

Tian et al. (arXiv:2109.01303, MedIA 2023) pre-train an encoder with (P)MSACL and then plug it into
off-the-shelf UAD models, PaDiM among them (Defard et al. 2021, arXiv:2011.08785). The exact
PaDiM post-processing they used is not published; this follows the PaDiM reference recipe that
:class:`methods.detectors.padim.PaDiM` implements: the layer2 and layer3 maps of the trained MSACL
ResNet (strides 8 and 16) are brought to the layer2 grid (nearest), concatenated, a seeded random
subset of ``d_reduced`` channels is kept, one Gaussian (``Sigma + epsilon I``) is fitted per patch
position, and the map is the Mahalanobis distance per patch, bilinearly upsampled to the input
and smoothed with a Gaussian of sigma 4; the image score is the map's maximum.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from datasets.base import Split, to_float
from methods.base import Detector, MethodError, Prediction, seed_everything
from methods.detectors._maps import SCORE_REDUCTIONS, check_choice, check_images
from methods.detectors.padim import PaDiM
from methods.encoders.msacl import MSACLEncoder
from methods.registry import register_detector


class EncoderMaps(nn.Module):
    """A trained encoder's ``feature_maps`` as a frozen, gradient-free feature extractor."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> "EncoderMaps":
        """Frozen: BatchNorm keeps the statistics of pre-training."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.encoder.feature_maps(x)


@register_detector("msacl_patch")
class MSACLPatch(PaDiM):
    """Train an ``msacl`` encoder on the normal images, then a per-patch Gaussian on its maps.

    Args:
        backbone, epochs, batch_size, lr, optimizer, weight_decay, warmup_epochs: passed to the
            ``msacl`` encoder (its defaults otherwise).
        encoder: any further ``msacl`` keyword arguments (e.g. ``{"tau": 0.2, "alpha": 2.0}``).
        d_reduced: seeded random channel subset (100; None keeps all 128 + 256 of ResNet-18).
        epsilon: covariance regulariser (0.01); sigma: map smoothing (4); score: ``max`` or ``mean``.
        batch_size_features: images per batch when extracting maps.
    """

    setting = "uad"

    def __init__(self, in_chans: int = 1, image_size: int = 64, *, backbone: str = "resnet18",
                 epochs: int | None = None, batch_size: int | None = None, lr: float | None = None,
                 optimizer: str | None = None, weight_decay: float | None = None, warmup_epochs: int | None = None,
                 encoder: dict | None = None, d_reduced: int | None = 100, epsilon: float = 0.01, sigma: float = 4.0,
                 score: str = "max", batch_size_features: int = 64):
        self.in_chans = in_chans
        self.image_size = image_size
        given = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "optimizer": optimizer,
                 "weight_decay": weight_decay, "warmup_epochs": warmup_epochs}
        self.encoder_kwargs = {"backbone": backbone, **(encoder or {}),
                               **{k: v for k, v in given.items() if v is not None}}
        self.d_reduced = d_reduced
        self.epsilon = epsilon
        self.sigma = sigma
        self.score = check_choice(score, SCORE_REDUCTIONS, "score", "msacl_patch")
        self.batch_size = batch_size_features

    def required_weights(self) -> list[tuple[str, bool, str | None]]:
        return []    # its trunk is trained here, from scratch

    def fit(self, train: Split, *, seed: int = 0, device: str = "cpu", progress: bool = False) -> "MSACLPatch":
        self.progress = progress
        images = check_images(train.images, self.in_chans, "msacl_patch (train)")
        if len(images) < 2:
            raise MethodError(f"msacl_patch: needs at least 2 training images for a covariance, got {len(images)}")
        started = time.perf_counter()
        seed_everything(seed)
        encoder = MSACLEncoder(self.in_chans, self.image_size, **self.encoder_kwargs)
        encoder.fit(train, seed=seed, device=device, progress=self.progress)
        self.encoder_ = encoder
        self.features_ = EncoderMaps(encoder).to(device)
        generator = torch.Generator().manual_seed(seed)
        probe = self.features_(to_float(images[:1], device))
        total = sum(f.shape[1] for f in probe)
        d = total if self.d_reduced is None else min(self.d_reduced, total)
        self.channels_ = torch.randperm(total, generator=generator)[:d].sort().values
        normal = train.normal().images if train.n_anomalous else images
        self._fit_patch_gaussians(normal, d, device)
        self.history_ = {"msacl": list(encoder.history_)}
        self.fit_seconds_ = time.perf_counter() - started
        return self

    def predict(self, images: np.ndarray, *, device: str = "cpu") -> Prediction:
        if not hasattr(self, "precision_"):
            raise MethodError("msacl_patch: predict() called before fit()")
        check_images(images, self.in_chans, "msacl_patch")
        return super().predict(images, device=device)
