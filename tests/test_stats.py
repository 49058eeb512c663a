"""Statistics and representation diagnostics on inputs with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from bench.analysis import diagnostics, stats
from bench.metrics import image_metrics, pixel_metrics


def binormal(n_normal: int, n_anomalous: int, shift: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores N(0, 1) for normals and N(shift, 1) for anomalies: AUROC = Phi(shift / sqrt(2))."""
    rng = np.random.default_rng(seed)
    scores = np.r_[rng.normal(size=n_normal), rng.normal(loc=shift, size=n_anomalous)]
    return scores, np.r_[np.zeros(n_normal, int), np.ones(n_anomalous, int)]


# ---------------------------------------------------------------------------------------------
# Weighted metrics agree with the suite's metric implementation
# ---------------------------------------------------------------------------------------------
def test_weighted_image_metrics_match_bench_metrics_with_ties():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    scores = np.round(rng.normal(size=300) + labels, 1)      # many ties
    reference = image_metrics(scores, labels)
    assert stats.weighted_auroc(scores, labels) == pytest.approx(reference["image_auroc"], abs=1e-12)
    assert stats.weighted_average_precision(scores, labels) == pytest.approx(reference["image_ap"], abs=1e-12)
    assert stats.weighted_fpr_at_tpr(scores, labels) == pytest.approx(reference["image_fpr95"], abs=1e-12)


def test_integer_weights_equal_repeating_cases():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 120)
    scores = np.round(rng.normal(size=120) + labels, 1)
    weights = rng.integers(0, 4, 120)
    repeated = np.repeat(np.arange(120), weights)
    reference = image_metrics(scores[repeated], labels[repeated])
    batch = stats.image_metric_samples(scores, labels, np.vstack([weights, np.ones(120)]))
    for name, value in reference.items():
        assert batch[name][0] == pytest.approx(value, abs=1e-12), name


def test_resample_without_a_class_gives_nan():
    scores, labels = np.array([0.1, 0.2, 0.9]), np.array([0, 0, 1])
    assert np.isnan(stats.weighted_auroc(scores, labels, np.array([1, 1, 0])))


def test_binned_pixel_metrics_stay_close_to_exact_ones():
    rng = np.random.default_rng(2)
    maps = rng.normal(size=(40, 24, 24)).astype(np.float32)
    masks = np.zeros(maps.shape, np.uint8)
    masks[:20, 4:10, 4:10] = 1
    masks[:20, 15:18, 12:20] = 1
    maps += 1.5 * masks
    exact = pixel_metrics(maps, masks, val_maps=maps, val_masks=masks)
    binned = stats.pixel_metric_samples(stats.pixel_counts(maps, masks, dice_threshold=exact["pixel_threshold"]))
    for name in ("pixel_auroc", "pixel_ap", "pixel_aupro", "pixel_dice_oracle"):
        assert binned[name][0] == pytest.approx(exact[name], abs=0.01), name
    assert binned["pixel_dice"][0] == pytest.approx(exact["pixel_dice"], abs=1e-9), "Dice at a threshold is exact"


def test_aupro_known_answers():
    masks = np.zeros((6, 16, 16), np.uint8)
    masks[:3, 3:8, 3:8] = 1
    perfect = stats.pixel_metric_samples(stats.pixel_counts(masks.astype(np.float32), masks))
    assert perfect["pixel_aupro"][0] == pytest.approx(1.0)
    assert perfect["pixel_auroc"][0] == pytest.approx(1.0)
    noise = np.random.default_rng(3).random((6, 16, 16)).astype(np.float32)
    random = stats.pixel_metric_samples(stats.pixel_counts(noise, masks))
    assert random["pixel_aupro"][0] == pytest.approx(0.15, abs=0.05), "random map: PRO ~ FPR, area 0.3/2"


