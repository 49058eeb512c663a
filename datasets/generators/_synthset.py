"""The synthetic validation set of one dataset and seed: anomalies made from its validation normals.

Content-addressed and cached like decoded datasets (:mod:`datasets._cache`): the key hashes the
validation normals' bytes (and foreground), the generator names and settings, the size cap, the
seed and :data:`SET_VERSION`, so the same inputs load in milliseconds and any change builds anew.
Image ``k`` of generator ``g`` is drawn from ``SeedSequence(seed, spawn_key=(hash(g), k))``: it does
not depend on which other generators or how many images the set has.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datasets._cache import ArrayCache
from datasets.generators import create_generator, synthesise

#: Bump when a generator's output changes for the same inputs (stale cache entries then rebuild).
SET_VERSION = "synthval-v1"
#: Default generators of the selection set (every registered one may be named in a grid).
DEFAULT_GENERATORS = ("cutpaste", "fpi", "perlin", "msacl_lesion")
#: Default cap on images per generator (the issue: every validation normal once, at most 200).
DEFAULT_PER_GENERATOR = 200


@dataclass
class SyntheticSet:
    """``images`` uint8 ``[N, C, H, W]``, ``masks`` uint8 ``[N, H, W]`` (exactly the changed pixels),
    ``generator`` str ``[N]``, ``source`` int ``[N]`` (index of the validation normal in ``val``)."""

    images: np.ndarray
    masks: np.ndarray
    generator: np.ndarray
    source: np.ndarray
    key: str = ""

    def __len__(self) -> int:
        return len(self.images)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"images": self.images, "masks": self.masks, "generator": self.generator, "source": self.source}


def _name_code(name: str) -> int:
    return int.from_bytes(hashlib.sha1(name.encode()).digest()[:4], "little")


def _spec(generators) -> list[tuple[str, dict]]:
    """``["cutpaste", {"name": "perlin", "threshold": 0.6}]`` -> ``[(name, kwargs)]``."""
    out = []
    for g in generators:
        if isinstance(g, str):
            out.append((g, {}))
        else:
            g = dict(g)
            out.append((g.pop("name"), g))
    return out


def set_key(val, generators, per_generator: int, seed: int) -> str:
    """sha256 over the validation normals (and foreground), generators, cap, seed and version."""
    normal = np.flatnonzero(val.labels == 0)
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(val.images[normal]).data)
    if val.foreground is not None:
        h.update(np.ascontiguousarray(val.foreground[normal]).data)
    h.update(json.dumps({"generators": _spec(generators), "per_generator": int(per_generator), "seed": int(seed),
                         "version": SET_VERSION}, sort_keys=True).encode())
    return h.hexdigest()


def build_set(val, generators=DEFAULT_GENERATORS, per_generator: int = DEFAULT_PER_GENERATOR,
              seed: int = 0) -> SyntheticSet:
    """Every validation normal once per generator (a seeded subset of ``per_generator`` when there are
    more); donors for foreign patches and textures are the *other* validation normals."""
    normal = np.flatnonzero(val.labels == 0)
    c, h, w = val.images.shape[1:]
    images, masks, names, sources = [], [], [], []
    for name, kwargs in _spec(generators):
        generator = create_generator(name, **kwargs)
        chosen = normal
        if len(normal) > per_generator:
            pick = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_name_code(name), 2 ** 31)))
            chosen = np.sort(pick.choice(normal, per_generator, replace=False))
        for k, i in enumerate(chosen):
            rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_name_code(name), int(i))))
            foreground = val.foreground[i, 0].astype(bool) if val.foreground is not None else None
            made = synthesise(generator, val.images[i], rng, val.images[normal[normal != i]], foreground)
            if made is None:
                continue
            images.append(made[0])
            masks.append(made[1])
            names.append(name)
            sources.append(int(i))
    return SyntheticSet(np.stack(images) if images else np.zeros((0, c, h, w), np.uint8),
                        np.stack(masks) if masks else np.zeros((0, h, w), np.uint8),
                        np.array(names, dtype=str), np.array(sources, dtype=np.int64))


def synthetic_validation(val, generators=DEFAULT_GENERATORS, per_generator: int = DEFAULT_PER_GENERATOR,
                         seed: int = 0, cache_dir: str | Path | None = None) -> SyntheticSet:
    """:func:`build_set` through the content-addressed cache in ``cache_dir`` (no cache when None)."""
    key = set_key(val, generators, per_generator, seed)
    if cache_dir is None:
        made = build_set(val, generators, per_generator, seed)
        made.key = key
        return made
    arrays, _, _ = ArrayCache(cache_dir).get_or_build(
        "synthval", key, lambda: build_set(val, generators, per_generator, seed).arrays())
    return SyntheticSet(arrays["images"], arrays["masks"], arrays["generator"].astype(str), arrays["source"], key)
