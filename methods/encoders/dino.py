"""DINO: self-distillation with no labels (Caron et al., ICCV 2021, arXiv:2104.14294).

A student network matches the centred, sharpened output distribution of a momentum teacher over
``output_dim`` prototypes, across global and local (multi-crop) views; "centering and sharpening"
of the teacher's output is what avoids collapse (§3.1). Head, loss (with its centre) and the EMA
utilities come from lightly. The density heads see the *teacher*'s trunk, as the paper
evaluates it ("the teacher ... performs better", §5.2).
"""

from __future__ import annotations

import math
import warnings

import torch
from lightly.loss import DINOLoss
from lightly.models.modules.heads import DINOProjectionHead

from methods.encoders._ssl import EMATarget, SSLEncoder, trunk_feature_maps
from methods.registry import register_encoder

TINY = dict(epochs=1, batch_size=8, warmup_epochs=0, proj_hidden=32, bottleneck_dim=16, output_dim=64, n_local=1)


@register_encoder("dino", tiny=TINY)
class DINOEncoder(SSLEncoder):
    """DINO with lightly's projection head and loss on the suite's trunk.

    Args:
        proj_hidden, bottleneck_dim, output_dim: head sizes (DINO: 2048, 256, 65536).
        teacher_temp, warmup_teacher_temp, warmup_teacher_temp_epochs: the teacher's temperature,
            raised linearly from the warm-up value over the first epochs (DINO: 0.04 -> 0.04 for
            the default run, 0.04 -> 0.07 over 30 epochs for longer ones); student_temp 0.1.
        center_momentum: 0.9 (DINO).
        momentum: the teacher's starting EMA momentum, to 1 along a cosine (DINO: 0.996).
        freeze_last_layer: epochs during which the last head layer gets no gradient (DINO: 1).
        n_local: local crops per image (DINO: 2 global 224 px + 6-10 local 96 px; here ``n_local``
            crops at half the image side).
    """

    def __init__(self, in_chans: int = 1, image_size: int = 64, *, proj_hidden: int = 2048, bottleneck_dim: int = 256,
                 output_dim: int = 65536, teacher_temp: float = 0.04, warmup_teacher_temp: float = 0.04,
                 warmup_teacher_temp_epochs: int = 30, student_temp: float = 0.1, center_momentum: float = 0.9,
                 momentum: float = 0.996, freeze_last_layer: int = 1, n_local: int = 6, epochs: int = 20,
                 batch_size: int = 128, lr: float = 5e-4 * 128 / 256, weight_decay: float = 0.04,
                 warmup_epochs: int = 1, optimizer: str = "adamw", **kwargs):
        super().__init__(in_chans, image_size, epochs=epochs, batch_size=batch_size, lr=lr, n_local=n_local,
                         weight_decay=weight_decay, warmup_epochs=warmup_epochs, optimizer=optimizer, **kwargs)
        def head() -> DINOProjectionHead:
            with warnings.catch_warnings():     # lightly's head uses torch's deprecated weight_norm
                warnings.filterwarnings("ignore", message=".*weight_norm.*", category=FutureWarning)
                return DINOProjectionHead(self.out_dim, proj_hidden, bottleneck_dim, output_dim,
                                          freeze_last_layer=freeze_last_layer)

        self.projection = head()
        self.teacher = EMATarget(self.backbone, self.projection, start=momentum, fresh={1: head()})
        self.criterion = DINOLoss(output_dim=output_dim, teacher_temp=teacher_temp,
                                  warmup_teacher_temp=warmup_teacher_temp,
                                  warmup_teacher_temp_epochs=warmup_teacher_temp_epochs,
                                  student_temp=student_temp, center_momentum=center_momentum)
        self.freeze_last_layer = freeze_last_layer
        self._epoch = 0
        for param in self.projection.last_layer.parameters():      # lightly's cancel_last_layer_gradients,
            if param.requires_grad:                                 # as a hook: the loop has no pre-step call
                param.register_hook(self._frozen_last_layer)

    def chance_loss(self, batch_size: int) -> float:
        """``ln(output_dim)``: the cross-entropy when teacher and student spread evenly over the
        prototypes, DINO's collapse to the uniform distribution (Caron et al. 2021 §5.3, "sharpening
        and centering ... avoid collapse" to uniform or to one dimension). Read by the adequacy guard:
        a DINO loss that does not end below it learned nothing (the batch size does not enter)."""
        return math.log(self.criterion.center.shape[-1])

    def _frozen_last_layer(self, grad: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(grad) if self._epoch < self.freeze_last_layer else grad

    def training_step(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        global_views, local_views = self.views(x, generator)
        backbone_t, projection_t = self.teacher.copies
        with torch.no_grad():
            teacher_out = projection_t(backbone_t(torch.cat(global_views))).chunk(len(global_views))
        student_out = list(self.projection(self.backbone(torch.cat(global_views))).chunk(len(global_views)))
        if local_views:
            student_out += self.projection(self.backbone(torch.cat(local_views))).chunk(len(local_views))
        return self.criterion(list(teacher_out), student_out, epoch=self._epoch)

    def after_step(self, step: int, total: int) -> None:
        self.teacher.update((self.backbone, self.projection), step, total)
        steps_per_epoch = max(1, total // max(1, self.epochs))
        self._epoch = (step + 1) // steps_per_epoch

    def fit(self, *args, **kwargs) -> "DINOEncoder":
        self._epoch = 0
        return super().fit(*args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.teacher.copies[0](x)

    def feature_maps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return trunk_feature_maps(self.teacher.copies[0], x)
