"""Pixel-level metrics: one function and one ``@register_metric`` each, on a shared sorted curve.

``compute(curve)`` receives a :class:`PixelCurve`: the test pixels sorted once (every pixel metric
reads the same sort) and the threshold chosen on the validation maps. The registry adds a
foreground variant ``<name>_fg`` of each, computed on a curve of the foreground pixels only
(``test_foreground`` in :func:`bench.metrics.evaluate`).
"""

from __future__ import annotations

from functools import cached_property

import numpy as np

from bench.metrics.curves import (
    NAN,
    _ap_from_counts,
    _aupro_from_order,
    _auroc_from_counts,
    _best_dice_from_counts,
    _check_fraction,
    _check_pixel_inputs,
    _DescendingOrder,
    _region_weights,
    dice_at,
)
from bench.metrics.registry import MetricUnavailable, metrics, register_metric

NO_VALIDATION = "no validation split"


class PixelCurve:
    """Test maps and masks (``[N, H, W]``), optionally restricted to ``select`` pixels, sorted once.

    With ``select`` (a boolean ``[N, H, W]`` foreground), every pixel outside it is dropped: normal
    pixels outside do not count as false positives, and ground-truth regions are the connected
    components of ``mask & select``. ``threshold`` is the validation threshold for Dice, or
    ``None`` with ``threshold_reason`` saying why there is none.
    """

    def __init__(self, maps: np.ndarray, masks: np.ndarray, *, select: np.ndarray | None = None,
                 fpr_limit: float = 0.3, threshold: float | None = None, threshold_reason: str = NO_VALIDATION,
                 all_pixels: PixelCurve | None = None):
        self.maps, self.masks, self.select = maps, masks, select
        self.all_pixels = all_pixels        # the same maps' all-pixel curve, whose sort ``select`` reads
        self.fpr_limit = fpr_limit
        self.threshold, self.threshold_reason = threshold, threshold_reason

    @cached_property
    def scores(self) -> np.ndarray:
        return self.maps.ravel() if self.select is None else self.maps[self.select]

    @cached_property
    def targets(self) -> np.ndarray:
        return self.masks.ravel() if self.select is None else self.masks[self.select]

    @cached_property
    def order(self) -> _DescendingOrder:
        if self.select is not None and self.all_pixels is not None and self.all_pixels.maps is self.maps:
            return self.all_pixels.order.within(self.select, self.scores)
        return _DescendingOrder.of(self.scores)

    @cached_property
    def counts(self) -> tuple[np.ndarray, np.ndarray]:
        """(true positives, false positives) at every distinct threshold, descending."""
        return self.order.counts(self.targets)

    @cached_property
    def region_weights(self) -> tuple[np.ndarray, int]:
        if self.select is None:
            return _region_weights(self.masks)
        weights, n_regions = _region_weights(self.masks & self.select)
        return weights[self.select.ravel()], n_regions

    @property
    def empty(self) -> bool:
        return self.scores.size == 0


@register_metric("pixel_auroc", label="pixel AUROC", level="pixel")
def pixel_auroc(curve: PixelCurve) -> float:
    return _auroc_from_counts(*curve.counts)


@register_metric("pixel_ap", label="pixel AP", level="pixel")
def pixel_ap(curve: PixelCurve) -> float:
    return _ap_from_counts(*curve.counts)


@register_metric("pixel_aupro", label="pixel AUPRO@0.3", level="pixel")
def pixel_aupro(curve: PixelCurve) -> float:
    """MVTec AD's AUPRO up to FPR 0.3, divided by 0.3 (a perfect map scores 1)."""
    return _aupro_from_order(curve.order, curve.counts[1], *curve.region_weights, curve.fpr_limit)


@register_metric("pixel_dice", label="pixel Dice (val. threshold)", level="pixel")
def pixel_dice(curve: PixelCurve) -> float:
    """Pooled test Dice at the threshold that maximised pooled Dice on the validation maps."""
    if curve.threshold is None:
        raise MetricUnavailable(curve.threshold_reason)
    return dice_at(curve.scores, curve.targets, curve.threshold)


@register_metric("pixel_dice_oracle", label="pixel Dice (oracle)", level="pixel")
def pixel_dice_oracle(curve: PixelCurve) -> float:
    """Best pooled Dice over all thresholds on the test set itself: an upper bound peeking at test labels."""
    return _best_dice_from_counts(*curve.counts, curve.order.thresholds)[0]


