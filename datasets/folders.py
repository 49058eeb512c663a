"""Your own images: anomalib-``Folder``-style folders of normal and abnormal images, optional masks.

::

    <path>/<normal_dir>/*.png|jpg|tif...          normal images (train, and the val/test normals)
    <path>/<abnormal_dir>/*.png|jpg|tif...        abnormal images (val/test only)
    <path>/<normal_test_dir>/...                  optional: normals kept out of training (val/test only)
    <path>/<mask_dir>/<same stem as an abnormal image>.<any image suffix>     optional pixel masks

Defaults ``normal/``, ``abnormal/``, ``masks/`` (a missing ``masks/`` means no masks). Every option is a
grid setting (``[dataset.folders] path = "..."``, ``normal_dir = "good"``) or a ``--set
dataset.folders.<option>=...``.

Splits, by group (a patient never crosses splits):

* ``split_file``: a CSV (``file,split`` rows, ``split`` in train/val/test; ``file`` relative to ``path``,
  e.g. ``normal/a.png``, or a bare file name when names are unique): the split as given; images it
  does not list are unused (counted on the card);
* otherwise groups are split train/val/test with a seeded RNG over sorted ids (``train_fraction``,
  ``val_fraction``, ``seed``); groups with no normal image of ``normal_dir`` never go to training,
  and abnormal images of training groups are left unused.

Groups: ``groups_csv`` (``file,group`` rows, as ``split_file``), else the first capture group of
``group_pattern`` on the file stem (e.g. ``r"^(p\\d+)_"``), else each image is its own group. When the
mask folder exists every abnormal image needs a mask; a mask whose name matches a *normal* image must
be empty. Bad input (a missing mask, a grey/RGB mix, an unreadable file) is one line naming the file.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
from PIL import Image

from datasets._cache import cached_decode, resolve_cache_dir
from datasets._io import (
    IMAGE_SUFFIXES,
    Record,
    data_root,
    index_by_stem,
    one_line,
    open_image,
    read_mask,
    require_dir,
    require_file,
    resolve_channels,
)
from datasets._splits import SPLITS, assemble, assign_by_group, file_ids
from datasets.base import AnomalyDataset, DatasetCard, DatasetError
from datasets.registry import register_dataset

FOLDERS_CARD = DatasetCard(
    name="folders", modality="any 2D images (your own)",
    description="Folders of normal and abnormal images (anomalib Folder style), optional masks, split file, groups.",
    normal="images in normal_dir (default normal/) and normal_test_dir (optional)",
    anomaly="images in abnormal_dir (default abnormal/; pixel masks from mask_dir, default masks/, when present)",
    license="that of your data", citation="cite the source of your data", source="your own data (path=)",
    layout="<path>/{normal/, abnormal/, masks/ (optional, same names as abnormal images)}; folder names, "
           "extensions, a split file and a groups CSV are options",
    splits=("split_file when given; else groups split with a seeded RNG over sorted ids (train_fraction 0.6, "
            "val_fraction 0.1, test the rest; abnormal-only groups and normal_test_dir go to val/test only)"),
    notes="groups: groups_csv, else the first capture group of group_pattern on the file stem, else one image "
          "per group.")


def _group(pattern: re.Pattern | None, cls: str, path: Path) -> str:
    if pattern is None:
        return f"{cls}/{path.stem}"
    found = pattern.search(path.stem)
    if not found or not found.groups():
        raise DatasetError(f"{path}: group_pattern {pattern.pattern!r} does not match the name; expected a "
                           "regex with one capture group matching every file stem")
    return found.group(1)


def _suffixes(extensions) -> tuple[str, ...]:
    if extensions is None:
        return IMAGE_SUFFIXES
    items = [extensions] if isinstance(extensions, str) else list(extensions)
    if not items or not all(isinstance(e, str) and e.strip(". ") for e in items):
        raise DatasetError(f"folders: extensions must be a list like [\".png\", \".jpg\"], got {extensions!r}")
    return tuple("." + e.strip().lstrip(".").lower() for e in items)


def _images(folder: Path, suffixes: tuple[str, ...], what: str) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name (hidden files skipped)."""
    require_dir(folder, what)
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in suffixes)


def _sub(folder: Path, name: str, option: str) -> Path:
    sub = Path(name).expanduser()
    sub = sub if sub.is_absolute() else folder / sub
    if folder.resolve() != sub.resolve() and folder.resolve() not in sub.resolve().parents and not Path(name).is_absolute():
        raise DatasetError(f"folders: {option} {name!r} leaves {folder}; give a folder inside path or an absolute one")
    return sub


