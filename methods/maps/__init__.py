"""Map kinds for encoder x head cells: one module and one ``@register_map_kind`` each.

A map kind turns an encoder (and, where it depends on it, the density head) into per-pixel
anomaly maps. It declares which encoders it applies to and whether it depends on the head; the
runner makes a head-independent map once per encoder, the report shows it once, and a grid names
kinds on its ``localization`` axis with options in ``[maps.<kind>]`` (checked against ``make``'s
keyword arguments).
"""

from __future__ import annotations

import numpy as np
from torch import nn

from datasets._shared.registry import Registry

MAP_KINDS = Registry("map kind", "methods.maps")
#: The map kind of an encoder x head pair when none is named (CRADL's input gradients).
DEFAULT = "gradient"
register_map_kind = MAP_KINDS.register


class MapKind:
    """Base class: ``make`` the maps ``[N, H, W]`` float32 for ``images`` (uint8 ``[N, C, H, W]``)."""

    #: False when the map is the same for every head on an encoder (made once, shown once).
    head_dependent: bool = True
    #: What :meth:`applies` asks of an encoder, in words (why a cell of this kind is not applicable).
    requires: str = "an encoder it applies to"

    def applies(self, encoder: nn.Module) -> bool:
        return True

    def make(self, encoder: nn.Module, head: nn.Module, images: np.ndarray, *, device: str = "cpu",
             batch_size: int = 64) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def make_many(self, encoder: nn.Module, heads: list, images: np.ndarray, *, device: str = "cpu",
                  batch_size: int = 64, **options) -> list[np.ndarray]:
        """``make`` for several heads on one encoder, in head order; a kind whose heads can share work
        (one encoder forward pass for every head's gradient) overrides it."""
        return [self.make(encoder, head, images, device=device, batch_size=batch_size, **options) for head in heads]


def map_kind(name: str | None) -> MapKind:
    return MAP_KINDS.create(DEFAULT if name is None else name)


def map_kinds() -> list[str]:
    return MAP_KINDS.names()
