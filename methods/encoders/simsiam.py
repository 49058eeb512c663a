"""SimSiam: Siamese representation learning with a stop-gradient (Chen & He, CVPR 2021, arXiv:2011.10566).

"Simple Siamese networks can learn meaningful representations even using none of the following:
(i) negative sample pairs, (ii) large batches, (iii) momentum encoders." [abstract] The predictor
and the stop-gradient are what prevent collapse: without the predictor the loss reaches -1 with a
constant output (§4.1, Fig. 2), which ``predictor=False`` reproduces for the adequacy guard's test.
Heads and loss from lightly; the density heads see the trunk's pooled output.
"""

from __future__ import annotations

import torch
from lightly.loss import NegativeCosineSimilarity
from lightly.models.modules.heads import SimSiamPredictionHead, SimSiamProjectionHead

from methods.encoders._ssl import SSLEncoder
from methods.registry import register_encoder

TINY = dict(epochs=1, batch_size=8, warmup_epochs=0, proj_dim=32, pred_hidden=8)


@register_encoder("simsiam", tiny=TINY)
class SimSiamEncoder(SSLEncoder):
    """SimSiam with lightly's projector (3 layers, BN on every output) and predictor (bottleneck).

    Args:
        proj_dim: projector width and output (SimSiam: 2048).
        pred_hidden: predictor bottleneck (SimSiam: 512).
        predictor: False drops the predictor: the paper's collapsing ablation (only for tests).
    """

    def __init__(self, in_chans: int = 1, image_size: int = 64, *, proj_dim: int = 2048, pred_hidden: int = 512,
                 predictor: bool = True, epochs: int = 20, batch_size: int = 128, lr: float = 0.05 * 128 / 256,
                 weight_decay: float = 1e-4, warmup_epochs: int = 0, optimizer: str = "sgd", **kwargs):
        super().__init__(in_chans, image_size, epochs=epochs, batch_size=batch_size, lr=lr,
                         weight_decay=weight_decay, warmup_epochs=warmup_epochs, optimizer=optimizer, **kwargs)
        self.projection = SimSiamProjectionHead(self.out_dim, proj_dim, proj_dim)
        self.prediction = SimSiamPredictionHead(proj_dim, pred_hidden, proj_dim) if predictor else torch.nn.Identity()
        self.criterion = NegativeCosineSimilarity()

    def training_step(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        (v0, v1), _ = self.views(x, generator)
        z0, z1 = self.projection(self.backbone(torch.cat([v0, v1]))).chunk(2)
        p0, p1 = self.prediction(z0), self.prediction(z1)
        # symmetrised negative cosine with stop-gradient on the projections (SimSiam, eq. 3-4)
        return 0.5 * (self.criterion(p0, z1.detach()) + self.criterion(p1, z0.detach()))
