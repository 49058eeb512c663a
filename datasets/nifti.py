"""NIfTI volumes (BraTS-style) sliced into 2D axial images with masks from the segmentation file.

::

    <path>/**/<case>_<modality>.nii[.gz]      e.g. BraTS2021_00000/BraTS2021_00000_flair.nii.gz
    <path>/**/<case>_seg.nii[.gz]             segmentation; any label > 0 is anomalous

Why slices are chosen this way (CRADL / Baur et al. protocol): each volume is reoriented to
the closest canonical (RAS) orientation so the axial axis is the last one, intensities are
normalised *per volume* (clipped to the 0.5-99.5 percentiles of the voxels above the volume
minimum, scaled to 0-255; voxels at the minimum stay 0), and an axial slice is kept when its
brain fraction reaches ``min_brain_fraction``. The brain is found by intensity on the normalised
slices (:mod:`datasets._foreground`: above ``foreground_level`` of the volume's range, holes
filled), not as "non-zero": scanner noise makes the background of real scans positive, and the
same masks are the splits' foreground for the ``*_fg`` metrics. A slice is anomalous when its
segmentation slice is non-empty. Groups are cases (volumes); volumes are split train/val/test
by group and training takes the normal slices of training volumes only.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from datasets._cache import ArrayCache, cache_key, resolve_cache_dir
from datasets._foreground import (
    DEFAULT_LEVEL,
    RULE,
    attach_foreground,
    check_level,
    low_foreground,
)
from datasets._io import data_root, one_line, require_dir, resize_mask
from datasets._splits import assemble, assign_by_group, check_fraction
from datasets.base import AnomalyDataset, DatasetCard, DatasetError
from datasets.registry import register_dataset

NIFTI_CARD = DatasetCard(
    name="nifti", modality="3D MRI/CT volumes (NIfTI), axial 2D slices",
    description="Any BraTS-style folder of NIfTI volumes with segmentation files, e.g. BraTS 2021 Task 1.",
    normal="axial slice whose segmentation slice is empty",
    anomaly="axial slice with a non-empty segmentation (pixel masks = segmentation > 0)",
    license="that of the volumes you point it at (BraTS 2021: see its data terms)",
    citation=("for BraTS 2021: Baid U et al. The RSNA-ASNR-MICCAI BraTS 2021 Benchmark on Brain Tumor Segmentation "
              "and Radiogenomic Classification. arXiv:2107.02314 (2021)"),
    source="your own volumes; BraTS 2021: https://www.synapse.org/#!Synapse:syn25829067",
    layout="<path>/**/<case>_<modality>.nii[.gz] with <case>_seg.nii[.gz] next to it",
    splits=("volumes split by group with a seeded RNG over sorted case ids (train_fraction 0.6, val_fraction 0.1, "
            "test the rest; stratified by tumour-free vs tumour volumes); train = normal slices of training volumes"),
    notes=("groups: case id (file name minus _<modality>.nii.gz). Slices kept by brain fraction "
           f"(min_brain_fraction, default 10 %). Brain: {RULE} (foreground_level, default 10 %; volume = the "
           "case), on the normalised slices; it is also the foreground of the *_fg pixel metrics."))


def _load_volume(path: Path) -> tuple[np.ndarray, tuple]:
    import nibabel as nib

    try:
        img = nib.as_closest_canonical(nib.load(str(path)))
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises many types for bad/truncated files
        raise DatasetError(f"{path}: unreadable or truncated NIfTI volume ({one_line(exc)})") from None
    if data.ndim == 4 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise DatasetError(f"{path}: volume has shape {data.shape}; expected a 3D volume")
    return np.asarray(data, dtype=np.float32), data.shape


def normalise_volume(volume: np.ndarray, percentiles: tuple[float, float]) -> np.ndarray:
    """Per-volume uint8 scaling: the voxels above the minimum set the percentiles, the minimum stays 0.

    The clipping percentiles are robust to a noisy background (it fills the low end, which is
    clipped to 0) and to hot voxels (the top 0.5 %).
    """
    above_min = volume > volume.min()
    if not above_min.any():
        return np.zeros(volume.shape, np.uint8)
    lo, hi = np.percentile(volume[above_min], percentiles)
    scaled = np.clip((volume - lo) / max(hi - lo, 1e-6), 0.0, 1.0) * 255.0
    scaled[~above_min] = 0.0
    return np.round(scaled).astype(np.uint8)


def _find_cases(folder: Path, modalities: Sequence[str], seg: str) -> list[tuple[str, list[Path], Path]]:
    first = modalities[0]
    pattern = re.compile(rf"^(.+)_{re.escape(first)}\.nii(\.gz)?$")
    cases = []
    files = sorted(p for p in folder.rglob("*.nii*") if p.is_file() and pattern.match(p.name))
    for path in files:
        found = pattern.match(path.name)
        case, gz = found.group(1), found.group(2) or ""
        paths = [path]
        for mod in modalities[1:]:
            other = path.with_name(f"{case}_{mod}.nii{gz}")
            if not other.is_file():
                raise DatasetError(f"{other}: file not found; expected modality {mod!r} next to {path}")
            paths.append(other)
        cases.append((case, paths, path.with_name(f"{case}_{seg}.nii{gz}")))
    if not cases:
        raise DatasetError(f"{folder}: no *_{first}.nii[.gz] volumes found; expected <case>_{first}.nii.gz files")
    names = [c[0] for c in cases]
    if len(set(names)) != len(names):
        dup = sorted(n for n in names if names.count(n) > 1)[0]
        raise DatasetError(f"{folder}: case id {dup!r} appears twice; expected unique case names")
    seg_pattern = re.compile(rf"^(.+)_{re.escape(seg)}\.nii(\.gz)?$")
    known = set(names)
    for path in sorted(folder.rglob(f"*_{seg}.nii*")):
        found = seg_pattern.match(path.name)
        if found and found.group(1) not in known:
            raise DatasetError(f"{path}: segmentation without an image; expected "
                               f"{path.with_name(f'{found.group(1)}_{first}.nii' + (found.group(2) or ''))}")
    return cases


def _slice_volumes(cases, image_size: int, channels: int, percentiles, healthy_without_seg: bool) -> dict:
    images, masks, labels, groups, index = [], [], [], [], []
    from PIL import Image

    for case, paths, seg_path in cases:
        vols = []
        for path in paths:
            vol, shape = _load_volume(path)
            norm = normalise_volume(vol, percentiles)
            if vols and norm.shape != vols[0].shape:
                raise DatasetError(f"{path}: volume shape {norm.shape} differs from {paths[0]} {vols[0].shape}; "
                                   "expected co-registered modalities")
            vols.append(norm)
        if not seg_path.is_file():
            if not healthy_without_seg:
                raise DatasetError(f"{seg_path}: segmentation not found for {paths[0]}; expected one "
                                   "(or healthy_without_seg=True for healthy volumes)")
            seg = np.zeros(vols[0].shape, bool)
        else:
            seg_vol, _ = _load_volume(seg_path)
            if seg_vol.shape != vols[0].shape:
                raise DatasetError(f"{seg_path}: segmentation shape {seg_vol.shape} differs from its image "
                                   f"{paths[0]} {vols[0].shape}; expected equal sizes")
            seg = seg_vol > 0
        for z in range(vols[0].shape[2]):
            planes = [Image.fromarray(np.ascontiguousarray(v[:, :, z])) for v in vols]
            if channels == 3 and len(planes) == 1:
                planes = planes * 3
            resized = [np.asarray(p if p.size == (image_size, image_size)
                                  else p.resize((image_size, image_size), Image.BILINEAR)) for p in planes]
            images.append(np.stack(resized))
            masks.append(resize_mask(seg[:, :, z], image_size)[None].astype(np.uint8))
            labels.append(int(seg[:, :, z].any()))
            groups.append(case)
            index.append(z)
    return {"images": np.stack(images).astype(np.uint8), "masks": np.stack(masks).astype(np.uint8),
            "labels": np.array(labels, np.int64), "groups": np.array(groups, dtype=str),
            "slice_index": np.array(index, np.int64)}


@register_dataset("nifti", card=NIFTI_CARD, decodes_files=True)
def nifti(root: str | Path | None = None, image_size: int = 64, channels: int | None = None, seed: int = 0,
          val_fraction: float = 0.1, train_fraction: float = 0.6, cache_dir: str | Path | None = None,
          path: str | Path | None = None, modalities: Sequence[str] | str = ("flair",), seg: str = "seg",
          min_brain_fraction: float = 0.1, clip_percentiles: Sequence[float] = (0.5, 99.5),
          healthy_without_seg: bool = False, foreground_level: float = DEFAULT_LEVEL) -> AnomalyDataset:
    """NIfTI volumes (BraTS-style) -> normalised axial slices kept by brain fraction, per-volume groups.

    ``path`` is the folder of volumes (absolute, or relative to the cwd or to ``root``); without
    it the data root itself is searched. ``modalities`` become channels in the given order.
    ``min_brain_fraction`` drops slices whose brain (pixels above ``foreground_level`` of the
    case's normalised intensity range, holes filled) covers less than that share of the slice.
    """
    root = data_root(root)
    if path is None:
        folder = require_dir(root, "a folder of <case>_<modality>.nii.gz volumes (or pass path=)")
    else:
        folder = Path(path).expanduser()
        if not folder.is_absolute() and not folder.exists() and (root / folder).exists():
            folder = root / folder
        require_dir(folder, "a folder of <case>_<modality>.nii.gz volumes")
    modalities = [modalities] if isinstance(modalities, str) else list(modalities)
    n_default = len(modalities)
    channels = n_default if channels is None else int(channels)
    if channels != n_default and not (n_default == 1 and channels == 3):
        raise DatasetError(f"nifti: {n_default} modalities give {n_default} channels; channels must be "
                           f"{n_default}{' or 3' if n_default == 1 else ''}, got {channels}")
    check_fraction("min_brain_fraction", min_brain_fraction)
    check_level(foreground_level)
    percentiles = (float(clip_percentiles[0]), float(clip_percentiles[1]))
    cases = _find_cases(folder, modalities, seg)
    files = [p for _, paths, s in cases for p in [*paths, *([s] if s.is_file() else [])]]
    params = {"image_size": int(image_size), "channels": channels, "modalities": modalities, "seg": seg,
              "percentiles": percentiles, "healthy_without_seg": bool(healthy_without_seg),
              "orientation": "closest-canonical, axial = axis 2", "resize": "pil-bilinear-aa/mask-nearest"}
    cache = ArrayCache(resolve_cache_dir(root, cache_dir))
    key = cache_key("nifti", folder, files, params)
    arrays, hit, entry = cache.get_or_build(
        "nifti", key, lambda: _slice_volumes(cases, int(image_size), channels, percentiles, healthy_without_seg))
    labels, groups = arrays["labels"], arrays["groups"].astype(str)
    tags = assign_by_group(groups, labels, train_fraction, val_fraction, seed, salt="nifti")
    low, thresholds = low_foreground(arrays["images"], groups, foreground_level, min_brain_fraction)
    tags[low] = "unused"
    note = (f"{int(low.sum())} slices below min_brain_fraction={min_brain_fraction} dropped (brain = above "
            f"{foreground_level:.0%} of the case's intensity range, foreground_level)")
    config = {"loader": "nifti", "source": str(folder), "image_size": int(image_size), "channels": channels,
              "modalities": modalities, "seed": int(seed), "train_fraction": float(train_fraction),
              "val_fraction": float(val_fraction), "min_brain_fraction": float(min_brain_fraction),
              "clip_percentiles": list(percentiles), "cache_hit": hit, "cache_file": str(entry),
              "foreground_level": float(foreground_level), "foreground_rule": RULE,
              "dropped_low_foreground": int(low.sum())}
    dataset = assemble("nifti", arrays, labels, groups, tags, NIFTI_CARD, config, source=folder, split_note=note)
    return attach_foreground(dataset, thresholds)