# ---------------------------------------------------------------------------------------------
# Bootstrap CIs
# ---------------------------------------------------------------------------------------------
def test_ci_contains_true_auroc_and_narrows_with_more_cases():
    shift = 1.0
    true_auc = norm.cdf(shift / np.sqrt(2))
    widths = []
    for n in (100, 1000):
        scores, labels = binormal(n, n, shift, seed=n)
        w = stats.group_bootstrap_weights(np.arange(2 * n), 1000, seed=0)
        low, high = stats.percentile_interval(stats.weighted_auroc(scores, labels, w))
        assert low < true_auc < high
        widths.append(high - low)
    assert widths[1] < widths[0] / 2, "ten times the cases: about a third of the width"


def test_ci_coverage_is_near_nominal():
    shift, hits, trials = 1.0, 0, 60
    true_auc = norm.cdf(shift / np.sqrt(2))
    for trial in range(trials):
        scores, labels = binormal(60, 60, shift, seed=1000 + trial)
        w = stats.group_bootstrap_weights(np.arange(120), 300, seed=trial)
        low, high = stats.percentile_interval(stats.weighted_auroc(scores, labels, w))
        hits += low <= true_auc <= high
    assert hits / trials >= 0.85


def test_group_bootstrap_keeps_groups_whole():
    groups = np.repeat(np.array(["p3", "p1", "p2", "p7", "p5"]), [3, 1, 4, 2, 5])
    weights = stats.group_bootstrap_weights(groups, 200, seed=4)
    assert weights.shape == (200, groups.size)
    for g in np.unique(groups):
        member_weights = weights[:, groups == g]
        assert np.all(member_weights == member_weights[:, :1]), f"group {g} split"
    # each resample draws as many groups as there are
    drawn = np.stack([weights[:, np.flatnonzero(groups == g)[0]] for g in np.unique(groups)], axis=1)
    assert np.all(drawn.sum(axis=1) == 5)
    for indices, row in zip(stats.weights_to_indices(weights[:5]), weights[:5], strict=True):
        assert len(indices) == row.sum()
    again = stats.group_bootstrap_weights(groups, 200, seed=4)
    assert np.array_equal(weights, again), "seeded"


def test_group_bootstrap_is_wider_than_case_bootstrap_on_duplicated_cases():
    scores, labels = binormal(40, 40, 1.0, seed=5)
    scores, labels = np.repeat(scores, 5), np.repeat(labels, 5)     # five slices per patient
    patients = np.repeat(np.arange(80), 5)
    case = stats.percentile_interval(stats.weighted_auroc(
        scores, labels, stats.group_bootstrap_weights(np.arange(400), 500, seed=0)))
    grouped = stats.percentile_interval(stats.weighted_auroc(
        scores, labels, stats.group_bootstrap_weights(patients, 500, seed=0)))
    assert (grouped[1] - grouped[0]) > 1.6 * (case[1] - case[0])


# ---------------------------------------------------------------------------------------------
# Paired tests
# ---------------------------------------------------------------------------------------------
def _paired_samples(shift_b: float, seed: int, n: int = 150, n_resamples: int = 400):
    rng = np.random.default_rng(seed)
    labels = np.r_[np.zeros(n, int), np.ones(n, int)]
    latent = rng.normal(size=2 * n) + 1.0 * labels                 # shared difficulty of each case
    a = latent + 0.5 * rng.normal(size=2 * n)
    b = latent + 0.5 * rng.normal(size=2 * n) - shift_b * labels
    w = stats.group_bootstrap_weights(np.arange(2 * n), n_resamples, seed=seed)
    return stats.weighted_auroc(a, labels, w), stats.weighted_auroc(b, labels, w)


def test_paired_bootstrap_detects_a_real_difference():
    a, b = _paired_samples(shift_b=0.6, seed=6)
    result = stats.paired_bootstrap(a, b)
    assert result.difference > 0 and result.low > 0 and result.p_value < 0.01


def test_paired_bootstrap_rarely_flags_a_null_difference():
    false_positives = sum(stats.paired_bootstrap(*_paired_samples(0.0, seed=s, n=80, n_resamples=300)).p_value < 0.05
                          for s in range(40))
    assert false_positives <= 6, f"{false_positives}/40 null comparisons flagged"


