"""Foreign Patch Interpolation (Tan, Hou, Batten, Qiu, Kainz, "Detecting Outliers with Foreign Patch
Interpolation", MOOD challenge 2020 / MELBA 2022): a square patch of the image is replaced by a
convex combination with the same patch of *another* subject, ``x' = (1 - a) x + a x_foreign``, with
the interpolation factor ``a`` drawn uniformly per image.

The foreign subject is another validation normal (never a training or test image). The paper trains
on the per-pixel ``a`` as a soft label; the selection set marks the changed pixels (a binary mask).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from datasets.generators import box_region, inside_point, pick_donor, register_generator, to_uint8, to_unit


@dataclass
class ForeignPatchInterpolation:
    """Args: ``size``: patch side as a fraction of the image side; ``factor``: range of ``a``."""

    size: tuple[float, float] = (0.1, 0.4)
    factor: tuple[float, float] = (0.05, 0.95)

    def __call__(self, image, rng, donors, foreground):
        c, h, w = image.shape
        ph, pw = (max(int(round(rng.uniform(*self.size) * s)), 2) for s in (h, w))
        cy, cx = inside_point(rng, foreground, (h, w))
        region = box_region((h, w), cy - ph // 2, cx - pw // 2, ph, pw)
        a = rng.uniform(*self.factor)
        mixed = (1 - a) * to_unit(image) + a * to_unit(pick_donor(rng, donors))
        return to_uint8(np.where(region[None], mixed, to_unit(image))), region


@register_generator("fpi", tiny=dict())
def fpi(**kwargs) -> ForeignPatchInterpolation:
    """Foreign Patch Interpolation: a patch blended with the same patch of another normal (Tan et al., MOOD 2020)."""
    return ForeignPatchInterpolation(**kwargs)
