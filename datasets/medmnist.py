"""``medmnist/<flag>``: any 2D MedMNIST v2 dataset turned into a one-class anomaly benchmark.

Why a family: MedMNIST (Yang et al., "MedMNIST v2", Scientific Data 2023) ships twelve 2D sets
in one ``.npz`` format, so one loader plus a documented *normal-class map* covers them all. The
official train/val/test split is kept: training sees only the normal images of ``train``, ``val``
and ``test`` keep both classes, and the anomalous training images become the optional unlabeled
``pool`` (one-class semi-supervised methods such as DDAD-ASR).

Files are read through the ``medmnist`` package (``download=False``), so a local file is never
fetched again; a missing file is downloaded only when asked to and the host answers within
seconds, otherwise a one-line :class:`~datasets.base.DatasetError` says where to put it.
"""

from __future__ import annotations

import os
import socket
import zipfile
from pathlib import Path
from typing import Sequence
from urllib.parse import urlparse

import numpy as np

from datasets._shared.net import host_reachable
from datasets.base import AnomalyDataset, DatasetCard, DatasetError, Split
from datasets.registry import register_dataset

#: Stored resolutions: 28 is ``<flag>.npz``, the others ``<flag>_<size>.npz``.
STORED_SIZES = (28, 64, 128, 224)
SPLITS = ("train", "val", "test")
DOWNLOAD_TIMEOUT_S = 10.0

#: Label *names* (as in ``medmnist.INFO[flag]["label"]``) that count as normal. Names, not
#: indices, so the map is checked against the installed INFO instead of trusted blindly.
#: ``()`` for a multi-label set means "no finding": normal iff no label is positive.
NORMAL_LABELS: dict[str, tuple[str, ...]] = {
    "pneumoniamnist": ("normal",),
    "breastmnist": ("normal, benign",),          # BUSI normal + benign; malignant is the anomaly
    "chestmnist": (),                            # NIH ChestX-ray14 "no finding"
    "dermamnist": ("melanocytic nevi",),         # HAM10000: benign moles
    "octmnist": ("normal",),
    "retinamnist": ("0",),                       # DeepDRiD: diabetic retinopathy grade 0
    "pathmnist": ("normal colon mucosa",),       # NCT-CRC-HE-100K
}
#: Sets whose classes are all healthy tissue types or cell types: no class is "normal".
NO_NATURAL_NORMAL = ("bloodmnist", "tissuemnist", "organamnist", "organcmnist", "organsmnist")

MODALITY = {
    "pathmnist": "colon pathology (H&E histology patches), RGB",
    "chestmnist": "chest X-ray (NIH ChestX-ray14), gray",
    "dermamnist": "dermatoscopy (HAM10000), RGB",
    "octmnist": "retinal OCT, gray",
    "pneumoniamnist": "pediatric chest X-ray, gray",
    "retinamnist": "retinal fundus photography, RGB",
    "breastmnist": "breast ultrasound (BUSI), gray",
    "bloodmnist": "blood cell microscopy, RGB",
    "tissuemnist": "kidney cortex cell microscopy, gray",
    "organamnist": "abdominal CT, axial slices, gray",
    "organcmnist": "abdominal CT, coronal slices, gray",
    "organsmnist": "abdominal CT, sagittal slices, gray",
}

CITATION = ("Yang et al., MedMNIST v2: A large-scale lightweight benchmark for 2D and 3D biomedical "
            "image classification, Scientific Data 10, 41 (2023)")


def _package():
    """Imported lazily: ``medmnist`` pulls in torch, and listing datasets should stay cheap."""
    import medmnist

    return medmnist


def flags_2d() -> list[str]:
    """The 2D flags of the installed ``medmnist`` (3D sets are not images for this suite)."""
    pkg = _package()
    return sorted(flag for flag, info in pkg.INFO.items()
                  if issubclass(getattr(pkg, info["python_class"]), pkg.dataset.MedMNIST2D))


def _check_flag(flag: str) -> dict:
    pkg = _package()
    if flag not in pkg.INFO or flag not in flags_2d():
        kind = "a 3D flag" if flag in pkg.INFO else "unknown"
        raise DatasetError(f"medmnist/{flag}: {kind}; valid 2D flags: {', '.join(flags_2d())}")
    return pkg.INFO[flag]


def _is_multilabel(info: dict) -> bool:
    return info["task"].startswith("multi-label")


