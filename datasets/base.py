"""The data contract every loader returns: an :class:`AnomalyDataset` of three :class:`Split`.

Why arrays and not a torch ``Dataset``: medical UAD sets fit in memory at benchmark resolution,
so every split is held once as ``uint8`` and converted to float per batch (on the device when
there is one). No per-sample PIL work in the hot loop, and embedding caches can be keyed by the
array content.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import numpy as np


class DatasetError(ValueError):
    """Bad input: the message names the file, folder or split and what was expected."""


@dataclass
class Split:
    """One split held in memory.

    Attributes:
        images: ``uint8`` ``[N, C, H, W]``.
        labels: ``int64`` ``[N]``, 0 normal / 1 anomalous.
        masks: ``uint8`` ``[N, 1, H, W]`` with values {0, 1}, or ``None`` when the source has none.
        groups: ``[N]`` patient or volume ids (strings); splits never share a group.
        name: ``train``, ``val`` or ``test`` (used in error messages).
        foreground: ``uint8`` ``[N, 1, H, W]`` in {0, 1}: the body (skull interior, tissue) where
            pixel metrics restricted to the anatomy are computed (``pixel_*_fg``), or ``None`` for
            the whole image. Background pixels are trivially normal and inflate pixel AUROC.
        ids: ``[N]`` strings naming each case for a reader of the outputs (per-image score files,
            figure titles): the file name relative to the source folder for file readers,
            ``f"{split}-{index}"`` for MedMNIST, ``f"case-{i}"`` for generated data; ``None`` when a
            source has no cheap name (consumers then fall back to the index).
    """

    images: np.ndarray
    labels: np.ndarray
    masks: np.ndarray | None = None
    groups: np.ndarray | None = None
    name: str = "split"
    foreground: np.ndarray | None = None
    ids: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.images = np.asarray(self.images)
        if self.images.ndim == 3:
            self.images = self.images[:, None]
        if self.images.ndim != 4:
            raise DatasetError(f"{self.name}: images must be [N, C, H, W], got shape {self.images.shape}")
        if self.images.dtype != np.uint8:
            raise DatasetError(f"{self.name}: images must be uint8, got {self.images.dtype}")
        n = len(self.images)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        if len(self.labels) != n:
            raise DatasetError(f"{self.name}: {n} images but {len(self.labels)} labels")
        if n and not np.isin(self.labels, (0, 1)).all():
            raise DatasetError(f"{self.name}: labels must be 0 (normal) or 1 (anomalous)")
        self.masks = self._pixel_mask(self.masks, "masks")
        self.foreground = self._pixel_mask(self.foreground, "foreground")
        if self.groups is None:
            self.groups = np.array([f"{self.name}-{i}" for i in range(n)])
        self.groups = np.asarray(self.groups).astype(str)
        if len(self.groups) != n:
            raise DatasetError(f"{self.name}: {n} images but {len(self.groups)} group ids")
        if self.ids is not None:
            self.ids = np.asarray(self.ids).astype(str).reshape(-1)
            if len(self.ids) != n:
                raise DatasetError(f"{self.name}: {n} images but {len(self.ids)} case ids")

    def _pixel_mask(self, mask: np.ndarray | None, what: str) -> np.ndarray | None:
        """Validate a per-pixel mask (``[N, 1, H, W]`` or ``[N, H, W]``) and binarise it to uint8."""
        if mask is None:
            return None
        mask = np.asarray(mask)
        if mask.ndim == 3:
            mask = mask[:, None]
        want = (len(self.images), 1, *self.images.shape[2:])
        if mask.shape != want:
            raise DatasetError(f"{self.name}: {what} must have shape {want}, got {mask.shape}")
        return (mask > 0).astype(np.uint8)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def n_normal(self) -> int:
        return int((self.labels == 0).sum())

    @property
    def n_anomalous(self) -> int:
        return int((self.labels == 1).sum())

    @property
    def has_masks(self) -> bool:
        return self.masks is not None

    @property
    def has_foreground(self) -> bool:
        return self.foreground is not None

    def subset(self, index: np.ndarray) -> "Split":
        index = np.asarray(index)
        return Split(self.images[index], self.labels[index],
                     None if self.masks is None else self.masks[index], self.groups[index], self.name,
                     None if self.foreground is None else self.foreground[index],
                     None if self.ids is None else self.ids[index])

    def case_ids(self) -> np.ndarray:
        """``ids`` when the source names its cases, else ``"<split>#<index>"`` (never None)."""
        return self.ids if self.ids is not None else np.array([f"{self.name}#{i}" for i in range(len(self))])

    def normal(self) -> "Split":
        return self.subset(np.flatnonzero(self.labels == 0))

    def summary(self) -> dict:
        return {"n": len(self), "normal": self.n_normal, "anomalous": self.n_anomalous,
                "groups": int(len(np.unique(self.groups))), "masks": self.has_masks}


def nonzero_foreground(images: np.ndarray) -> np.ndarray:
    """Foreground of skull-stripped / background-zeroed scans: pixels non-zero in any channel.

    Brain-MRI sources (BraTS, LGG, NIfTI volumes) set everything outside the head to 0, so the
    body is exactly where the intensity is positive; ``[N, C, H, W]`` -> ``uint8 [N, 1, H, W]``.
    """
    images = np.asarray(images)
    return (images.max(axis=1, keepdims=True) > 0).astype(np.uint8)


def to_float(images: np.ndarray, device: str = "cpu") -> "torch.Tensor":  # noqa: F821
    """uint8 ``[N, C, H, W]`` -> float32 tensor in [0, 1] on ``device`` (conversion on device)."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(images)).to(device).float().div_(255.0)