def _table(path: Path, value_name: str, folder: Path, files: list[Path]) -> dict[Path, str]:
    """``file,<value>`` rows of a CSV (header optional) -> {image path: value}; names every bad row."""
    require_file(path, f"a CSV of file,{value_name} rows")
    by_rel = {f.relative_to(folder).as_posix(): f for f in files}
    by_name: dict[str, list[Path]] = {}
    for f in files:
        by_name.setdefault(f.name, []).append(f)
    out: dict[Path, str] = {}
    with path.open(newline="", encoding="utf-8-sig") as handle:
        for line, row in enumerate(csv.reader(handle), 1):
            if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
                continue
            if len(row) < 2:
                raise DatasetError(f"{path}: line {line}: expected 'file,{value_name}', got {','.join(row)!r}")
            name, value = row[0].strip(), row[1].strip()
            if line == 1 and name.lower() in ("file", "filename", "path", "image"):
                continue
            image = by_rel.get(Path(name).as_posix())
            if image is None:
                matches = by_name.get(Path(name).name, [])
                if len(matches) > 1:
                    raise DatasetError(f"{path}: line {line}: {name!r} names {len(matches)} files "
                                       f"({matches[0]}, {matches[1]}); give the path relative to {folder}")
                image = matches[0] if matches else None
            if image is None:
                raise DatasetError(f"{path}: line {line}: no image {name!r} under {folder}")
            out[image] = value
    return out


def _check_modes(paths: list[Path], channels: int | None) -> tuple[int, str]:
    """Every file opens (header read), and grey and colour images are not mixed unless ``channels`` says
    how to convert them all; returns the native channel count and the native sizes in words."""
    first: dict[int, Path] = {}
    sizes: dict[tuple, int] = {}
    for path in paths:
        try:
            with Image.open(path) as img:
                grey = img.mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
                sizes[img.size] = sizes.get(img.size, 0) + 1
        except Exception as exc:  # noqa: BLE001 - PIL raises several kinds for a bad file
            raise DatasetError(f"{path}: unreadable image ({one_line(exc) or type(exc).__name__})") from None
        first.setdefault(1 if grey else 3, path)
    if len(first) > 1 and channels is None:
        raise DatasetError(f"{first[3]}: a colour image among greyscale ones (e.g. {first[1]}); convert the files, "
                           "or set channels = 1 (all to grey) or channels = 3 (all to RGB)")
    by_area = sorted(sizes, key=lambda s: (s[0] * s[1], s))
    words = (f"{by_area[0][0]}x{by_area[0][1]} (all)" if len(sizes) == 1 else
             f"{len(sizes)} sizes from {by_area[0][0]}x{by_area[0][1]} to {by_area[-1][0]}x{by_area[-1][1]}")
    return (min(first) if first else 1), words


def _catalog(folder: Path, opts: dict) -> tuple[list[Record], bool, list[Path]]:
    suffixes = _suffixes(opts["extensions"])
    pattern = opts["pattern"]
    normal_dir = _sub(folder, opts["normal_dir"], "normal_dir")
    normal = _images(normal_dir, suffixes, f"normal images ({', '.join(suffixes)}); set normal_dir")
    if not normal:
        raise DatasetError(f"{normal_dir}: no images with suffix {', '.join(suffixes)}; expected a non-empty "
                           "normal set (normal_dir, extensions)")
    abnormal_dir = _sub(folder, opts["abnormal_dir"], "abnormal_dir")
    abnormal = _images(abnormal_dir, suffixes, "abnormal images; set abnormal_dir")
    normal_test = []
    if opts["normal_test_dir"]:
        test_dir = _sub(folder, opts["normal_test_dir"], "normal_test_dir")
        normal_test = _images(test_dir, suffixes, "normal test images; set normal_test_dir")
    masks_dir = _sub(folder, opts["mask_dir"], "mask_dir") if opts["mask_dir"] else None
    has_masks = masks_dir is not None and masks_dir.is_dir()
    if opts["mask_dir"] and opts["mask_dir"] != "masks" and not has_masks:
        require_dir(masks_dir, "pixel masks named as the abnormal images (mask_dir)")
    masks = index_by_stem(_images(masks_dir, IMAGE_SUFFIXES, "masks")) if has_masks else {}
    records = []
    for cls, paths, label, split in (("normal", normal, 0, ""), ("normal_test", normal_test, 0, "test-only"),
                                     ("abnormal", abnormal, 1, "")):
        for path in paths:
            mask = masks.pop(path.stem, None)
            if label == 0 and mask is not None and read_mask(mask, open_image(path).size, path).any():
                raise DatasetError(f"{mask}: non-empty mask for the normal image {path}; expected masks for "
                                   "abnormal images only (or an empty one)")
            if label == 1 and has_masks and mask is None:
                raise DatasetError(f"{masks_dir / path.name}: mask not found for {path}; expected one mask per "
                                   "abnormal image when the mask folder exists")
            records.append(Record(path, label, _group(pattern, "abnormal" if label else "normal", path), split, mask))
    if masks:
        orphan = masks[sorted(masks)[0]]
        raise DatasetError(f"{orphan}: mask without an image; expected {abnormal_dir.name}/{orphan.stem}.<suffix>")
    return records, has_masks, [r.image for r in records]