def default_normal_classes(flag: str) -> tuple[int, ...] | None:
    """Indices of the documented normal classes, or ``None`` where no class is naturally normal."""
    info = _check_flag(flag)
    if flag not in NORMAL_LABELS:
        return None
    names = {name.lower(): int(index) for index, name in info["label"].items()}
    missing = [n for n in NORMAL_LABELS[flag] if n.lower() not in names]
    if missing:  # the installed INFO renamed a class: refuse to guess
        raise DatasetError(f"medmnist/{flag}: normal label(s) {missing} not in medmnist.INFO labels "
                           f"{info['label']}; pass normal_classes=[...]")
    return tuple(sorted(names[n.lower()] for n in NORMAL_LABELS[flag]))


def _resolve_normal_classes(flag: str, info: dict, normal_classes: Sequence | None) -> tuple[int, ...]:
    labels = info["label"]
    if normal_classes is None:
        default = default_normal_classes(flag)
        if default is None:
            raise DatasetError(f"medmnist/{flag}: no class is naturally normal; pass normal_classes=[...] "
                               f"from {labels}")
        return default
    if isinstance(normal_classes, (str, int)):
        normal_classes = [normal_classes]
    by_name = {name.lower(): int(index) for index, name in labels.items()}
    resolved = set()
    for item in normal_classes:
        if isinstance(item, str) and item.lower() in by_name:
            resolved.add(by_name[item.lower()])
        elif isinstance(item, (int, np.integer)) and not isinstance(item, bool) and str(int(item)) in labels:
            resolved.add(int(item))
        elif isinstance(item, str) and item.isdigit() and item in labels:
            resolved.add(int(item))
        else:
            raise DatasetError(f"medmnist/{flag}: normal class {item!r} is not a label index or name of {labels}")
    if not _is_multilabel(info):
        if not resolved:
            raise DatasetError(f"medmnist/{flag}: normal_classes is empty; name at least one class of {labels}")
        if len(resolved) == len(labels):
            raise DatasetError(f"medmnist/{flag}: normal_classes covers every class, nothing would be anomalous")
    return tuple(sorted(resolved))


def _normal_mask(labels: np.ndarray, normal: tuple[int, ...], multilabel: bool) -> np.ndarray:
    """Multi-class: the label is a normal class. Multi-label: every positive label is normal."""
    if multilabel:
        abnormal = np.ones(labels.shape[1], dtype=bool)
        abnormal[list(normal)] = False
        return ~(labels[:, abnormal] > 0).any(axis=1)
    return np.isin(labels[:, 0], normal)


# -- files -------------------------------------------------------------------------------------
def file_name(flag: str, size: int | None) -> str:
    return f"{flag}.npz" if size in (None, 28) else f"{flag}_{size}.npz"


def _host_answers(url: str) -> bool:
    return host_reachable(urlparse(url).hostname or "")


def _try_download(flag: str, info: dict, root: Path, size: int | None) -> bool:
    """Fetch the official file with a short socket timeout; remove a partial file on failure."""
    url = info.get("url" if size in (None, 28) else f"url_{size}", "")
    path = root / file_name(flag, size)
    if not _host_answers(url):
        return False
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        root.mkdir(parents=True, exist_ok=True)
        pkg = _package()
        getattr(pkg, info["python_class"])(split="train", root=str(root), download=True,
                                           size=None if size == 28 else size)
        return path.is_file()
    except Exception:  # noqa: BLE001 - any failure means "not downloaded"; the caller says so
        if path.exists():
            path.unlink()
        return False
    finally:
        socket.setdefaulttimeout(previous)


def _locate(flag: str, info: dict, root: Path, size: int | None, download: bool) -> Path:
    path = root / file_name(flag, size)
    if path.is_file():
        return path
    if download and _try_download(flag, info, root, size):
        return path
    why = "not found and download failed (offline?)" if download else "not found (download=False)"
    url = info.get("url" if size in (None, 28) else f"url_{size}") or "https://zenodo.org/records/10519652"
    raise DatasetError(f"medmnist/{flag}: {path} {why}; download {path.name} from {url} (MedMNIST, "
                       f"https://medmnist.com, Zenodo doi:10.5281/zenodo.10519652, CC BY 4.0) into the data root, "
                       f"or pass --data-root DIR that holds it")


