"""MoCo v2: momentum contrast with a queue of negatives (He et al. 2020; Chen et al. 2020).

"(...) we replace the fc head in MoCo with a 2-layer MLP head (hidden layer 2048-d, with ReLU)"
[MoCo v2, arXiv:2003.04297]. The key encoder is an exponential moving average of the query
encoder; negatives come from a memory bank, so small batches (a CPU's) still see many negatives.
The density heads use the query backbone's pooled output.
"""

from __future__ import annotations

import copy
import math

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules.heads import MoCoProjectionHead
from lightly.models.utils import batch_shuffle, batch_unshuffle, deactivate_requires_grad, update_momentum

from methods.encoders._augment import ViewAugment
from methods.encoders._training import TrunkEncoder, cosine_momentum
from methods.encoders.simclr import SMALL_RESNET, timm_trunk
from methods.registry import register_encoder


@register_encoder("moco", tiny=dict(epochs=1, batch_size=8, warmup_epochs=0))
class MoCoEncoder(TrunkEncoder):
    """MoCo v2 with a timm backbone, lightly's memory-bank NT-Xent and momentum utilities.

    Args:
        queue_size: memory bank size; keep it below the number of training images so the bank
            does not hold stale copies of the current batch.
        momentum: starting EMA momentum, raised to 1 along a cosine.
        temperature: InfoNCE temperature (MoCo v2: 0.2).
    """

    def __init__(self, in_chans: int = 1, image_size: int = 64, *, backbone: str = "resnet18",
                 backbone_args: dict | None = None, temperature: float = 0.2, queue_size: int = 512, momentum: float = 0.99,
                 proj_hidden: int | None = None, proj_dim: int = 128, augment: dict | None = None,
                 epochs: int = 20, batch_size: int = 128, lr: float = 1e-3, weight_decay: float = 1e-6,
                 warmup_epochs: int = 1, optimizer: str = "adam"):
        super().__init__(in_chans, image_size, epochs=epochs, batch_size=batch_size, lr=lr,
                         weight_decay=weight_decay, warmup_epochs=warmup_epochs, optimizer=optimizer)
        self.backbone = timm_trunk(backbone, in_chans, SMALL_RESNET if backbone_args is None else backbone_args)
        self.out_dim = int(self.backbone.num_features)
        self.projection = MoCoProjectionHead(self.out_dim, proj_hidden or self.out_dim, proj_dim)
        self.backbone_momentum = copy.deepcopy(self.backbone)
        self.projection_momentum = copy.deepcopy(self.projection)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_momentum)
        self.momentum = momentum
        self.temperature, self.queue_size = temperature, queue_size
        self.criterion = NTXentLoss(temperature=temperature, memory_bank_size=(queue_size, proj_dim))
        self.augment = ViewAugment(**(augment or {}))

    def chance_loss(self, batch_size: int) -> float:
        """InfoNCE when all views look alike: the key is one of ``queue + 1`` equally likely candidates
        (the batch size does not enter; read by the adequacy guard, ``bench.analysis.adequacy``)."""
        return math.log(self.queue_size + 1)

    def loss_floor(self, batch_size: int) -> float:
        """InfoNCE of a perfect encoder: key at cosine 1, the queue's negatives at cosine 0."""
        return math.log1p(self.queue_size * math.exp(-1.0 / self.temperature))

    def training_step(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        query = self.projection(self.backbone(self.augment(x, generator)))
        with torch.no_grad():
            keys, shuffle = batch_shuffle(self.augment(x, generator))   # shuffled BN, as in MoCo
            key = batch_unshuffle(self.projection_momentum(self.backbone_momentum(keys)), shuffle)
        return self.criterion(query, key)

    def after_step(self, step: int, total: int) -> None:
        m = cosine_momentum(step, total, self.momentum, 1.0)
        update_momentum(self.backbone, self.backbone_momentum, m)
        update_momentum(self.projection, self.projection_momentum, m)
