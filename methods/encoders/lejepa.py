"""LeJEPA: joint-embedding prediction regularised by SIGReg (Balestriero & LeCun 2025, arXiv:2511.08544).

The projections of every view are pulled to the mean of the global views' projections (the
predictive/invariance term), and SIGReg (sketched isotropic Gaussian regularisation: an
Epps-Pulley test of random 1-D slices against N(0, 1)) drives their distribution towards an
isotropic Gaussian, which rules out collapse without a teacher, stop-gradient or negatives.
Chosen over I-JEPA because it runs on any trunk (the suite's small ResNet, so patch heads get
conv stages), whereas I-JEPA needs a ViT with block masks and a predictor transformer.
Projector and loss (``LeJEPALoss``/``SIGReg``) from lightly; density heads see the pooled trunk.
"""

from __future__ import annotations

import torch
from lightly.loss import LeJEPALoss
from lightly.models.modules.heads import LeJEPAProjectionHead

from methods.encoders._ssl import SSLEncoder
from methods.registry import register_encoder

TINY = dict(epochs=1, batch_size=8, warmup_epochs=0, proj_hidden=32, proj_dim=16, n_local=1, sigreg_slices=64)


@register_encoder("lejepa", tiny=TINY)
class LeJEPAEncoder(SSLEncoder):
    """LeJEPA on the suite's trunk with lightly's projector and loss.

    Args:
        proj_hidden, proj_dim: projector sizes (lightly / reference code: 3 layers, 2048 hidden, 64 out).
        lambda_param: SIGReg weight; the invariance term gets ``1 - lambda`` (reference: 0.05).
        sigreg_slices: random 1-D projections per step (reference: 1024).
        n_global, n_local: global views and local crops (at half the side) per image.
    """

    def __init__(self, in_chans: int = 1, image_size: int = 64, *, proj_hidden: int = 2048, proj_dim: int = 64,
                 lambda_param: float = 0.05, sigreg_slices: int = 1024, n_global: int = 2, n_local: int = 6,
                 epochs: int = 20, batch_size: int = 128, lr: float = 5e-4, weight_decay: float = 5e-2,
                 warmup_epochs: int = 1, optimizer: str = "adamw", **kwargs):
        super().__init__(in_chans, image_size, epochs=epochs, batch_size=batch_size, lr=lr, n_local=max(1, n_local),
                         weight_decay=weight_decay, warmup_epochs=warmup_epochs, optimizer=optimizer, **kwargs)
        self.n_global = n_global
        self.projection = LeJEPAProjectionHead(self.out_dim, proj_hidden, proj_dim)
        self.criterion = LeJEPALoss(lambda_param=lambda_param, sigreg_num_vectors=sigreg_slices)

    def training_step(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        global_views, local_views = self.views(x, generator, self.n_global)
        g = self.projection(self.backbone(torch.cat(global_views))).unflatten(0, (len(global_views), len(x)))
        loc = self.projection(self.backbone(torch.cat(local_views))).unflatten(0, (len(local_views), len(x)))
        return self.criterion(local_proj=loc, global_proj=g)
