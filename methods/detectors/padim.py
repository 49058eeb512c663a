"""``padim``: the name for ``imagenet/<backbone>`` x ``patch_gaussian`` (PaDiM, Defard et al. 2021).

Defard, Setkov, Loesch, Audigier, "PaDiM: a Patch Distribution Modeling Framework for Anomaly
Detection and Localization", ICPR workshops 2021 (arXiv 2011.08785); reference implementation
xiahaifeng1995/PaDiM-Anomaly-Detection-Localization-master. The per-patch Gaussian lives in
``methods/heads/patch_gaussian.py`` (one implementation), the frozen backbone in
``methods/encoders/timm_frozen.py``; this factory only fixes PaDiM's choices: three stages at
strides 4/8/16 (``out_indices=(1, 2, 3)``: 24 + 40 + 112 channels of EfficientNet-Lite0, the one
backbone with ImageNet weights offline), 100 random channels, epsilon 0.01, the map blurred as
the reference code's 4 px at 224 px (scaled to the image side), max score.
"""

from __future__ import annotations

from methods.detectors.patch import PatchDetector
from methods.encoders.timm_frozen import FrozenTimmEncoder
from methods.heads.patch_gaussian import PatchGaussianHead
from methods.registry import register_detector


@register_detector("padim", tiny=dict(d_reduced=32))
def padim(in_chans: int = 1, image_size: int = 64, *, backbone: str = "tf_efficientnet_lite0",
          pretrained: bool = True, weights: str | None = None, input_norm: str = "weights",
          out_indices: tuple[int, ...] = (1, 2, 3), d_reduced: int | None = 100, epsilon: float = 0.01,
          input_size: int | None = None, sigma: float | None = None, score: str = "max",
          preprocess: str = "none", batch_size: int = 32) -> PatchDetector:
    """PaDiM = frozen ImageNet ``backbone`` x a Gaussian per patch position (Mahalanobis map)."""
    encoder = FrozenTimmEncoder(backbone, in_chans, image_size, pretrained=pretrained, weights=weights,
                                input_size=input_size, input_norm=input_norm)
    head = PatchGaussianHead(stages=list(out_indices), d_reduced=d_reduced, epsilon=epsilon, sigma=sigma,
                             score=score, preprocess=preprocess)
    return PatchDetector(encoder, head, fit_encoder=False, batch_size=batch_size, name="padim")
