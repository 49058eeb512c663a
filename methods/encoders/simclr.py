"""SimCLR: contrastive representation learning on normal images (Chen et al., ICML 2020).

"We learn representations by maximizing agreement between differently augmented views of the
same data example via a contrastive loss in the latent space." [SimCLR, arXiv:2002.05709]
CRADL (Lüth et al. 2022, arXiv:2301.02126) builds its anomaly detector on exactly this: density
heads are fitted on the *encoder output*, never on the projection head, which only serves the
pretext loss. Loss and projection head come from lightly; the backbone from timm.
"""

from __future__ import annotations

import math

import timm
import torch
from lightly.loss import NTXentLoss
from lightly.models.modules.heads import SimCLRProjectionHead

from methods.encoders._augment import ViewAugment
from methods.encoders._training import TrunkEncoder
from methods.registry import register_encoder


def timm_trunk(name: str, in_chans: int, backbone_args: dict | None = None) -> torch.nn.Module:
    """A randomly initialised timm backbone that returns pooled features (``num_classes=0``).

    ``backbone_args`` go to the timm entrypoint and override its architecture, e.g.
    ``{"layers": [1, 1, 1, 1], "channels": [32, 64, 128, 256], "stem_width": 32}`` turns
    ``resnet18`` into the small ResNet the suite uses by default (about 8x fewer FLOPs).
    """
    return timm.create_model(name, pretrained=False, in_chans=in_chans, num_classes=0, **(backbone_args or {}))


#: The default trunk: a ResNet-10 with half the usual widths, trainable on a laptop CPU in minutes.
SMALL_RESNET = {"layers": [1, 1, 1, 1], "channels": [32, 64, 128, 256], "stem_width": 32}


@register_encoder("simclr", tiny=dict(epochs=1, batch_size=8, warmup_epochs=0))
class SimCLREncoder(TrunkEncoder):
    """SimCLR with a timm backbone (small ResNet by default) and CRADL-style medical augmentations.

    Args:
        backbone: any timm model name (random init), e.g. ``resnet18``, ``resnet50``.
        backbone_args: architecture overrides for the timm entrypoint; the default
            (:data:`SMALL_RESNET`) makes a small ResNet-10. Pass ``{}`` for the stock model.
        temperature: NT-Xent temperature (CRADL: 0.5).
        proj_hidden, proj_dim: projection head sizes (CRADL: z -> z -> z/2, no BatchNorm).
        proj_batch_norm: BatchNorm in the projection head (lightly's default True; CRADL False).
    """

    def __init__(self, in_chans: int = 1, image_size: int = 64, *, backbone: str = "resnet18",
                 backbone_args: dict | None = None, temperature: float = 0.5, proj_hidden: int | None = None, proj_dim: int | None = None,
                 proj_batch_norm: bool = False, augment: dict | None = None, epochs: int = 20,
                 batch_size: int = 128, lr: float = 1e-3, weight_decay: float = 1e-6, warmup_epochs: int = 1,
                 optimizer: str = "adam"):
        super().__init__(in_chans, image_size, epochs=epochs, batch_size=batch_size, lr=lr,
                         weight_decay=weight_decay, warmup_epochs=warmup_epochs, optimizer=optimizer)
        self.backbone_args = SMALL_RESNET if backbone_args is None else backbone_args
        self.backbone = self.build_backbone(backbone, in_chans)
        self.out_dim = int(self.backbone.num_features)
        hidden = proj_hidden or self.out_dim
        self.projection = SimCLRProjectionHead(self.out_dim, hidden, proj_dim or max(1, self.out_dim // 2),
                                               batch_norm=proj_batch_norm)
        self.temperature = temperature
        self.criterion = NTXentLoss(temperature=temperature)
        self.augment = ViewAugment(**(augment or {}))

    def chance_loss(self, batch_size: int) -> float:
        """NT-Xent when all views look alike: the positive is one of ``2B - 1`` equally likely candidates.

        Read by the adequacy guard (``bench.analysis.adequacy``), as is :meth:`loss_floor`.
        """
        return math.log(2 * batch_size - 1)

    def loss_floor(self, batch_size: int) -> float:
        """NT-Xent of a perfect encoder: positive at cosine 1, the ``2B - 2`` negatives at cosine 0."""
        return math.log1p((2 * batch_size - 2) * math.exp(-1.0 / self.temperature))

    def build_backbone(self, name: str, in_chans: int) -> torch.nn.Module:
        return timm_trunk(name, in_chans, self.backbone_args)

    def training_step(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        views = torch.cat([self.augment(x, generator), self.augment(x, generator)])
        z0, z1 = self.projection(self.backbone(views)).chunk(2)
        return self.criterion(z0, z1)