def _read(flag: str, info: dict, root: Path, size: int | None, path: Path) -> dict[str, tuple]:
    """``{split: (images [N, H, W(, 3)] uint8, labels [N, L])}`` through the medmnist classes."""
    pkg = _package()
    cls = getattr(pkg, info["python_class"])
    out = {}
    for split in SPLITS:
        try:
            ds = cls(split=split, root=str(root), download=False, size=None if size == 28 else size)
            images, labels = np.asarray(ds.imgs), np.asarray(ds.labels)
        except (KeyError, ValueError, OSError, RuntimeError, zipfile.BadZipFile) as exc:
            raise DatasetError(f"medmnist/{flag}: cannot read '{split}' from {path}: "
                               f"{type(exc).__name__}: {exc}".splitlines()[0]) from exc
        n_labels = len(info["label"]) if _is_multilabel(info) else 1
        channels_ok = images.ndim == 3 or (images.ndim == 4 and images.shape[-1] in (1, 3))
        if images.dtype != np.uint8 or not channels_ok or len(images) != len(labels):
            raise DatasetError(f"medmnist/{flag}: {path} key {split}_images must be uint8 [N, H, W(, 3)] "
                               f"matching {split}_labels, got {images.dtype} {images.shape} and "
                               f"{labels.shape} labels")
        labels = labels.reshape(len(labels), -1)
        if labels.shape[1] != n_labels:
            raise DatasetError(f"medmnist/{flag}: {path} key {split}_labels must be [N, {n_labels}], "
                               f"got {labels.shape}")
        out[split] = (images, labels.astype(np.int64))
    return out


# -- conversion --------------------------------------------------------------------------------
def to_nchw(images: np.ndarray, image_size: int, channels: int | None) -> np.ndarray:
    """``[N, H, W(, 3)]`` uint8 -> ``[N, C, S, S]`` uint8: luminance or repeat, one bilinear
    antialiased resize (torch), rounded once."""
    import torch
    import torch.nn.functional as F

    x = images[:, None] if images.ndim == 3 else np.moveaxis(images, -1, 1)
    native = x.shape[1]
    to_gray = channels == 1 and native == 3
    resize = x.shape[-2:] != (image_size, image_size)
    if to_gray or resize:
        chunks = []
        weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)  # ITU-R BT.601 luma
        for start in range(0, len(x), 2048):
            t = torch.from_numpy(np.ascontiguousarray(x[start:start + 2048])).float()
            if to_gray:
                t = (t * weights).sum(dim=1, keepdim=True)
            if resize:
                t = F.interpolate(t, size=(image_size, image_size), mode="bilinear",
                                  align_corners=False, antialias=True)
            chunks.append(t.round_().clamp_(0, 255).to(torch.uint8).numpy())
        x = np.concatenate(chunks) if chunks else np.zeros((0, x.shape[1] if not to_gray else 1,
                                                                image_size, image_size), np.uint8)
    if channels == 3 and x.shape[1] == 1:
        x = np.repeat(x, 3, axis=1)
    return np.ascontiguousarray(x)