def test_paired_bootstrap_of_identical_methods_is_not_significant():
    a, _ = _paired_samples(0.0, seed=7)
    assert stats.paired_bootstrap(a, a.copy()).p_value == 1.0


def test_wilcoxon_and_holm():
    rng = np.random.default_rng(8)
    a = rng.random(12)
    _, p_real, n = stats.wilcoxon_signed_rank(a + 0.05 + 0.01 * rng.random(12), a)
    assert n == 12 and p_real < 0.001
    assert stats.wilcoxon_signed_rank(a, a)[1] == 1.0
    _, p_null, _ = stats.wilcoxon_signed_rank(a, a + rng.normal(scale=0.05, size=12))
    assert p_null > 0.05
    assert np.allclose(stats.holm_adjust([0.01, 0.04, 0.03, np.nan])[:3], [0.03, 0.06, 0.06])
    assert np.isnan(stats.holm_adjust([0.01, np.nan])[1])


def _partial_area(x: np.ndarray, y: np.ndarray, limit: float) -> float:
    """One curve's area up to ``limit`` (the report's AUPRO before it took all resamples at once)."""
    if not np.all(np.isfinite(x)) or not np.all(np.isfinite(y)):
        return float("nan")
    keep = x <= limit
    xs, ys = x[keep], y[keep]
    if xs[-1] < limit and keep.sum() < x.size:
        nxt = int(np.argmax(~keep))
        x0, x1, y0, y1 = x[nxt - 1], x[nxt], y[nxt - 1], y[nxt]
        y_lim = y0 + (y1 - y0) * (limit - x0) / (x1 - x0) if x1 > x0 else y1
        xs, ys = np.append(xs, limit), np.append(ys, y_lim)
    return float(np.sum(np.diff(xs) * (ys[1:] + ys[:-1]) / 2.0))


