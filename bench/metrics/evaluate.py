"""``evaluate``: every registered metric of one cell, and why any is missing."""

from __future__ import annotations

import numpy as np

from bench.metrics.image import image_metrics, validation_threshold
from bench.metrics.registry import metrics
from bench.metrics.pixel import compute_pixel_metrics, pixel_curves


class MetricResults(dict):
    """``{metric: float}`` plus ``unavailable``: ``{metric: reason}`` for metrics that could not exist
    (e.g. ``{"pixel_dice": "no validation split"}``), which the runner writes to the record as
    ``metrics_unavailable`` and the tables show as "n/a (reason)"."""

    def __init__(self, *args, unavailable: dict[str, str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.unavailable: dict[str, str] = dict(unavailable or {})


def evaluate(
    test_scores: np.ndarray,
    test_labels: np.ndarray,
    test_maps: np.ndarray | None = None,
    test_masks: np.ndarray | None = None,
    val_maps: np.ndarray | None = None,
    val_masks: np.ndarray | None = None,
    fpr_limit: float = 0.3,
    *,
    test_foreground: np.ndarray | None = None,
    val_foreground: np.ndarray | None = None,
    val_scores: np.ndarray | None = None,
    val_labels: np.ndarray | None = None,
) -> MetricResults:
    """Image metrics, plus pixel metrics when both ``test_maps`` and ``test_masks`` are given.

    ``val_scores``/``val_labels`` choose the image threshold (``image_threshold``,
    :func:`bench.metrics.image.validation_threshold`) of the thresholded image metrics (F1,
    sensitivity, specificity at the validation threshold); without them those are unavailable.

    Validation maps and masks only choose the Dice threshold (``pixel_threshold``); they never
    touch the other metrics. Without them (an empty validation split) ``pixel_dice`` is left out and
    ``result.unavailable`` says why. ``test_foreground`` (uint8 ``[N, 1, H, W]``; None = every
    pixel) adds the ``*_fg`` variants of every pixel metric, computed over foreground pixels only;
    ``val_foreground`` restricts the pixels that choose the foreground Dice threshold.
    """
    threshold = validation_threshold(val_scores, val_labels) if val_scores is not None else None
    results = MetricResults(image_metrics(test_scores, test_labels, threshold))
    if threshold is not None:
        results["image_threshold"] = threshold
    else:
        why = "no validation scores to choose the image threshold"
        results.unavailable.update({m.name: why for m in metrics("image") if m.thresholded})
    if test_maps is None or test_masks is None:
        return results
    n_images, n_maps = np.asarray(test_scores).shape[0], np.asarray(test_maps).shape[0]
    if n_maps != n_images:
        raise ValueError(f"test_maps must hold one map per test score: {n_maps} maps for {n_images} scores")
    curves = pixel_curves(test_maps, test_masks, val_maps=val_maps, val_masks=val_masks,
                          test_foreground=test_foreground, val_foreground=val_foreground, fpr_limit=fpr_limit)
    values, unavailable = compute_pixel_metrics(curves)
    results.update(values)
    if curves[False].threshold is not None:
        results["pixel_threshold"] = curves[False].threshold
    results.unavailable.update(unavailable)
    return results
