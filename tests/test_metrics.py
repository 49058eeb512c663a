"""bench.metrics against scikit-learn, brute-force references and hand-computed cases."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import average_precision_score, roc_auc_score

from bench.metrics import aupro, best_dice, dice_at, evaluate, fpr_at_tpr, image_metrics, pixel_metrics

PROJECT = Path(__file__).resolve().parents[1]


def _tied_maps(seed: int, shape=(6, 12, 12), levels: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Random maps quantised to a few levels (many ties) and blobby masks correlated with them."""
    rng = np.random.default_rng(seed)
    masks = ndimage.binary_dilation(rng.random(shape) < 0.03, structure=np.ones((1, 3, 3))).astype(np.uint8)
    maps = np.round((rng.random(shape) + 0.6 * masks) * levels) / levels
    return maps, masks


def _reference_aupro(maps: np.ndarray, masks: np.ndarray, fpr_limit: float) -> float:
    """Slow, obviously-correct AUPRO: a loop over thresholds and regions, segments clipped at the limit."""
    regions = []
    for image_map, image_mask in zip(maps, masks):
        labelled, count = ndimage.label(image_mask, structure=np.ones((3, 3)))
        regions += [image_map[labelled == r] for r in range(1, count + 1)]
    normal_scores = maps[masks == 0]
    points = [(0.0, 0.0)]
    for t in np.unique(maps)[::-1]:
        fpr = np.mean(normal_scores >= t)
        pro = np.mean([np.mean(region >= t) for region in regions])
        points.append((fpr, pro))
    area = 0.0
    for (x0, y0), (x1, y1) in zip(points[:-1], points[1:]):
        if x0 >= fpr_limit or x1 == x0:
            continue
        x_end = min(x1, fpr_limit)
        y_end = y0 + (y1 - y0) * (x_end - x0) / (x1 - x0)
        area += (x_end - x0) * (y0 + y_end) / 2
    return area / fpr_limit


# ---------------------------------------------------------------- pixel AUROC / AP vs sklearn


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_pixel_auroc_and_ap_equal_sklearn_with_ties(seed):
    maps, masks = _tied_maps(seed, shape=(8, 16, 16), levels=5 + seed)
    assert len(np.unique(maps)) < maps.size / 50  # heavy ties
    result = pixel_metrics(maps, masks)
    assert result["pixel_auroc"] == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-9)
    assert result["pixel_ap"] == pytest.approx(average_precision_score(masks.ravel(), maps.ravel()), abs=1e-9)


def test_pixel_auroc_and_ap_equal_sklearn_continuous_float32():
    rng = np.random.default_rng(7)
    masks = (rng.random((5, 20, 20)) < 0.1).astype(np.uint8)
    maps = (rng.normal(size=masks.shape) + masks).astype(np.float32)
    result = pixel_metrics(maps, masks)
    assert result["pixel_auroc"] == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-9)
    assert result["pixel_ap"] == pytest.approx(average_precision_score(masks.ravel(), maps.ravel()), abs=1e-9)


# ---------------------------------------------------------------- image metrics


