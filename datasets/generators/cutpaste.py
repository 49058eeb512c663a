"""CutPaste and CutPaste-scar (Li, Sohn, Yoon, Pfister, "CutPaste: Self-Supervised Learning for Anomaly
Detection and Localization", CVPR 2021): "cut an image patch and paste at a random location of a
large image" -- a small rectangle (CutPaste) or a long thin rotated one (scar), with colour jitter.

Here the patch comes from the same validation normal; the pasted region is a rectangle in rotated
coordinates whose content is the image shifted by a random offset (the content is translated, not
rotated), scaled by a brightness factor as the paper's jitter does. Sizes are fractions of the side
so the same settings work at 28 and at 256 pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from datasets.generators import inside_point, register_generator, to_uint8, to_unit


@dataclass
class CutPaste:
    """Args: area (fraction of the image, CutPaste) or scar length/width (fractions of the side);
    ``scar`` picks the long thin variant; ``brightness``: jitter factor range; ``rotation``: max angle (rad)."""

    scar: bool = False
    area: tuple[float, float] = (0.02, 0.15)
    aspect: tuple[float, float] = (0.3, 3.3)
    scar_length: tuple[float, float] = (0.15, 0.4)
    scar_width: tuple[float, float] = (0.03, 0.07)
    brightness: tuple[float, float] = (0.6, 1.4)
    rotation: float = np.pi / 4

    def __call__(self, image, rng, donors, foreground):
        c, h, w = image.shape
        side = min(h, w)
        if self.scar:
            length = rng.uniform(*self.scar_length) * side
            width = max(rng.uniform(*self.scar_width) * side, 1.5)
        else:
            area = rng.uniform(*self.area) * h * w
            aspect = np.exp(rng.uniform(np.log(self.aspect[0]), np.log(self.aspect[1])))
            length, width = np.sqrt(area * aspect), np.sqrt(area / aspect)
        cy, cx = inside_point(rng, foreground, (h, w), margin=int(width))
        theta = rng.uniform(-self.rotation, self.rotation)
        rows, cols = np.mgrid[0:h, 0:w].astype(np.float32)
        u = (cols - cx) * np.cos(theta) + (rows - cy) * np.sin(theta)
        v = -(cols - cx) * np.sin(theta) + (rows - cy) * np.cos(theta)
        region = (np.abs(u) <= length / 2) & (np.abs(v) <= width / 2)
        # the source patch: the same shape elsewhere in the image (content shifted into the region)
        sy, sx = inside_point(rng, foreground, (h, w), margin=int(width))
        dy, dx = sy - cy, sx - cx
        src_r = np.clip(rows.astype(int) + dy, 0, h - 1)
        src_c = np.clip(cols.astype(int) + dx, 0, w - 1)
        patch = to_unit(image)[:, src_r, src_c] * rng.uniform(*self.brightness)
        return to_uint8(np.where(region[None], patch, to_unit(image))), region


@register_generator("cutpaste", tiny=dict())
def cutpaste(**kwargs) -> CutPaste:
    """CutPaste: a jittered rectangle of the same image pasted elsewhere (Li et al., CVPR 2021)."""
    return CutPaste(scar=False, **kwargs)


@register_generator("cutpaste_scar", tiny=dict())
def cutpaste_scar(**kwargs) -> CutPaste:
    """CutPaste-scar: a long thin rotated jittered strip of the same image pasted elsewhere (Li et al., CVPR 2021)."""
    return CutPaste(scar=True, **kwargs)
