"""The shared building blocks of every metric: input checks, one descending sort, exact curves.

Numpy in, plain floats out; undefined values (one class only, no anomalous pixels) are ``NaN``
rather than errors, so a record can still be written and the report shows the gap.

* Image level: AUROC and AP via scikit-learn; FPR at 95 % TPR (OpenOOD's FPR@95) on the full ROC.
* Pixel AUROC and AP are exact: one descending sort of the scores, cumulative counts of anomalous
  and normal pixels, and the last position of each tied score as the operating point (the same
  curve scikit-learn builds, without its per-call overhead or a threshold loop).
* AUPRO follows the MVTec AD definition (Bergmann et al., "The MVTec Anomaly Detection Dataset",
  IJCV 2021): the per-region overlap (PRO) averaged over the connected ground-truth regions, traced
  against the false-positive rate on normal pixels and integrated up to ``fpr_limit``. The area is
  **divided by fpr_limit**, so a perfect map scores 1.0 and a random map about ``fpr_limit / 2``.
  anomalib <= 2.2 normalised by the averaged FPR end-point instead, which inflated published
  numbers (anomalib issue #3718); dividing by the limit is the definition this suite uses.
* Dice is thresholded, so its threshold must not come from the test labels: ``pixel_dice`` uses the
  threshold that maximises pooled Dice on the *validation* maps; ``pixel_dice_oracle`` is the best
  pooled Dice over all thresholds on the test set itself (MedIAnomaly's "best Dice"), reported
  beside it and named as an oracle upper bound (the project's rule: test labels never choose a
  threshold; see the README's "Metrics" section).

A threshold ``t`` always means "anomalous when score >= t".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from sklearn.metrics import roc_curve

__all__ = ["aupro", "best_dice", "dice_at", "fpr_at_tpr"]

NAN = float("nan")


# --------------------------------------------------------------------------------------------
# Input checks: one line naming the argument and what was expected.
# --------------------------------------------------------------------------------------------


def _as_finite_scores(values: np.ndarray, name: str) -> np.ndarray:
    """Floating copy-free view of ``values``; float16 is widened, integers become float64."""
    array = np.asarray(values)
    if array.dtype == np.float16:
        array = array.astype(np.float32)
    elif not np.issubdtype(array.dtype, np.floating):
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
            raise ValueError(f"{name} must be numeric, got dtype {array.dtype}")
        array = array.astype(np.float64)
    bad = array.size - int(np.count_nonzero(np.isfinite(array)))
    if bad:
        raise ValueError(f"{name} contains {bad} non-finite values (NaN or inf); expected finite scores")
    return array


def _as_binary(values: np.ndarray, name: str) -> np.ndarray:
    """Boolean view of a {0, 1} (or bool) array; anything else is an error."""
    array = np.asarray(values)
    if array.dtype == np.bool_:
        return array
    if not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"{name} must be binary {{0, 1}}, got dtype {array.dtype}")
    bad = int(np.count_nonzero((array != 0) & (array != 1)))
    if bad:
        raise ValueError(f"{name} must be binary {{0, 1}}; found {bad} other values")
    return array != 0


def _check_image_inputs(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores_arr = np.asarray(scores)
    labels_arr = np.asarray(labels)
    if scores_arr.ndim != 1 or labels_arr.ndim != 1 or scores_arr.shape != labels_arr.shape:
        raise ValueError(
            f"scores and labels must be 1-D of equal length, got shapes {scores_arr.shape} and {labels_arr.shape}"
        )
    return _as_finite_scores(scores_arr, "scores"), _as_binary(labels_arr, "labels")


def _drop_channel(array: np.ndarray) -> np.ndarray:
    """``[N, 1, H, W]`` -> ``[N, H, W]``; other shapes are returned unchanged."""
    return array[:, 0] if array.ndim == 4 and array.shape[1] == 1 else array


def _check_pixel_inputs(
    maps: np.ndarray, masks: np.ndarray, maps_name: str = "maps", masks_name: str = "masks"
) -> tuple[np.ndarray, np.ndarray]:
    """Maps and masks as ``[N, H, W]`` float / bool; a singleton channel axis is accepted on either."""
    maps_arr, masks_arr = np.asarray(maps), np.asarray(masks)
    maps_3d, masks_3d = _drop_channel(maps_arr), _drop_channel(masks_arr)
    if maps_3d.ndim != 3 or maps_3d.shape != masks_3d.shape:
        raise ValueError(
            f"{maps_name} and {masks_name} must both be [N, H, W] or [N, 1, H, W] with the same N, H, W; "
            f"got {maps_name} {maps_arr.shape} and {masks_name} {masks_arr.shape}"
        )
    return _as_finite_scores(maps_3d, maps_name), _as_binary(masks_3d, masks_name)


def _check_fraction(value: float, name: str) -> float:
    if not 0.0 < float(value) <= 1.0:
        raise ValueError(f"{name} must be in (0, 1], got {value}")
    return float(value)


# --------------------------------------------------------------------------------------------
# The shared curve: one descending sort, cumulative sums read at the end of each tie group.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _DescendingOrder:
    """Scores sorted high to low, and where each group of tied scores ends.

    Reading a cumulative sum at ``ends`` gives its value for the threshold ``thresholds[k]``
    (everything with score >= that threshold counted), so ties are never split.
    """

    order: np.ndarray  # [n] indices that sort the scores descending
    ends: np.ndarray  # [k] last sorted position of each distinct score
    thresholds: np.ndarray  # [k] the distinct scores, descending

    @classmethod
    def of(cls, scores: np.ndarray) -> _DescendingOrder:
        return cls.from_order(scores, _ascending_order(scores)[::-1])

    @classmethod
    def from_order(cls, scores: np.ndarray, order: np.ndarray) -> _DescendingOrder:
        """From ``order``, indices that sort ``scores`` descending (ties in any order: only group
        ends are read)."""
        ranked = scores[order]
        ends = np.append(np.flatnonzero(ranked[1:] != ranked[:-1]), ranked.size - 1)
        return cls(order=order, ends=ends, thresholds=ranked[ends])

    def within(self, select: np.ndarray, scores: np.ndarray) -> _DescendingOrder:
        """The order of the selected scores ``scores = all_scores[select]`` (``select`` a boolean mask
        over this order's scores), read off this sort in linear time instead of sorting again."""
        select = select.ravel()
        position = np.cumsum(select, dtype=np.int64) - 1      # index of a selected score among them
        kept = self.order[select[self.order]]
        return _DescendingOrder.from_order(scores, position[kept])

    def counts(self, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(true positives, false positives) per threshold, as exact integers."""
        true_pos = np.cumsum(targets[self.order], dtype=np.int64)[self.ends]
        false_pos = (self.ends + 1) - true_pos
        return true_pos, false_pos

    def cumulative(self, weights: np.ndarray) -> np.ndarray:
        """Sum of ``weights`` over the samples at or above each threshold."""
        return np.cumsum(weights[self.order], dtype=np.float64)[self.ends]


def _ascending_order(scores: np.ndarray) -> np.ndarray:
    """Indices that sort ``scores`` ascending (stable).

    Why not ``np.argsort``: a test set's maps are millions of float32 pixels and sorting them was
    most of a cell's metric time. Packing each value's order-preserving bit pattern (sign-flipped
    IEEE bits) above its index into one uint64 and sorting those plain integers gives the same
    order, ties by index, in about half the time. Other dtypes, or more than 2**32 scores, use
    ``np.argsort``.
    """
    if scores.dtype != np.float32 or scores.size >= 2**32:
        return np.argsort(scores)
    bits = scores.view(np.uint32).astype(np.uint64)
    negative = bits >= 0x80000000
    bits = np.where(negative, bits ^ 0xFFFFFFFF, bits | 0x80000000)   # negatives reversed, below positives
    keys = (bits << np.uint64(32)) | np.arange(scores.size, dtype=np.uint64)
    keys.sort()
    return (keys & np.uint64(0xFFFFFFFF)).astype(np.intp)


def _trapezoid(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) * 0.5))


def _auroc_from_counts(true_pos: np.ndarray, false_pos: np.ndarray) -> float:
    positives, negatives = true_pos[-1], false_pos[-1]
    if positives == 0 or negatives == 0:
        return NAN
    tpr = np.concatenate(([0.0], true_pos / positives))
    fpr = np.concatenate(([0.0], false_pos / negatives))
    return _trapezoid(fpr, tpr)


def _ap_from_counts(true_pos: np.ndarray, false_pos: np.ndarray) -> float:
    """Step-wise AP, sum of (R_k - R_{k-1}) P_k, as scikit-learn defines it (no interpolation)."""
    positives, negatives = true_pos[-1], false_pos[-1]
    if positives == 0 or negatives == 0:
        return NAN
    precision = true_pos / (true_pos + false_pos)
    recall = true_pos / positives
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def _best_dice_from_counts(
    true_pos: np.ndarray, false_pos: np.ndarray, thresholds: np.ndarray
) -> tuple[float, float]:
    positives = true_pos[-1]
    if positives == 0:
        return NAN, NAN
    dice = 2.0 * true_pos / (true_pos + false_pos + positives)
    best = int(np.argmax(dice))  # first maximum = highest threshold among equals
    return float(dice[best]), float(thresholds[best])


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------


def fpr_at_tpr(scores: np.ndarray, labels: np.ndarray, tpr: float = 0.95) -> float:
    """False-positive rate at the first (highest) threshold whose TPR reaches ``tpr``.

    The full ROC curve is used (``drop_intermediate=False``): scikit-learn's default drops
    collinear points, which can remove exactly that first threshold and report a larger FPR.
    NaN when ``labels`` hold only one class.
    """
    target = _check_fraction(tpr, "tpr")
    scores_arr, labels_arr = _check_image_inputs(scores, labels)
    if labels_arr.all() or not labels_arr.any():
        return NAN
    fpr, tpr_curve, _ = roc_curve(labels_arr, scores_arr, drop_intermediate=False)
    return float(fpr[int(np.argmax(tpr_curve >= target))])


def dice_at(scores: np.ndarray, targets: np.ndarray, threshold: float) -> float:
    """Pooled Dice ``2|P ∩ T| / (|P| + |T|)`` with ``P = scores >= threshold``.

    Any shape; ``scores`` and ``targets`` must match. NaN when both P and T are empty (0/0) or
    the threshold is NaN (no threshold could be chosen).
    """
    scores_arr, targets_arr = np.asarray(scores), np.asarray(targets)
    if scores_arr.shape != targets_arr.shape:
        raise ValueError(f"scores and targets must have the same shape, got {scores_arr.shape} and {targets_arr.shape}")
    scores_arr = _as_finite_scores(scores_arr, "scores")
    targets_arr = _as_binary(targets_arr, "targets")
    if np.isnan(threshold):
        return NAN
    predicted = scores_arr >= threshold
    denominator = int(np.count_nonzero(predicted)) + int(np.count_nonzero(targets_arr))
    if denominator == 0:
        return NAN
    return 2.0 * int(np.count_nonzero(predicted & targets_arr)) / denominator


def best_dice(scores: np.ndarray, targets: np.ndarray) -> tuple[float, float]:
    """Best pooled Dice over every distinct threshold, and that threshold: ``(dice, threshold)``.

    Exact: one sort and cumulative counts evaluate all thresholds at once (MedIAnomaly searched
    200 quantiles instead). Among equal maxima the highest threshold is returned. ``(NaN, NaN)``
    when ``targets`` has no positives, because no threshold can be learnt from it.
    """
    scores_arr, targets_arr = np.asarray(scores), np.asarray(targets)
    if scores_arr.shape != targets_arr.shape:
        raise ValueError(f"scores and targets must have the same shape, got {scores_arr.shape} and {targets_arr.shape}")
    scores_flat = _as_finite_scores(scores_arr, "scores").ravel()
    targets_flat = _as_binary(targets_arr, "targets").ravel()
    if scores_flat.size == 0:
        return NAN, NAN
    order = _DescendingOrder.of(scores_flat)
    true_pos, false_pos = order.counts(targets_flat)
    return _best_dice_from_counts(true_pos, false_pos, order.thresholds)


def _region_weights(masks: np.ndarray) -> tuple[np.ndarray, int]:
    """Per-pixel weight ``1 / (|region| * R)`` for anomalous pixels (0 elsewhere), and R.

    Regions are 8-connected components found separately in each image (the structuring
    element connects pixels within a slice only, never across images).
    """
    within_slice = np.zeros((3, 3, 3), dtype=bool)
    within_slice[1] = True
    labelled, n_regions = ndimage.label(masks, structure=within_slice)
    if n_regions == 0:
        return np.zeros(masks.size, dtype=np.float64), 0
    sizes = np.bincount(labelled.ravel(), minlength=n_regions + 1).astype(np.float64)
    weight_of_label = np.zeros(n_regions + 1, dtype=np.float64)
    weight_of_label[1:] = 1.0 / (sizes[1:] * n_regions)
    return weight_of_label[labelled.ravel()], n_regions


def _aupro_from_order(
    order: _DescendingOrder, false_pos: np.ndarray, weights: np.ndarray, n_regions: int, fpr_limit: float
) -> float:
    """AUPRO from the shared sort; ``weights`` are :func:`_region_weights` of the sorted pixels."""
    negatives = false_pos[-1]
    if n_regions == 0 or negatives == 0:
        return NAN
    fpr = np.concatenate(([0.0], false_pos / negatives))
    pro = np.concatenate(([0.0], order.cumulative(weights)))
    # The lowest threshold flags every pixel, so fpr ends at 1 and the limit is always reached.
    k = int(np.searchsorted(fpr, fpr_limit, side="left"))
    step = (fpr_limit - fpr[k - 1]) / (fpr[k] - fpr[k - 1])
    pro_at_limit = pro[k - 1] + step * (pro[k] - pro[k - 1])
    x = np.append(fpr[:k], fpr_limit)
    y = np.append(pro[:k], pro_at_limit)
    return _trapezoid(x, y) / fpr_limit


def aupro(maps: np.ndarray, masks: np.ndarray, fpr_limit: float = 0.3) -> float:
    """Area under the PRO curve up to ``fpr_limit``, divided by ``fpr_limit`` (range [0, 1]).

    PRO at a threshold is the mean over all ground-truth regions (8-connected components of each
    image's mask) of the fraction of the region's pixels with score >= threshold; FPR is the
    fraction of all normal pixels (mask 0, any image) above it. Each region counts equally, however
    large (Bergmann et al., IJCV 2021). The curve is integrated with the trapezoid rule from FPR 0
    to ``fpr_limit``, linearly interpolated exactly at the limit, and divided by the limit: a
    perfect map gives 1.0, a fully inverted one 0.0 and a random one about ``fpr_limit / 2``.
    Vectorised and exact: normal pixels carry weight 1/N_normal and region pixels
    1/(|region| * R), accumulated in score order. NaN without regions or without normal pixels.
    """
    limit = _check_fraction(fpr_limit, "fpr_limit")
    maps_3d, masks_3d = _check_pixel_inputs(maps, masks)
    if maps_3d.size == 0:
        return NAN
    order = _DescendingOrder.of(maps_3d.ravel())
    _, false_pos = order.counts(masks_3d.ravel())
    return _aupro_from_order(order, false_pos, *_region_weights(masks_3d), limit)
