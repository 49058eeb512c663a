"""Shared image decoding for the folder readers: list, open, check, convert and resize.

Why one module: every layout (MedIAnomaly, BMAD, LGG, MVTec, plain folders) ends in the same
step, "decode these files to ``uint8 [C, S, S]`` and their masks to ``{0, 1} [1, S, S]``", and
the same bad inputs (missing folder, truncated file, mask of the wrong size) must get the same
one-line :class:`~datasets.base.DatasetError` everywhere.

Conventions: images are resized with Pillow's antialiased bilinear filter (area-aware when
shrinking), masks are binarised (``> 0``) at their native size and then resized with nearest
neighbour, so a lesion drawn at a known place lands at the same place after resizing. Non-square
sources are resized to ``S x S`` without cropping, as MedIAnomaly does.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from datasets.base import DatasetError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_HIGH_DEPTH_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


@dataclass(frozen=True)
class Record:
    """One image of a layout before decoding.

    Attributes:
        image: the image file.
        label: 0 normal, 1 anomalous (for LGG it is re-derived from the mask).
        group: patient / volume / case id; splits never share one.
        split: the published split (``train``, ``val``, ``test``, ``pool``) or ``""`` when the
            loader assigns it later by group.
        mask: the pixel mask file, or ``None`` (an all-zero mask when the dataset has masks).
    """

    image: Path
    label: int
    group: str
    split: str = ""
    mask: Path | None = None


def one_line(text: object) -> str:
    """Collapse an exception text to one line (errors must fit one line)."""
    return " ".join(str(text).split())


def require_dir(path: Path, expected: str) -> Path:
    """Return ``path`` if it is a folder, else raise naming it and what should be there."""
    if not path.is_dir():
        what = "is a file, not a folder" if path.exists() else "folder not found"
        raise DatasetError(f"{path}: {what}; expected {expected}")
    return path


def require_file(path: Path, expected: str) -> Path:
    if not path.is_file():
        raise DatasetError(f"{path}: file not found; expected {expected}")
    return path


def list_images(folder: Path, expected: str = "image files") -> list[Path]:
    """Image files directly inside ``folder``, sorted by name (hidden files skipped)."""
    require_dir(folder, expected)
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES)


def index_by_stem(files: Sequence[Path], strip_suffix: str = "") -> dict[str, Path]:
    """Map file stem (minus ``strip_suffix``, e.g. ``_mask``) to file; duplicates are an error."""
    out: dict[str, Path] = {}
    for path in files:
        stem = path.stem
        if strip_suffix and stem.endswith(strip_suffix):
            stem = stem[: -len(strip_suffix)]
        if stem in out:
            raise DatasetError(f"{path}: two files share the name stem {stem!r} ({out[stem].name}); "
                               "expected one file per image")
        out[stem] = path
    return out


def open_image(path: Path) -> Image.Image:
    """Open and fully decode ``path``; unreadable or truncated files raise a one-line error."""
    try:
        with Image.open(path) as img:
            img.load()
            return img.copy() if img.mode != "P" else img.convert("RGBA")
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found; expected an image file") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DatasetError(f"{path}: unreadable or truncated image ({one_line(exc)})") from None


def native_channels(path: Path) -> int:
    """1 for grayscale sources, 3 for colour ones (decides ``channels=None``)."""
    return 1 if open_image(path).mode in ("1", "L", "LA", *_HIGH_DEPTH_MODES) else 3


def _to_8bit(img: Image.Image, path: Path | None = None) -> Image.Image:
    """16-bit / float images: min-max scale per image to 8 bit (no global range is known).

    NaN or infinite pixels (float TIFFs) are refused with the file named: scaling them would
    turn the whole image black without a word.
    """
    if img.mode not in _HIGH_DEPTH_MODES:
        return img
    arr = np.asarray(img, dtype=np.float64)
    bad = int((~np.isfinite(arr)).sum())
    if bad:
        raise DatasetError(f"{path or 'image'}: {bad} of {arr.size} pixels are NaN or infinite; "
                           "fix or remove the file (the benchmark does not guess values for them)")
    lo, hi = float(arr.min()), float(arr.max())
    scaled = np.zeros_like(arr) if hi <= lo else (arr - lo) / (hi - lo) * 255.0
    return Image.fromarray(np.round(scaled).astype(np.uint8), mode="L")


def convert(img: Image.Image, channels: int, band: int | None = None, path: Path | None = None) -> Image.Image:
    """Convert to ``channels`` (1 = luminance, 3 = RGB, gray replicated); ``band`` picks one band."""
    img = _to_8bit(img, path)
    if band is not None:
        bands = img.getbands()
        if band >= len(bands):
            raise DatasetError(f"{path}: image has {len(bands)} channel(s) ({img.mode}); "
                               f"expected at least {band + 1} to select channel {band}")
        img = img.getchannel(band)
    if channels == 1:
        return img if img.mode == "L" else img.convert("L")
    if channels == 3:
        return img if img.mode == "RGB" else img.convert("RGB")
    raise DatasetError(f"{path}: channels must be 1 or 3, got {channels}")


def to_chw(img: Image.Image) -> np.ndarray:
    arr = np.asarray(img, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else np.ascontiguousarray(arr.transpose(2, 0, 1))


def resize_image(img: Image.Image, size: int) -> Image.Image:
    """Antialiased bilinear resize to ``size x size`` (no-op when already that size)."""
    return img if img.size == (size, size) else img.resize((size, size), Image.BILINEAR)


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize of a binary ``[H, W]`` mask to ``[size, size]`` uint8 {0, 1}."""
    mask = (np.asarray(mask) > 0).astype(np.uint8)
    if mask.shape == (size, size):
        return mask
    return np.asarray(Image.fromarray(mask * 255, mode="L").resize((size, size), Image.NEAREST)) > 0


