"""BYOL: bootstrap your own latent, no negatives (Grill et al., NeurIPS 2020, arXiv:2006.07733).

An online network (trunk, projector, predictor) predicts the projection of another view made by a
target network, an exponential moving average of the online trunk and projector. "BYOL does not
use negative pairs" [abstract]; collapse is avoided by the predictor and the slow target, not by
the loss, which is why the adequacy guard checks these encoders for collapse. Heads, loss and
EMA utilities come from lightly; the density heads see the online trunk's pooled output, the
representation BYOL evaluates (§3.3).
"""

from __future__ import annotations

import torch
from lightly.loss import NegativeCosineSimilarity
from lightly.models.modules.heads import BYOLPredictionHead, BYOLProjectionHead

from methods.encoders._ssl import EMATarget, SSLEncoder
from methods.registry import register_encoder

TINY = dict(epochs=1, batch_size=8, warmup_epochs=0, proj_hidden=32, proj_dim=16)


@register_encoder("byol", tiny=TINY)
class BYOLEncoder(SSLEncoder):
    """BYOL with lightly's projection/prediction heads and cosine EMA schedule.

    Args:
        proj_hidden, proj_dim: projector and predictor sizes (BYOL: 4096 hidden, 256 out).
        momentum: the target's starting EMA momentum, raised to 1 along lightly's
            ``cosine_schedule`` (BYOL: 0.996).
    """

    def __init__(self, in_chans: int = 1, image_size: int = 64, *, proj_hidden: int = 4096, proj_dim: int = 256,
                 momentum: float = 0.996, epochs: int = 20, batch_size: int = 128, lr: float = 1e-3,
                 weight_decay: float = 1.5e-6, warmup_epochs: int = 1, optimizer: str = "adamw", **kwargs):
        super().__init__(in_chans, image_size, epochs=epochs, batch_size=batch_size, lr=lr,
                         weight_decay=weight_decay, warmup_epochs=warmup_epochs, optimizer=optimizer, **kwargs)
        self.projection = BYOLProjectionHead(self.out_dim, proj_hidden, proj_dim)
        self.prediction = BYOLPredictionHead(proj_dim, proj_hidden, proj_dim)
        self.target = EMATarget(self.backbone, self.projection, start=momentum)
        self.criterion = NegativeCosineSimilarity()

    def _online(self, x: torch.Tensor) -> torch.Tensor:
        return self.prediction(self.projection(self.backbone(x)))

    def _target(self, x: torch.Tensor) -> torch.Tensor:
        backbone, projection = self.target.copies
        with torch.no_grad():
            return projection(backbone(x))

    def training_step(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        (v0, v1), _ = self.views(x, generator)
        p0, p1 = self._online(torch.cat([v0, v1])).chunk(2)
        z0, z1 = self._target(torch.cat([v0, v1])).chunk(2)
        return 0.5 * (self.criterion(p0, z1) + self.criterion(p1, z0))    # symmetrised, as BYOL (eq. 2)

    def after_step(self, step: int, total: int) -> None:
        self.target.update((self.backbone, self.projection), step, total)
