"""Statistics for paper-ready results: seed summaries, bootstrap CIs, paired and rank tests.

Why these and not just "mean ± std over seeds": seeds capture training noise only. The test set
is a sample too, so every metric also gets a 95% bootstrap confidence interval over *test cases*;
where a dataset has patients (``test_groups``) whole patients are resampled, because slices of
one patient are not independent (the cluster bootstrap; Efron & Tibshirani 1993, ch. 6; the
MOOD challenge bootstraps over cases for the same reason).

Everything works on *weights*: a bootstrap resample is a vector of case multiplicities, so a
metric on resample ``b`` is the weighted metric with weights ``W[b]``. This makes a thousand
resamples of a 600-case test set one vectorised pass, lets every method of a dataset share the
same resamples (which is what makes the paired bootstrap paired), and pixel-level metrics
reduce to matrix products of per-image counts.

Rank tests follow Demšar (2006), "Statistical comparisons of classifiers over multiple data
sets", JMLR 7: Friedman's test on the ranks of methods within each dataset, and the Nemenyi
critical difference ``CD = q_alpha * sqrt(k (k + 1) / (6 N))`` for the CD diagram.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from bench.analysis.pixsum import PixelCounts, counts_from_summary, summarize, threshold_grid  # noqa: F401 - re-exported
from bench.metrics import metrics
from bench.metrics.weighted import (  # noqa: F401 - re-exported
    _as_weight_matrix,
    weighted_auroc,
    weighted_average_precision,
    weighted_fpr_at_tpr,
)

#: Integration limit of AUPRO (false-positive rate); the area is normalised by it.
AUPRO_FPR_LIMIT = 0.3


# ---------------------------------------------------------------------------------------------
# Seeds
# ---------------------------------------------------------------------------------------------
def mean_std(values) -> tuple[float, float, int]:
    """Mean, sample standard deviation (ddof=1; 0.0 for a single value) and count of the finite values."""
    arr = np.asarray(values, dtype=float)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return float("nan"), float("nan"), 0
    std = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    return float(arr.mean()), std, int(arr.size)


def stable_seed(*parts: object) -> int:
    """A seed derived from names, identical across processes (python's ``hash`` is salted)."""
    return zlib.crc32("|".join(str(p) for p in parts).encode()) & 0x7FFFFFFF


# ---------------------------------------------------------------------------------------------
# Group bootstrap
# ---------------------------------------------------------------------------------------------
def group_bootstrap_weights(groups, n_resamples: int, seed: int) -> np.ndarray:
    """Case multiplicities ``[n_resamples, N]`` of a bootstrap that resamples whole groups.

    Each resample draws as many groups as there are, with replacement; every case of a group
    drawn ``c`` times gets weight ``c``, so groups are kept whole. ``groups=None`` (or all
    distinct) is the ordinary case bootstrap.
    """
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    groups = np.asarray(groups)
    if groups.ndim != 1 or groups.size == 0:
        raise ValueError(f"groups must be a non-empty 1-D array, got shape {groups.shape}")
    _, inverse = np.unique(groups, return_inverse=True)
    n_groups = int(inverse.max()) + 1
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_groups, size=(n_resamples, n_groups))
    flat = draws + (np.arange(n_resamples) * n_groups)[:, None]
    counts = np.bincount(flat.ravel(), minlength=n_resamples * n_groups).reshape(n_resamples, n_groups)
    return counts[:, inverse].astype(np.int32)


def weights_to_indices(weights: np.ndarray) -> list[np.ndarray]:
    """The explicit index lists of resamples given as multiplicities (for inspection and tests)."""
    weights = np.atleast_2d(weights)
    cases = np.arange(weights.shape[1])
    return [np.repeat(cases, row) for row in weights]


