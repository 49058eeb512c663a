"""LGG brain MRI, Kaggle ``kaggle_3m`` layout (Buda et al. 2019; TCGA-LGG via TCIA).

::

    <root>/kaggle_3m/<patient folder>/<patient folder>_<slice>.tif        256x256, 3 channels
    <root>/kaggle_3m/<patient folder>/<patient folder>_<slice>_mask.tif   tumour mask

(``<root>/lgg-mri-segmentation/kaggle_3m`` as unpacked from Kaggle, or ``path=`` pointing at
``kaggle_3m`` itself, work too.) The three channels are pre-contrast, FLAIR and post-contrast;
FLAIR is the default (``modality=``). A slice is normal when its mask is empty (judged at native
resolution, so a tiny tumour that vanishes when the mask is resized still counts). Patients are
split train/val/test by group (seeded, stratified); training takes the *normal* slices of the
training patients only, and their tumour slices are left unused so no patient crosses splits.
The group is the TCGA patient id (``TCGA_CS_4941`` from folder ``TCGA_CS_4941_19960909``).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from datasets._cache import cached_decode, resolve_cache_dir
from datasets._foreground import (
    DEFAULT_LEVEL,
    RULE,
    attach_foreground,
    check_level,
    low_foreground,
)
from datasets._io import Record, data_root, require_dir, resolve_channels
from datasets._splits import assemble, assign_by_group, check_fraction
from datasets.base import AnomalyDataset, DatasetCard, DatasetError
from datasets.registry import register_dataset

MODALITIES = {"pre-contrast": 0, "flair": 1, "post-contrast": 2, "all": None}
_PATIENT = re.compile(r"^(TCGA_[A-Za-z0-9]+_[A-Za-z0-9]+)_\d{8}$")

LGG_CARD = DatasetCard(
    name="lgg", modality="brain MRI (FLAIR by default; pre-contrast, post-contrast or all three selectable)",
    description="Lower-grade glioma MRI slices with FLAIR tumour masks, 110 TCGA-LGG patients (kaggle_3m).",
    normal="slice whose tumour mask is empty", anomaly="slice with a non-empty tumour mask (pixel masks)",
    license="CC BY-NC-SA 4.0 (Kaggle dataset page); TCIA data usage policy for the TCGA-LGG images",
    citation=("Buda M, Saha A, Mazurowski MA. Association of genomic subtypes of lower-grade gliomas with shape "
              "features automatically extracted by a deep learning algorithm. Computers in Biology and Medicine "
              "109:218-225 (2019)"),
    source="https://www.kaggle.com/datasets/mateuszbuda/lgg-mri-segmentation",
    layout="<root>/kaggle_3m/<patient>/<patient>_<slice>.tif and <patient>_<slice>_mask.tif",
    splits=("patients split by group with a seeded RNG over sorted ids (train_fraction 0.6, val_fraction 0.1, "
            "test the rest; stratified by tumour-free vs tumour patients); train = normal slices of training "
            "patients only; slices with less than min_foreground (default 5 %) brain are dropped"),
    notes=("groups: TCGA patient id parsed from the folder name. About 3.9k slices in the full set. "
           f"Brain: {RULE} (foreground_level, default 10 %; volume = the patient's slices); it decides the "
           "min_foreground filter and is the foreground of the *_fg pixel metrics."))


def _folder(root: Path, path: str | Path | None) -> Path:
    if path is not None:
        path = Path(path).expanduser()
        if not path.is_absolute() and not path.exists() and (root / path).exists():
            path = root / path
        return require_dir(path, "the kaggle_3m folder with one sub-folder per patient")
    if not root.is_dir():
        raise DatasetError(f"{root}: data root not found; expected a folder holding kaggle_3m/")
    for cand in ("kaggle_3m", "lgg-mri-segmentation/kaggle_3m", "lgg-mri-segmentation/lgg-mri-segmentation/kaggle_3m",
                 "lgg/kaggle_3m"):
        if (root / cand).is_dir():
            return root / cand
    raise DatasetError(f"{root / 'kaggle_3m'}: folder not found; expected the LGG kaggle_3m layout "
                       f"(download: {LGG_CARD.source})")


def patient_id(folder_name: str) -> str:
    found = _PATIENT.match(folder_name)
    return found.group(1) if found else folder_name


def _catalog(folder: Path) -> list[Record]:
    records: list[Record] = []
    patients = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not patients:
        raise DatasetError(f"{folder}: no patient folders; expected <patient>/<patient>_<slice>.tif")
    for patient in patients:
        pattern = re.compile(rf"^{re.escape(patient.name)}_(\d+)(_mask)?\.tiff?$", re.IGNORECASE)
        images: dict[int, Path] = {}
        masks: dict[int, Path] = {}
        for file in sorted(patient.iterdir()):
            if file.name.startswith(".") or file.suffix.lower() not in (".tif", ".tiff"):
                continue
            found = pattern.match(file.name)
            if not found:
                raise DatasetError(f"{file}: unexpected file name; expected {patient.name}_<slice>.tif "
                                   f"or {patient.name}_<slice>_mask.tif")
            (masks if found.group(2) else images)[int(found.group(1))] = file
        for k in sorted(set(masks) - set(images)):
            raise DatasetError(f"{masks[k]}: mask without an image; expected {patient / f'{patient.name}_{k}.tif'}")
        for k in sorted(images):
            if k not in masks:
                raise DatasetError(f"{patient / f'{patient.name}_{k}_mask.tif'}: mask not found for {images[k]}; "
                                   "expected one mask per slice")
            records.append(Record(images[k], -1, patient_id(patient.name), "", masks[k]))
    if not records:
        raise DatasetError(f"{folder}: no .tif slices found; expected <patient>/<patient>_<slice>.tif")
    return records


@register_dataset("lgg", card=LGG_CARD, decodes_files=True)
def lgg(root: str | Path | None = None, image_size: int = 64, channels: int | None = None, seed: int = 0,
        val_fraction: float = 0.1, train_fraction: float = 0.6, cache_dir: str | Path | None = None,
        modality: str = "flair", min_foreground: float = 0.05, path: str | Path | None = None,
        foreground_level: float = DEFAULT_LEVEL) -> AnomalyDataset:
    """LGG brain MRI (kaggle_3m), FLAIR slices, patient-level splits, tumour masks.

    The brain of a slice is found by intensity (:mod:`datasets._foreground`): pixels above
    ``foreground_level`` (default 0.1) of the patient's intensity range, holes filled. The scans'
    background is noisy, not zero, so a non-zero rule would count it as brain.
    ``min_foreground`` (default 0.05) drops slices whose brain covers less than that share of the
    stored slice. Without it the splits keep near-empty slices above and below the head as
    "normal" cases, which any method scores as easy normals. The ``nifti`` reader filters the
    same way (``min_brain_fraction``); the card states the count dropped. Every split carries the
    same brain masks as its foreground for the ``*_fg`` metrics.
    """
    if modality not in MODALITIES:
        raise DatasetError(f"lgg: modality must be one of {', '.join(MODALITIES)}, got {modality!r}")
    root = data_root(root)
    folder = _folder(root, path)
    band = MODALITIES[modality]
    channels = resolve_channels(channels, 3 if band is None else 1, "lgg")
    if band is None and channels != 3:
        raise DatasetError("lgg: modality='all' gives 3 channels; channels must be 3 or None")
    check_fraction("min_foreground", min_foreground)
    check_level(foreground_level)
    records = _catalog(folder)
    arrays, info = cached_decode("lgg", folder, records, image_size=image_size, channels=channels,
                                 cache_dir=resolve_cache_dir(root, cache_dir), band=band, with_masks=True)
    labels = arrays["mask_any"].astype(np.int64)
    groups = np.array([r.group for r in records], dtype=str)
    tags = assign_by_group(groups, labels, train_fraction, val_fraction, seed, salt="lgg")
    low, thresholds = low_foreground(arrays["images"], groups, foreground_level, min_foreground)
    tags[low] = "unused"
    note = (f"{int(low.sum())} slices with less than {min_foreground:.0%} brain (min_foreground; brain = above "
            f"{foreground_level:.0%} of the patient's intensity range, foreground_level) dropped")
    config = {"loader": "lgg", "source": str(folder), "image_size": int(image_size), "channels": channels,
              "modality": modality, "seed": int(seed), "train_fraction": float(train_fraction),
              "val_fraction": float(val_fraction), "min_foreground": float(min_foreground),
              "foreground_level": float(foreground_level), "foreground_rule": RULE,
              "dropped_low_foreground": int(low.sum()), **info}
    dataset = assemble("lgg", arrays, labels, groups, tags, LGG_CARD, config, source=folder, split_note=note)
    return attach_foreground(dataset, thresholds)