def _tags(records: list[Record], labels, groups, folder: Path, opts: dict) -> tuple[np.ndarray, str]:
    files = [r.image for r in records]
    if opts["split_file"]:
        given = _table(_sub(folder, opts["split_file"], "split_file") if not Path(opts["split_file"]).is_absolute()
                       else Path(opts["split_file"]), "split", folder, files)
        bad = next(((f, s) for f, s in given.items() if s not in SPLITS), None)
        if bad is not None:
            raise DatasetError(f"{opts['split_file']}: {bad[0].name} has split {bad[1]!r}; expected train, val or test")
        tags = np.array([given.get(f, "unused") for f in files], dtype=object)
        trained = np.flatnonzero((tags == "train") & (labels == 1))
        if len(trained):
            raise DatasetError(f"{files[trained[0]]}: an abnormal image in the train split of {opts['split_file']}; "
                               "training sees normal images only")
        test_only = np.array([r.split == "test-only" for r in records])
        if ((tags == "train") & test_only).any():
            raise DatasetError(f"{files[int(np.flatnonzero((tags == 'train') & test_only)[0])]}: an image of "
                               "normal_test_dir in the train split of the split file")
        return tags.astype(str), f"split as listed in {opts['split_file']} ({int((tags == 'unused').sum())} unlisted)"
    test_only = np.array([r.split == "test-only" for r in records])
    # groups holding normal_test_dir images behave like abnormal-only groups: val/test, never train
    trainable_labels = np.where(test_only, 1, labels)
    # (a normal_test_dir image of a training group is left unused, as abnormal images of training groups are)
    tags = assign_by_group(groups, trainable_labels, opts["train_fraction"], opts["val_fraction"], opts["seed"],
                           salt="folders")
    return tags, ""


@register_dataset("folders", card=FOLDERS_CARD, decodes_files=True)
def folders(root: str | Path | None = None, image_size: int = 64, channels: int | None = None, seed: int = 0,
            val_fraction: float = 0.1, train_fraction: float = 0.6, cache_dir: str | Path | None = None,
            path: str | Path | None = None, group_pattern: str | None = None, normal_dir: str = "normal",
            abnormal_dir: str = "abnormal", normal_test_dir: str | None = None, mask_dir: str | None = "masks",
            extensions: list | None = None, split_file: str | None = None,
            groups_csv: str | None = None) -> AnomalyDataset:
    """Your own folders of normal and abnormal images (+ masks), split by group or by a split file."""
    root = data_root(root)
    if path is None:
        folder = require_dir(root, "normal/ and abnormal/ folders (or pass path=)")
    else:
        folder = Path(path).expanduser()
        if not folder.is_absolute() and not folder.exists() and (root / folder).exists():
            folder = root / folder
        require_dir(folder, "normal/ and abnormal/ folders")
    if group_pattern and groups_csv:
        raise DatasetError("folders: give group_pattern or groups_csv, not both")
    try:
        pattern = re.compile(group_pattern) if group_pattern else None
    except re.error as exc:
        raise DatasetError(f"folders: group_pattern {group_pattern!r} is not a valid regex ({exc})") from None
    opts = {"pattern": pattern, "normal_dir": normal_dir, "abnormal_dir": abnormal_dir,
            "normal_test_dir": normal_test_dir, "mask_dir": mask_dir, "extensions": extensions,
            "split_file": split_file, "train_fraction": train_fraction, "val_fraction": val_fraction, "seed": seed}
    records, has_masks, files = _catalog(folder, opts)
    if groups_csv:
        given = _table(Path(groups_csv) if Path(groups_csv).is_absolute() else folder / groups_csv, "group",
                       folder, files)
        records = [Record(r.image, r.label, given.get(r.image, r.group), r.split, r.mask) for r in records]
    native, native_sizes = _check_modes(files, channels)
    channels = resolve_channels(channels, native, "folders")
    arrays, info = cached_decode("folders", folder, records, image_size=image_size, channels=channels,
                                 cache_dir=resolve_cache_dir(root, cache_dir), with_masks=has_masks)
    labels = np.array([r.label for r in records], np.int64)
    groups = np.array([r.group for r in records], dtype=str)
    tags, note = _tags(records, labels, groups, folder, opts)
    config = {"loader": "folders", "source": str(folder), "image_size": int(image_size), "channels": channels,
              "seed": int(seed), "train_fraction": float(train_fraction), "val_fraction": float(val_fraction),
              "group_pattern": group_pattern, "normal_dir": normal_dir, "abnormal_dir": abnormal_dir,
              "normal_test_dir": normal_test_dir, "mask_dir": mask_dir if has_masks else None,
              "extensions": list(_suffixes(extensions)), "split_file": split_file, "groups_csv": groups_csv,
              "masks_found": int(sum(r.mask is not None for r in records)), "native_channels": native,
              "native_sizes": native_sizes, **info}
    return assemble("folders", arrays, labels, groups, tags, FOLDERS_CARD, config, source=folder, split_note=note,
                    ids=file_ids(records, folder))
