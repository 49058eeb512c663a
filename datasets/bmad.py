"""BMAD layout (Bao et al. 2023, arXiv:2306.11876): MVTec-like folders with a real validation split.

::

    <root>/<Folder>/train/good[/img]/*.png
    <root>/<Folder>/valid/{good, Ungood}[/img, /label]/*.png
    <root>/<Folder>/test/{good, Ungood}[/img, /label]/*.png

Folder names follow the released archive (also used by anomalib's BMAD datamodule): ``Brain``
(BraTS2021), ``Liver`` (BTCV + LiTS), ``Retina_RESC``, ``Retina_OCT2017``, ``Chest`` (RSNA),
``Histopathology`` (Camelyon16); the common alternatives (``BraTS2021``, ``RESC``, ...) and a
``BMAD/`` parent folder are accepted. Mask folders may be called ``label`` (the release) or
``anomaly_mask``. Brain, Liver and RESC have pixel masks: every ``Ungood`` image needs one,
``good`` images may have an (empty) one.

BMAD ships a labelled ``valid`` split "for model hyper-parameter tuning" and it is used as
``val`` unchanged. Groups: Brain names are ``<patient>_<slice>`` -> patient; Liver names are
``img_<volume>_<slice>_hist`` (BTCV, train) and ``liver_<volume>_<slice>`` (LiTS, valid/test) ->
``btcv-<volume>`` / ``lits-<volume>``; the other sets carry no patient id in their names, so each
image is its own group (``<split>/<class>/<stem>``). If the published splits share a patient, the
patient's images are dropped from the later split (train, then valid) and counted in the card
(``shared_groups="drop"``, the default). ``shared_groups="per_image"`` keeps the published split
exactly and falls back to one group per image, for sources split at slice level (BMAD's LiTS
valid/test come from a slice-level K-fold); the card then says so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datasets._cache import cached_decode, resolve_cache_dir
from datasets._io import Record, data_root, find_folder, index_by_stem, list_images, resolve_channels
from datasets._splits import assemble, drop_shared_groups, file_ids
from datasets.base import AnomalyDataset, DatasetCard, DatasetError
from datasets.registry import register_dataset

DOWNLOAD = ("https://drive.google.com/drive/folders/1La5H_3tqWioPmGN04DM1vdl3rbcBez62 (official); "
            "mirror used by anomalib: https://huggingface.co/datasets/code-dev05/BMAD")
CITATION = ("Bao J, Sun H, Deng H, He Y, Zhang Z, Li X. BMAD: Benchmarks for Medical Anomaly Detection. "
            "arXiv:2306.11876 (2023)")
MASK_FOLDERS = ("label", "anomaly_mask")


@dataclass(frozen=True)
class _Member:
    folders: tuple[str, ...]
    masked: bool
    channels: int
    modality: str
    origin: str
    published: str              # BMAD Table 1: train / valid / test
    group_pattern: str | None   # regex on the stem; groups joined with "-"
    group_prefix: dict | None = None


MEMBERS: dict[str, _Member] = {
    "brats": _Member(("Brain", "BraTS2021", "brain", "BraTS"), True, 1, "brain MRI, axial FLAIR slices (240x240)",
                     "BraTS2021 (Baid et al., arXiv:2107.02314)", "7500 / 83 / 3715 slices",
                     r"^(\d+)_\d+$"),
    "liver": _Member(("Liver", "liver"), True, 1, "abdominal CT slices (512x512)",
                     "BTCV (normal training) + LiTS (Bilic et al., MedIA 2023)", "1542 / 166 / 1493 slices",
                     r"^(img|liver)_(\d+)_\d+(?:_hist)?$", {"img": "btcv", "liver": "lits"}),
    "resc": _Member(("Retina_RESC", "RESC", "resc"), True, 1, "retinal OCT B-scans (512x1024)",
                    "RESC (Retinal Edema Segmentation Challenge, as prepared for P-Net, Zhou et al., ECCV 2020)",
                    "4297 / 115 / 1805 images", None),
    "oct2017": _Member(("Retina_OCT2017", "OCT2017", "oct2017"), False, 1, "retinal OCT B-scans (512x496)",
                       "OCT2017 (Kermany et al., Cell 2018; CC BY 4.0)", "26315 / 32 / 968 images", None),
    "rsna": _Member(("Chest", "RSNA", "chest"), False, 1, "chest X-ray (1024x1024)",
                    "RSNA Pneumonia Detection Challenge (Kaggle competition terms)", "8000 / 1490 / 17194 images",
                    None),
    "camelyon16": _Member(("Histopathology", "Camelyon16", "camelyon16", "camelyon"), False, 3,
                          "histopathology patches, H&E (256x256)", "CAMELYON16 (Ehteshami Bejnordi et al., JAMA 2017)",
                          "5088 / 236 / 1997 patches", None),
}

_LAYOUT = ("{train/good[/img], valid/{good,Ungood}[/img,/label], test/{good,Ungood}[/img,/label]} "
           "(mask folder 'label' or 'anomaly_mask')")


def bmad_card(member: str) -> DatasetCard:
    spec = _member(member)
    groups = (f"regex {spec.group_pattern!r} on the file stem (patient/volume)" if spec.group_pattern
              else "one image per group (<split>/<class>/<stem>): names carry no patient id")
    return DatasetCard(
        name=f"bmad/{member}", modality=spec.modality,
        description=f"BMAD benchmark, {spec.folders[0]} ({spec.origin}), read from the released layout.",
        normal="good", anomaly="Ungood" + (" (with pixel masks)" if spec.masked else " (image-level labels)"),
        license="CC BY-NC-SA 4.0 (BMAD release); the original dataset terms apply too",
        citation=CITATION, source=DOWNLOAD, layout=f"<root>/{spec.folders[0]}/{_LAYOUT}",
        splits=f"published train / valid / test = {spec.published}; val = BMAD's labelled valid split",
        notes=f"groups: {groups}.")


def _member(member: str) -> _Member:
    if member not in MEMBERS:
        raise DatasetError(f"unknown BMAD dataset {member!r}; expected one of {', '.join(MEMBERS)}")
    return MEMBERS[member]


def _group(spec: _Member, split: str, cls: str, stem: str) -> str:
    if spec.group_pattern:
        found = re.match(spec.group_pattern, stem)
        if found:
            parts = list(found.groups())
            if spec.group_prefix:
                parts[0] = spec.group_prefix.get(parts[0], parts[0])
            return "-".join(parts)
    return f"{split}/{cls}/{stem}"


def _class_records(spec: _Member, folder: Path, split: str, cls: str, tag: str) -> list[Record]:
    base = folder / split / cls
    label = 0 if cls == "good" else 1
    image_dir = base / "img" if (base / "img").is_dir() else base
    images = list_images(image_dir, f"{cls} images of BMAD's {split} split")
    mask_dir = next((base / m for m in MASK_FOLDERS if (base / m).is_dir()), None)
    masks = index_by_stem(list_images(mask_dir)) if (spec.masked and mask_dir is not None) else {}
    if spec.masked and label == 1 and split != "train" and mask_dir is None:
        raise DatasetError(f"{base / MASK_FOLDERS[0]}: folder not found; expected the pixel masks of {image_dir}")
    records = []
    for path in images:
        mask = masks.pop(path.stem, None)
        if spec.masked and label == 1 and mask is None:
            raise DatasetError(f"{mask_dir / path.name}: mask not found for {path}; expected one mask per "
                               "anomalous image with the same name")
        records.append(Record(path, label, _group(spec, split, cls, path.stem), tag, mask))
    if masks:
        orphan = masks[sorted(masks)[0]]
        raise DatasetError(f"{orphan}: mask without an image; expected {image_dir / orphan.name}")
    return records


def _catalog(spec: _Member, folder: Path) -> list[Record]:
    records = _class_records(spec, folder, "train", "good", "train")
    if not records:
        raise DatasetError(f"{folder / 'train' / 'good'}: no images; expected a non-empty normal training set")
    for split, tag in (("valid", "val"), ("test", "test")):
        for cls in ("good", "Ungood"):
            records += _class_records(spec, folder, split, cls, tag)
    return records


@register_dataset("bmad", family=True, member="dataset", card=bmad_card, members=tuple(MEMBERS), decodes_files=True)
def bmad(member: str, root: str | Path | None = None, image_size: int = 64, channels: int | None = None,
         seed: int = 0, cache_dir: str | Path | None = None, shared_groups: str = "drop") -> AnomalyDataset:
    """BMAD benchmark datasets (BraTS2021, Liver CT, RESC, OCT2017, RSNA, Camelyon16) with BMAD's valid split.

    ``seed`` is accepted for a uniform signature; BMAD's splits are fixed by the release.
    """
    spec = _member(member)
    name = f"bmad/{member}"
    root = data_root(root)
    candidates = [*spec.folders, *(f"BMAD/{f}" for f in spec.folders)]
    folder = find_folder(root, candidates, f"the BMAD {spec.folders[0]}/ folder {_LAYOUT} (download: {DOWNLOAD})")
    channels = resolve_channels(channels, spec.channels, name)
    records = _catalog(spec, folder)
    arrays, info = cached_decode(name, folder, records, image_size=image_size, channels=channels,
                                 cache_dir=resolve_cache_dir(root, cache_dir), with_masks=spec.masked)
    labels = np.array([r.label for r in records], np.int64)
    groups = np.array([r.group for r in records], dtype=str)
    tags = np.array([r.split for r in records])
    if shared_groups == "per_image":
        groups = np.array([f"{r.image.parent.relative_to(folder).as_posix()}/{r.image.stem}" for r in records])
        dropped: dict = {}
        note = "shared_groups='per_image': published split kept as is, one group per image (no patient guarantee)"
    elif shared_groups == "drop":
        tags, dropped = drop_shared_groups(tags, groups)
        note = f"groups shared between published splits dropped from the later split: {dropped}" if dropped else ""
    else:
        raise DatasetError(f"{name}: shared_groups must be 'drop' or 'per_image', got {shared_groups!r}")
    config = {"loader": name, "source": str(folder), "image_size": int(image_size), "channels": channels,
              "seed": int(seed), "shared_groups": shared_groups, "dropped_shared": dropped, **info}
    return assemble(name, arrays, labels, groups, tags, bmad_card(member), config, source=folder, split_note=note,
                    ids=file_ids(records, folder))
