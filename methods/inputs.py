"""Input checks and batching every detector shares, so bad input gets the same one-line message
everywhere and no detector writes its own batch loop bookkeeping."""

from __future__ import annotations

from typing import Iterator

import numpy as np

from methods.errors import MethodError


def check_images(images: np.ndarray, in_chans: int, who: str) -> np.ndarray:
    """Validate ``uint8 [N, C, H, W]`` with the detector's channel count; 3-D input gets C=1."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4 or images.dtype != np.uint8:
        raise MethodError(f"{who}: expected uint8 images [N, C, H, W], got {images.dtype} {images.shape}")
    if images.shape[1] != in_chans:
        raise MethodError(f"{who}: built for in_chans={in_chans}, got images with {images.shape[1]} channels")
    if len(images) == 0:
        raise MethodError(f"{who}: got no images")
    return images


def check_choice(value: str, choices: tuple[str, ...], name: str, who: str) -> str:
    if value not in choices:
        raise MethodError(f"{who}: {name}='{value}' is not one of {choices}")
    return value


def check_finite(values: np.ndarray, what: str, who: str) -> np.ndarray:
    if not np.isfinite(values).all():
        bad = int((~np.isfinite(values)).sum())
        raise MethodError(f"{who}: {bad} non-finite values in the {what}; the model diverged or saw bad input")
    return values


def chunks(n: int, batch_size: int) -> Iterator[slice]:
    """Consecutive slices of ``range(n)`` of length ``batch_size`` (the last may be shorter)."""
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))
