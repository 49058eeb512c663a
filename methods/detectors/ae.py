"""Reconstruction autoencoder baseline (``ae``): the AE of MedIAnomaly / AE4AD.

Cai et al., "Rethinking autoencoders for medical anomaly detection from a theoretical
perspective" (AE4AD, MICCAI 2024) and "MedIAnomaly: A comparative study of anomaly detection in
medical images" (MedIA 2025, code caiyu6666/MedIAnomaly). AE4AD shows that the latent size alone
moves image AUROC by up to 50 points (Brain Tumor: 87.1 at d=32, 36.6 at d=1), so ``latent_dim``
is a hyper-parameter the grid sweeps, not a constant.

The network is the conv + fully-connected bottleneck AE both papers (and DDAD-ASR) use: four
4x4/stride-2 convs (16-32-64-64 channels, BN, ReLU), ``Linear(64*(S/16)^2 -> hidden) + BN + ReLU
-> Linear(hidden -> latent)``, a mirrored decoder and an unbounded output. Images are resized to
``input_size`` (64 by default) and scaled to [-1, 1] as in both codebases. Map = squared error per
pixel (mean over channels); image score = mean of the map (MedIAnomaly), ``score="max"`` optional.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from datasets.base import Split, to_float
from methods.base import Detector, MethodError, seed_everything
from methods.detectors._maps import SCORE_REDUCTIONS, reduce_maps, resize, upsample
from methods.inputs import check_choice, check_images, chunks
from methods.registry import register_detector
from methods.training import train_loop


class ConvAutoencoder(nn.Module):
    """Conv encoder -> dense bottleneck of size ``latent_dim`` -> mirrored conv decoder.

    With ``hidden_dim=2048`` this is DDAD-ASR's AE (``models/autoencoder.py``, ``mp=1``); with
    ``hidden_dim=1024`` MedIAnomaly's default AE.
    """

    def __init__(self, in_chans: int = 1, input_size: int = 64, latent_dim: int = 16, base_width: int = 16,
                 hidden_dim: int = 1024):
        super().__init__()
        if input_size < 16 or input_size % 16:
            raise MethodError(f"ConvAutoencoder: input_size must be a multiple of 16 (four stride-2 convs), "
                              f"got {input_size}")
        if latent_dim < 1:
            raise MethodError(f"ConvAutoencoder: latent_dim must be >= 1, got {latent_dim}")
        widths = [base_width, 2 * base_width, 4 * base_width, 4 * base_width]
        self.grid = input_size // 16
        self.deep = widths[-1]
        flat = self.deep * self.grid * self.grid

        down, prev = [], in_chans
        for width in widths:
            down += [nn.Conv2d(prev, width, 4, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(True)]
            prev = width
        self.encoder = nn.Sequential(*down)
        self.to_latent = nn.Sequential(nn.Linear(flat, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU(True),
                                       nn.Linear(hidden_dim, latent_dim))
        self.from_latent = nn.Sequential(nn.Linear(latent_dim, hidden_dim), nn.BatchNorm1d(hidden_dim),
                                         nn.ReLU(True), nn.Linear(hidden_dim, flat))
        up = []
        for width_in, width_out in zip(widths[::-1], widths[::-1][1:]):
            up += [nn.ConvTranspose2d(width_in, width_out, 4, 2, 1, bias=False), nn.BatchNorm2d(width_out),
                   nn.ReLU(True)]
        up.append(nn.ConvTranspose2d(widths[0], in_chans, 4, 2, 1, bias=False))   # unbounded output
        self.decoder = nn.Sequential(*up)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_latent(self.encoder(x).flatten(1))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.from_latent(z).view(len(z), self.deep, self.grid, self.grid))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


def to_signed(images: np.ndarray, input_size: int, device: str, batch_size: int = 512) -> torch.Tensor:
    """uint8 ``[N, C, H, W]`` -> float in [-1, 1] at ``input_size`` on ``device`` (``Normalize(0.5, 0.5)``)."""
    return torch.cat([resize(to_float(images[s], device), input_size).mul_(2).sub_(1)
                      for s in chunks(len(images), batch_size)])


def fit_autoencoder(model: nn.Module, data: torch.Tensor, *, epochs: int, batch_size: int, lr: float,
                    betas: tuple[float, float], weight_decay: float, generator: torch.Generator,
                    progress: bool = False, desc: str = "ae", device: str | None = None) -> list[float]:
    """Minimise the mean squared reconstruction error with Adam; returns the mean loss per epoch.

    ``device`` is the run's device as the runner passed it (a :class:`methods.precision.Device`
    carries the grid's ``amp`` choice); ``data.device`` alone would lose that choice, so autocast
    would stay on under ``amp = false``. None means ``data.device`` with the default precision.
    """
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=betas, weight_decay=weight_decay)

    def loss_fn(index: torch.Tensor, step: int) -> torch.Tensor:
        x = data[index]
        return (model(x) - x).pow(2).mean()

    history = train_loop(loss_fn, n=len(data), batch_size=batch_size, epochs=epochs, generator=generator,
                         optimizers=[opt], name=desc, device=data.device if device is None else device,
                         hint=f"lower lr={lr}",
                         progress=progress, mixed_precision=True).epochs
    model.eval()
    return history


@register_detector("ae", tiny=dict(input_size=32, epochs=2, batch_size=16, hidden_dim=64))
class AutoencoderDetector(Detector):
    """Reconstruction AE (MedIAnomaly/AE4AD): map = squared error, score = mean of the map.

    Args:
        latent_dim: bottleneck size (AE4AD's optimum is dataset dependent: 4 to 32).
        input_size: side the images are resized to (multiple of 16); maps come back at ``image_size``.
        base_width, hidden_dim: conv width (16-32-64-64) and dense hidden size (MedIAnomaly: 1024).
        epochs, batch_size, lr, betas, weight_decay: Adam training (MedIAnomaly: 250, 64, 1e-3, -, 0).
        score: ``"mean"`` (MedIAnomaly) or ``"max"`` of the map.
    """

    name = "ae"
    fitted_attribute = "model_"

    setting = "uad"

    def __init__(self, in_chans: int = 1, image_size: int = 64, *, latent_dim: int = 16, input_size: int = 64,
                 base_width: int = 16, hidden_dim: int = 1024, epochs: int = 250, batch_size: int = 64,
                 lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), weight_decay: float = 0.0,
                 score: str = "mean"):
        self.in_chans = in_chans
        self.image_size = image_size
        self.latent_dim = latent_dim
        self.input_size = input_size
        self.base_width = base_width
        self.hidden_dim = hidden_dim
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.betas = tuple(betas)
        self.weight_decay = weight_decay
        self.score = check_choice(score, SCORE_REDUCTIONS, "score", "ae")

    def fit(self, train: Split, *, seed: int = 0, device: str = "cpu", progress: bool = False) -> "AutoencoderDetector":
        self.progress = progress
        images = check_images(train.images, self.in_chans, "ae (train)")
        if len(images) < 2:
            raise MethodError(f"ae: needs at least 2 training images, got {len(images)}")
        started = time.perf_counter()
        generator = seed_everything(seed)
        self.model_ = ConvAutoencoder(self.in_chans, self.input_size, self.latent_dim, self.base_width,
                                      self.hidden_dim).to(device)
        data = to_signed(images, self.input_size, device)
        self.history_ = fit_autoencoder(self.model_, data, epochs=self.epochs, batch_size=self.batch_size,
                                        lr=self.lr, betas=self.betas, weight_decay=self.weight_decay,
                                        generator=generator, progress=self.progress, desc="ae", device=device)
        self.fit_seconds_ = time.perf_counter() - started
        return self

    @torch.no_grad()
    def _predict(self, images: np.ndarray, *, device: str) -> tuple[np.ndarray, np.ndarray]:
        self.model_.eval().to(device)
        maps, scores = [], []
        for s in chunks(len(images), self.batch_size):
            x = to_signed(images[s], self.input_size, device)
            error = (self.model_(x) - x).pow(2).mean(dim=1)                 # [B, S, S]
            scores.append(reduce_maps(error.cpu().numpy(), self.score))    # at the training resolution
            maps.append(upsample(error, images.shape[-2:]).cpu().numpy())
        return np.concatenate(scores), np.concatenate(maps).astype(np.float32)
