"""Barlow Twins: redundancy reduction (Zbontar et al., ICML 2021, arXiv:2103.03230).

The cross-correlation matrix of two views' batch-normalised projections is pushed to the
identity: "making the cross-correlation matrix ... as close to the identity matrix as possible"
[abstract]; the diagonal makes views agree, the off-diagonal decorrelates dimensions, so
collapse costs loss. Projector and loss from lightly; the density heads see the trunk's pooled output.
"""

from __future__ import annotations

import torch
from lightly.loss import BarlowTwinsLoss
from lightly.models.modules.heads import BarlowTwinsProjectionHead

from methods.encoders._ssl import SSLEncoder
from methods.registry import register_encoder

TINY = dict(epochs=1, batch_size=8, warmup_epochs=0, proj_dim=32)


@register_encoder("barlow_twins", tiny=TINY)
class BarlowTwinsEncoder(SSLEncoder):
    """Barlow Twins with lightly's 3-layer projector and loss.

    Args:
        proj_dim: width of every projector layer (Barlow Twins: 8192).
        lambda_param: weight of the off-diagonal (redundancy) term (Barlow Twins: 5e-3, lightly's default).
    """

    def __init__(self, in_chans: int = 1, image_size: int = 64, *, proj_dim: int = 8192, lambda_param: float = 5e-3,
                 epochs: int = 20, batch_size: int = 128, lr: float = 1e-3, weight_decay: float = 1.5e-6,
                 warmup_epochs: int = 1, optimizer: str = "adamw", **kwargs):
        super().__init__(in_chans, image_size, epochs=epochs, batch_size=batch_size, lr=lr,
                         weight_decay=weight_decay, warmup_epochs=warmup_epochs, optimizer=optimizer, **kwargs)
        self.projection = BarlowTwinsProjectionHead(self.out_dim, proj_dim, proj_dim)
        self.criterion = BarlowTwinsLoss(lambda_param=lambda_param)

    def training_step(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        (v0, v1), _ = self.views(x, generator)
        z0, z1 = self.projection(self.backbone(torch.cat([v0, v1]))).chunk(2)
        return self.criterion(z0, z1)