def stratified_subsample(labels: np.ndarray, limit: int | None, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of at most ``limit`` items keeping the class proportions (largest
    remainder), at least one per class present when ``limit`` allows."""
    n = len(labels)
    if limit is None or limit >= n:
        return np.arange(n)
    classes = np.unique(labels)
    sizes = np.array([(labels == c).sum() for c in classes])
    exact = limit * sizes / n
    counts = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - counts), kind="stable")[: limit - counts.sum()]:
        counts[i] += 1
    if limit >= len(classes):
        for i in np.flatnonzero(counts == 0):
            counts[np.argmax(counts)] -= 1
            counts[i] = 1
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, counts)]
    return np.sort(np.concatenate(chosen))


def _limit(name: str, value) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise DatasetError(f"medmnist: {name} must be a positive int or None, got {value!r}")
    return int(value)


# -- registry entry ----------------------------------------------------------------------------
def card_for(flag: str) -> DatasetCard:
    """The card of ``medmnist/<flag>``: modality, normal-class map, license and split rules."""
    info = _check_flag(flag)
    labels = info["label"]
    normal = default_normal_classes(flag)
    if normal is None:
        normal_text = f"no natural normal class: pass normal_classes=[...] from {labels}"
    elif _is_multilabel(info):
        normal_text = "no finding: every one of the labels is 0"
    else:
        normal_text = ", ".join(f"{i} ({labels[str(i)]})" for i in normal)
    sizes = ", ".join(f"{file_name(flag, s)}" for s in STORED_SIZES)
    return DatasetCard(
        name=f"medmnist/{flag}",
        modality=MODALITY.get(flag, f"{info['n_channels']}-channel images"),
        description=info["description"],
        normal=normal_text,
        anomaly=("any positive label" if _is_multilabel(info) else "every other class") + f"; labels: {labels}",
        license=info["license"] + " (MedMNIST)",
        citation=CITATION,
        source=info["url"],
        layout=f"<root>/{{{sizes}}} (official MedMNIST v2 files; size=None reads the 28 px one)",
        splits=("official MedMNIST splits: train = its normal images; val and test = all images; "
                "pool = the anomalous train images (labels kept). max_train/max_val/max_test keep a "
                "seeded, class-stratified, sorted subset."),
        notes=("MedMNIST has no patient ids, so groups are per-image ids '<flag>-<split>-<index>' "
               "(index in the official split); patient overlap between the official splits cannot "
               "be checked. image_size resizes once (torch bilinear, antialias) from the stored size."),
    )


def planned_sizes(flag: str, *, image_size, channels, max_train, max_val, max_test, **_):
    """Split sizes from medmnist's INFO (``n_samples``), for planning before the file is on this machine.
    Which training images are normal is known only from the labels: planned as all of them (an upper bound)."""
    from datasets.stand_in import PlannedSizes

    info = _check_flag(flag)
    counts = info["n_samples"]

    def cap(n, limit):
        return int(min(n, limit)) if limit else int(n)

    train = cap(counts["train"], max_train)
    val, test = cap(counts["val"], max_val), cap(counts["test"], max_test)
    return PlannedSizes(train, (val, val // 2), (test, test // 2), int(channels or info["n_channels"]),
                        int(image_size), False, (counts["train"] // 2, counts["train"] // 2),
                        "from medmnist INFO n_samples; train counts every training image (normals are fewer)")


@register_dataset("medmnist", family=True, member="flag", card=card_for, plan_sizes=planned_sizes)
def medmnist(flag: str, root: str | Path, image_size: int = 28, size: int | None = None,
             normal_classes: Sequence[int | str] | None = None, channels: int | None = None,
             max_train: int | None = None, max_val: int | None = None, max_test: int | None = None,
             max_pool: int | None = None, download: bool = True, seed: int = 0) -> AnomalyDataset:
    """Any 2D MedMNIST flag as normal-vs-rest anomaly detection on the official splits."""
    info = _check_flag(flag)
    normal = _resolve_normal_classes(flag, info, normal_classes)
    multilabel = _is_multilabel(info)
    if size not in (None, *STORED_SIZES):
        raise DatasetError(f"medmnist/{flag}: size must be one of {STORED_SIZES} or None, got {size!r}")
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or not 8 <= image_size <= 1024:
        raise DatasetError(f"medmnist/{flag}: image_size must be an int in [8, 1024], got {image_size!r}")
    if channels not in (None, 1, 3):
        raise DatasetError(f"medmnist/{flag}: channels must be 1, 3 or None (native), got {channels!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DatasetError(f"medmnist/{flag}: seed must be a non-negative int, got {seed!r}")
    limits = {"train": _limit("max_train", max_train), "val": _limit("max_val", max_val),
              "test": _limit("max_test", max_test), "pool": _limit("max_pool", max_pool)}

    root = Path(os.fspath(root)).expanduser()
    path = _locate(flag, info, root, size, bool(download))
    raw = _read(flag, info, root, size, path)

    def make(split: str, source: str, index: np.ndarray, is_anomalous: np.ndarray) -> Split:
        images, _ = raw[source]
        width = max(5, len(str(len(images) - 1)))
        rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(SPLITS.index(source),
                                                                                  int(split == "pool"))))
        keep = index[stratified_subsample(is_anomalous[index].astype(np.int64), limits[split], rng)]
        groups = np.array([f"{flag}-{source}-{i:0{width}d}" for i in keep])
        return Split(to_nchw(images[keep], int(image_size), channels), is_anomalous[keep], None,
                     groups, name=split, ids=np.array([f"{source}-{i}" for i in keep]))

    anomalous = {s: ~_normal_mask(raw[s][1], normal, multilabel) for s in SPLITS}
    everything = {s: np.arange(len(raw[s][1])) for s in SPLITS}
    train_pool = np.flatnonzero(anomalous["train"])
    dataset = AnomalyDataset(
        name=f"medmnist/{flag}",
        train=make("train", "train", np.flatnonzero(~anomalous["train"]), anomalous["train"]),
        val=make("val", "val", everything["val"], anomalous["val"]),
        test=make("test", "test", everything["test"], anomalous["test"]),
        pool=make("pool", "train", train_pool, anomalous["train"]) if len(train_pool) else None,
        card=card_for(flag),
        config={"flag": flag, "size": 28 if size is None else int(size), "image_size": int(image_size),
                "channels": channels or int(info["n_channels"]), "normal_classes": list(normal), "max_train": limits["train"],
                "max_val": limits["val"], "max_test": limits["test"], "max_pool": limits["pool"],
                "seed": int(seed), "file": path.name},
    )
    return dataset
