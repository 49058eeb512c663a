"""Frozen timm backbones: ImageNet features (``imagenet/<name>``) and untrained controls (``random/<name>``).

Why both: "ImageNet features + a Gaussian" is the baseline that wins today in medical UAD
(PaDiM/DFM-like), and the same architecture with random weights tells how much of that comes
from pre-training rather than from the architecture's inductive bias.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from methods.backbones import ImageNetInput, create_backbone, input_stats, trunk_feature_maps
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
    #: pre-trained weights are seed-independent (the ``imagenet`` factory sets True); random ones are not
    deterministic_fit = False

    def __init__(self, model_name: str, in_chans: int = 1, image_size: int = 64, *, pretrained: bool = True,
                 weights: str | None = None, input_size: int | None = None, input_norm: str = "weights"):
        super().__init__(in_chans, image_size)
        self.model_name = model_name
        self.pretrained, self.weights = pretrained, weights
        self.backbone = create_backbone(model_name, pretrained=pretrained, weights=weights, num_classes=0,
                                        **fixed_size_args(model_name))
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
        """timm's ``feature_info`` stages of the same frozen backbone (``act1``/``layer1..4``); for a ViT
        (DINOv2, CLIP towers) the patch tokens of three blocks on the patch grid (``blocks.*``)."""
        return trunk_feature_maps(self.backbone, self._inputs(x))


def fixed_size_args(model_name: str) -> dict:
    """Build arguments for models with a fixed input size (timm's ``pretrained_cfg.fixed_input_size``:
    ViTs such as DINOv2 at 518 px or CLIP at 224 px): timm interpolates the weights' position
    embeddings to the input's patch grid at run time (``dynamic_img_size``) and pads a side that is
    not a multiple of the patch (``dynamic_img_pad``), so a 64 px image gives a 5 x 5 grid of 14 px
    patches. Convolutional trunks need nothing."""
    import timm

    cfg = timm.models.get_pretrained_cfg(model_name)
    if cfg is None or not getattr(cfg, "fixed_input_size", False):
        return {}
    return {"dynamic_img_size": True, "dynamic_img_pad": True}


@register_encoder("imagenet", family=True, member="timm name", example="tf_efficientnet_lite0")
def imagenet(model_name: str, **kwargs) -> FrozenTimmEncoder:
    """Frozen timm backbone with pre-trained weights: ImageNet classifiers (offline: tf_efficientnet_lite0),
    and any timm tag with other weights, e.g. DINOv2 (``vit_small_patch14_dinov2.lvd142m``) or CLIP's
    image tower (``vit_base_patch16_clip_224.openai``), from the hub or a local file (``weights=``)."""
    encoder = FrozenTimmEncoder(model_name, pretrained=True, **kwargs)
    encoder.deterministic_fit = True          # frozen pre-trained weights: the same features for every seed
    return encoder


@register_encoder("random", family=True, member="timm name", example="resnet18")
def random_init(model_name: str, **kwargs) -> FrozenTimmEncoder:
    """The same frozen timm backbone with random weights: the untrained control."""
    kwargs.pop("weights", None)
    return FrozenTimmEncoder(model_name, pretrained=False, **kwargs)
