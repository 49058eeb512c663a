"""The encoder x density-head detector: the pairing the whole suite is built to compare."""

from __future__ import annotations

import numpy as np

from datasets.base import Split
from methods.base import DensityHead, Detector, Encoder, Prediction
from methods.maps import map_kind


class LatentDetector(Detector):
    """Score = ``head(encoder(x))``; maps from input gradients or the encoder's reconstruction.

    The runner uses the pieces separately (cached embeddings, one head at a time); ``fit`` and
    ``predict`` give the same result in one call for library use.
    """

    def __init__(self, encoder: Encoder, head: DensityHead, localization: str | None = "gradient",
                 batch_size: int = 128, map_options: dict | None = None):
        self.kind = map_kind(localization) if localization is not None else None
        if self.kind is not None and not self.kind.applies(encoder):
            raise ValueError(f"{type(encoder).__name__} cannot make '{localization}' maps")
        self.encoder = encoder
        self.head = head
        self.localization = localization
        self.batch_size = batch_size
        self.map_options = dict(map_options or {})

    def fit(self, train: Split, *, seed: int = 0, device: str = "cpu", progress: bool = False) -> "LatentDetector":
        self.encoder.fit(train, seed=seed, device=device, progress=progress)
        self.head.fit(self.encoder.embed(train, self.batch_size, device), seed=seed, device=device, progress=progress)
        return self

    def maps(self, images: np.ndarray, *, device: str = "cpu") -> np.ndarray | None:
        if self.kind is None:
            return None
        return self.kind.make(self.encoder, self.head, images, device=device, batch_size=self.batch_size // 2,
                              **self.map_options)

    def predict(self, images: np.ndarray, *, device: str = "cpu", with_maps: bool = True) -> Prediction:
        z = self.encoder.embed(images, self.batch_size, device)
        scores = self.head.score(z, device=device)
        return Prediction(scores, self.maps(images, device=device) if with_maps else None)
