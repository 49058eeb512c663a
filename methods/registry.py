"""Registries for encoders, density heads and end-to-end detectors (timm-style factories).

``@register_encoder("simclr")`` on a factory function or class in any module under
``methods/encoders/`` is all it takes for an encoder to appear in ``bench list``, grids and tables;
likewise heads under ``methods/heads/`` and detectors under ``methods/detectors/``.
"""

from __future__ import annotations

from datasets._shared.registry import Registry

ENCODERS = Registry("encoder", "methods.encoders")
HEADS = Registry("head", "methods.heads")
DETECTORS = Registry("detector", "methods.detectors")

register_encoder = ENCODERS.register
register_head = HEADS.register
register_detector = DETECTORS.register


def create_encoder(name: str, **kwargs):
    """``create_encoder("imagenet/resnet18", in_chans=1, image_size=64)``."""
    return ENCODERS.create(name, **kwargs)


def create_head(name: str, **kwargs):
    return HEADS.create(name, **kwargs)


def create_detector(name: str, **kwargs):
    return DETECTORS.create(name, **kwargs)


def list_encoders(pattern: str = "*") -> list[str]:
    return ENCODERS.names(pattern)


def list_heads(pattern: str = "*", *, dense: bool | None = None) -> list[str]:
    """Head names; ``dense=True`` only patch heads (on feature maps), ``False`` only global heads."""
    names = HEADS.names(pattern)
    return names if dense is None else [n for n in names if is_patch_head(n) == dense]


def is_patch_head(name: str) -> bool:
    """Whether head ``name`` is a patch head (its class declares ``dense = True``)."""
    entry, _ = HEADS.lookup(name)
    return bool(entry.factory.dense)      # declared by DensityHead (False) and PatchHead (True)


def list_detectors(pattern: str = "*") -> list[str]:
    return DETECTORS.names(pattern)
