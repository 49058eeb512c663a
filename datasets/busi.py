"""``busi``: BUSI breast ultrasound (Al-Dhabyani et al. 2020) with lesion masks.

Why this set: it is the one real source on hand with both *normal* images and *pixel masks*, so
localization (pixel AP, AUPRO, Dice) can be measured on real data, not only on phantoms.

Two sources give the same arrays:

* the published download, ``Dataset_BUSI_with_GT/{normal,benign,malignant}/<class> (k).png``
  with ``<class> (k)_mask.png`` (and ``_mask_1.png``, ``_mask_2.png`` for a second or third
  lesion). ``root`` may be the data root holding ``Dataset_BUSI_with_GT/`` or that folder itself.
  Each image is decoded the way ``busi.npz`` was made: Pillow ``convert("L")`` (the PNGs are
  RGB-saved grayscale), the whole image resized to 128 px with Pillow's antialiased bilinear
  filter (aspect ratio not kept), its masks OR-ed at native size and resized with nearest
  neighbour. Sizes above 128 px are decoded at that size directly. The decoded arrays are cached
  (:mod:`datasets._cache`, keyed by every file's path, size and mtime), so the PNGs are read once.
* ``<root>/busi.npz``, those arrays at 128 px (a compaction of the same download; keys
  ``images``, ``masks``, ``labels``, ``subtype``, ``names``, ``orig_hw``).

780 images: 133 normal, 437 benign, 210 malignant, ordered normal, benign, malignant and by
number. There are no patient ids, so splits are image-level and seeded: training is a share of
the normals; the other normals and all lesion images are divided between validation and test,
stratified by subtype (normal / benign / malignant), so thresholds never see test labels.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np

from datasets._cache import ArrayCache, cache_key, resolve_cache_dir
from datasets._io import convert, open_image, read_mask, require_dir, resize_image, resize_mask
from datasets._splits import allocate, assemble, check_fraction, stable_rng
from datasets.base import AnomalyDataset, DatasetCard, DatasetError
from datasets.registry import register_dataset

FILE = "busi.npz"
FOLDER = "Dataset_BUSI_with_GT"
KEYS = ("images", "masks", "labels", "subtype", "names")
SUBTYPES = ("normal", "benign", "malignant")
#: The side ``busi.npz`` was made at; the folder is decoded at it too, so both sources agree.
STORED_SIZE = 128
MAX_FOLDER_SIZE = 512
DOI = "https://doi.org/10.1016/j.dib.2019.104863"
DATASET_PAGE = "https://scholar.cu.edu.eg/?q=afahmy/pages/dataset"

_NAME = re.compile(r"^(?P<stem>.+?)(?P<mask>_mask(?:_\d+)?)?\.png$", re.IGNORECASE)
_NUMBER = re.compile(r"\((\d+)\)")

CARD = DatasetCard(
    name="busi",
    modality="breast ultrasound (B-mode), 1 channel, uint8, resized square (aspect ratio not kept)",
    description=("BUSI: 780 breast ultrasound images of women aged 25-75 from Baheya Hospital, Cairo "
                 "(2018): 133 normal, 437 benign, 210 malignant, each lesion image with its lesion mask."),
    normal="an image without a lesion ('normal' folder); not curated healthy images",
    anomaly="a benign or malignant lesion; the mask marks the lesion outline(s) (union of an image's masks)",
    license=("CC BY 4.0 (Data in Brief open access); no licence file ships with the images and "
             "mirrors state different licences"),
    citation=("W. Al-Dhabyani, M. Gomaa, H. Khaled, A. Fahmy, 'Dataset of breast ultrasound images', "
              "Data in Brief 28 (2020) 104863, doi:10.1016/j.dib.2019.104863"),
    source=(f"the paper ({DOI}) gives the dataset page {DATASET_PAGE} (Dataset_BUSI_with_GT); "
            "mirrors (e.g. on Kaggle) hold the same folder"),
    layout=(f"<root>/{FOLDER}/{{normal,benign,malignant}}/<class> (k).png with <class> (k)_mask.png "
            "(+ _mask_1.png, _mask_2.png); or <root>/busi.npz (keys images, masks [N,128,128] uint8, labels, "
            "subtype, names, orig_hw)"),
    splits=("image-level, seeded: train = train_fraction of the normals; the other normals and all lesion "
            "images go to val (val_fraction) and test, stratified by subtype; pixel-identical duplicates "
            "keep only their first copy"),
    notes=("Caveats (Pawlowska et al., Data in Brief 48 (2023) 109247): on-screen calipers, "
           "text and markers in many images (some inside the lesion region), 16 images with Doppler "
           "colour turned gray; duplicated and near-duplicated images (benign 433 = malignant 145 "
           "pixel for pixel, six near-identical pairs), the same lesion in benign and malignant "
           "folders, some axilla images; no patient ids (600 patients, 780 images), so one patient "
           "may fall on both sides of a split; the same images as BreastMNIST (not an independent "
           "test set for it); whole images are resized without keeping the aspect ratio (Pillow "
           "grayscale, antialiased bilinear to 128 px, masks OR-ed then nearest). "
           "Foreground: none (the whole image counts)."),
)


# -- where the data is ---------------------------------------------------------------------------
def _is_folder(path: Path) -> bool:
    return path.name == FOLDER or all((path / name).is_dir() for name in SUBTYPES)


def locate(root: Path, source: str = "auto") -> tuple[str, Path]:
    """``("folder", Dataset_BUSI_with_GT)`` or ``("npz", busi.npz)``; the published folder wins."""
    if source not in ("auto", "folder", "npz"):
        raise DatasetError(f"busi: source must be 'auto', 'folder' or 'npz', got {source!r}")
    if not root.is_dir():
        raise DatasetError(f"{root}: data root not found; expected a folder holding {FOLDER}/ or {FILE}")
    if source in ("auto", "folder"):
        for folder in (root / FOLDER, root):
            if folder.is_dir() and _is_folder(folder):
                return "folder", folder
    if source in ("auto", "npz") and (root / FILE).is_file():
        return "npz", root / FILE
    if source == "npz":
        raise DatasetError(f"{root / FILE}: file not found; expected BUSI at 128 px as busi.npz")
    raise DatasetError(f"{root / FOLDER}: folder not found; expected the BUSI download "
                       f"({FOLDER}/{{normal,benign,malignant}}, see {DOI}) or {FILE} in the data root")


# -- the published folder ------------------------------------------------------------------------
def _order(path: Path) -> tuple[int, str]:
    """Sort by the number in ``<class> (k).png`` (so 2 comes before 10), then by name."""
    found = _NUMBER.search(path.name)
    return (int(found.group(1)) if found else -1, path.name)


def catalog(folder: Path) -> list[tuple[str, Path, list[Path]]]:
    """``(subtype, image, masks)`` per image, normal/benign/malignant, each ordered by number."""
    entries = []
    names: dict[str, Path] = {}
    for subtype in SUBTYPES:
        sub = require_dir(folder / subtype, f"the BUSI {subtype} images and their _mask.png files")
        images: dict[str, Path] = {}
        masks: dict[str, list[Path]] = {}
        for path in sorted(sub.iterdir()):
            if path.name.startswith(".") or not path.is_file() or path.suffix.lower() != ".png":
                continue
            found = _NAME.match(path.name)
            if found.group("mask"):
                masks.setdefault(found.group("stem"), []).append(path)
            else:
                images[found.group("stem")] = path
        for stem in sorted(set(masks) - set(images)):
            raise DatasetError(f"{masks[stem][0]}: mask without an image; expected {sub / (stem + '.png')}")
        if not images:
            raise DatasetError(f"{sub}: no .png images; expected '{subtype} (k).png' with '{subtype} (k)_mask.png'")
        for stem, image in sorted(images.items(), key=lambda item: _order(item[1])):
            if subtype != "normal" and stem not in masks:
                raise DatasetError(f"{sub / (stem + '_mask.png')}: mask not found for {image}; expected every "
                                   f"{subtype} image to have its lesion mask")
            if image.name in names:
                raise DatasetError(f"{image}: file name also used by {names[image.name]}; expected unique names")
            names[image.name] = image
            entries.append((subtype, image, sorted(masks.get(stem, []), key=lambda p: p.name)))
    return entries


def _decode_one(subtype: str, image_path: Path, mask_paths: list[Path], size: int):
    """One image as busi.npz was made: grayscale, bilinear to ``size``; masks OR-ed, then nearest."""
    img = convert(open_image(image_path), 1, path=image_path)
    union = np.zeros((img.size[1], img.size[0]), bool)
    for mask_path in mask_paths:
        mask = read_mask(mask_path, img.size, image_path)
        if subtype == "normal" and mask.any():
            raise DatasetError(f"{mask_path}: a normal image's mask marks {int(mask.sum())} pixels; "
                               "expected empty masks in normal/")
        union |= mask
    if subtype != "normal" and not union.any():
        raise DatasetError(f"{mask_paths[0]}: the lesion mask of {image_path.name} is empty; expected the lesion "
                           "outline")
    image = np.asarray(resize_image(img, size), dtype=np.uint8)
    return image, np.asarray(resize_mask(union, size), dtype=np.uint8), (img.size[1], img.size[0])


def decode_folder(entries: list[tuple[str, Path, list[Path]]], size: int) -> dict[str, np.ndarray]:
    """The folder's images as the arrays of ``busi.npz`` (threads, order kept; first bad file raises)."""
    n = len(entries)
    images = np.zeros((n, size, size), np.uint8)
    masks = np.zeros((n, size, size), np.uint8)
    orig_hw = np.zeros((n, 2), np.int16)

    def work(i: int) -> None:
        images[i], masks[i], orig_hw[i] = _decode_one(*entries[i], size)

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        try:
            list(pool.map(work, range(n)))
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    subtype = np.array([e[0] for e in entries])
    return {"images": images, "masks": masks, "labels": (subtype != "normal").astype(np.uint8),
            "subtype": subtype, "names": np.array([e[1].name for e in entries]), "orig_hw": orig_hw}


