"""Anomaly generators: synthetic anomalies made from *validation normals*, for label-free selection.

Why: a user with normal scans only cannot grade representation spaces on real anomalies; the
selection criteria (``bench/selection``) score every cell on anomalies synthesised from the
validation normals and are themselves graded against the real test labels of the suite's sets.

Adding a generator is one file and one decorator::

    @register_generator("name", tiny=dict(...))
    class MyGenerator:
        def __call__(self, image, rng, donors, foreground) -> (changed image, region): ...

``image`` is one ``uint8 [C, H, W]`` validation normal, ``donors`` the *other* validation normals
(textures and foreign patches come from them; nothing is downloaded), ``foreground`` a bool
``[H, W]`` body mask or None. The generator returns the changed image and the bool region it was
allowed to change; :func:`synthesise` keeps every pixel outside the region exactly as it was and
makes the mask *exactly the changed pixels*.
"""

from __future__ import annotations

import numpy as np

from datasets._shared.registry import Registry

GENERATORS = Registry("generator", "datasets.generators")
register_generator = GENERATORS.register

#: Draws until the generator changes at least one pixel (a patch copied onto identical background
#: changes nothing); after this many the source is left out of the set.
MAX_TRIES = 8


def create_generator(name: str, **kwargs):
    return GENERATORS.create(name, **kwargs)


def list_generators(pattern: str = "*") -> list[str]:
    return GENERATORS.names(pattern)


def synthesise(generator, image: np.ndarray, rng: np.random.Generator, donors: np.ndarray,
               foreground: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """One synthetic anomaly from ``image``: (``uint8 [C, H, W]``, mask ``uint8 [H, W]``), or None.

    The region is cut to the foreground when one is given (an anomaly in the air outside the body is
    trivial to detect and says nothing about a representation). Pixels outside the region are copied
    from the source, so the mask -- the pixels whose value changed in any channel -- lies inside it.
    """
    image = np.asarray(image, dtype=np.uint8)
    for _ in range(MAX_TRIES):
        out, region = generator(image, rng, donors, foreground)
        region = np.asarray(region, dtype=bool)
        if foreground is not None and (region & foreground).any():
            region = region & foreground
        out = np.where(region[None], np.asarray(out, dtype=np.uint8), image)
        mask = (out != image).any(axis=0)
        if mask.any():
            return out, mask.astype(np.uint8)
    return None


def to_unit(image: np.ndarray) -> np.ndarray:
    """uint8 -> float32 in [0, 1] (generators compute in floats and quantise once at the end)."""
    return image.astype(np.float32) / 255.0


def to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


def pick_donor(rng: np.random.Generator, donors: np.ndarray) -> np.ndarray:
    """Another validation normal, ``uint8 [C, H, W]`` (never the source: the caller leaves it out)."""
    if len(donors) == 0:
        raise ValueError("this generator needs at least one other validation normal to take a texture from")
    return donors[int(rng.integers(len(donors)))]


def box_region(shape: tuple[int, int], top: int, left: int, height: int, width: int) -> np.ndarray:
    region = np.zeros(shape, dtype=bool)
    region[max(top, 0):top + height, max(left, 0):left + width] = True
    return region


def inside_point(rng: np.random.Generator, foreground: np.ndarray | None, shape: tuple[int, int],
                 margin: int = 0) -> tuple[int, int]:
    """A random (row, column): a foreground pixel when there is a foreground, else any pixel ``margin`` from the edge."""
    if foreground is not None and foreground.any():
        rows, cols = np.nonzero(foreground)
        k = int(rng.integers(len(rows)))
        return int(rows[k]), int(cols[k])
    h, w = shape
    return int(rng.integers(margin, max(h - margin, margin + 1))), int(rng.integers(margin, max(w - margin, margin + 1)))
