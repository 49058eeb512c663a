"""The encoder x density-head detector: the pairing the whole suite is built to compare."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from datasets.base import Split
from methods.base import DensityHead, Detector, Encoder, MethodError, Prediction
from methods.maps import DEFAULT, map_kind


class SplitMemo:
    """Values already computed for given image arrays, found by the array's identity.

    Why: a grid crosses one trained encoder with many heads. The runner embeds each split once
    (and caches the embeddings with the encoder); every head's detector then asks the memo for
    ``encoder.embed(split.images)`` and gets those embeddings back instead of recomputing them, and
    head-independent maps (reconstruction) are made once per encoder. The memo keeps a reference
    to each array it answers for, so an ``id`` is never reused for another array while it lives.
    """

    def __init__(self):
        self._items: dict[tuple, tuple[np.ndarray, Any]] = {}
        self._peers: dict[Any, list] = {}

    def has(self, key: Any, images: np.ndarray) -> bool:
        hit = self._items.get((key, id(images)))
        return hit is not None and hit[0] is images

    def join(self, group: Any, member: Any) -> None:
        """Register ``member`` (a fitted detector) with the others of ``group`` that share work."""
        peers = self._peers.setdefault(group, [])
        if not any(p is member for p in peers):
            peers.append(member)

    def peers(self, group: Any) -> list:
        return list(self._peers.get(group, []))

    def put(self, key: Any, images: np.ndarray, value: Any) -> None:
        self._items[(key, id(images))] = (images, value)

    def get(self, key: Any, images: np.ndarray, compute: Callable[[], Any]) -> Any:
        hit = self._items.get((key, id(images)))
        if hit is not None and hit[0] is images:
            return hit[1]
        value = compute()
        self.put(key, images, value)
        return value


class LatentDetector(Detector):
    """Score = ``head(encoder(x))``; maps from the head's map kind (input gradients, reconstruction).

    Args:
        encoder, head: any registered encoder and global density head.
        localization: the map kind (``methods/maps/``) or None for no maps.
        fit_encoder: train the encoder in ``fit``; False when it arrives trained (the runner's
            encoder cache), then ``fit`` fits the head only.
        memo: a :class:`SplitMemo` shared by the detectors of one encoder (embeddings and
            head-independent maps computed once); None computes everything.
    """

    def __init__(self, encoder: Encoder, head: DensityHead, localization: str | None = DEFAULT,
                 batch_size: int = 128, map_options: dict | None = None, *, fit_encoder: bool = True,
                 memo: SplitMemo | None = None):
        self.kind = map_kind(localization) if localization is not None else None
        if self.kind is not None and not self.kind.applies(encoder):
            raise MethodError(f"{type(encoder).__name__} cannot make '{localization}' maps")
        self.encoder = encoder
        self.head = head
        self.localization = localization
        self.batch_size = batch_size
        self.map_options = dict(map_options or {})
        self.fit_encoder = fit_encoder
        self.memo = memo if memo is not None else SplitMemo()

    @property
    def deterministic_fit(self) -> bool:
        """Seed-independent when both its encoder and its head are (recorded for the claims' one-seed rule)."""
        return bool(self.encoder.deterministic_fit and self.head.deterministic_fit)

    @property
    def map_depends_on_head(self) -> bool | None:
        return None if self.kind is None else bool(self.kind.head_dependent)

    def embed(self, images: np.ndarray, device: str = "cpu"):
        return self.memo.get("embedding", images, lambda: self.encoder.embed(images, self.batch_size, device))

    def fit(self, train: Split, *, seed: int = 0, device: str = "cpu", progress: bool = False) -> "LatentDetector":
        if self.fit_encoder:
            self.encoder.fit(train, seed=seed, device=device, progress=progress)
        self.head.fit(self.embed(train.images, device), seed=seed, device=device, progress=progress)
        self.fits_ = getattr(self, "fits_", 0) + 1         # maps memoised for an earlier fit are not reused
        if self.kind is not None and self.kind.head_dependent:
            self.memo.join(self._map_group(), self)     # its maps may share the encoder pass with its peers'
        return self

    def _map_group(self) -> tuple:
        return ("maps", self.localization, tuple(sorted(self.map_options.items())), self.batch_size)

    def maps(self, images: np.ndarray, *, device: str = "cpu") -> np.ndarray | None:
        if self.kind is None:
            return None

        def make():
            return self.kind.make(self.encoder, self.head, images, device=device, batch_size=self.batch_size // 2,
                                  **self.map_options)

        if self.kind.head_dependent:
            return self._shared_maps(images, device)
        key = ("maps", self.localization, tuple(sorted(self.map_options.items())))
        return self.memo.get(key, images, make)

    def _shared_maps(self, images: np.ndarray, device: str) -> np.ndarray:
        """This head's maps, made together with those of every fitted peer on the same encoder (same
        map kind and options) that has none for ``images`` yet: one encoder pass serves them all
        (``MapKind.make_many``), and no peer's maps are made twice."""
        group = self._map_group()
        mine = (group, id(self.head), getattr(self, "fits_", 0))
        if self.memo.has(mine, images):
            return self.memo.get(mine, images, lambda: None)
        peers = [p for p in self.memo.peers(group) if p is not self and p.encoder is self.encoder]
        pending = [self] + [p for p in peers if not self.memo.has((group, id(p.head), p.fits_), images)]
        made = self.kind.make_many(self.encoder, [p.head for p in pending], images, device=device,
                                   batch_size=self.batch_size // 2, **self.map_options)
        for peer, maps in zip(pending, made):
            self.memo.put((group, id(peer.head), getattr(peer, "fits_", 0)), images, maps)
        return made[0]

    def predict(self, images: np.ndarray, *, device: str = "cpu", with_maps: bool = True) -> Prediction:
        scores = self.head.score(self.embed(images, device), device=device)
        return Prediction(scores, self.maps(images, device=device) if with_maps else None)
