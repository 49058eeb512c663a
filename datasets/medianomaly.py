"""MedIAnomaly layout (Cai et al. 2024/2025; Zenodo record 12677223), read as published.

Seven datasets, three layouts::

    <root>/RSNA|VinCXR|BrainTumor|LAG/{images/, data.json}      data.json: train["0"], test["0"], test["1"]
    <root>/ISIC2018_Task3/ISIC2018_Task3_{Training,Test}_{Input,GroundTruth}   official Task-3 folders, NV normal
    <root>/Camelyon16/{train/good, test/good, test/Ungood}
    <root>/BraTS2021/{train, test/{normal, tumor, annotation}}  mask = tumor name with "flair" -> "seg"

``<root>/MedIAnomaly-Data/<folder>`` is accepted too. MedIAnomaly has no validation split
(benchmarks.md 1.2), so ``val`` is carved from the published test pool by group (stratified,
seeded; ``val_fraction=0`` keeps the published test set). ISIC2018's official Task-3 validation
folders are used as ``val`` when present. DDAD-ASR's ``train["unlabeled"]`` lists become the
optional unlabeled ``pool`` (``with_pool=True``).

Groups: RSNA and VinDr-CXR hold one image per patient/study, so the file stem is the group;
Brain Tumor and LAG file names carry no patient id (stem, documented as image-level); ISIC2018
uses ``lesion_id`` from the Task-3 lesion-groupings CSV when present; Camelyon16 patch names
carry no slide id (``<split>/<class>/<stem>``); BraTS2021 slice names carry the volume id
(``BraTS2021_00000_...`` -> ``BraTS2021_00000``).
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
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
from datasets._io import (
    Record,
    data_root,
    find_folder,
    index_by_stem,
    list_images,
    require_dir,
    require_file,
    resolve_channels,
)
from datasets._splits import assemble, carve_val_from_test, check_fraction, drop_shared_groups, file_ids
from datasets.base import AnomalyDataset, DatasetCard, DatasetError
from datasets.registry import register_dataset

ZENODO = "https://zenodo.org/records/12677223"
CITATION = ("Cai Y, Zhang W, Chen H, Cheng K-T. MedIAnomaly: A comparative study of anomaly detection "
            "in medical images. Medical Image Analysis (2025); arXiv:2404.04518")


@dataclass(frozen=True)
class _Member:
    folder: str
    layout: str            # json | isic | good_ungood | brats
    channels: int          # default output channels
    modality: str
    normal: str
    anomaly: str
    published: str         # MedIAnomaly Table 1: train normal / test normal + abnormal
    origin: str            # original dataset, its licence and citation
    groups: str


MEMBERS: dict[str, _Member] = {
    "rsna": _Member("RSNA", "json", 1, "chest X-ray", "no lung opacity", "lung opacity (pneumonia)",
                    "train 3851 normal; test 1000 normal + 1000 abnormal",
                    "RSNA Pneumonia Detection Challenge (Kaggle competition terms; Shih et al., Radiology: AI 2019)",
                    "file stem (one image per patient)"),
    "vincxr": _Member("VinCXR", "json", 1, "chest X-ray", "no finding", "any of the annotated findings",
                      "train 4000 normal; test 1000 normal + 1000 abnormal",
                      "VinDr-CXR (PhysioNet credentialed licence / Kaggle competition terms; Nguyen et al., "
                      "Scientific Data 2022)", "file stem (one image per study)"),
    "braintumor": _Member("BrainTumor", "json", 1, "brain MRI (2D slices)", "no tumour",
                          "glioma, meningioma or pituitary tumour",
                          "train 1000 normal; test 600 normal + 600 abnormal",
                          "Brain Tumor MRI Dataset (Nickparvar, Kaggle 2021; see its licence on Kaggle)",
                          "file stem (image-level: names carry no patient id)"),
    "lag": _Member("LAG", "json", 3, "retinal fundus photograph", "non-glaucoma", "suspicious glaucoma",
                   "train 1500 normal; test 811 normal + 811 abnormal",
                   "LAG (Li et al., CVPR 2019 / IEEE TMI 2020; research use, from the authors)",
                   "file stem (image-level: names carry no patient id)"),
    "isic2018": _Member("ISIC2018_Task3", "isic", 3, "dermoscopy", "melanocytic nevus (NV)",
                        "any other Task-3 diagnosis (MEL, BCC, AKIEC, BKL, DF, VASC)",
                        "train 6705 normal; test 909 normal + 603 abnormal",
                        "ISIC 2018 Task 3 / HAM10000 (CC BY-NC 4.0; Codella et al. 2019, Tschandl et al. 2018); "
                        "download it from https://challenge.isic-archive.com/data/#2018 (not in the Zenodo record)",
                        "lesion_id from ISIC2018_Task3_Training_LesionGroupings.csv when present, else image id"),
    "camelyon16": _Member("Camelyon16", "good_ungood", 3, "histopathology patches (H&E)", "tumour-free patch",
                          "patch with metastatic tumour",
                          "train 5088 normal; test 1120 normal + 1113 abnormal",
                          "CAMELYON16 (CC0 1.0; Ehteshami Bejnordi et al., JAMA 2017), patches from BMAD",
                          "<split>/<class>/<stem> (image-level: patch names carry no slide id)"),
    "brats2021": _Member("BraTS2021", "brats", 1, "brain MRI, axial FLAIR slices", "slice without tumour",
                         "slice with tumour (pixel masks in test/annotation)",
                         "train 4211 normal; test 828 normal + 1948 abnormal",
                         "BraTS 2021 (RSNA-ASNR-MICCAI; Baid et al., arXiv:2107.02314; see its data terms)",
                         "volume id parsed from the slice name (BraTS2021_<id>)"),
}

_LAYOUTS = {
    "json": "{images/, data.json} with data.json train['0'], test['0'], test['1']",
    "isic": "ISIC2018_Task3_{Training,Test}_Input/ and ISIC2018_Task3_{Training,Test}_GroundTruth/*.csv",
    "good_ungood": "{train/good, test/good, test/Ungood}",
    "brats": "{train, test/{normal, tumor, annotation}}",
}


def medianomaly_card(member: str) -> DatasetCard:
    spec = _member(member)
    return DatasetCard(
        name=f"medianomaly/{member}", modality=spec.modality,
        description=f"MedIAnomaly benchmark, {spec.folder}, read from the published pre-processed layout.",
        normal=spec.normal, anomaly=spec.anomaly,
        license=f"original dataset terms apply: {spec.origin}",
        citation=CITATION, source=f"{ZENODO} ({spec.folder}.tar.gz)",
        layout=f"<root>/{spec.folder}/{_LAYOUTS[spec.layout]}",
        splits=(f"published: {spec.published}. val carved from the test pool by group (val_fraction, "
                "default 0.1), unless ISIC2018 official validation folders exist"),
        notes=(f"groups: {spec.groups}. Pixel masks: {'yes' if spec.layout == 'brats' else 'no'}."
               + (f" Brain foreground (*_fg metrics): {RULE} (foreground_level, default 10 %; volume = the "
                  "slices of one BraTS volume); the published slices are all kept" if spec.layout == "brats"
                  else "")))


def _member(member: str) -> _Member:
    if member not in MEMBERS:
        raise DatasetError(f"unknown MedIAnomaly dataset {member!r}; expected one of {', '.join(MEMBERS)}")
    return MEMBERS[member]


# -- catalogues: one per layout ---------------------------------------------------------------
def _read_json(path: Path) -> dict:
    require_file(path, "the MedIAnomaly label file data.json")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: unreadable JSON ({' '.join(str(exc).split())}); expected data.json") from None
    return data


def _json_list(data: dict, path: Path, *keys: str) -> list[str]:
    node: object = data
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            where = "".join(f"[{k!r}]" for k in keys)
            raise DatasetError(f"{path}: missing {where}; expected train['0'], test['0'] and test['1'] lists")
        node = node[key]
    if not isinstance(node, list) or not all(isinstance(x, str) for x in node):
        raise DatasetError(f"{path}: {keys} must be a list of file names")
    return node


def _json_catalog(folder: Path, with_pool: bool) -> list[Record]:
    label_file = folder / "data.json"
    images_dir = require_dir(folder / "images", f"the images referenced by {label_file}")
    data = _read_json(label_file)
    lists = [("train", 0, _json_list(data, label_file, "train", "0")),
             ("test", 0, _json_list(data, label_file, "test", "0")),
             ("test", 1, _json_list(data, label_file, "test", "1"))]
    unlabeled = data.get("train", {}).get("unlabeled") if isinstance(data.get("train"), dict) else None
    if with_pool and unlabeled is not None:
        lists += [("pool", int(k), _json_list(data, label_file, "train", "unlabeled", k))
                  for k in ("0", "1") if k in unlabeled]
    if not lists[0][2]:
        raise DatasetError(f"{label_file}: train['0'] is empty; expected a non-empty normal set")
    seen: dict[str, tuple[str, int]] = {}
    records = []
    for split, label, names in lists:
        for name in names:
            if name in seen:
                raise DatasetError(f"{label_file}: {name!r} is listed as {seen[name]} and as {(split, label)}; "
                                   "expected each image in one list")
            seen[name] = (split, label)
            path = images_dir / name
            if not path.is_file():
                raise DatasetError(f"{label_file}: lists {split}[{label!r}] {name!r} but {path} does not exist; "
                                   "expected the label file to agree with images/")
            records.append(Record(path, label, Path(name).stem, split))
    return records


def _isic_table(csv_path: Path, input_dir: Path) -> list[tuple[Path, int]]:
    """(image, label) from a Task-3 ground-truth CSV checked against its input folder."""
    require_file(csv_path, "the ISIC 2018 Task-3 ground-truth CSV")
    images = index_by_stem(list_images(input_dir, "ISIC 2018 Task-3 JPEG images"))
    try:
        with csv_path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{csv_path}: unreadable CSV ({exc}); expected the Task-3 ground truth") from None
    if not rows or "image" not in rows[0] or "NV" not in rows[0]:
        raise DatasetError(f"{csv_path}: expected columns image, MEL, NV, BCC, AKIEC, BKL, DF, VASC")
    out = []
    for i, row in enumerate(rows, start=2):
        classes = [k for k in row if k != "image"]
        try:
            onehot = [float(row[k]) for k in classes]
        except (TypeError, ValueError):
            raise DatasetError(f"{csv_path}: line {i} is not numeric; expected one-hot diagnosis columns") from None
        if sorted(onehot) != [0.0] * (len(onehot) - 1) + [1.0]:
            raise DatasetError(f"{csv_path}: line {i} ({row['image']}) is not one-hot; expected exactly one 1")
        if row["image"] not in images:
            raise DatasetError(f"{csv_path}: lists {row['image']!r} but {input_dir / (row['image'] + '.jpg')} "
                               "does not exist; expected the label file to agree with the folder")
        out.append((images.pop(row["image"]), 0 if float(row["NV"]) == 1.0 else 1))
    if images:
        extra = sorted(images)[0]
        raise DatasetError(f"{images[extra]}: image not listed in {csv_path}; expected the label file to agree "
                           "with the folder")
    return out


def _isic_lesions(folder: Path) -> dict[str, str]:
    name = "ISIC2018_Task3_Training_LesionGroupings.csv"
    for path in (folder / "ISIC2018_Task3_Training_GroundTruth" / name, folder / name):
        if path.is_file():
            with path.open(newline="") as fh:
                return {row["image"]: row["lesion_id"] for row in csv.DictReader(fh)
                        if row.get("image") and row.get("lesion_id")}
    return {}


def _isic_catalog(folder: Path) -> list[Record]:
    lesions = _isic_lesions(folder)
    records = []
    parts = [("Training", "train"), ("Test", "test")]
    if (folder / "ISIC2018_Task3_Validation_Input").is_dir():
        parts.insert(1, ("Validation", "val"))
    for part, split in parts:
        table = _isic_table(folder / f"ISIC2018_Task3_{part}_GroundTruth" / f"ISIC2018_Task3_{part}_GroundTruth.csv",
                            folder / f"ISIC2018_Task3_{part}_Input")
        for path, label in table:
            if split == "train" and label == 1:
                continue  # one-class training: non-NV training images are not used
            records.append(Record(path, label, lesions.get(path.stem, path.stem), split))
    return records


def _good_ungood_catalog(folder: Path) -> list[Record]:
    records = []
    for split, cls, label in (("train", "good", 0), ("test", "good", 0), ("test", "Ungood", 1)):
        sub = folder / split / cls
        for path in list_images(sub, f"{cls} images of the {split} split"):
            records.append(Record(path, label, f"{split}/{cls}/{path.stem}", split))
    return records


_BRATS_ID = re.compile(r"(BraTS\d*_\d+)", re.IGNORECASE)


def brats_volume_id(name: str) -> str:
    """``BraTS2021_00000_flair_80.png`` -> ``BraTS2021_00000``; otherwise strip slice and modality."""
    found = _BRATS_ID.search(name)
    if found:
        return found.group(1)
    stem = Path(name).stem
    stem = re.sub(r"[_-]?flair", "", stem, flags=re.IGNORECASE)
    return re.sub(r"[_-]\d+$", "", stem) or stem


def _brats_catalog(folder: Path) -> list[Record]:
    records = [Record(p, 0, brats_volume_id(p.name), "train")
               for p in list_images(folder / "train", "normal training slices (*.png)")]
    records += [Record(p, 0, brats_volume_id(p.name), "test")
                for p in list_images(folder / "test" / "normal", "normal test slices (*.png)")]
    annotation = folder / "test" / "annotation"
    masks = {p.name: p for p in list_images(annotation, "tumour masks named like the tumour slices, flair->seg")}
    for path in list_images(folder / "test" / "tumor", "tumour test slices (*.png)"):
        mask_name = path.name.replace("flair", "seg")
        if mask_name not in masks:
            raise DatasetError(f"{annotation / mask_name}: mask not found for tumour slice {path}; "
                               "expected one mask per slice (name with flair -> seg)")
        records.append(Record(path, 1, brats_volume_id(path.name), "test", masks.pop(mask_name)))
    if masks:
        orphan = masks[sorted(masks)[0]]
        raise DatasetError(f"{orphan}: mask without an image; expected test/tumor/"
                           f"{orphan.name.replace('seg', 'flair')}")
    return records


def _catalog(spec: _Member, folder: Path, with_pool: bool) -> list[Record]:
    if spec.layout == "json":
        return _json_catalog(folder, with_pool)
    return {"isic": _isic_catalog, "good_ungood": _good_ungood_catalog, "brats": _brats_catalog}[spec.layout](folder)


@register_dataset("medianomaly", family=True, member="dataset", card=medianomaly_card, decodes_files=True,
                  members=tuple(MEMBERS))
def medianomaly(member: str, root: str | Path | None = None, image_size: int = 64, channels: int | None = None,
                seed: int = 0, val_fraction: float = 0.1, cache_dir: str | Path | None = None,
                with_pool: bool = False, foreground_level: float = DEFAULT_LEVEL) -> AnomalyDataset:
    """MedIAnomaly benchmark datasets (RSNA, VinDr-CXR, Brain Tumor, LAG, ISIC2018, Camelyon16, BraTS2021).

    For BraTS2021 every split carries a brain foreground for the ``*_fg`` metrics: pixels above
    ``foreground_level`` (default 0.1) of the volume's intensity range, holes filled
    (:mod:`datasets._foreground`). The published slice selection is kept as is; the config counts
    the slices whose brain covers less than 5 % (``low_foreground_slices``) without dropping them.
    """
    spec = _member(member)
    name = f"medianomaly/{member}"
    root = data_root(root)
    folder = find_folder(root, [spec.folder, f"MedIAnomaly-Data/{spec.folder}"],
                         f"the MedIAnomaly {spec.folder}/ folder {_LAYOUTS[spec.layout]} (download: {ZENODO})")
    channels = resolve_channels(channels, spec.channels, name)
    check_fraction("val_fraction", val_fraction)
    check_level(foreground_level)
    records = _catalog(spec, folder, with_pool)
    with_masks = spec.layout == "brats"
    cache = resolve_cache_dir(root, cache_dir)
    arrays, info = cached_decode(name, folder, records, image_size=image_size, channels=channels,
                                 cache_dir=cache, with_masks=with_masks)
    labels = np.array([r.label for r in records], np.int64)
    groups = np.array([r.group for r in records], dtype=str)
    tags, dropped = drop_shared_groups(np.array([r.split for r in records]), groups,
                                       priority=("test", "val", "pool", "train"))
    note = ""
    if not (tags == "val").any():
        tags, note = carve_val_from_test(tags, groups, labels, val_fraction, seed, salt=name)
    elif spec.layout == "isic":
        note = "val = the official ISIC 2018 Task-3 validation set"
    if dropped:
        note += f"; groups shared between published splits were dropped from the later split: {dropped}"
    config = {"loader": name, "source": str(folder), "image_size": int(image_size), "channels": channels,
              "seed": int(seed), "val_fraction": float(val_fraction), "with_pool": bool(with_pool),
              "dropped_shared": dropped, **info}
    if spec.layout != "brats":
        return assemble(name, arrays, labels, groups, tags, medianomaly_card(member), config,
                        source=folder, split_note=note, ids=file_ids(records, folder))
    low, thresholds = low_foreground(arrays["images"], groups, foreground_level, 0.05)
    config.update({"foreground_level": float(foreground_level), "foreground_rule": RULE,
                   "low_foreground_slices": int(low[tags != "unused"].sum())})
    dataset = assemble(name, arrays, labels, groups, tags, medianomaly_card(member), config,
                       source=folder, split_note=note, ids=file_ids(records, folder))
    return attach_foreground(dataset, thresholds)
