"""Image-level metrics: one function and one ``@register_metric`` each.

``compute(scores, labels)`` receives finite 1-D scores and boolean labels holding both classes
(:func:`image_metrics` returns NaN for every metric otherwise).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from bench.metrics.curves import NAN, _check_image_inputs, fpr_at_tpr
from bench.metrics.registry import metrics, register_metric
from bench.metrics.weighted import weighted_auroc, weighted_average_precision, weighted_fpr_at_tpr


@register_metric("image_auroc", label="image AUROC", level="image", weighted=weighted_auroc)
def image_auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    return float(roc_auc_score(labels, scores))


@register_metric("image_ap", label="image AP", level="image", weighted=weighted_average_precision)
def image_ap(scores: np.ndarray, labels: np.ndarray) -> float:
    return float(average_precision_score(labels, scores))


@register_metric("image_fpr95", label="image FPR@95TPR", level="image", lower_is_better=True,
                 weighted=weighted_fpr_at_tpr)
def image_fpr95(scores: np.ndarray, labels: np.ndarray) -> float:
    """OpenOOD's FPR@95: false-positive rate at the first threshold whose TPR reaches 95 %."""
    return fpr_at_tpr(scores, labels, 0.95)


def image_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Every registered image metric (all NaN when ``labels`` hold one class)."""
    scores_arr, labels_arr = _check_image_inputs(scores, labels)
    one_class = labels_arr.all() or not labels_arr.any()
    return {m.name: NAN if one_class else float(m.compute(scores_arr, labels_arr)) for m in metrics("image")}