def test_image_metrics_match_sklearn_and_are_floats():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 60)
    scores = np.round(rng.normal(size=60) + labels, 1)
    result = image_metrics(scores, labels)
    # no validation threshold given: the thresholded metrics (F1, sensitivity, specificity) are left out
    assert set(result) == {"image_auroc", "image_ap", "image_fpr95", "image_f1_max"}
    assert all(type(v) is float for v in result.values())
    assert result["image_auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert result["image_ap"] == pytest.approx(average_precision_score(labels, scores), abs=1e-12)


def test_fpr_at_tpr_hand_case_keeps_collinear_point():
    # 20 anomalies, 20 normals. 18 anomalies on top (TPR 0.9, FPR 0), then two tie groups of
    # one anomaly + one normal each: (FPR 0.05, TPR 0.95) and (0.10, 1.0), then 18 normals.
    # TPR first reaches 0.95 at FPR 0.05. That point is collinear with its neighbours, so
    # roc_curve's default drop_intermediate=True would remove it and give 0.10.
    scores = np.concatenate([np.linspace(10, 9, 18), [5, 5, 4, 4], np.linspace(3, 0, 18)])
    labels = np.concatenate([np.ones(18), [1, 0, 1, 0], np.zeros(18)]).astype(int)
    assert fpr_at_tpr(scores, labels, 0.95) == pytest.approx(0.05)
    assert fpr_at_tpr(scores, labels, 0.90) == pytest.approx(0.0)
    assert fpr_at_tpr(scores, labels, 1.0) == pytest.approx(0.10)
    assert image_metrics(scores, labels)["image_fpr95"] == pytest.approx(0.05)


def test_fpr_at_tpr_perfect_and_inverted():
    labels = np.array([0, 0, 0, 1, 1, 1])
    assert fpr_at_tpr(np.arange(6.0), labels) == 0.0
    assert fpr_at_tpr(-np.arange(6.0), labels) == 1.0


# ---------------------------------------------------------------- Dice


def test_best_dice_and_dice_at_hand_case():
    scores = np.array([0.9, 0.8, 0.7, 0.1])
    targets = np.array([1, 0, 1, 0])
    # t=0.9: 2*1/(1+2)=2/3; t=0.8: 2/(2+2)=1/2; t=0.7: 4/(3+2)=4/5; t=0.1: 4/(4+2)=2/3
    dice, threshold = best_dice(scores, targets)
    assert dice == pytest.approx(0.8) and threshold == pytest.approx(0.7)
    assert dice_at(scores, targets, 0.7) == pytest.approx(0.8)  # score >= threshold is positive
    assert dice_at(scores, targets, 0.75) == pytest.approx(0.5)
    assert dice_at(scores, targets, 0.95) == pytest.approx(0.0)
    assert dice_at(scores, targets, -1.0) == pytest.approx(2 / 3)


def test_best_dice_never_splits_ties():
    # Splitting the tie at 0.5 would allow "only the first pixel" and Dice 1.0; the truth is 2/3.
    dice, threshold = best_dice(np.array([0.5, 0.5, 0.2]), np.array([1, 0, 0]))
    assert dice == pytest.approx(2 / 3) and threshold == 0.5


@pytest.mark.parametrize("seed", [0, 1])
def test_best_dice_equals_brute_force(seed):
    maps, masks = _tied_maps(seed, levels=9)
    brute = max((dice_at(maps, masks, t), t) for t in np.unique(maps))
    dice, threshold = best_dice(maps, masks)
    assert dice == pytest.approx(brute[0], abs=1e-12)
    assert dice_at(maps, masks, threshold) == pytest.approx(dice, abs=1e-12)


def test_dice_undefined_cases():
    assert np.isnan(best_dice(np.array([0.3, 0.2]), np.array([0, 0]))[0])
    assert np.isnan(dice_at(np.array([0.3, 0.2]), np.array([0, 0]), 0.5))  # 0 / 0
    assert dice_at(np.array([0.3, 0.2]), np.array([0, 0]), 0.25) == 0.0
    assert np.isnan(dice_at(np.array([0.3]), np.array([1]), float("nan")))


def test_pixel_dice_uses_validation_threshold_not_test():
    test_maps = np.array([[[0.9, 0.8], [0.6, 0.2]]])
    test_masks = np.array([[[1, 1], [0, 0]]])
    val_maps = np.array([[[0.7, 0.6], [0.5, 0.1]]])
    val_masks = np.array([[[1, 1], [1, 0]]])
    result = pixel_metrics(test_maps, test_masks, val_maps=val_maps, val_masks=val_masks)
    assert result["pixel_threshold"] == pytest.approx(0.5)  # best on val, Dice 1 there
    assert result["pixel_dice"] == pytest.approx(0.8)  # test at 0.5: 2*2 / (3 + 2)
    assert result["pixel_dice_oracle"] == pytest.approx(1.0)  # test at 0.8
    # Test used as its own validation reproduces the oracle: the two differ only by where t came from.
    self_val = pixel_metrics(test_maps, test_masks, val_maps=test_maps, val_masks=test_masks)
    assert self_val["pixel_dice"] == pytest.approx(1.0) and self_val["pixel_threshold"] == pytest.approx(0.8)


def test_pixel_dice_nan_without_usable_validation():
    maps, masks = _tied_maps(0)
    assert np.isnan(pixel_metrics(maps, masks)["pixel_dice"])
    assert np.isnan(pixel_metrics(maps, masks)["pixel_threshold"])
    no_positive = pixel_metrics(maps, masks, val_maps=maps, val_masks=np.zeros_like(masks))
    assert np.isnan(no_positive["pixel_dice"]) and np.isnan(no_positive["pixel_threshold"])
    assert not np.isnan(no_positive["pixel_dice_oracle"])


# ---------------------------------------------------------------- AUPRO


def test_aupro_perfect_and_inverted():
    _, masks = _tied_maps(4)
    perfect = masks + 0.1 * np.random.default_rng(0).random(masks.shape)
    assert aupro(perfect, masks) == pytest.approx(1.0, abs=1e-12)
    assert aupro(-perfect, masks) == pytest.approx(0.0, abs=1e-12)


def test_aupro_hand_case_averages_regions_not_pixels():
    # One row of 8 pixels: region A = pixel 0 (1 px), region B = pixels 3-5 (3 px), 4 normals.
    masks = np.array([[[1, 0, 0, 1, 1, 1, 0, 0]]])
    maps = np.array([[[0.9, 0.7, 0.5, 0.8, 0.4, 0.05, 0.3, 0.0]]])
    # (FPR, PRO) by descending threshold: 0.9 (0, 1/2), 0.8 (0, 2/3), 0.7 (1/4, 2/3),
    # 0.5 (1/2, 2/3), 0.4 (1/2, 5/6), 0.3 (3/4, 5/6), 0.05 (3/4, 1), 0.0 (1, 1).
    # Area to FPR 0.6: 0.5 * 2/3 + 0.1 * 5/6 = 5/12, normalised: (5/12) / 0.6 = 25/36.
    # Pixel-weighted PRO would give (0.5 * 1/2 + 0.1 * 3/4) / 0.6 = 0.5417; unnormalised 0.4167.
    assert aupro(maps, masks, fpr_limit=0.6) == pytest.approx(25 / 36, abs=1e-12)
    # To FPR 0.25 the PRO is 2/3 throughout.
    assert aupro(maps, masks, fpr_limit=0.25) == pytest.approx(2 / 3, abs=1e-12)


def test_aupro_interpolates_exactly_at_the_limit():
    # All scores tied: the curve is one straight segment (0,0)->(1,1), so the area to L is L^2/2.
    masks = np.zeros((2, 4, 4), dtype=np.uint8)
    masks[0, 1:3, 1:3] = 1
    for limit in (0.05, 0.3, 0.77, 1.0):
        assert aupro(np.ones(masks.shape), masks, fpr_limit=limit) == pytest.approx(limit / 2, abs=1e-12)


def test_aupro_regions_are_8_connected_and_per_image():
    # Image 0: diagonal pair {(0,0),(1,1)} is ONE 8-connected region; (3,3) another.
    # Image 1: a 3-px region at the same place as image 0's pair; must not merge across images.
    masks = np.zeros((2, 4, 4), dtype=np.uint8)
    masks[0, 0, 0] = masks[0, 1, 1] = masks[0, 3, 3] = 1
    masks[1, 0, 0] = masks[1, 0, 1] = masks[1, 1, 1] = 1
    maps = np.full(masks.shape, 0.5)
    maps[0, 0, 0] = 1.0  # only this pixel is above the rest
    # At 1.0: FPR 0 and PRO = mean(1/2, 0, 0) = 1/6 over 3 regions. 4-connectivity (4 regions)
    # would give 1/4; merging across images would give mean(1/5, 0) = 1/10.
    # At 0.5 everything else is flagged at once: a straight segment from (0, 1/6) to (1, 1).
    limit = 0.3
    expected = (1 / 6 + (1 / 6 + (1 - 1 / 6) * limit)) / 2
    assert aupro(maps, masks, fpr_limit=limit) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed,limit", [(0, 0.3), (1, 0.3), (2, 0.1), (3, 1.0)])
def test_aupro_equals_brute_force_reference(seed, limit):
    maps, masks = _tied_maps(seed, levels=6)
    assert aupro(maps, masks, fpr_limit=limit) == pytest.approx(_reference_aupro(maps, masks, limit), abs=1e-9)
    assert pixel_metrics(maps, masks, fpr_limit=limit)["pixel_aupro"] == pytest.approx(
        _reference_aupro(maps, masks, limit), abs=1e-9
    )


@pytest.mark.parametrize("limit", [0.3, 0.1])
def test_aupro_random_map_is_about_half_the_limit(limit):
    rng = np.random.default_rng(11)
    masks = ndimage.binary_dilation(rng.random((200, 32, 32)) < 0.01, structure=np.ones((1, 3, 3)))
    maps = rng.random(masks.shape)
    # ~1300 regions of ~9-30 px: the seed-to-seed spread is a few per cent. Without the division
    # by the limit the result would be limit^2 / 2, far outside this band.
    assert aupro(maps, masks, fpr_limit=limit) == pytest.approx(limit / 2, rel=0.1)


def test_aupro_is_normalised_by_limit():
    # A map that is perfect for half the regions and random for the rest: normalising by the
    # limit keeps the score in [0, 1] for every limit and makes the perfect map exactly 1.
    maps, masks = _tied_maps(5)
    for limit in (0.01, 0.3, 1.0):
        assert aupro(masks.astype(float), masks, fpr_limit=limit) == pytest.approx(1.0)
        assert 0.0 <= aupro(maps, masks, fpr_limit=limit) <= 1.0


# ---------------------------------------------------------------- undefined cases -> NaN


def test_image_metrics_nan_with_one_class():
    for labels in (np.zeros(5, int), np.ones(5, int)):
        result = image_metrics(np.arange(5.0), labels)
        assert all(np.isnan(v) for v in result.values())
    assert np.isnan(fpr_at_tpr(np.arange(5.0), np.zeros(5, int)))


def test_pixel_metrics_nan_without_anomalous_or_normal_pixels():
    maps = np.random.default_rng(0).random((2, 4, 4))
    for masks in (np.zeros((2, 4, 4), int), np.ones((2, 4, 4), int)):
        result = pixel_metrics(maps, masks, val_maps=maps, val_masks=masks)
        for key in ("pixel_auroc", "pixel_ap", "pixel_aupro"):
            assert np.isnan(result[key]), key
    assert np.isnan(pixel_metrics(maps, np.zeros((2, 4, 4), int))["pixel_dice_oracle"])
    assert np.isnan(aupro(maps, np.zeros((2, 4, 4), int)))


# ---------------------------------------------------------------- evaluate


def test_evaluate_combines_image_and_pixel_metrics_and_accepts_channel_axis():
    maps, masks = _tied_maps(1)
    labels = masks.reshape(len(masks), -1).any(axis=1).astype(int)
    labels[0], labels[1] = 0, 1
    scores = maps.reshape(len(maps), -1).max(axis=1)
    result = evaluate(scores, labels, maps, masks[:, None], val_maps=maps[:, None], val_masks=masks)
    assert set(result) == {
        "image_auroc", "image_ap", "image_fpr95", "image_f1_max",
        "pixel_auroc", "pixel_ap", "pixel_aupro", "pixel_dice", "pixel_dice_oracle", "pixel_threshold",
    }
    expected = {**image_metrics(scores, labels), **pixel_metrics(maps, masks, val_maps=maps, val_masks=masks)}
    assert result == pytest.approx(expected)
    assert set(evaluate(scores, labels, test_maps=maps)) == {"image_auroc", "image_ap", "image_fpr95", "image_f1_max"}


# ---------------------------------------------------------------- errors


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(2, 4, 4\).*\(2, 4, 5\)"):
        pixel_metrics(np.zeros((2, 4, 4)), np.zeros((2, 4, 5), int))
    with pytest.raises(ValueError, match="1-D of equal length"):
        image_metrics(np.zeros(4), np.zeros(3, int))
    with pytest.raises(ValueError, match="one map per test score"):
        evaluate(np.zeros(3), np.array([0, 1, 0]), np.zeros((2, 4, 4)), np.zeros((2, 4, 4), int))


def test_non_finite_values_are_counted():
    maps = np.zeros((2, 4, 4))
    maps[0, 0, :2] = np.nan
    maps[1, 1, 1] = np.inf
    with pytest.raises(ValueError, match="maps contains 3 non-finite values"):
        pixel_metrics(maps, np.zeros((2, 4, 4), int))
    with pytest.raises(ValueError, match="scores contains 1 non-finite values"):
        image_metrics(np.array([0.1, np.nan, 0.3]), np.array([0, 1, 0]))
    with pytest.raises(ValueError, match="val_maps contains 3 non-finite values"):
        pixel_metrics(np.zeros((2, 4, 4)), np.zeros((2, 4, 4), int), val_maps=maps, val_masks=np.zeros((2, 4, 4)))


def test_non_binary_masks_and_labels_are_rejected():
    with pytest.raises(ValueError, match="masks must be binary"):
        pixel_metrics(np.zeros((1, 2, 2)), np.array([[[0, 1], [2, 1]]]))
    with pytest.raises(ValueError, match="labels must be binary"):
        image_metrics(np.arange(3.0), np.array([0, 1, 255]))
    with pytest.raises(ValueError, match="fpr_limit must be in"):
        aupro(np.zeros((1, 2, 2)), np.zeros((1, 2, 2), int), fpr_limit=0.0)


# ---------------------------------------------------------------- foreground variants, no validation split


def _reference_aupro_fg(maps, masks, fg, fpr_limit):
    """Brute force over foreground pixels only: regions are components of mask & fg."""
    regions = []
    for image_map, image_mask, image_fg in zip(maps, masks, fg):
        labelled, count = ndimage.label(image_mask & image_fg, structure=np.ones((3, 3)))
        regions += [image_map[labelled == r] for r in range(1, count + 1)]
    normal_scores = maps[(masks == 0) & fg]
    points = [(0.0, 0.0)]
    for t in np.unique(maps[fg])[::-1]:
        points.append((np.mean(normal_scores >= t), np.mean([np.mean(region >= t) for region in regions])))
    area = 0.0
    for (x0, y0), (x1, y1) in zip(points[:-1], points[1:]):
        if x0 >= fpr_limit or x1 == x0:
            continue
        x_end = min(x1, fpr_limit)
        area += (x_end - x0) * (y0 + y0 + (y1 - y0) * (x_end - x0) / (x1 - x0)) / 2
    return area / fpr_limit


def test_foreground_hand_case_ignores_background_pixels():
    # one image, 2 x 4: the two right-hand pixels are background; one of them is the hottest pixel
    maps = np.array([[[0.9, 0.2, 5.0, 0.0], [0.8, 0.1, 0.0, 0.0]]])
    masks = np.array([[[1, 0, 0, 0], [1, 0, 0, 0]]])
    fg = np.array([[[[1, 1, 0, 0], [1, 1, 0, 0]]]], np.uint8)
    result = evaluate(np.array([1.0]), np.array([1]), maps, masks, val_maps=maps, val_masks=masks, test_foreground=fg)
    assert result["pixel_auroc"] == pytest.approx(5 / 6)          # the background pixel ranks above both positives
    assert result["pixel_auroc_fg"] == pytest.approx(1.0)
    assert result["pixel_ap_fg"] == pytest.approx(1.0)
    assert result["pixel_dice_oracle_fg"] == pytest.approx(1.0)
    # validation threshold (all val pixels): 0.8, Dice 0.8 there; on the foreground it flags exactly the mask
    assert result["pixel_threshold"] == pytest.approx(0.8) and result["pixel_dice"] == pytest.approx(0.8)
    assert result["pixel_dice_fg"] == pytest.approx(1.0)
    assert "pixel_auroc_fg" not in evaluate(np.array([1.0]), np.array([1]), maps, masks)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_foreground_metrics_equal_brute_force(seed):
    maps, masks = _tied_maps(seed, shape=(5, 14, 14), levels=9)
    rng = np.random.default_rng(seed)
    fg = np.zeros((5, 1, 14, 14), np.uint8)
    fg[:, :, 2:12, 1:13] = 1
    fg[rng.random(fg.shape) < 0.1] = 0
    select = fg[:, 0] > 0
    val_fg = fg[::-1].copy()
    result = evaluate(maps.max(axis=(1, 2)), np.r_[0, 1, 1, 0, 1], maps, masks, val_maps=maps[::-1],
                      val_masks=masks[::-1], test_foreground=fg, val_foreground=val_fg)
    scores, targets = maps[select], masks[select]
    assert result["pixel_auroc_fg"] == pytest.approx(roc_auc_score(targets, scores), abs=1e-12)
    assert result["pixel_ap_fg"] == pytest.approx(average_precision_score(targets, scores), abs=1e-12)
    assert result["pixel_dice_oracle_fg"] == pytest.approx(best_dice(scores, targets)[0], abs=1e-12)
    assert result["pixel_aupro_fg"] == pytest.approx(_reference_aupro_fg(maps, masks.astype(bool), select, 0.3),
                                                     abs=1e-9)
    _, val_threshold = best_dice(maps[::-1][val_fg[:, 0] > 0], masks[::-1][val_fg[:, 0] > 0])
    assert result["pixel_dice_fg"] == pytest.approx(dice_at(scores, targets, val_threshold), abs=1e-12)
    # all-ones foreground reproduces the all-pixel metrics
    ones = evaluate(maps.max(axis=(1, 2)), np.r_[0, 1, 1, 0, 1], maps, masks, val_maps=maps, val_masks=masks,
                    test_foreground=np.ones_like(fg))
    for name in ("pixel_auroc", "pixel_ap", "pixel_aupro", "pixel_dice", "pixel_dice_oracle"):
        assert ones[name + "_fg"] == pytest.approx(ones[name], abs=1e-12), name


def test_foreground_shape_is_checked():
    maps, masks = _tied_maps(0)
    with pytest.raises(ValueError, match="test_foreground must be"):
        evaluate(maps.max(axis=(1, 2)), np.r_[0, 1, 0, 1, 0, 1], maps, masks, test_foreground=np.ones((6, 1, 5, 5)))


def test_no_validation_split_leaves_dice_out_and_says_why():
    maps, masks = _tied_maps(2)
    labels = np.r_[0, 1, 0, 1, 0, 1]
    result = evaluate(maps.max(axis=(1, 2)), labels, maps, masks, test_foreground=np.ones((6, 1, 12, 12)))
    assert "pixel_dice" not in result and "pixel_threshold" not in result and "pixel_dice_fg" not in result
    pixel_unavailable = {k: v for k, v in result.unavailable.items() if k.startswith("pixel_")}
    assert pixel_unavailable == {"pixel_dice": "no validation split", "pixel_dice_fg": "no validation split"}
    assert np.isfinite(result["pixel_dice_oracle"]) and np.isfinite(result["pixel_aupro"])


def test_registry_drives_names_labels_and_directions():
    from bench.metrics import get_metric, lower_is_better, metric_label, metric_names, register_metric
    assert metric_names("image")[:3] == ["image_auroc", "image_ap", "image_fpr95"]
    assert set(metric_names("pixel", foreground=True)) == {n + "_fg" for n in metric_names("pixel", foreground=False)}
    assert {m for m in metric_names() if lower_is_better(m)} == {"image_fpr95"}
    assert metric_label("pixel_aupro_fg") == "pixel AUPRO@0.3 (foreground)"
    assert get_metric("image_auroc").weighted is not None
    with pytest.raises(ValueError, match="level must be"):
        register_metric("voxel_x", label="x", level="voxel")
    with pytest.raises(ValueError, match="start with their level"):
        register_metric("auroc2", label="x", level="image")
    with pytest.raises(ValueError, match="registered twice"):
        register_metric("image_auroc", label="x", level="image")(lambda s, y: 0.0)


# ---------------------------------------------------------------- imports


def test_pixel_metrics_on_many_pixels_match_sklearn():
    """Correctness at scale (speed is measured by ``python -m bench perf``, never asserted here)."""
    rng = np.random.default_rng(0)
    masks = ndimage.binary_dilation(rng.random((60, 48, 48)) < 0.003, structure=np.ones((1, 5, 5)))
    maps = (rng.random(masks.shape) + masks).astype(np.float32)
    result = pixel_metrics(maps, masks, val_maps=maps[:10], val_masks=masks[:10])
    assert result["pixel_auroc"] == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-9)
    assert result["pixel_aupro"] > 0.5


def test_module_does_not_import_torch():
    code = "import sys, bench.metrics; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], cwd=PROJECT, check=True)
