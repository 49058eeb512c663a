"""The encoder x patch-head detector: any dense encoder's feature maps under any patch density head.

Why: the suite compares detection across representation spaces by crossing encoders with global
density heads; localization deserves the same design. ``PatchDetector(encoder, head)`` trains the
encoder on normals (when asked), streams the feature maps of the training images into the head's
fit, and predicts image scores plus pixel maps at the input resolution. PaDiM and PatchCore are
this detector with ``imagenet/<backbone>`` and ``patch_gaussian`` / ``patch_knn``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from datasets.base import Split, to_float
from methods.base import Detector, Encoder, MethodError, seed_everything
from methods.inputs import check_images, chunks


class PatchDetector(Detector):
    """Image scores and maps from ``head`` on ``encoder.feature_maps``.

    Args:
        encoder: an :class:`Encoder` that declares ``dense = True``.
        head: a patch head (``methods/heads/_patch.py::PatchHead``, declares ``dense = True``).
        fit_encoder: train the encoder in ``fit`` (False when it is already trained, e.g. cached).
        build_encoder: optional factory; ``fit`` then seeds and builds a fresh encoder, so the
            initial weights are fixed by the fit's seed (as for every trainable method).
        batch_size: images per feature-map batch (memory bound of fit and predict).
    """

    setting = "uad"

    def __init__(self, encoder: Encoder, head, *, fit_encoder: bool = True, batch_size: int = 32,
                 name: str = "patch", build_encoder: Callable[[], Encoder] | None = None):
        if not encoder.dense:
            raise MethodError(f"{name}: encoder {type(encoder).__name__} has no feature maps (dense = False)")
        if not head.dense:
            raise MethodError(f"{name}: head {type(head).__name__} is not a patch head (dense = False)")
        self.encoder = encoder
        self.in_chans = encoder.in_chans
        self.head = head
        self.fit_encoder = fit_encoder
        self.batch_size = batch_size
        self.name = name
        self.build_encoder = build_encoder

    @property
    def deterministic_fit(self) -> bool:
        """Seed-independent when both its encoder and its head are (recorded for the claims' one-seed rule)."""
        return bool(self.encoder.deterministic_fit and self.head.deterministic_fit)

    def required_weights(self) -> list[tuple[str, bool, str | None]]:
        """The weights its encoder needs (an ImageNet backbone's; trained encoders need none)."""
        return self.encoder.required_weights()

    @torch.no_grad()
    def _maps(self, images: np.ndarray, device: str) -> dict[str, torch.Tensor]:
        return self.encoder.feature_maps(to_float(images, device))

    def fit(self, train: Split, *, seed: int = 0, device: str = "cpu", progress: bool = False,
            unlabeled: Split | None = None) -> "PatchDetector":
        images = check_images(train.images, self.encoder.in_chans, f"{self.name} (train)")
        if self.build_encoder is not None:
            seed_everything(seed)
            self.encoder = self.build_encoder()
        if self.fit_encoder:
            self.encoder.fit(train, seed=seed, device=device, progress=progress)
        normal = images[train.labels == 0] if train.n_anomalous else images
        self.encoder.eval().to(device)
        batches = lambda: (self._maps(normal[s], device) for s in chunks(len(normal), self.batch_size))  # noqa: E731
        self.head.fit(batches, image_size=int(images.shape[-1]), seed=seed, device=device, progress=progress)
        self.fitted_ = True
        return self

    @torch.no_grad()
    def _predict(self, images: np.ndarray, *, device: str) -> tuple[np.ndarray, np.ndarray]:
        self.encoder.eval().to(device)
        scores, maps = [], []
        for s in chunks(len(images), self.batch_size):
            score, pixel = self.head.predict(self._maps(images[s], device), images.shape[-2:])
            scores.append(score.double().cpu().numpy())
            maps.append(pixel.float().cpu().numpy())
        return np.concatenate(scores), np.concatenate(maps)