def percentile_interval(samples, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the finite samples (NaN when none is finite)."""
    arr = np.asarray(samples, dtype=float)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return float("nan"), float("nan")
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(arr, [tail, 100.0 - tail])
    return float(low), float(high)


# ---------------------------------------------------------------------------------------------
# Weighted image-level metrics live beside their exact versions (bench.metrics.weighted); the
# bootstrap reads them from the metric registry.
# ---------------------------------------------------------------------------------------------
def image_metric_samples(scores, labels, weights, threshold: float | None = None) -> dict[str, np.ndarray]:
    """Every image-level metric that declares a weighted version, on every resample: ``{metric: [B]}``
    (the thresholded ones at the cell's validation ``threshold``, when it has one)."""
    return {name: np.atleast_1d(fn(scores, labels, weights))
            for name, fn in image_metrics_weighted(threshold).items()}


def image_metrics_weighted(threshold: float | None = None) -> dict[str, Callable]:
    """Image-level metric name -> its case-weighted implementation ``(scores, labels, weights)`` (from
    the metric registry); thresholded metrics are bound to ``threshold``, and left out without one."""
    import functools

    usable = threshold is not None and np.isfinite(threshold)
    return {m.name: (functools.partial(m.weighted, threshold=float(threshold)) if m.thresholded else m.weighted)
            for m in metrics("image") if m.weighted is not None and (usable or not m.thresholded)}


# ---------------------------------------------------------------------------------------------
# Pixel-level metrics from per-image counts
# ---------------------------------------------------------------------------------------------
def pixel_counts(maps, masks, n_thresholds: int = 512, dice_threshold: float | None = None) -> PixelCounts:
    """Bin anomaly maps ``[N, H, W]`` against ground-truth masks (``[N, H, W]`` or ``[N, 1, H, W]``).

    Regions for AUPRO are 8-connected components of each mask. Thresholds come from
    :func:`threshold_grid`. The binning is the compact per-case summary's (``bench.analysis.pixsum``),
    so counts from full maps and from a stored summary are the same numbers.
    """
    return counts_from_summary(summarize(maps, masks, dice_threshold=dice_threshold, n_thresholds=n_thresholds))


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def pixel_metric_samples(counts: PixelCounts, weights=None) -> dict[str, np.ndarray]:
    """Pixel AUROC, AP, AUPRO (normalised by its FPR limit), oracle best Dice and Dice per resample."""
    n = counts.pos_total.size
    w, _ = _as_weight_matrix(weights, n)
    tp = w @ counts.pos_above                      # [B, T], thresholds ascending
    fp = w @ counts.neg_above
    p_total, n_total = w @ counts.pos_total, w @ counts.neg_total
    tpr = _ratio(tp, p_total[:, None])
    fpr = _ratio(fp, n_total[:, None])
    # Curves from the highest threshold down, starting at the origin.
    tpr_desc = np.concatenate([np.zeros((len(w), 1)), tpr[:, ::-1]], axis=1)
    fpr_desc = np.concatenate([np.zeros((len(w), 1)), fpr[:, ::-1]], axis=1)
    auroc = np.sum(np.diff(fpr_desc, axis=1) * (tpr_desc[:, 1:] + tpr_desc[:, :-1]) / 2.0, axis=1)

    precision = _ratio(tp, tp + fp)[:, ::-1]
    precision = np.nan_to_num(precision, nan=0.0)
    ap = np.sum(np.diff(tpr_desc, axis=1) * precision, axis=1)

    out = {"pixel_auroc": auroc, "pixel_ap": ap}
    if counts.region_overlap.shape[0]:
        rw = w[:, counts.region_image]
        pro = _ratio(rw @ counts.region_overlap, rw.sum(axis=1, keepdims=True))[:, ::-1]
        pro_desc = np.concatenate([np.zeros((len(w), 1)), pro], axis=1)
        out["pixel_aupro"] = _partial_areas(fpr_desc, pro_desc, AUPRO_FPR_LIMIT) / AUPRO_FPR_LIMIT
    dice_oracle = _ratio(2 * tp, 2 * tp + fp + (p_total[:, None] - tp))
    out["pixel_dice_oracle"] = np.nanmax(np.nan_to_num(dice_oracle, nan=-np.inf), axis=1)
    if counts.dice_counts is not None:
        tp_d, fp_d, fn_d = (w @ counts.dice_counts).T
        out["pixel_dice"] = _ratio(2 * tp_d, 2 * tp_d + fp_d + fn_d)
    invalid = ~((p_total > 0) & (n_total > 0))
    for key in out:
        out[key] = np.where(invalid, np.nan, out[key])
    return out


def _partial_areas(x: np.ndarray, y: np.ndarray, limit: float) -> np.ndarray:
    """Trapezoidal area under each row's ``y(x)`` for ``x`` in ``[0, limit]`` (rows of ``[B, T]``, ``x``
    non-decreasing from 0; the last segment interpolated at ``limit``; NaN for a row with NaN or inf).

    Why all rows at once: one Python call per resample was a fifth of a 1000-record report's bootstrap.
    Rows are summed in groups of the same number of terms, so numpy's pairwise sum adds each row's
    terms in the order a one-row ``np.sum`` does: bit for bit the per-row result
    (``tests/test_stats.py`` keeps that one-row function as the reference).
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    out = np.full(len(x), np.nan)
    finite = np.isfinite(x).all(axis=1) & np.isfinite(y).all(axis=1)
    if not finite.any():
        return out
    rows = np.flatnonzero(finite)
    xf, yf = x[rows], y[rows]
    kept = np.count_nonzero(xf <= limit, axis=1)                 # x non-decreasing: a prefix of each row
    n_cols = x.shape[1]
    terms = np.diff(xf, axis=1) * (yf[:, 1:] + yf[:, :-1]) / 2.0   # [B, T - 1]
    last = np.take_along_axis(xf, np.maximum(kept - 1, 0)[:, None], axis=1)[:, 0]
    cross = (kept < n_cols) & (kept > 0) & (last < limit)        # the curve passes the limit between points
    n_terms = np.maximum(kept - 1, 0) + cross
    if cross.any():
        i = np.flatnonzero(cross)
        k = kept[i]
        x0, x1, y0, y1 = xf[i, k - 1], xf[i, k], yf[i, k - 1], yf[i, k]
        with np.errstate(invalid="ignore", divide="ignore"):
            y_lim = np.where(x1 > x0, y0 + (y1 - y0) * (limit - x0) / (x1 - x0), y1)
        terms[i, k - 1] = (limit - x0) * (y_lim + y0) / 2.0      # replaces the step past the limit
    for n in np.unique(n_terms):
        group = np.flatnonzero(n_terms == n)
        out[rows[group]] = np.ascontiguousarray(terms[group, :n]).sum(axis=1)
    return out


# ---------------------------------------------------------------------------------------------
# Paired comparisons
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PairedComparison:
    """Difference ``a - b`` of a metric with its bootstrap CI and two-sided p-value."""

    difference: float
    low: float
    high: float
    p_value: float
    n_resamples: int


def paired_bootstrap(samples_a, samples_b, observed_difference: float | None = None,
                     level: float = 0.95) -> PairedComparison:
    """Paired bootstrap test: ``samples_a[b]`` and ``samples_b[b]`` come from the *same* resample ``b``.

    The p-value is twice the smaller tail of the resampled differences around zero, with the
    usual +1 correction so it is never exactly 0 (Davison & Hinkley 1997, eq. 4.11).
    """
    a, b = np.asarray(samples_a, dtype=float), np.asarray(samples_b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in shape: {a.shape} vs {b.shape}")
    diff = a - b
    diff = diff[np.isfinite(diff)]
    if diff.size == 0:
        return PairedComparison(float("nan"), float("nan"), float("nan"), float("nan"), 0)
    observed = float(np.mean(diff)) if observed_difference is None else float(observed_difference)
    low, high = percentile_interval(diff, level)
    if np.all(diff == 0):
        p = 1.0
    else:
        tail = min(np.sum(diff <= 0), np.sum(diff >= 0))
        p = min(1.0, 2.0 * (tail + 1) / (diff.size + 1))
    return PairedComparison(observed, low, high, p, int(diff.size))


def paired_bootstrap_rows(samples_a: np.ndarray, samples_b: np.ndarray, observed: np.ndarray,
                          level: float = 0.95) -> list[PairedComparison]:
    """:func:`paired_bootstrap` of every row pair ``(samples_a[k], samples_b[k])`` ``[K, B]`` at once.

    Why: a report's all-pairs table of 80 methods is 3,000+ comparisons per metric and dataset; rows
    whose resamples are all finite are done as arrays (the same percentiles and tail counts), the rest
    one by one through :func:`paired_bootstrap`."""
    a, b = np.asarray(samples_a, dtype=float), np.asarray(samples_b, dtype=float)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"paired sample rows differ in shape or are not [K, B]: {a.shape} vs {b.shape}")
    diff = a - b
    whole = np.isfinite(diff).all(axis=1) & (diff.shape[1] > 0)
    out: list[PairedComparison | None] = [None] * len(diff)
    if whole.any():
        d = diff[whole]
        tail = (1.0 - level) / 2.0 * 100.0
        lows, highs = np.percentile(d, [tail, 100.0 - tail], axis=1)
        tails = np.minimum((d <= 0).sum(axis=1), (d >= 0).sum(axis=1))
        p = np.where((d == 0).all(axis=1), 1.0, np.minimum(1.0, 2.0 * (tails + 1) / (d.shape[1] + 1)))
        for k, lo, hi, pk in zip(np.flatnonzero(whole), lows, highs, p, strict=True):
            out[k] = PairedComparison(float(observed[k]), float(lo), float(hi), float(pk), int(d.shape[1]))
    for k in np.flatnonzero(~whole):
        out[k] = paired_bootstrap(a[k], b[k], float(observed[k]), level)
    return out


def delong(scores, labels, groups=None) -> tuple[np.ndarray, np.ndarray]:
    """AUROCs of ``K`` score vectors on the same cases and their covariance matrix ``[K, K]``.

    DeLong, DeLong & Clarke-Pearson (1988), "Comparing the areas under two or more correlated
    receiver operating characteristic curves: a nonparametric approach", Biometrics 44: the
    structural components (placement values) of each case, computed from midranks (Sun & Xu 2014,
    IEEE SPL 21), give the covariance of correlated AUROCs without resampling, so a one-sided
    p-value of any contrast of them is exact to the normal approximation however small it is.
    Where ``groups`` puts several cases in one cluster (slices of a patient), the covariance is
    Obuchowski's (1997, Biometrics 53) cluster version: placement values are summed per cluster
    and clusters are the independent units, with her factors I10/(I10-1), I01/(I01-1) and I/(I-1)
    (clusters with an anomalous case, with a normal case, all clusters). Ties count one half.
    """
    s = np.atleast_2d(np.asarray(scores, dtype=float))
    y = np.asarray(labels).astype(bool).ravel()
    if s.shape[1] != y.size:
        raise ValueError(f"scores have {s.shape[1]} cases, labels {y.size}")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or inf")
    m, n = int(y.sum()), int((~y).sum())
    if m < 2 or n < 2:
        raise ValueError(f"DeLong needs at least 2 anomalous and 2 normal cases, got {m} and {n}")
    pos, neg = s[:, y], s[:, ~y]
    ranks_all = stats.rankdata(np.concatenate([pos, neg], axis=1), axis=1)
    v10 = (ranks_all[:, :m] - stats.rankdata(pos, axis=1)) / n          # [K, m]
    v01 = 1.0 - (ranks_all[:, m:] - stats.rankdata(neg, axis=1)) / m    # [K, n]
    auc = v10.mean(axis=1)
    clusters = None
    if groups is not None:
        _, inverse = np.unique(np.asarray(groups).astype(str), return_inverse=True)
        if inverse.max() + 1 < y.size:
            clusters = inverse
    if clusters is None:
        cov = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n
        return auc, cov
    n_clusters = int(clusters.max()) + 1
    if n_clusters < 2:
        raise ValueError("DeLong with clusters needs at least 2 clusters")
    sum10 = np.zeros((len(s), n_clusters))
    sum01 = np.zeros((len(s), n_clusters))
    np.add.at(sum10.T, clusters[y], v10.T)
    np.add.at(sum01.T, clusters[~y], v01.T)
    m_k = np.bincount(clusters[y], minlength=n_clusters)
    n_k = np.bincount(clusters[~y], minlength=n_clusters)
    a = sum10 - m_k[None, :] * auc[:, None]
    b = sum01 - n_k[None, :] * auc[:, None]
    # Obuchowski's small-sample factors: I10 clusters hold anomalous cases, I01 normal ones, I in all
    i10, i01 = int(np.count_nonzero(m_k)), int(np.count_nonzero(n_k))
    if i10 < 2 or i01 < 2:
        raise ValueError(f"DeLong with clusters needs 2 clusters with each class, got {i10} and {i01}")
    f10, f01, f11 = i10 / (i10 - 1), i01 / (i01 - 1), n_clusters / (n_clusters - 1)
    s10, s01, s11 = f10 / m * a @ a.T, f01 / n * b @ b.T, f11 * a @ b.T
    return auc, s10 / m + s01 / n + (s11 + s11.T) / (m * n)


#: Up to this many pairs with tied or zero differences scipy's ``wilcoxon`` decides by all 2**n sign flips.
SIGN_FLIP_MAX_N = 13


def wilcoxon_signed_rank(a, b) -> tuple[float, float, int]:
    """Wilcoxon signed-rank test on paired values (statistic, two-sided p, number of pairs).

    All-equal pairs give p = 1; fewer than two pairs give NaN.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    if a.size < 2:
        return float("nan"), float("nan"), int(a.size)
    if np.allclose(a, b):
        return 0.0, 1.0, int(a.size)
    d = a - b
    if d.size <= SIGN_FLIP_MAX_N and (np.unique(np.abs(d)).size < d.size or (d == 0).any()):
        statistic, p = _signed_rank_sign_flips(d)
        return statistic, p, int(a.size)
    result = stats.wilcoxon(a, b, zero_method="zsplit")
    return float(result.statistic), float(result.pvalue), int(a.size)


def _signed_rank_sign_flips(d: np.ndarray) -> tuple[float, float]:
    """The zero-split signed-rank statistic ``min(R+, R-)`` and its two-sided p-value over all ``2**n``
    sign flips of ``d``: what ``scipy.stats.wilcoxon(zero_method="zsplit")`` returns for n <= 13 with
    ties or zeros, where it runs ``permutation_test`` and calls the statistic once per flip in Python
    (0.2-0.7 s a test; 120 of a 1020-record report's 280 s). Ranks are multiples of 1/2, so every sum
    here is exact, and the p-value is scipy's count of flips at least as extreme (same tolerance)."""
    n = d.size
    ranks = stats.rankdata(np.abs(d))                                   # average ranks, zeros included
    zero_half = ranks[d == 0].sum() / 2
    r_plus, r_minus = ranks[d > 0].sum() + zero_half, ranks[d < 0].sum() + zero_half
    flipped = ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1).astype(bool)    # [2**n, n]
    positive = np.where(flipped, d < 0, d > 0)                          # d_i > 0 after the flip
    null = positive.astype(float) @ ranks + zero_half
    gamma = abs(np.finfo(float).eps * 100 * r_plus)
    less = np.count_nonzero(null <= r_plus + gamma) / 2 ** n
    greater = np.count_nonzero(null >= r_plus - gamma) / 2 ** n
    return float(min(r_plus, r_minus)), float(np.clip(min(less, greater) * 2, 0.0, 1.0))


def holm_adjust(p_values) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (NaN entries stay NaN)."""
    p = np.asarray(p_values, dtype=float)
    out = np.full_like(p, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    if finite.size == 0:
        return out
    order = finite[np.argsort(p[finite], kind="mergesort")]
    m = order.size
    adjusted = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out[order] = np.minimum(adjusted, 1.0)
    return out


def spearman(x, y) -> tuple[float, float, int]:
    """Spearman's rank correlation (rho, two-sided p, n) over the pairs where both are finite.

    NaN when fewer than 3 pairs remain or either side is constant.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if x.size < 3 or np.all(x == x[0]) or np.all(y == y[0]):
        return float("nan"), float("nan"), int(x.size)
    result = stats.spearmanr(x, y)
    return float(result.statistic), float(result.pvalue), int(x.size)


# ---------------------------------------------------------------------------------------------
# Ranks across datasets
# ---------------------------------------------------------------------------------------------
def rank_within_blocks(values: pd.DataFrame, lower_is_better: bool = False) -> pd.DataFrame:
    """Rank methods (columns) within each dataset (row): 1 = best, ties share the average rank."""
    return values.rank(axis=1, ascending=lower_is_better, method="average")


def friedman_test(values: pd.DataFrame) -> tuple[float, float]:
    """Friedman chi-square and p-value for methods (columns) over datasets (rows).

    Needs at least 3 methods and 2 complete datasets; otherwise NaN.
    """
    complete = values.dropna(axis=0, how="any")
    if complete.shape[1] < 3 or complete.shape[0] < 2:
        return float("nan"), float("nan")
    if np.allclose(complete.to_numpy(), complete.to_numpy()[:, :1]):
        return 0.0, 1.0
    result = stats.friedmanchisquare(*[complete[c].to_numpy() for c in complete.columns])
    return float(result.statistic), float(result.pvalue)


def nemenyi_critical_difference(n_methods: int, n_datasets: int, alpha: float = 0.05) -> float:
    """Critical difference of mean ranks (Nemenyi): ``q_alpha / sqrt(2) * sqrt(k (k+1) / (6 N))``.

    ``q_alpha`` is the upper quantile of the studentized range with infinite degrees of freedom
    (Demšar 2006, Table 5a lists the already divided values, e.g. 2.569 for k = 4).
    """
    if n_methods < 2 or n_datasets < 1:
        return float("nan")
    q = stats.studentized_range.ppf(1.0 - alpha, n_methods, np.inf) / np.sqrt(2.0)
    return float(q * np.sqrt(n_methods * (n_methods + 1) / (6.0 * n_datasets)))


@dataclass
class RankSummary:
    """Ranks of methods over datasets, the Friedman test and the Nemenyi critical difference."""

    ranks: pd.DataFrame        # datasets x methods
    mean_ranks: pd.Series      # ascending (best first)
    friedman_statistic: float
    friedman_p: float
    critical_difference: float
    n_datasets: int


def rank_summary(values: pd.DataFrame, lower_is_better: bool = False, alpha: float = 0.05) -> RankSummary:
    """Full rank analysis of a datasets x methods table; datasets with a missing method are dropped."""
    complete = values.dropna(axis=0, how="any")
    ranks = rank_within_blocks(complete, lower_is_better)
    mean_ranks = ranks.mean(axis=0).sort_values(kind="mergesort")
    stat, p = friedman_test(complete)
    cd = nemenyi_critical_difference(complete.shape[1], complete.shape[0], alpha)
    return RankSummary(ranks, mean_ranks, stat, p, cd, int(complete.shape[0]))