def _as_selection(foreground: np.ndarray | None, shape: tuple, name: str) -> np.ndarray | None:
    """A foreground (uint8/bool ``[N, 1, H, W]`` or ``[N, H, W]``) as a boolean ``[N, H, W]``, or None."""
    if foreground is None:
        return None
    arr = np.asarray(foreground)
    arr = arr[:, 0] if arr.ndim == 4 and arr.shape[1] == 1 else arr
    if arr.shape != shape:
        raise ValueError(f"{name} must be [N, 1, H, W] or [N, H, W] matching the maps {shape}, got {np.shape(foreground)}")
    return arr != 0


def _dice_threshold(curve: PixelCurve | None) -> tuple[float | None, str]:
    """The threshold maximising pooled Dice on a validation curve (NaN when its masks hold no
    anomalous pixel), or ``(None, reason)`` without validation maps."""
    if curve is None:
        return None, NO_VALIDATION
    if curve.empty:
        return NAN, ""
    return _best_dice_from_counts(*curve.counts, curve.order.thresholds)[1], ""


def pixel_curves(maps, masks, *, val_maps=None, val_masks=None, test_foreground=None, val_foreground=None,
                 fpr_limit: float = 0.3) -> dict[bool, PixelCurve]:
    """The all-pixel curve (key False) and, with ``test_foreground``, the foreground curve (key True).

    Each foreground curve reads its order off the all-pixel sort of the same maps (test and
    validation), so a cell sorts its test pixels once and its validation pixels once.
    """
    limit = _check_fraction(fpr_limit, "fpr_limit")
    maps_3d, masks_3d = _check_pixel_inputs(maps, masks)
    val = None if val_maps is None or val_masks is None else \
        PixelCurve(*_check_pixel_inputs(val_maps, val_masks, "val_maps", "val_masks"))
    threshold, reason = _dice_threshold(val)
    all_pixels = PixelCurve(maps_3d, masks_3d, fpr_limit=limit, threshold=threshold, threshold_reason=reason)
    curves = {False: all_pixels}
    select = _as_selection(test_foreground, maps_3d.shape, "test_foreground")
    if select is not None:
        val_fg = val
        if val is not None and val_foreground is not None:
            val_fg = PixelCurve(val.maps, val.masks, all_pixels=val,
                                select=_as_selection(val_foreground, val.maps.shape, "val_foreground"))
        fg_threshold, fg_reason = (threshold, reason) if val_fg is val else _dice_threshold(val_fg)
        curves[True] = PixelCurve(maps_3d, masks_3d, select=select, fpr_limit=limit, threshold=fg_threshold,
                                  threshold_reason=fg_reason, all_pixels=all_pixels)
    return curves


def compute_pixel_metrics(curves: dict[bool, PixelCurve]) -> tuple[dict[str, float], dict[str, str]]:
    """Every registered pixel metric on its curve: (values, {unavailable metric: reason})."""
    values, unavailable = {}, {}
    for metric in metrics("pixel"):
        curve = curves.get(metric.foreground)
        if curve is None:
            continue
        try:
            values[metric.name] = NAN if curve.empty else float(metric.compute(curve))
        except MetricUnavailable as why:
            unavailable[metric.name] = str(why)
    return values, unavailable


def pixel_metrics(maps: np.ndarray, masks: np.ndarray, *, val_maps: np.ndarray | None = None,
                  val_masks: np.ndarray | None = None, fpr_limit: float = 0.3) -> dict[str, float]:
    """All-pixel metrics of test ``maps`` against ``masks`` (``[N, H, W]`` or ``[N, 1, H, W]``).

    ``pixel_dice`` uses the threshold maximising pooled Dice on the validation maps, returned as
    ``pixel_threshold``; both are NaN here without validation maps (``evaluate`` instead leaves
    them out and says why). One sort of the test pixels serves every metric.
    """
    curves = pixel_curves(maps, masks, val_maps=val_maps, val_masks=val_masks, fpr_limit=fpr_limit)
    values, unavailable = compute_pixel_metrics(curves)
    values.update(dict.fromkeys(unavailable, NAN))
    threshold = curves[False].threshold
    values["pixel_threshold"] = NAN if threshold is None else threshold
    return values
