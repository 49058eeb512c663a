"""MVTec AD layout (Bergmann et al. 2019/2021), for the industrial comparisons ReContrast makes.

::

    <root>/<category>/train/good/*.png
    <root>/<category>/test/{good, <defect>...}/*.png
    <root>/<category>/ground_truth/<defect>/<name>_mask.png

``<root>/mvtec_anomaly_detection/<category>`` and ``<root>/mvtec/<category>`` work too. MVTec
has no validation split: ``val`` is carved from the test pool (stratified, seeded; default 20%
because test sets are small; ``val_fraction=0`` keeps the published test set). Objects carry no
"patient", so each image is its own group (``<defect>/<stem>``). Channels default to the
category's native mode (RGB, or grayscale for grid, screw and zipper).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from datasets._cache import cached_decode, resolve_cache_dir
from datasets._io import Record, data_root, find_folder, index_by_stem, list_images, native_channels, resolve_channels
from datasets._splits import assemble, carve_val_from_test, check_fraction, file_ids
from datasets.base import AnomalyDataset, DatasetCard, DatasetError
from datasets.registry import register_dataset

CATEGORIES = ("bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal_nut", "pill", "screw",
              "tile", "toothbrush", "transistor", "wood", "zipper")
SOURCE = "https://www.mvtec.com/company/research/datasets/mvtec-ad"


def mvtec_card(category: str) -> DatasetCard:
    return DatasetCard(
        name=f"mvtec/{category}", modality="industrial photographs (RGB or grayscale)",
        description=f"MVTec AD, category {category!r}: defect-free training images, defects with pixel masks.",
        normal="test/good and train/good", anomaly="every other test/<defect> folder (pixel masks in ground_truth/)",
        license="CC BY-NC-SA 4.0", source=SOURCE,
        citation=("Bergmann P, Batzner K, Fauser M, Sattlegger D, Steger C. The MVTec anomaly detection dataset. "
                  "IJCV 129:1038-1059 (2021); CVPR 2019"),
        layout=f"<root>/{category}/{{train/good, test/<defect>, ground_truth/<defect>/<name>_mask.png}}",
        splits=("published train/test; val carved from the test pool by group (val_fraction, default 0.2), "
                "stratified, seeded"),
        notes=f"groups: one image each (<defect>/<stem>). Known categories: {', '.join(CATEGORIES)}.")


def _catalog(folder: Path) -> list[Record]:
    records = [Record(p, 0, f"train/good/{p.stem}", "train")
               for p in list_images(folder / "train" / "good", "defect-free training images")]
    if not records:
        raise DatasetError(f"{folder / 'train' / 'good'}: no images; expected a non-empty normal training set")
    test = folder / "test"
    defects = sorted(d.name for d in test.iterdir() if d.is_dir()) if test.is_dir() else []
    if "good" not in defects:
        raise DatasetError(f"{test / 'good'}: folder not found; expected test/good and test/<defect> folders")
    truth = folder / "ground_truth"
    for defect in defects:
        images = list_images(test / defect)
        if defect == "good":
            records += [Record(p, 0, f"good/{p.stem}", "test") for p in images]
            continue
        masks = index_by_stem(list_images(truth / defect, f"the masks of test/{defect} (<name>_mask.png)"), "_mask")
        for path in images:
            mask = masks.pop(path.stem, None)
            if mask is None:
                raise DatasetError(f"{truth / defect / (path.stem + '_mask.png')}: mask not found for {path}; "
                                   "expected one mask per defect image")
            records.append(Record(path, 1, f"{defect}/{path.stem}", "test", mask))
        if masks:
            orphan = masks[sorted(masks)[0]]
            expected = test / defect / (sorted(masks)[0] + ".png")
            raise DatasetError(f"{orphan}: mask without an image; expected {expected}")
    if truth.is_dir():
        for extra in sorted(d for d in truth.iterdir() if d.is_dir() and d.name not in defects):
            raise DatasetError(f"{extra}: masks without images; expected a matching folder test/{extra.name}")
    return records


@register_dataset("mvtec", family=True, member="category", card=mvtec_card, members=CATEGORIES,
                  decodes_files=True)
def mvtec(category: str, root: str | Path | None = None, image_size: int = 64, channels: int | None = None,
          seed: int = 0, val_fraction: float = 0.2, cache_dir: str | Path | None = None) -> AnomalyDataset:
    """MVTec AD category (industrial reference for ReContrast-style comparisons), pixel masks."""
    name = f"mvtec/{category}"
    root = data_root(root)
    folder = find_folder(root, [category, f"mvtec_anomaly_detection/{category}", f"mvtec/{category}"],
                         f"the MVTec AD category folder {category}/{{train/good, test, ground_truth}} "
                         f"(download: {SOURCE})")
    check_fraction("val_fraction", val_fraction)
    records = _catalog(folder)
    channels = resolve_channels(channels, native_channels(records[0].image), name)
    arrays, info = cached_decode(name, folder, records, image_size=image_size, channels=channels,
                                 cache_dir=resolve_cache_dir(root, cache_dir), with_masks=True)
    labels = np.array([r.label for r in records], np.int64)
    groups = np.array([r.group for r in records], dtype=str)
    tags, note = carve_val_from_test(np.array([r.split for r in records]), groups, labels, val_fraction, seed,
                                     salt=name)
    config = {"loader": name, "source": str(folder), "image_size": int(image_size), "channels": channels,
              "seed": int(seed), "val_fraction": float(val_fraction), **info}
    return assemble(name, arrays, labels, groups, tags, mvtec_card(category), config, source=folder,
                    split_note=note, ids=file_ids(records, folder))
