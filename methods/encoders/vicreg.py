"""VICReg: variance-invariance-covariance regularisation (Bardes et al., ICLR 2022, arXiv:2105.04906).

"VICReg ... explicitly avoids the collapse problem with a simple regularization term on the
variance of the embeddings along each dimension individually" [abstract], plus a covariance
term that decorrelates dimensions and an invariance (MSE) term between two views. Projector and
loss from lightly; the density heads see the trunk's pooled output.
"""

from __future__ import annotations

import torch
from lightly.loss import VICRegLoss
from lightly.models.modules.heads import VICRegProjectionHead

from methods.encoders._ssl import SSLEncoder
from methods.registry import register_encoder

TINY = dict(epochs=1, batch_size=8, warmup_epochs=0, proj_dim=32)


@register_encoder("vicreg", tiny=TINY)
class VICRegEncoder(SSLEncoder):
    """VICReg with lightly's 3-layer projector and loss.

    Args:
        proj_dim: width of every projector layer (VICReg: 8192).
        lambda_param, mu_param, nu_param: invariance, variance and covariance weights (VICReg: 25, 25, 1).
    """

    def __init__(self, in_chans: int = 1, image_size: int = 64, *, proj_dim: int = 8192, lambda_param: float = 25.0,
                 mu_param: float = 25.0, nu_param: float = 1.0, epochs: int = 20, batch_size: int = 128,
                 lr: float = 1e-3, weight_decay: float = 1e-6, warmup_epochs: int = 1, optimizer: str = "adamw",
                 **kwargs):
        super().__init__(in_chans, image_size, epochs=epochs, batch_size=batch_size, lr=lr,
                         weight_decay=weight_decay, warmup_epochs=warmup_epochs, optimizer=optimizer, **kwargs)
        self.projection = VICRegProjectionHead(self.out_dim, proj_dim, proj_dim)
        self.criterion = VICRegLoss(lambda_param=lambda_param, mu_param=mu_param, nu_param=nu_param)

    def training_step(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        (v0, v1), _ = self.views(x, generator)
        z0, z1 = self.projection(self.backbone(torch.cat([v0, v1]))).chunk(2)
        return self.criterion(z0, z1)