def read_mask(path: Path, image_size: tuple[int, int], image_path: Path) -> np.ndarray:
    """Binary ``[H, W]`` mask at native size; it must be exactly as large as its image."""
    img = open_image(path)
    if img.size != image_size:
        raise DatasetError(f"{path}: mask is {img.size[0]}x{img.size[1]} but its image {image_path} is "
                           f"{image_size[0]}x{image_size[1]}; expected equal sizes")
    return np.asarray(_to_8bit(img).convert("L")) > 0


def decode_record(record: Record, size: int, channels: int, band: int | None = None,
                  with_mask: bool = False) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """Decode one record: image ``[C, S, S]``, mask ``[1, S, S]`` or None, and whether the mask is non-empty.

    The mask's emptiness is judged at native size, so a lesion too small to survive resizing still
    makes its image anomalous. (The brain foreground is computed later on the stored slices, see
    :mod:`datasets._foreground`.)
    """
    img = convert(open_image(record.image), channels, band, record.image)
    native = img.size
    image = to_chw(resize_image(img, size))
    mask = None
    mask_any = False
    if record.mask is not None:
        raw = read_mask(record.mask, native, record.image)
        mask_any = bool(raw.any())
        mask = resize_mask(raw, size)[None].astype(np.uint8)
    elif with_mask:
        mask = np.zeros((1, size, size), np.uint8)
    return image, mask, mask_any


def decode_records(records: Sequence[Record], size: int, channels: int, *, band: int | None = None,
                   with_masks: bool = False, workers: int | None = None) -> dict[str, np.ndarray]:
    """Decode every record (threads; order preserved) into the arrays the cache stores.

    Returns ``images`` uint8 ``[N, C, S, S]``, ``mask_any`` bool ``[N]`` and, with ``with_masks``,
    ``masks`` uint8 ``[N, 1, S, S]`` (zeros where a record has no mask file).
    """
    if size < 1:
        raise DatasetError(f"image_size must be a positive integer, got {size}")
    workers = workers or min(8, os.cpu_count() or 1)
    n = len(records)
    images = np.zeros((n, channels, size, size), np.uint8)
    masks = np.zeros((n, 1, size, size), np.uint8) if with_masks else None
    mask_any = np.zeros(n, bool)

    def work(i: int) -> None:
        image, mask, any_ = decode_record(records[i], size, channels, band, with_masks)
        images[i] = image
        if masks is not None and mask is not None:
            masks[i] = mask
        mask_any[i] = any_

    if workers > 1 and n > 16:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            try:
                for _ in pool.map(work, range(n)):
                    pass
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)   # fail fast on the first bad file
                raise
    else:
        for i in range(n):
            work(i)
    out = {"images": images, "mask_any": mask_any}
    if masks is not None:
        out["masks"] = masks
    return out


def data_root(root: str | Path | None) -> Path:
    """``root`` as a Path, defaulting to ``$UAD_BENCH_DATA`` or ``./data``."""
    from datasets.registry import default_data_root

    return Path(root).expanduser() if root is not None else default_data_root()


def find_folder(root: Path, candidates: Sequence[str], expected: str) -> Path:
    """First existing ``root/<candidate>``; else a one-line error naming where it looked."""
    if not root.is_dir():
        raise DatasetError(f"{root}: data root not found; expected a folder holding {expected}")
    for name in candidates:
        path = root / name
        if path.is_dir():
            return path
    raise DatasetError(f"{root / candidates[0]}: folder not found; expected {expected}")


def resolve_channels(channels: int | None, default: int, name: str) -> int:
    channels = default if channels is None else int(channels)
    if channels not in (1, 3):
        raise DatasetError(f"{name}: channels must be 1, 3 or None (source default {default}), got {channels}")
    return channels
