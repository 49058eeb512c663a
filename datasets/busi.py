"""``busi``: BUSI breast ultrasound (Al-Dhabyani et al. 2020) with lesion masks, from ``busi.npz``.

Why this set: it is the one real source on hand with both *normal* images and *pixel masks*, so
localization (pixel AP, AUPRO, Dice) can be measured on real data, not only on phantoms.

The file ``<root>/busi.npz`` (see ``busi.README.md`` next to it) holds 780 grayscale images at
128 px: 133 normal, 437 benign, 210 malignant, masks = the union of an image's lesion outlines.
There are no patient ids, so splits are image-level and seeded: training is a share of the
normals; the other normals and all lesion images are divided between validation and test,
stratified by subtype (normal / benign / malignant), so thresholds never see test labels.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from datasets._splits import allocate, assemble, check_fraction, stable_rng
from datasets.base import AnomalyDataset, DatasetCard, DatasetError
from datasets.registry import register_dataset

FILE = "busi.npz"
KEYS = ("images", "masks", "labels", "subtype", "names")
SUBTYPES = ("normal", "benign", "malignant")

CARD = DatasetCard(
    name="busi",
    modality="breast ultrasound (B-mode), 1 channel, uint8, 128 px (aspect ratio not kept)",
    description=("BUSI: 780 breast ultrasound images of women aged 25-75 from Baheya Hospital, Cairo "
                 "(2018): 133 normal, 437 benign, 210 malignant, each lesion image with its lesion mask."),
    normal="an image without a lesion ('normal' folder); not curated healthy images",
    anomaly="a benign or malignant lesion; the mask marks the lesion outline(s) (union of an image's masks)",
    license=("CC BY 4.0 (Data in Brief open access); the GitHub copy used has no licence file, "
             "mirrors state different licences"),
    citation=("W. Al-Dhabyani, M. Gomaa, H. Khaled, A. Fahmy, 'Dataset of breast ultrasound images', "
              "Data in Brief 28 (2020) 104863, doi:10.1016/j.dib.2019.104863"),
    source=("busi.npz built from yirutsai/Breast-ultrasound-dataset (byte copies of Dataset_BUSI_with_GT); "
            "provenance and preprocessing in busi.README.md"),
    layout="<root>/busi.npz with keys images, masks [N,128,128] uint8, labels, subtype, names, orig_hw",
    splits=("image-level, seeded: train = train_fraction of the normals; the other normals and all lesion "
            "images go to val (val_fraction) and test, stratified by subtype; pixel-identical duplicates "
            "keep only their first copy"),
    notes=("Caveats (busi.README.md; Pawlowska et al., Data in Brief 48 (2023) 109247): on-screen calipers, "
           "text and markers in many images (some inside the lesion region), 16 images with Doppler "
           "colour turned gray; duplicated and near-duplicated images (benign 433 = malignant 145 "
           "pixel for pixel, six near-identical pairs), the same lesion in benign and malignant "
           "folders, some axilla images; no patient ids (600 patients, 780 images), so one patient "
           "may fall on both sides of a split; the same images as BreastMNIST (not an independent "
           "test set for it); whole images were resized to 128 px without keeping the aspect ratio. "
           "Foreground: none (the whole image counts)."),
)


def _read(path: Path) -> dict[str, np.ndarray]:
    import zipfile
    import zlib

    if not path.is_file():
        raise DatasetError(f"busi: {path} not found; put busi.npz (BUSI at 128 px, see busi.README.md) "
                           "in the data root (--data-root or $UAD_BENCH_DATA)")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in KEYS if k not in data.files]
            if missing:
                raise DatasetError(f"busi: {path} lacks keys {missing}; expected {list(KEYS)}")
            arrays = {k: data[k] for k in KEYS}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:   # truncated, not an .npz
        raise DatasetError(f"busi: {path} is not a readable .npz ({type(exc).__name__}: {exc}); "
                           "copy busi.npz again") from None
    n = len(arrays["images"])
    if arrays["images"].ndim != 3 or arrays["images"].dtype != np.uint8 or arrays["masks"].shape != arrays["images"].shape:
        raise DatasetError(f"busi: {path}: images and masks must be uint8 [N, H, W] of one shape, got "
                           f"{arrays['images'].dtype} {arrays['images'].shape} and {arrays['masks'].shape}")
    if any(len(arrays[k]) != n for k in KEYS):
        raise DatasetError(f"busi: {path}: arrays disagree on the number of images ({n})")
    unknown = sorted(set(arrays["subtype"].astype(str)) - set(SUBTYPES))
    if unknown:
        raise DatasetError(f"busi: {path}: unknown subtypes {unknown}; expected {SUBTYPES}")
    return arrays


def _resize(images: np.ndarray, size: int, *, mask: bool) -> np.ndarray:
    """[N, H, W] uint8 -> [N, 1, size, size]: images bilinear with antialias, masks nearest."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(images))[:, None]
    if x.shape[-1] == size and x.shape[-2] == size:
        return x.numpy()
    if mask:
        return F.interpolate(x.float(), size=(size, size), mode="nearest").to(torch.uint8).numpy()
    out = F.interpolate(x.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return out.round_().clamp_(0, 255).to(torch.uint8).numpy()


def _first_copies(images: np.ndarray) -> np.ndarray:
    """Boolean [N]: False for an image pixel-identical to an earlier one (kept out of every split)."""
    seen: dict[bytes, int] = {}
    keep = np.ones(len(images), dtype=bool)
    for i, image in enumerate(images):
        digest = image.tobytes()
        if digest in seen:
            keep[i] = False
        else:
            seen[digest] = i
    return keep


def split_tags(subtype: np.ndarray, keep: np.ndarray, train_fraction: float, val_fraction: float,
               seed: int) -> np.ndarray:
    """``train``/``val``/``test``/``unused`` per image: seeded, stratified by subtype, order-free."""
    tags = np.full(len(subtype), "unused", dtype=object)
    for name in SUBTYPES:
        index = np.flatnonzero((subtype == name) & keep)
        index = index[stable_rng(seed, f"busi-{name}").permutation(len(index))]
        n_train = int(round(train_fraction * len(index))) if name == "normal" else 0
        rest = index[n_train:]
        n_val, _ = allocate(len(rest), [val_fraction])
        tags[index[:n_train]] = "train"
        tags[rest[:n_val]] = "val"
        tags[rest[n_val:]] = "test"
    return tags.astype(str)


@register_dataset("busi", card=CARD)
def busi(root: str | Path, image_size: int = 128, train_fraction: float = 0.6, val_fraction: float = 0.3,
         seed: int = 0) -> AnomalyDataset:
    """BUSI normals vs lesions with masks; ``image_size`` resizes from the stored 128 px.

    Args:
        root: folder holding ``busi.npz``.
        image_size: side in pixels (8 to 128; downsampling only, the file is 128 px).
        train_fraction: share of the normal images used for training (the rest go to val/test).
        val_fraction: share of the non-training images (per subtype) that form the validation split.
        seed: the split's seed.
    """
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or not 8 <= image_size <= 128:
        raise DatasetError(f"busi: image_size must be an int in [8, 128], got {image_size!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DatasetError(f"busi: seed must be a non-negative int, got {seed!r}")
    check_fraction("train_fraction", train_fraction, allow_zero=False)
    check_fraction("val_fraction", val_fraction, allow_zero=False)
    path = Path(os.fspath(root)).expanduser() / FILE
    raw = _read(path)
    keep = _first_copies(raw["images"])
    subtype = raw["subtype"].astype(str)
    tags = split_tags(subtype, keep, float(train_fraction), float(val_fraction), int(seed))
    labels = (subtype != "normal").astype(np.int64)
    if not np.array_equal(labels, raw["labels"].astype(np.int64)):
        raise DatasetError(f"busi: {path}: labels disagree with subtype (normal = 0, benign/malignant = 1)")
    arrays = {"images": _resize(raw["images"], int(image_size), mask=False),
              "masks": _resize(raw["masks"], int(image_size), mask=True)}
    groups = np.array([f"busi-{name}" for name in raw["names"].astype(str)])
    config = {"loader": "busi", "source": str(path), "image_size": int(image_size),
              "train_fraction": float(train_fraction), "val_fraction": float(val_fraction), "seed": int(seed),
              "duplicates_dropped": int((~keep).sum())}
    note = f"{int((~keep).sum())} pixel-identical duplicate(s) dropped"
    return assemble("busi", arrays, labels, groups, tags, CARD, config, source=path, split_note=note)
