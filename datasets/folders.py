"""Generic folders: ``normal/``, ``abnormal/`` and optional ``masks/`` with matching names.

::

    <path>/normal/*.png|jpg|tif...
    <path>/abnormal/*.png|jpg|tif...
    <path>/masks/<same stem as an abnormal image>.<any image suffix>     (optional)

The quickest way to benchmark an in-house dataset. Groups come from ``group_pattern`` (a regex
whose first capture group, matched against the file stem, is the patient id, e.g.
``r"^(p\\d+)_"``); without it each image is its own group (``normal/<stem>``,
``abnormal/<stem>``). Groups are split train/val/test with a seeded RNG over sorted ids;
groups holding only abnormal images never go to training, and abnormal images of training
groups are left unused. When ``masks/`` exists every abnormal image needs a mask; a mask whose
name matches a *normal* image must be empty.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from datasets._cache import cached_decode, resolve_cache_dir
from datasets._io import (
    Record,
    data_root,
    index_by_stem,
    list_images,
    native_channels,
    open_image,
    read_mask,
    require_dir,
    resolve_channels,
)
from datasets._splits import assemble, assign_by_group, file_ids
from datasets.base import AnomalyDataset, DatasetCard, DatasetError
from datasets.registry import register_dataset

FOLDERS_CARD = DatasetCard(
    name="folders", modality="any 2D images (your own)",
    description="A folder of normal/ and abnormal/ images, with optional pixel masks in masks/.",
    normal="images in normal/", anomaly="images in abnormal/ (pixel masks from masks/ when present)",
    license="that of your data", citation="cite the source of your data", source="your own data (path=)",
    layout="<path>/{normal/, abnormal/, masks/ (optional, same names as abnormal images)}",
    splits=("groups split with a seeded RNG over sorted ids (train_fraction 0.6, val_fraction 0.1, test the rest; "
            "abnormal-only groups go to val/test only); train = normal images of training groups"),
    notes="groups: first capture group of group_pattern on the file stem, else one image per group.")


def _group(pattern: re.Pattern | None, cls: str, path: Path) -> str:
    if pattern is None:
        return f"{cls}/{path.stem}"
    found = pattern.search(path.stem)
    if not found or not found.groups():
        raise DatasetError(f"{path}: group_pattern {pattern.pattern!r} does not match the name; expected a "
                           "regex with one capture group matching every file stem")
    return found.group(1)


def _catalog(folder: Path, pattern: re.Pattern | None) -> tuple[list[Record], bool]:
    normal = list_images(folder / "normal", "normal images")
    if not normal:
        raise DatasetError(f"{folder / 'normal'}: no images; expected a non-empty normal set")
    abnormal = list_images(folder / "abnormal", "abnormal images")
    masks_dir = folder / "masks"
    has_masks = masks_dir.is_dir()
    masks = index_by_stem(list_images(masks_dir)) if has_masks else {}
    records = []
    for path in normal:
        mask = masks.pop(path.stem, None)
        if mask is not None and read_mask(mask, open_image(path).size, path).any():
            raise DatasetError(f"{mask}: non-empty mask for the normal image {path}; expected masks for "
                               "abnormal images only (or an empty one)")
        records.append(Record(path, 0, _group(pattern, "normal", path), "", mask))
    for path in abnormal:
        mask = masks.pop(path.stem, None)
        if has_masks and mask is None:
            raise DatasetError(f"{masks_dir / path.name}: mask not found for {path}; expected one mask per "
                               "abnormal image when masks/ exists")
        records.append(Record(path, 1, _group(pattern, "abnormal", path), "", mask))
    if masks:
        orphan = masks[sorted(masks)[0]]
        raise DatasetError(f"{orphan}: mask without an image; expected abnormal/{orphan.name}")
    return records, has_masks


@register_dataset("folders", card=FOLDERS_CARD, decodes_files=True)
def folders(root: str | Path | None = None, image_size: int = 64, channels: int | None = None, seed: int = 0,
            val_fraction: float = 0.1, train_fraction: float = 0.6, cache_dir: str | Path | None = None,
            path: str | Path | None = None, group_pattern: str | None = None) -> AnomalyDataset:
    """Your own ``normal/`` + ``abnormal/`` (+ ``masks/``) folders, split by group."""
    root = data_root(root)
    if path is None:
        folder = require_dir(root, "normal/ and abnormal/ folders (or pass path=)")
    else:
        folder = Path(path).expanduser()
        if not folder.is_absolute() and not folder.exists() and (root / folder).exists():
            folder = root / folder
        require_dir(folder, "normal/ and abnormal/ folders")
    try:
        pattern = re.compile(group_pattern) if group_pattern else None
    except re.error as exc:
        raise DatasetError(f"folders: group_pattern {group_pattern!r} is not a valid regex ({exc})") from None
    records, has_masks = _catalog(folder, pattern)
    channels = resolve_channels(channels, native_channels(records[0].image), "folders")
    arrays, info = cached_decode("folders", folder, records, image_size=image_size, channels=channels,
                                 cache_dir=resolve_cache_dir(root, cache_dir), with_masks=has_masks)
    labels = np.array([r.label for r in records], np.int64)
    groups = np.array([r.group for r in records], dtype=str)
    tags = assign_by_group(groups, labels, train_fraction, val_fraction, seed, salt="folders")
    config = {"loader": "folders", "source": str(folder), "image_size": int(image_size), "channels": channels,
              "seed": int(seed), "train_fraction": float(train_fraction), "val_fraction": float(val_fraction),
              "group_pattern": group_pattern, **info}
    return assemble("folders", arrays, labels, groups, tags, FOLDERS_CARD, config, source=folder,
                    ids=file_ids(records, folder))
