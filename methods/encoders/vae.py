"""Convolutional VAE: the generative latent space CRADL's claim is tested against.

Kingma & Welling, "Auto-Encoding Variational Bayes", ICLR 2014 (arXiv:1312.6114). The
representation handed to density heads is the posterior mean mu(x) (deterministic and
differentiable, so gradient maps work); ``reconstruct`` decodes mu(x) for reconstruction-error
maps, the classic generative localisation baseline.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from methods.encoders._training import TrainableEncoder
from methods.registry import register_encoder


def _n_down(image_size: int) -> int:
    """Stride-2 stages that bring the image to 4x4 (8x8 at 256 px), 3 to 5 of them."""
    return int(min(5, max(3, math.log2(image_size) - 2)))


@register_encoder("vae", tiny=dict(epochs=1, batch_size=8, warmup_epochs=0))
class VAEEncoder(TrainableEncoder):
    """Conv VAE (conv k4 s2 + BN + LeakyReLU stages, mirrored transposed-conv decoder).

    Args:
        latent_dim: size of z (the representation).
        width: channels of the first stage, doubled per stage (capped at 8x).
        beta: weight of the KL term (beta-VAE; 1 is the plain ELBO).
    """

    reconstructs = True

    def __init__(self, in_chans: int = 1, image_size: int = 64, *, latent_dim: int = 128, width: int = 32,
                 beta: float = 1.0, epochs: int = 20, batch_size: int = 128, lr: float = 1e-3,
                 weight_decay: float = 0.0, warmup_epochs: int = 0, optimizer: str = "adam"):
        super().__init__(in_chans, image_size, epochs=epochs, batch_size=batch_size, lr=lr,
                         weight_decay=weight_decay, warmup_epochs=warmup_epochs, optimizer=optimizer)
        if image_size & (image_size - 1) or not 16 <= image_size <= 512:
            raise ValueError(f"vae: image_size must be a power of two in [16, 512], got {image_size}")
        stages = _n_down(image_size)
        chans = [in_chans] + [width * min(8, 2 ** i) for i in range(stages)]
        self.bottom = image_size // 2 ** stages
        enc = []
        for cin, cout in zip(chans[:-1], chans[1:]):
            enc += [nn.Conv2d(cin, cout, 4, 2, 1), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, inplace=True)]
        self.features = nn.Sequential(*enc, nn.Flatten())
        flat = chans[-1] * self.bottom ** 2
        self.to_mu = nn.Linear(flat, latent_dim)
        self.to_logvar = nn.Linear(flat, latent_dim)
        self.from_z = nn.Linear(latent_dim, flat)
        dec = []
        rev = chans[::-1]
        for cin, cout in zip(rev[:-2], rev[1:-1]):
            dec += [nn.ConvTranspose2d(cin, cout, 4, 2, 1), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, inplace=True)]
        dec += [nn.ConvTranspose2d(rev[-2], in_chans, 4, 2, 1)]
        self.decoder = nn.Sequential(*dec)
        self.top = chans[-1]
        self.beta = beta
        self.out_dim = latent_dim

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(x)
        return self.to_mu(h), self.to_logvar(h).clamp(-10, 10)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        h = self.from_z(z).view(len(z), self.top, self.bottom, self.bottom)
        return torch.sigmoid(self.decoder(h))

    dense = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x)[0]

    def feature_maps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The encoder's conv stages ``conv1..convK`` (after BatchNorm and LeakyReLU; strides 2..2^K)."""
        maps, h = {}, x
        for i, layer in enumerate(self.features[:-1]):     # the last module is Flatten
            h = layer(h)
            if isinstance(layer, nn.LeakyReLU):
                maps[f"conv{len(maps) + 1}"] = h
        return maps

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x)[0])

    def training_step(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        mu, logvar = self.encode(x)
        eps = torch.randn(mu.shape, generator=generator).to(mu)
        recon = self.decode(mu + eps * torch.exp(0.5 * logvar))
        rec = F.mse_loss(recon, x, reduction="sum") / len(x)
        kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / len(x)
        return rec + self.beta * kl
