"""Image metrics at the validation threshold (F1, sensitivity, specificity), F1-max (oracle) and the
threshold rule, against hand-computed cases and scikit-learn (issue 24 item 8)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_recall_curve, recall_score

from bench.analysis import stats
from bench.metrics import evaluate, get_metric
from bench.metrics.image import image_metrics, validation_threshold
from bench.metrics.weighted import weighted_f1_at, weighted_f1_max, weighted_sensitivity_at, weighted_specificity_at


def test_hand_case_at_a_threshold():
    # scores >= 0.5 flagged: TP = 2 (0.9, 0.6), FP = 1 (0.7), FN = 1 (0.2), TN = 2 (0.1, 0.4)
    scores = np.array([0.9, 0.6, 0.2, 0.7, 0.1, 0.4])
    labels = np.array([1, 1, 1, 0, 0, 0])
    values = image_metrics(scores, labels, threshold=0.5)
    assert values["image_f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))          # 0.667
    assert values["image_sensitivity"] == pytest.approx(2 / 3)
    assert values["image_specificity"] == pytest.approx(2 / 3)
    # F1-max: flag {0.9, 0.7, 0.6} -> TP 2, FP 1, FN 1 = 0.667; flag all but {0.1} -> TP 3 FP 2 = 0.75
    assert values["image_f1_max"] == pytest.approx(0.75)
    # a score equal to the threshold is flagged ("anomalous when score >= t")
    assert image_metrics(scores, labels, threshold=0.6)["image_sensitivity"] == pytest.approx(2 / 3)
    assert image_metrics(scores, labels, threshold=0.61)["image_sensitivity"] == pytest.approx(1 / 3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_match_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 80)
    scores = np.round(rng.normal(size=80) + labels, 1)          # many ties
    t = float(np.median(scores))
    flagged = (scores >= t).astype(int)
    values = image_metrics(scores, labels, threshold=t)
    assert values["image_f1"] == pytest.approx(f1_score(labels, flagged), abs=1e-12)
    assert values["image_sensitivity"] == pytest.approx(recall_score(labels, flagged), abs=1e-12)
    assert values["image_specificity"] == pytest.approx(recall_score(1 - labels, 1 - flagged), abs=1e-12)
    precision, recall, _ = precision_recall_curve(labels, scores)
    with np.errstate(invalid="ignore", divide="ignore"):
        best = np.nanmax(2 * precision * recall / (precision + recall))
    assert values["image_f1_max"] == pytest.approx(best, abs=1e-12)


def test_weighted_versions_equal_repeated_cases():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 2, 30)
    scores = np.round(rng.normal(size=30) + labels, 1)
    weights = rng.integers(0, 3, size=(4, 30)).astype(float)
    for b in range(4):
        idx = np.repeat(np.arange(30), weights[b].astype(int))
        for fn in (weighted_f1_at, weighted_sensitivity_at, weighted_specificity_at):
            assert fn(scores, labels, weights, threshold=0.3)[b] == pytest.approx(
                fn(scores[idx], labels[idx], threshold=0.3), nan_ok=True)
        assert weighted_f1_max(scores, labels, weights)[b] == pytest.approx(
            weighted_f1_max(scores[idx], labels[idx]), nan_ok=True)


def test_bootstrap_uses_the_threshold_or_leaves_the_metrics_out():
    labels = np.r_[np.zeros(10, int), np.ones(10, int)]
    scores = np.arange(20.0)
    weights = np.ones((3, 20))
    without = stats.image_metric_samples(scores, labels, weights)
    assert "image_f1" not in without and "image_f1_max" in without
    with_t = stats.image_metric_samples(scores, labels, weights, threshold=15.0)
    assert with_t["image_sensitivity"] == pytest.approx([0.5] * 3)
    assert with_t["image_specificity"] == pytest.approx([1.0] * 3)


def test_validation_threshold_rule():
    # both classes: the threshold of the best validation F1 (here a perfect split at 0.8)
    assert validation_threshold([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == pytest.approx(0.8)
    # normals only: their 95th percentile, an observed score
    normals = np.arange(100.0)
    t = validation_threshold(normals, np.zeros(100))
    assert t in normals and np.mean(normals >= t) == pytest.approx(0.05)
    assert validation_threshold([], []) is None
    assert get_metric("image_f1").thresholded and not get_metric("image_f1_max").thresholded
    assert "oracle" in get_metric("image_f1_max").label


def test_evaluate_chooses_the_threshold_on_validation_only():
    labels = np.r_[np.zeros(5, int), np.ones(5, int)]
    test_scores = np.r_[np.linspace(0, 1, 5), np.linspace(2, 3, 5)]
    res = evaluate(test_scores, labels, val_scores=np.linspace(0, 1.5, 20), val_labels=np.zeros(20))
    assert res["image_threshold"] == pytest.approx(np.quantile(np.linspace(0, 1.5, 20), 0.95, method="higher"))
    assert res["image_sensitivity"] == 1.0 and res["image_specificity"] == 1.0
    missing = evaluate(test_scores, labels)
    assert "image_f1" not in missing and "image_f1" in missing.unavailable
