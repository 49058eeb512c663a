"""Image-level metrics: one function and one ``@register_metric`` each.

``compute(scores, labels)`` receives finite 1-D scores and boolean labels holding both classes
(:func:`image_metrics` returns NaN for every metric otherwise).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from bench.metrics.curves import NAN, _check_image_inputs, fpr_at_tpr
from bench.metrics.registry import metrics, register_metric
from bench.metrics.weighted import (
    weighted_auroc,
    weighted_average_precision,
    weighted_f1_at,
    weighted_f1_max,
    weighted_fpr_at_tpr,
    weighted_sensitivity_at,
    weighted_specificity_at,
)

#: With only normal validation cases, the image threshold flags this share of them (specificity
#: 0.95 on validation): the usual operating point when no anomalous case may choose it.
NORMAL_ONLY_FALSE_POSITIVE_RATE = 0.05


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


@register_metric("image_f1_max", label="image F1-max (oracle)", level="image", weighted=weighted_f1_max)
def image_f1_max(scores: np.ndarray, labels: np.ndarray) -> float:
    """The best F1 over all thresholds of the *test* scores: an oracle, named as one (no test label
    may choose a threshold; ``image_f1`` is the honest number)."""
    return weighted_f1_max(scores, labels)


@register_metric("image_f1", label="image F1 @val thr.", level="image", weighted=weighted_f1_at, thresholded=True)
def image_f1(scores: np.ndarray, labels: np.ndarray, threshold: float) -> float:
    """F1 of "anomalous when score >= the validation threshold"."""
    return weighted_f1_at(scores, labels, threshold=threshold)


@register_metric("image_sensitivity", label="image sensitivity @val thr.", level="image",
                 weighted=weighted_sensitivity_at, thresholded=True)
def image_sensitivity(scores: np.ndarray, labels: np.ndarray, threshold: float) -> float:
    return weighted_sensitivity_at(scores, labels, threshold=threshold)


@register_metric("image_specificity", label="image specificity @val thr.", level="image",
                 weighted=weighted_specificity_at, thresholded=True)
def image_specificity(scores: np.ndarray, labels: np.ndarray, threshold: float) -> float:
    return weighted_specificity_at(scores, labels, threshold=threshold)


def validation_threshold(val_scores, val_labels) -> float | None:
    """The image threshold ("anomalous when score >= t") chosen on the validation split only.

    Both classes present: the threshold of the best validation F1 (the highest such score on ties).
    Only normal cases: their 95th percentile (an observed score; about 5 % of validation normals
    flagged). No finite validation score: None (the thresholded metrics are then left out).
    """
    scores = np.asarray(val_scores, dtype=float).reshape(-1)
    labels = np.asarray(val_labels).reshape(-1).astype(bool) if val_labels is not None else np.zeros(0, bool)
    if scores.size == 0 or labels.shape != scores.shape:
        return None
    keep = np.isfinite(scores)
    scores, labels = scores[keep], labels[keep]
    if scores.size == 0:
        return None
    if labels.any() and not labels.all():
        order = np.argsort(-scores, kind="mergesort")
        s, y = scores[order], labels[order]
        last = np.r_[s[1:] != s[:-1], True]          # the last case of each tied score
        tps, fps = np.cumsum(y)[last], np.cumsum(~y)[last]
        f1 = 2 * tps / (tps + fps + y.sum())
        return float(s[last][int(np.argmax(f1))])
    normals = scores[~labels] if (~labels).any() else scores
    return float(np.quantile(normals, 1.0 - NORMAL_ONLY_FALSE_POSITIVE_RATE, method="higher"))


def image_metrics(scores: np.ndarray, labels: np.ndarray, threshold: float | None = None) -> dict[str, float]:
    """Every registered image metric (all NaN when ``labels`` hold one class); the thresholded ones
    only when ``threshold`` (chosen on validation) is given."""
    scores_arr, labels_arr = _check_image_inputs(scores, labels)
    one_class = labels_arr.all() or not labels_arr.any()
    values = {}
    for m in metrics("image"):
        if m.thresholded and threshold is None:
            continue
        args = (threshold,) if m.thresholded else ()
        values[m.name] = NAN if one_class else float(m.compute(scores_arr, labels_arr, *args))
    return values