def read_folder(folder: Path, size: int, cache_dir: Path) -> tuple[dict[str, np.ndarray], dict]:
    """Decoded arrays of the folder through the decoded-dataset cache, and the cache info."""
    entries = catalog(folder)
    files = [p for _, image, masks in entries for p in (image, *masks)]
    params = {"image_size": int(size), "channels": 1, "mask": "union of _mask*.png",
              "resize": "pil-L/pil-bilinear-aa/mask-or-then-nearest"}
    key = cache_key("busi", folder, files, params)
    arrays, hit, path = ArrayCache(cache_dir).get_or_build("busi", key, lambda: decode_folder(entries, size))
    return arrays, {"cache_hit": hit, "cache_file": str(path)}


# -- busi.npz ------------------------------------------------------------------------------------
def read_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of ``busi.npz`` (plain dtypes, no pickle); a truncated or foreign file is one line."""
    import zipfile
    import zlib

    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in KEYS if k not in data.files]
            if missing:
                raise DatasetError(f"busi: {path} lacks keys {missing}; expected {list(KEYS)}")
            return {k: data[k] for k in KEYS}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:   # truncated, not an .npz
        raise DatasetError(f"busi: {path} is not a readable .npz ({type(exc).__name__}: {exc}); "
                           "copy busi.npz again") from None


def _check(arrays: dict[str, np.ndarray], path: Path) -> None:
    images, masks = arrays["images"], arrays["masks"]
    if images.ndim != 3 or images.dtype != np.uint8 or masks.shape != images.shape:
        raise DatasetError(f"busi: {path}: images and masks must be uint8 [N, H, W] of one shape, got "
                           f"{images.dtype} {images.shape} and {masks.shape}")
    if any(len(arrays[k]) != len(images) for k in KEYS):
        raise DatasetError(f"busi: {path}: arrays disagree on the number of images ({len(images)})")
    unknown = sorted(set(arrays["subtype"].astype(str)) - set(SUBTYPES))
    if unknown:
        raise DatasetError(f"busi: {path}: unknown subtypes {unknown}; expected {SUBTYPES}")


# -- arrays -> splits ----------------------------------------------------------------------------
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
               seed: int, pool_fraction: float = 0.0) -> np.ndarray:
    """``train``/``val``/``test``/``pool``/``unused`` per image: seeded, stratified by subtype, order-free.

    ``pool_fraction`` of each lesion subtype goes to an unlabeled pool (for one-class semi-supervised
    detectors such as DDAD-ASR) before validation and test are drawn; 0 leaves the splits as they were.
    """
    tags = np.full(len(subtype), "unused", dtype=object)
    for name in SUBTYPES:
        index = np.flatnonzero((subtype == name) & keep)
        index = index[stable_rng(seed, f"busi-{name}").permutation(len(index))]
        n_train = int(round(train_fraction * len(index))) if name == "normal" else 0
        rest = index[n_train:]
        n_pool = int(round(pool_fraction * len(rest))) if name != "normal" else 0
        tags[rest[:n_pool]] = "pool"
        rest = rest[n_pool:]
        n_val, _ = allocate(len(rest), [val_fraction])
        tags[index[:n_train]] = "train"
        tags[rest[:n_val]] = "val"
        tags[rest[n_val:]] = "test"
    return tags.astype(str)


def _check_int(name: str, value, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
        raise DatasetError(f"busi: {name} must be an int in [{low}, {high}], got {value!r}")
    return int(value)


def planned_sizes(*, image_size, train_fraction, val_fraction, pool_fraction, **_):
    """BUSI's split sizes from its published counts (133 normal, 647 lesion images; a few duplicates
    dropped when read): planning a grid before the data is on this machine."""
    from datasets.stand_in import PlannedSizes

    normal, lesion = 133, 647
    n_train = int(round(train_fraction * normal))
    n_pool = int(round(pool_fraction * lesion))
    val_normal, val_lesion = allocate(normal - n_train, [val_fraction])[0], allocate(lesion - n_pool, [val_fraction])[0]
    test_normal, test_lesion = normal - n_train - val_normal, lesion - n_pool - val_lesion
    return PlannedSizes(n_train, (val_normal + val_lesion, val_lesion), (test_normal + test_lesion, test_lesion), 1,
                        int(image_size), True, (n_pool, n_pool),
                        "from the published counts (duplicates dropped on reading make it slightly smaller)")


@register_dataset("busi", card=CARD, decodes_files=True, plan_sizes=planned_sizes)
def busi(root: str | Path, image_size: int = 128, train_fraction: float = 0.6, val_fraction: float = 0.3,
         seed: int = 0, source: str = "auto", cache_dir: str | Path | None = None,
         pool_fraction: float = 0.0) -> AnomalyDataset:
    """BUSI normals vs lesions with masks, from the published folder or ``busi.npz``.

    Args:
        root: the data root holding ``Dataset_BUSI_with_GT/`` or ``busi.npz``, or that folder itself.
        image_size: side in pixels: 8 to 128 from ``busi.npz`` (downsampling only), 8 to 512 from the
            folder (up to 128 it gives the same arrays as ``busi.npz``).
        train_fraction: share of the normal images used for training (the rest go to val/test).
        val_fraction: share of the non-training images (per subtype) that form the validation split.
        seed: the split's seed.
        source: ``auto`` (the folder when present, else ``busi.npz``), ``folder`` or ``npz``.
        cache_dir: where decoded folder arrays are cached (default ``<root>/.uad_cache`` when writable).
        pool_fraction: share of the lesion images (per subtype) held out as an unlabeled pool for
            one-class semi-supervised detectors (DDAD-ASR), taken before validation and test; BUSI has
            no spare normals, so a pool at a rate below 1 borrows normals from training (the pool says so).
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DatasetError(f"busi: seed must be a non-negative int, got {seed!r}")
    seed = int(seed)
    check_fraction("train_fraction", train_fraction, allow_zero=False)
    check_fraction("val_fraction", val_fraction, allow_zero=False)
    if isinstance(pool_fraction, bool) or not isinstance(pool_fraction, (int, float)) or not 0 <= pool_fraction < 1:
        raise DatasetError(f"busi: pool_fraction must be in [0, 1), got {pool_fraction!r}")
    root = Path(os.fspath(root)).expanduser()
    kind, path = locate(root, source)
    image_size = _check_int("image_size", image_size, 8, MAX_FOLDER_SIZE if kind == "folder" else STORED_SIZE)
    info: dict = {}
    if kind == "folder":
        raw, info = read_folder(path, max(STORED_SIZE, image_size), resolve_cache_dir(root, cache_dir))
    else:
        raw = read_npz(path)
    _check(raw, path)
    keep = _first_copies(raw["images"])
    subtype = raw["subtype"].astype(str)
    tags = split_tags(subtype, keep, float(train_fraction), float(val_fraction), seed, float(pool_fraction))
    labels = (subtype != "normal").astype(np.int64)
    if not np.array_equal(labels, raw["labels"].astype(np.int64)):
        raise DatasetError(f"busi: {path}: labels disagree with subtype (normal = 0, benign/malignant = 1)")
    arrays = {"images": _resize(raw["images"], image_size, mask=False),
              "masks": _resize(raw["masks"], image_size, mask=True)}
    groups = np.array([f"busi-{name}" for name in raw["names"].astype(str)])
    read = (f"the published folder {path} (decoded as busi.npz was made)" if kind == "folder"
            else f"{path} (BUSI at 128 px)")
    config = {"loader": "busi", "source": str(path), "source_kind": kind, "image_size": image_size,
              "train_fraction": float(train_fraction), "val_fraction": float(val_fraction), "seed": seed,
              "pool_fraction": float(pool_fraction), "duplicates_dropped": int((~keep).sum()), **info}
    note = f"{int((~keep).sum())} pixel-identical duplicate(s) dropped"
    card = replace(CARD, notes=f"This build read {read}. {CARD.notes}")
    return assemble("busi", arrays, labels, groups, tags, card, config, source=path, split_note=note,
                    ids=raw["names"].astype(str))
