"""Compact per-case pixel summaries: what resampled pixel metrics need, at a size independent of the image size.

Why: a bootstrap of pixel metrics only reweights test cases, so it needs, per case, how many of its
masked and unmasked pixels fall in each bin of one shared threshold grid (pixel AUROC, AP, oracle Dice),
the same per connected lesion region (AUPRO), and its TP/FP/FN at the validation-chosen Dice threshold
(Dice, exact). Full maps grow with N x H x W and were stored only below the store's pixel limit, which
left pixel claims on real test sets "not testable"; these summaries grow with N x bins and are stored
for every cell with pixel metrics (``score_cell``), under the reserved ``test_pixsum_*`` keys.

Numpy and scipy only (the worker, the report and claims all read it; no torch).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass
class PixelCounts:
    """Per-image pixel counts on a grid of thresholds: everything a resampled pixel metric needs.

    Why counts: resampling images only reweights rows, so each pixel metric of a resample is a
    weighted sum of these rows. Pixel values are compared against ``thresholds`` (quantiles of
    all map values, see :func:`threshold_grid`), so pixel AUROC/AP/AUPRO are those of maps
    binned to that grid, which moves them by far less than their confidence interval (tested);
    Dice at the given threshold is exact. No pixel is subsampled.
    """

    thresholds: np.ndarray     # [T] ascending
    pos_above: np.ndarray      # [N, T] anomalous pixels with value >= threshold
    neg_above: np.ndarray      # [N, T] normal pixels with value >= threshold
    pos_total: np.ndarray      # [N]
    neg_total: np.ndarray      # [N]
    region_image: np.ndarray   # [R] image of each connected anomalous region
    region_overlap: np.ndarray  # [R, T] fraction of the region's pixels >= threshold
    dice_counts: np.ndarray | None = None  # [N, 3] TP, FP, FN at ``dice_threshold``
    dice_threshold: float | None = None


def _grid_levels(n_thresholds: int) -> np.ndarray:
    half = max(n_thresholds // 2, 2)
    levels = np.r_[np.linspace(0.0, 1.0, half), 1.0 - np.geomspace(1e-6, 1.0, half)]
    return np.clip(np.sort(levels), 0.0, 1.0)


def threshold_grid(values: np.ndarray, n_thresholds: int) -> np.ndarray:
    """Quantiles of ``values`` (data values, lowest = minimum): half evenly spaced, half crowding
    the upper tail.

    Why the tail: pixel AP is decided among the few highest-scoring pixels, where evenly spaced
    quantiles would lump thousands of pixels into one tie.
    """
    return np.unique(np.quantile(np.asarray(values).ravel(), _grid_levels(n_thresholds), method="inverted_cdf"))



#: Thresholds of a summary's grid (:func:`summary_grid`: quantiles of all its test map values and of its
#: anomalous pixels' values).
PIXSUM_THRESHOLDS = 512
PREFIX = "test_pixsum_"
#: The same summary of selection's synthetic validation set (``bench.run.synth``).
SYNTH_PREFIX = "synth_pixsum_"
#: The arrays of a summary (``PREFIX`` + name):
#: thresholds [T <= PIXSUM_THRESHOLDS] float64 ascending; pos / neg [N, T] int32: masked / unmasked pixels of each case whose
#: value is in bin t (``thresholds[t] <= value < thresholds[t + 1]``; values below the lowest threshold
#: count in bin 0); region_image [R] int32: the case of each 8-connected mask region; region [R, T]
#: int32: that region's pixels per bin; dice [N, 3] int64: TP, FP, FN at dice_threshold (0-d float64,
#: NaN when the cell had no validation threshold: then dice is absent).
KEYS = ("thresholds", "pos", "neg", "region_image", "region", "dice", "dice_threshold")
#: Full per-case maps (stored beside the summary only while small; see ``bench.run.work``).
MAP_KEYS = ("test_maps", "test_masks")


def _as_3d(array, name: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim == 4 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 3:
        raise ValueError(f"{name} must be [N, H, W] or [N, 1, H, W], got shape {array.shape}")
    return array


def summary_grid(values: np.ndarray, anomalous: np.ndarray, n_thresholds: int) -> np.ndarray:
    """Half :func:`threshold_grid` of all map values (crowding the upper tail), half
    evenly spaced quantiles of the anomalous pixels' values.

    Why the second half: binning moves pixel AP and the oracle Dice by at most the share of anomalous
    pixels that share a bin, so spacing the anomalous pixels evenly (at most 1/(T/2) of them per bin)
    bounds that error whatever the lesion size; with all-pixel quantiles alone AP moved by up to 0.004 at
    T = 512 on smooth maps (0.001 with this grid). The masks only place bin edges; every metric is still
    computed on all pixels, as the exact metric is.
    """
    grid = threshold_grid(values, n_thresholds // 2)
    if anomalous.size:
        levels = np.linspace(0.0, 1.0, n_thresholds - n_thresholds // 2)
        grid = np.union1d(grid, np.quantile(anomalous, levels, method="inverted_cdf").astype(grid.dtype))
    return grid


def summarize(maps, masks, *, dice_threshold: float | None = None,
              n_thresholds: int = PIXSUM_THRESHOLDS, prefix: str = PREFIX) -> dict[str, np.ndarray]:
    """The ``test_pixsum_*`` arrays of test ``maps`` against ``masks`` (one vectorised pass); another
    ``prefix`` names the summary of another split (selection's synthetic set: ``synth_pixsum_``)."""
    maps = _as_3d(maps, "maps").astype(np.float32, copy=False)   # the runner's maps are float32
    masks = _as_3d(masks, "masks") > 0
    if maps.shape != masks.shape:
        raise ValueError(f"maps {maps.shape} and masks {masks.shape} must have the same shape")
    if not np.all(np.isfinite(maps)):
        raise ValueError("anomaly maps contain NaN or inf")
    n = maps.shape[0]
    flat, pos = maps.reshape(n, -1), masks.reshape(n, -1)
    thresholds = summary_grid(flat, flat[pos], n_thresholds)   # data values: float32, compared as such
    n_t = thresholds.size
    bins = np.clip(np.searchsorted(thresholds, flat, side="right") - 1, 0, n_t - 1)
    thresholds = thresholds.astype(np.float64)
    cells = bins + (np.arange(n) * n_t)[:, None]                  # int64: N x T may pass 2**31 pixels

    def histogram(index: np.ndarray, rows: int) -> np.ndarray:
        return np.bincount(index, minlength=rows * n_t).reshape(rows, n_t).astype(np.int32)

    out = {"thresholds": thresholds, "pos": histogram(cells[pos], n), "neg": histogram(cells[~pos], n)}
    # 8-connected regions within each image (no connection across images), labelled in one call
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = True
    labelled, n_regions = ndimage.label(masks, structure=structure)
    labels = labelled.reshape(n, -1)
    inside = labels > 0
    region_image = np.zeros(n_regions, dtype=np.int32)
    region_image[labels[inside] - 1] = np.nonzero(inside)[0]
    out["region_image"] = region_image
    out["region"] = histogram((labels[inside].astype(np.int64) - 1) * n_t + bins[inside], n_regions)
    if dice_threshold is not None and np.isfinite(dice_threshold):
        predicted = flat >= np.float64(dice_threshold)
        out["dice"] = np.stack([np.sum(predicted & pos, axis=1), np.sum(predicted & ~pos, axis=1),
                                np.sum(~predicted & pos, axis=1)], axis=1).astype(np.int64)
        out["dice_threshold"] = np.float64(dice_threshold)
    else:
        out["dice_threshold"] = np.float64(np.nan)
    return {prefix + k: np.asarray(v) for k, v in out.items()}


def _above(hist: np.ndarray) -> np.ndarray:
    """Per-bin counts -> counts at or above each threshold (reverse cumulative sum), as float."""
    return np.cumsum(hist[:, ::-1].astype(np.float64), axis=1)[:, ::-1]


def counts_from_summary(arrays: Mapping[str, np.ndarray], prefix: str = PREFIX) -> PixelCounts:
    """The :class:`PixelCounts` of a stored summary."""
    get = {k: np.asarray(arrays[prefix + k]) for k in KEYS if prefix + k in arrays}
    pos_above, neg_above = _above(get["pos"]), _above(get["neg"])
    region_above = _above(get["region"]) if get["region"].size else np.zeros((0, get["thresholds"].size))
    with np.errstate(invalid="ignore", divide="ignore"):
        overlap = region_above / region_above[:, :1] if len(region_above) else region_above
    threshold = float(get.get("dice_threshold", np.nan))
    has_dice = "dice" in get and np.isfinite(threshold)
    return PixelCounts(thresholds=get["thresholds"], pos_above=pos_above, neg_above=neg_above,
                       pos_total=pos_above[:, 0].copy(), neg_total=neg_above[:, 0].copy(),
                       region_image=get["region_image"].astype(np.int64), region_overlap=overlap,
                       dice_counts=get["dice"].astype(float) if has_dice else None,
                       dice_threshold=threshold if has_dice else None)


def has_summary(keys, prefix: str = PREFIX) -> bool:
    """Whether stored array names (an arrays dict, or its keys) hold a pixel summary."""
    return all(prefix + k in keys for k in ("thresholds", "pos", "neg", "region_image", "region"))


def has_pixel_data(keys) -> bool:
    """Whether stored array names let pixel metrics be resampled: a summary, or full maps and masks."""
    keys = set(keys)
    return has_summary(keys) or set(MAP_KEYS) <= keys


def pixel_counts_of(arrays: Mapping[str, np.ndarray], *, n_thresholds: int = PIXSUM_THRESHOLDS,
                    dice_threshold: float | None = None) -> PixelCounts | None:
    """PixelCounts from a record's arrays: its summary; else (records written before summaries existed)
    its full ``test_maps``/``test_masks`` binned on ``n_thresholds`` (Dice at ``dice_threshold``); else None."""
    if has_summary(arrays):
        return counts_from_summary(arrays)
    if set(MAP_KEYS) <= set(arrays):
        return counts_from_summary(summarize(arrays["test_maps"], arrays["test_masks"], dice_threshold=dice_threshold,
                                             n_thresholds=n_thresholds))
    return None


def summary_problem(arrays: Mapping[str, np.ndarray], n_test: int | None = None) -> str | None:
    """Why stored summary arrays are inconsistent (shapes, counts), or None (also when there is none)."""
    present = [k for k in KEYS if PREFIX + k in arrays]
    if not present:
        return None
    if not has_summary(arrays):
        return f"its pixel summary is incomplete (has only {', '.join(PREFIX + k for k in present)})"
    t = np.asarray(arrays[PREFIX + "thresholds"])
    pos, neg = np.asarray(arrays[PREFIX + "pos"]), np.asarray(arrays[PREFIX + "neg"])
    region, image = np.asarray(arrays[PREFIX + "region"]), np.asarray(arrays[PREFIX + "region_image"])
    n = pos.shape[0] if pos.ndim == 2 else -1
    if (t.ndim != 1 or pos.shape != (n, t.size) or neg.shape != pos.shape or region.ndim != 2
            or region.shape[1] != t.size or image.shape != (region.shape[0],)):
        return (f"its pixel summary has inconsistent shapes (thresholds {t.shape}, pos {pos.shape}, neg {neg.shape}, "
                f"region {region.shape}, region_image {image.shape})")
    if isinstance(n_test, int) and n != n_test:
        return f"its pixel summary has {n} cases, the record says {n_test} test images"
    if (pos < 0).any() or (neg < 0).any() or (region < 0).any() or (len(image) and not 0 <= image.min() <= image.max() < n):
        return "its pixel summary holds negative counts or region cases out of range"
    return None
