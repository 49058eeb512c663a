"""One metric implementation for every method: numpy in, plain floats out.

Every detector in the suite is scored here, so results are comparable by construction. Metrics are
registered (:mod:`bench.metrics.registry`): a metric is one function and one
``@register_metric(name, label=..., level=..., lower_is_better=...)``, and the results store, the
bootstrap (:mod:`bench.analysis.stats`) and the report read names, labels and directions from the registry.

* :mod:`bench.metrics.curves`: input checks, the shared descending sort, exact AUROC/AP/AUPRO/Dice.
* :mod:`bench.metrics.image`: image AUROC, AP, FPR@95TPR.
* :mod:`bench.metrics.pixel`: pixel AUROC, AP, AUPRO@0.3 (normalised by the limit), Dice at the
  validation threshold and the oracle Dice, each with a foreground (``_fg``) variant.
* :mod:`bench.metrics.evaluate`: :func:`evaluate`, what the runner calls.

A threshold ``t`` always means "anomalous when score >= t". Test labels never choose a threshold:
``pixel_dice`` uses the validation maps; ``pixel_dice_oracle`` is named as the oracle it is.
"""

from __future__ import annotations

from bench.metrics.registry import (
    FOREGROUND_SUFFIX,
    Metric,
    MetricUnavailable,
    get_metric,
    lower_is_better,
    metric_label,
    metric_names,
    metrics,
    register_metric,
)
from bench.metrics.curves import aupro, best_dice, dice_at, fpr_at_tpr  # noqa: I001 - registry first
from bench.metrics.image import image_metrics
from bench.metrics.pixel import PixelCurve, pixel_metrics
from bench.metrics.evaluate import MetricResults, evaluate

__all__ = [
    "FOREGROUND_SUFFIX", "Metric", "MetricResults", "MetricUnavailable", "PixelCurve", "aupro", "best_dice",
    "dice_at", "evaluate", "fpr_at_tpr", "get_metric", "image_metrics", "lower_is_better", "metric_label",
    "metric_names", "metrics", "pixel_metrics", "register_metric",
]