def test_partial_areas_of_many_curves_equal_the_one_curve_function_bit_for_bit():
    rng = np.random.default_rng(5)
    for trial in range(300):
        b, t = 9, int(rng.integers(2, 40))
        x = np.sort(rng.random((b, t)) * rng.choice([0.2, 0.5, 1.0, 3.0]), axis=1)
        x[0] = np.repeat(np.sort(rng.random(t // 2 + 1)), 2)[:t]          # steps: repeated FPRs
        x[1] = 0.3                                                       # every point at the limit
        x[:, 0] = 0.0                                                    # curves start at the origin
        if trial % 4 == 0:
            x[2, 1] = np.nan
        y = rng.random((b, t))
        expected = np.array([_partial_area(xx, yy, 0.3) for xx, yy in zip(x, y, strict=True)])
        np.testing.assert_array_equal(stats._partial_areas(x, y, 0.3), expected)


def test_wilcoxon_with_ties_or_zeros_equals_scipys_permutation_test():
    """Small samples with tied or zero differences: the vectorised sign-flip p-value is scipy's, bit for
    bit (scipy enumerates the same 2**n flips with one Python call each)."""
    from scipy import stats as scipy_stats

    rng = np.random.default_rng(11)
    checked = 0
    for trial in range(80):
        n = int(rng.integers(2, 10)) if trial < 79 else 13
        if trial % 2:
            a, b = rng.integers(0, 4, n) / 4, rng.integers(0, 4, n) / 4         # ties and zeros
        else:
            a = rng.random(n)
            b = a + np.where(rng.random(n) < 0.3, 0.0, rng.normal(0.1, 0.2, n))  # some zero differences
        if np.allclose(a, b):
            continue
        expected = scipy_stats.wilcoxon(a, b, zero_method="zsplit")
        statistic, p, pairs = stats.wilcoxon_signed_rank(a, b)
        assert (statistic, p, pairs) == (float(expected.statistic), float(expected.pvalue), n), (a, b)
        checked += 1
    assert checked > 60


# ---------------------------------------------------------------------------------------------
# Ranks
# ---------------------------------------------------------------------------------------------
def test_friedman_and_ranks_known_answer():
    # 10 datasets where method A always beats B, which always beats C.
    values = pd.DataFrame({"A": np.linspace(0.9, 0.95, 10), "B": np.linspace(0.8, 0.85, 10),
                           "C": np.linspace(0.6, 0.7, 10)})
    summary = stats.rank_summary(values)
    assert list(summary.mean_ranks.index) == ["A", "B", "C"]
    assert list(summary.mean_ranks) == [1.0, 2.0, 3.0]
    # chi2_F = 12N / (k(k+1)) * (sum R_j^2 - k(k+1)^2 / 4) = 12*10/12 * (14 - 12) = 20
    assert summary.friedman_statistic == pytest.approx(20.0)
    assert summary.friedman_p == pytest.approx(np.exp(-10.0))     # chi2 with 2 dof: p = exp(-x/2)
    low = stats.rank_summary(values, lower_is_better=True)      # e.g. FPR95: the smallest wins
    assert list(low.mean_ranks.index) == ["C", "B", "A"]


def test_ties_share_average_rank_and_incomplete_datasets_are_dropped():
    values = pd.DataFrame({"A": [0.9, 0.8, np.nan], "B": [0.9, 0.7, 0.5], "C": [0.5, 0.6, 0.4]})
    summary = stats.rank_summary(values)
    assert summary.n_datasets == 2
    assert summary.ranks.iloc[0].tolist() == [1.5, 1.5, 3.0]


def test_nemenyi_critical_difference_matches_demsar():
    # Demsar (2006), section 3.2.2 example: k = 4 classifiers, N = 14 data sets, CD = 1.25.
    assert stats.nemenyi_critical_difference(4, 14) == pytest.approx(1.25, abs=0.01)
    assert stats.nemenyi_critical_difference(2, 10) == pytest.approx(1.960 * np.sqrt(2 * 3 / 60), abs=1e-3)


def test_spearman_known_answer():
    rho, p, n = stats.spearman([1, 2, 3, 4, np.nan], [10, 20, 30, 40, 50])
    assert (rho, n) == (pytest.approx(1.0), 4)
    assert np.isnan(stats.spearman([1, 1, 1], [1, 2, 3])[0])


# ---------------------------------------------------------------------------------------------
# Representation diagnostics
# ---------------------------------------------------------------------------------------------
def test_effective_rank_isotropic_vs_rank_one():
    rng = np.random.default_rng(9)
    isotropic = rng.normal(size=(4000, 16))
    rank_one = rng.normal(size=(4000, 1)) @ rng.normal(size=(1, 16))
    assert diagnostics.effective_rank(isotropic) == pytest.approx(16, rel=0.05)
    assert diagnostics.effective_rank(rank_one) == pytest.approx(1.0, abs=1e-6)


def test_uniformity_and_alignment_sanity():
    rng = np.random.default_rng(10)
    spread = rng.normal(size=(500, 8))
    collapsed = np.ones((500, 8)) + 1e-9 * rng.normal(size=(500, 8))
    assert diagnostics.uniformity(collapsed) == pytest.approx(0.0, abs=1e-6), "all points equal: log 1"
    assert diagnostics.uniformity(spread) < -2.0
    z = rng.normal(size=(50, 8))
    assert diagnostics.alignment(z, 3.0 * z) == pytest.approx(0.0, abs=1e-12), "scale-free: normalised"
    assert diagnostics.alignment(z, -z) == pytest.approx(4.0), "antipodal pairs: ||2u||^2"
    # normals close to the training data align better than normals far from it
    train = rng.normal(size=(200, 8))
    near = train[:50] + 0.05 * rng.normal(size=(50, 8))
    far = rng.normal(size=(50, 8))
    val_labels = np.zeros(50, int)
    assert (diagnostics.normal_pair_alignment(train, near, val_labels)
            < diagnostics.normal_pair_alignment(train, far, val_labels))


def test_probes_separate_separable_embeddings_only():
    rng = np.random.default_rng(11)
    labels = np.r_[np.zeros(60, int), np.ones(60, int)]
    separable = rng.normal(size=(120, 6)) + 3.0 * labels[:, None]
    noise = rng.normal(size=(120, 6))
    assert diagnostics.probe_auroc(separable, labels, "linear") > 0.95
    assert diagnostics.probe_auroc(separable, labels, "knn") > 0.95
    assert abs(diagnostics.probe_auroc(noise, labels, "linear") - 0.5) < 0.2


def test_diagnostics_cache_reuses_values(tmp_path):
    rng = np.random.default_rng(12)
    cache_dir = tmp_path / "enc"
    cache_dir.mkdir()
    np.savez(cache_dir / "embeddings.npz", train=rng.normal(size=(30, 4)), val=rng.normal(size=(10, 4)),
             test=rng.normal(size=(20, 4)), val_labels=np.zeros(10, int), test_labels=np.r_[np.zeros(10), np.ones(10)])
    cache = diagnostics.DiagnosticsCache(tmp_path / "c")
    first = cache.diagnostics(cache_dir)
    assert set(diagnostics.DIAGNOSTICS) <= set(first)
    assert len(list((tmp_path / "c").glob("*.json"))) == 1
    assert cache.diagnostics(cache_dir) == pytest.approx(first)
    coords, labels = cache.tsne(cache_dir)
    assert coords.shape == (20, 2) and labels.shape == (20,)


def test_prefetched_diagnostics_equal_computed_ones_and_keep_their_errors(tmp_path):
    """The report computes t-SNE views and diagnostics in a background thread: the values are those of
    a direct call, and a degenerate embedding raises the same error at the call that asks for it."""
    rng = np.random.default_rng(13)
    good, flat = tmp_path / "good", tmp_path / "flat"
    for folder, train in ((good, rng.normal(size=(30, 4))), (flat, np.zeros((30, 4)))):
        folder.mkdir()
        np.savez(folder / "embeddings.npz", train=train, val=rng.normal(size=(10, 4)), test=rng.normal(size=(20, 4)),
                 val_labels=np.zeros(10, int), test_labels=np.r_[np.zeros(10), np.ones(10)])
    direct = diagnostics.DiagnosticsCache(tmp_path / "direct")
    background = diagnostics.DiagnosticsCache(tmp_path / "background")
    background.prefetch([good], [good, flat])
    try:
        assert background.diagnostics(good) == pytest.approx(direct.diagnostics(good))
        assert np.array_equal(background.tsne(good)[0], direct.tsne(good)[0])
        with pytest.raises(diagnostics.DegenerateEmbedding):
            background.diagnostics(flat)
    finally:
        background.close()
    assert not background._pending and background._executor is None


def test_bad_embeddings_file_is_a_clear_error(tmp_path):
    np.savez(tmp_path / "embeddings.npz", train=np.zeros((3, 2)))
    with pytest.raises(ValueError, match="embeddings.npz: missing arrays"):
        diagnostics.load_embeddings(tmp_path)


def test_paired_bootstrap_rows_equal_one_pair_at_a_time():
    """The report's all-pairs table uses the row-wise version: it must give each pair's own result,
    rows with non-finite resamples and all-zero differences included."""
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(7, 300)), rng.normal(size=(7, 300))
    a[2, :5] = np.nan                        # a resample where a metric was undefined
    b[4] = a[4]                              # identical methods: p = 1
    b[5] = a[5] - 0.5                        # every resample on one side
    observed = rng.normal(size=7)
    rows = stats.paired_bootstrap_rows(a, b, observed)
    for k in range(7):
        assert rows[k] == stats.paired_bootstrap(a[k], b[k], observed[k])
    assert rows[4].p_value == 1.0 and rows[2].n_resamples == 295
