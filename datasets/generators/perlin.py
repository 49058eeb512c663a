"""Perlin-noise texture anomalies, as DRAEM makes them (Zavrtanik, Kristan, Skocaj, "DRAEM -- A
discriminatively trained reconstruction embedding for surface anomaly detection", ICCV 2021): a
Perlin noise field thresholded at 0.5 gives an irregular region, filled with an augmented texture
image blended into the normal, ``x' = (1 - m) x + (1 - b) m t + b m x`` with ``b`` drawn from
[0, 0.8) (DRAEM's ``beta``).

DRAEM takes its textures from the Describable Textures Dataset; nothing is downloaded here: the
texture is *another validation normal*, flipped, turned by a multiple of 90 degrees and given a
random gamma and gain (standing in for DRAEM's imgaug colour augmentations). The noise is a
small numpy Perlin implementation (gradient noise on a lattice with the quintic fade curve).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from datasets.generators import pick_donor, register_generator, to_uint8, to_unit


def perlin_noise(shape: tuple[int, int], res: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """2-D Perlin noise ``[H, W]`` (about [-1, 1], DRAEM's ``sqrt(2)`` scaling) with ``res`` lattice cells per axis."""
    h, w = shape
    ry, rx = res
    angles = rng.uniform(0, 2 * np.pi, (ry + 1, rx + 1))
    grad = np.stack([np.cos(angles), np.sin(angles)], axis=-1)               # [ry+1, rx+1, 2]
    y = np.arange(h) * ry / h
    x = np.arange(w) * rx / w
    yi, xi = np.floor(y).astype(int), np.floor(x).astype(int)
    fy, fx = (y - yi)[:, None], (x - xi)[None, :]

    def corner(dy: int, dx: int) -> np.ndarray:
        g = grad[(yi + dy)[:, None], (xi + dx)[None, :]]                    # [H, W, 2]
        return g[..., 0] * (fy - dy) + g[..., 1] * (fx - dx)

    def fade(t: np.ndarray) -> np.ndarray:
        return t * t * t * (t * (t * 6 - 15) + 10)

    uy, ux = fade(fy), fade(fx)
    top = corner(0, 0) * (1 - ux) + corner(0, 1) * ux
    bottom = corner(1, 0) * (1 - ux) + corner(1, 1) * ux
    return (np.sqrt(2) * (top * (1 - uy) + bottom * uy)).astype(np.float32)


@dataclass
class PerlinTexture:
    """Args: ``threshold`` on the noise (DRAEM: 0.5); ``max_scale_power``: lattice cells per axis are
    ``2**k`` for ``k`` in [0, max] (DRAEM: 0..5 at 256 px; capped so a cell spans >= 4 px);
    ``beta``: range of the normal's share inside the region; ``gamma``, ``gain``: texture augmentation."""

    threshold: float = 0.5
    max_scale_power: int = 5
    beta: tuple[float, float] = (0.0, 0.8)
    gamma: tuple[float, float] = (0.5, 2.0)
    gain: tuple[float, float] = (0.7, 1.3)

    def texture(self, donor: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        t = to_unit(donor)
        if rng.uniform() < 0.5:
            t = t[:, :, ::-1]
        if t.shape[1] == t.shape[2]:
            t = np.rot90(t, int(rng.integers(4)), axes=(1, 2))
        t = np.clip(t, 0, 1) ** np.exp(rng.uniform(np.log(self.gamma[0]), np.log(self.gamma[1])))
        return np.clip(t * rng.uniform(*self.gain), 0, 1)

    def __call__(self, image, rng, donors, foreground):
        c, h, w = image.shape
        top = int(min(self.max_scale_power, max(np.log2(min(h, w) / 4), 0)))
        res = tuple(2 ** int(rng.integers(0, top + 1)) for _ in range(2))
        region = perlin_noise((h, w), res, rng) > self.threshold
        if foreground is not None and not (region & foreground).any():
            return image, region                            # nothing inside the body: draw again
        beta = rng.uniform(*self.beta)
        x = to_unit(image)
        blended = (1 - beta) * self.texture(pick_donor(rng, donors), rng) + beta * x
        return to_uint8(np.where(region[None], blended, x)), region


@register_generator("perlin", tiny=dict())
def perlin(**kwargs) -> PerlinTexture:
    """DRAEM-style Perlin-noise region filled with another normal's augmented texture (Zavrtanik et al., ICCV 2021)."""
    return PerlinTexture(**kwargs)
