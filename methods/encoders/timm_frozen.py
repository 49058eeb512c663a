"""Frozen timm backbones: ImageNet features (``imagenet/<name>``) and untrained controls (``random/<name>``).

Why both: "ImageNet features + a Gaussian" is the baseline that wins today in medical UAD
(PaDiM/DFM-like), and the same architecture with random weights tells how much of that comes
from pre-training rather than from the architecture's inductive bias.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from methods.backbones import ImageNetInput, create_backbone, input_stats, timm_feature_maps
from methods.base import Encoder
from methods.registry import register_encoder


class FrozenTimmEncoder(Encoder):
    """Global-pooled features of a frozen timm backbone; 1-channel images are repeated to RGB.

    Args:
        model_name: timm name, e.g. ``tf_efficientnet_lite0``, ``resnet18``, ``wide_resnet50_2.tv_in1k``.
        pretrained: load ImageNet weights (see methods/backbones.py for where they come from).
        weights: optional local weights file.
        input_size: resize images to this side before the backbone (None keeps the dataset size).
        input_norm: ``weights`` (the mean/std the weights were trained with, timm's
            ``pretrained_cfg``: 0.5/0.5 for ``tf_efficientnet_lite0``) or ``imagenet``
            (0.485/0.456/0.406, 0.229/0.224/0.225); an ablation axis.
    """

    trainable = False
    dense = True

    def __init__(self, model_name: str, in_chans: int = 1, image_size: int = 64, *, pretrained: bool = True,
                 weights: str | None = None, input_size: int | None = None, input_norm: str = "weights"):
        super().__init__(in_chans, image_size)
        self.model_name = model_name
        self.pretrained, self.weights = pretrained, weights
        self.backbone = create_backbone(model_name, pretrained=pretrained, weights=weights, num_classes=0)
        self.input_norm = input_norm
        self.normalize = ImageNetInput(*input_stats(self.backbone, input_norm, f"imagenet/{model_name}"))
        self.input_size = input_size
        self.out_dim = int(self.backbone.num_features)
        self.backbone.eval().requires_grad_(False)

    def required_weights(self) -> list[tuple[str, bool, str | None]]:
        """``(timm name, pretrained, weights file)`` for the preflight's weights check."""
        return [(self.model_name, self.pretrained, self.weights)]

    def train(self, mode: bool = True) -> "FrozenTimmEncoder":
        """Frozen means frozen: BatchNorm keeps its ImageNet statistics even in train mode."""
        super().train(mode)
        self.backbone.eval()
        return self

    def _inputs(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_size and x.shape[-1] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        return self.normalize(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self._inputs(x))

    def feature_maps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """timm's ``feature_info`` stages of the same frozen backbone (``act1``/``layer1..4``, ``blocks.*``)."""
        return timm_feature_maps(self.backbone, self._inputs(x))


@register_encoder("imagenet", family=True, member="timm name", example="tf_efficientnet_lite0")
def imagenet(model_name: str, **kwargs) -> FrozenTimmEncoder:
    """Frozen timm backbone with ImageNet weights (offline: tf_efficientnet_lite0)."""
    encoder = FrozenTimmEncoder(model_name, pretrained=True, **kwargs)
    encoder.deterministic_fit = True          # frozen ImageNet weights: the same features for every seed
    return encoder


@register_encoder("random", family=True, member="timm name", example="resnet18")
def random_init(model_name: str, **kwargs) -> FrozenTimmEncoder:
    """The same frozen timm backbone with random weights: the untrained control."""
    kwargs.pop("weights", None)
    return FrozenTimmEncoder(model_name, pretrained=False, **kwargs)