@dataclass
class DatasetCard:
    """What a reader needs to trust and reproduce a dataset; printed by ``bench show dataset``."""

    name: str
    modality: str = ""
    description: str = ""
    normal: str = ""          # what counts as normal
    anomaly: str = ""         # what counts as anomalous
    license: str = ""
    citation: str = ""
    source: str = ""          # where to download
    layout: str = ""          # expected folder layout under the data root
    splits: str = ""          # how train/val/test are made
    notes: str = ""

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v}


@dataclass
class AnomalyDataset:
    """Train (normal only), validation and test splits plus the card that describes them."""

    name: str
    train: Split
    val: Split
    test: Split
    card: DatasetCard
    config: dict = field(default_factory=dict)   # the parameters it was built with (cache keys)
    #: Optional labelled candidates for an *unlabeled* pool (one-class semi-supervised methods such
    #: as DDAD-ASR): never drawn from test, disjoint by group from train/val/test. Labels are kept
    #: only so a pool can be assembled at a chosen anomaly rate; methods never see them.
    pool: Split | None = None

    def __post_init__(self) -> None:
        self.train.name, self.val.name, self.test.name = "train", "val", "test"
        if self.pool is not None:
            self.pool.name = "pool"
        if len(self.train) == 0 or self.train.n_normal == 0:
            raise DatasetError(f"{self.name}: the training split has no normal images")
        if self.train.n_anomalous:
            raise DatasetError(f"{self.name}: the training split holds {self.train.n_anomalous} anomalous "
                               "images; unsupervised training must see normals only")
        shapes = {s.images.shape[1:] for s in (self.train, self.val, self.test) if len(s)}
        if len(shapes) != 1:
            raise DatasetError(f"{self.name}: splits disagree on image shape: {sorted(shapes)}")
        names = ["train", "val", "test"] + (["pool"] if self.pool is not None else [])
        pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
        for a, b in pairs:
            shared = np.intersect1d(getattr(self, a).groups, getattr(self, b).groups)
            if len(shared):
                raise DatasetError(f"{self.name}: splits {a} and {b} share {len(shared)} groups, "
                                   f"e.g. {shared[0]!r}")

    @property
    def channels(self) -> int:
        return int(self.train.images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train.images.shape[-1])

    @property
    def has_masks(self) -> bool:
        return self.test.has_masks

    def summary(self) -> dict:
        return {s: getattr(self, s).summary() for s in ("train", "val", "test")}
