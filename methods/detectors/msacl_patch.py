"""``msacl_patch``: an ``msacl`` encoder x ``patch_gaussian`` on its layer2/layer3 maps.

Tian et al. (arXiv:2109.01303, MedIA 2023) pre-train an encoder with (P)MSACL and then plug it into
off-the-shelf UAD models, PaDiM among them (Defard et al. 2021, arXiv:2011.08785). Their exact
PaDiM post-processing is not published; this is the PaDiM recipe of ``patch_gaussian``: the layer2
and layer3 maps of the trained MSACL ResNet (strides 8 and 16) on the layer2 grid (nearest), a
seeded random subset of ``d_reduced`` channels, a Gaussian per position, Mahalanobis map,
bilinear upsampling, Gaussian blur (PaDiM's 4 px at 224 px, scaled to the image side), image
score = the map's maximum.
"""

from __future__ import annotations

from functools import partial

from methods.detectors.patch import PatchDetector
from methods.encoders.msacl import MSACLEncoder
from methods.heads.patch_gaussian import PatchGaussianHead
from methods.registry import register_detector


@register_detector("msacl_patch", tiny=dict(epochs=1, batch_size=16, d_reduced=32))
def msacl_patch(in_chans: int = 1, image_size: int = 64, *, backbone: str = "resnet18",
                epochs: int | None = None, batch_size: int | None = None, lr: float | None = None,
                optimizer: str | None = None, weight_decay: float | None = None, warmup_epochs: int | None = None,
                encoder: dict | None = None, d_reduced: int | None = 100, epsilon: float = 0.01, sigma: float | None = None,
                score: str = "max", batch_size_features: int = 64) -> PatchDetector:
    """Train ``msacl`` on the normal images (encoder options as ``msacl``'s), then PaDiM on its maps."""
    given = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "optimizer": optimizer,
             "weight_decay": weight_decay, "warmup_epochs": warmup_epochs}
    kwargs = {"backbone": backbone, **(encoder or {}), **{k: v for k, v in given.items() if v is not None}}
    head = PatchGaussianHead(stages=["layer2", "layer3"], d_reduced=d_reduced, epsilon=epsilon, sigma=sigma,
                             score=score)
    build = partial(MSACLEncoder, in_chans, image_size, **kwargs)   # picklable: the fitted detector is cached
    return PatchDetector(build(), head, fit_encoder=True, build_encoder=build, batch_size=batch_size_features,
                         name="msacl_patch")
