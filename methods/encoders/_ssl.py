"""What the self-supervised families beyond SimCLR/MoCo share: views, EMA targets and ViT trunks.

Why one module: BYOL, SimSiam, DINO, Barlow Twins, VICReg, LeJEPA and MAE differ in their
heads and losses (taken from lightly), not in how they draw views, keep an exponential-moving-
average teacher or turn a ViT's patch tokens into feature maps. Each family file is then its
loss, its heads and its published defaults, on the one training loop (``_training.TrunkEncoder``).
"""

from __future__ import annotations

import copy
import re

import timm
import torch
import torch.nn.functional as F
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.utils.scheduler import cosine_schedule
from torch import nn

from methods.backbones import is_vit, trunk_feature_maps, vit_stage_indices  # noqa: F401 - re-exported
from methods.encoders._augment import ViewAugment
from methods.encoders._training import TrunkEncoder
from methods.encoders.simclr import SMALL_RESNET, timm_trunk

#: The suite's ViT for the masked / token families at CPU scale: ViT-Tiny's width (192-d, 3 heads,
#: Touvron et al. 2021), 12 blocks, 8-px patches (64 tokens at 64 px instead of 16-px patches at 224).
SMALL_VIT = {"patch_size": 8, "embed_dim": 192, "depth": 12, "num_heads": 3}


class SSLEncoder(TrunkEncoder):
    """A :class:`TrunkEncoder` on a timm trunk with the suite's batched views.

    ``backbone`` is any timm name (random init); ``backbone_args`` override its architecture
    (default: the small ResNet-10 of SimCLR/MoCo, :data:`SMALL_RESNET`; a ViT gets :data:`SMALL_VIT`).
    ``n_local``/``local_size``/``local_scale`` add multi-crop views (Caron et al. 2020): ``n_local``
    extra views sampled from a smaller field (``local_scale`` of the side) at ``local_size`` px.
    """

    def __init__(self, in_chans: int = 1, image_size: int = 64, *, backbone: str = "resnet18",
                 backbone_args: dict | None = None, augment: dict | None = None, n_local: int = 0,
                 local_size: int | None = None, local_scale: tuple[float, float] = (0.25, 0.5), **train):
        super().__init__(in_chans, image_size, **train)
        self.backbone = build_trunk(backbone, in_chans, image_size, backbone_args)
        self.out_dim = int(self.backbone.num_features)
        self.augment = ViewAugment(**(augment or {}))
        local = dict(augment or {})
        local["scale"] = tuple(local_scale)
        self.local_augment = ViewAugment(**local)
        self.n_local = n_local
        self.local_size = local_size or max(8, image_size // 2)

    def views(self, x: torch.Tensor, generator: torch.Generator, n_global: int = 2) -> tuple[list, list]:
        """``n_global`` full-size views and ``n_local`` small crops of the batch."""
        global_views = [self.augment(x, generator) for _ in range(n_global)]
        local_views = [F.interpolate(self.local_augment(x, generator), size=(self.local_size, self.local_size),
                                     mode="bilinear", align_corners=False) for _ in range(self.n_local)]
        return global_views, local_views

    def feature_maps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """ResNet stages as timm lists them; for a ViT, patch tokens of three blocks as ``[N, C, h, w]``."""
        return trunk_feature_maps(self.backbone, x)


def build_trunk(name: str, in_chans: int, image_size: int, backbone_args: dict | None) -> nn.Module:
    """A random-init timm trunk returning pooled features; ViTs get the image size and :data:`SMALL_VIT`."""
    if name.startswith(("vit_", "deit_")):
        args = SMALL_VIT if backbone_args is None else backbone_args
        named = re.search(r"patch(\d+)", name)
        patch = int(args.get("patch_size") or (named.group(1) if named else 16))
        if image_size % patch:
            raise ValueError(f"{name}: image_size {image_size} is not a multiple of the patch size {patch} "
                             "(set backbone_args.patch_size or the dataset's image_size)")
        return timm.create_model(name, pretrained=False, in_chans=in_chans, num_classes=0, img_size=image_size,
                                 **args)
    return timm_trunk(name, in_chans, SMALL_RESNET if backbone_args is None else backbone_args)


class EMATarget(nn.Module):
    """A frozen copy of ``modules`` updated as an exponential moving average (BYOL, DINO).

    The momentum follows lightly's ``cosine_schedule`` from ``start`` to 1 over training
    (BYOL: 0.996 -> 1, Grill et al. 2020 §3.2; DINO: the same, Caron et al. 2021 §3.1).
    """

    def __init__(self, *modules: nn.Module, start: float = 0.996, fresh: dict[int, nn.Module] | None = None):
        """``fresh[i]``: a newly built module of the same kind to use instead of deep-copying
        ``modules[i]`` (weight-normalised layers, DINO's head, cannot be deep-copied); it gets the
        source's weights."""
        super().__init__()
        fresh = fresh or {}
        copies = []
        for i, m in enumerate(modules):
            if i in fresh:
                fresh[i].load_state_dict(m.state_dict())
                copies.append(fresh[i])
            else:
                copies.append(copy.deepcopy(m))
        self.copies = nn.ModuleList(copies)
        self.start = start
        for m in self.copies:
            deactivate_requires_grad(m)

    @torch.no_grad()
    def update(self, sources: tuple[nn.Module, ...], step: int, total: int) -> None:
        m = cosine_schedule(step, max(1, total), self.start, 1.0)
        for src, dst in zip(sources, self.copies):
            update_momentum(src, dst, m)
