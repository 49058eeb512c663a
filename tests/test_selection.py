"""Label-free selection (issue 25): grading is right on constructed cases, and no criterion reads a test label."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bench.selection.grade import prior_values, random_expectation, selection_table

TRUE_AUROC = {"a": 0.95, "b": 0.80, "c": 0.65, "d": 0.55}


def _scores_with_auroc(target: float, n0: int, n1: int, rng) -> np.ndarray:
    """Scores of n0 normals then n1 anomalies: a mix of separated and random anomalies, roughly ``target``."""
    s = np.r_[rng.normal(0, 1, n0), rng.normal(0, 1, n1) + 3.0 * (rng.uniform(size=n1) < 2 * (target - 0.5))]
    return s


def constructed_run(datasets=("d1",), seeds=(0, 1), synth_equals_truth: bool = True):
    """Records and arrays whose synthetic set is the test set: synthetic AUROC = true AUROC per cell."""
    rng = np.random.default_rng(0)
    n0, n1 = 30, 30
    labels = np.r_[np.zeros(n0, int), np.ones(n1, int)]
    records, arrays = [], {}
    for dataset in datasets:
        for label, target in TRUE_AUROC.items():
            for seed in seeds:
                cid = f"{dataset}__{label}__s{seed}"
                s = _scores_with_auroc(target, n0, n1, rng)
                records.append({"cell_id": cid, "dataset": dataset, "method": label, "seed": seed, "status": "ok",
                                "kind": "detector", "detector": label, "metrics": {}})
                arrays[cid] = {"test_scores": s, "test_labels": labels, "test_groups": np.arange(n0 + n1).astype(str),
                               "val_scores": s[:n0] if synth_equals_truth else rng.normal(0, 1, n0),
                               "val_labels": np.zeros(n0, int),
                               "synth_scores": s[n0:], "synth_generator": np.array(["g"] * n1)}
    return records, arrays


def test_criterion_equal_to_truth_gives_tau_one_and_regret_zero():
    records, arrays = constructed_run()
    table, cells = selection_table(records, arrays.__getitem__, n_resamples=200)
    row = table[(table["criterion"] == "synth_auroc[g]") & (table["target"] == "detection")].iloc[0]
    assert row["tau"] == pytest.approx(1.0) and row["regret"] == 0.0 and row["top3"]
    means = cells.groupby("label")["image_auroc"].mean()
    assert row["selected"] == row["best"] and (row["regret_low"], row["regret_high"]) == (0.0, 0.0)
    # its gain over a uniform pick: the best configuration's metric minus the mean one, with an interval
    assert row["vs_random"] == pytest.approx(means.max() - means.mean())
    assert row["vs_random_low"] < row["vs_random"] < row["vs_random_high"]
    assert np.isnan(row["vs_prior"])                     # one dataset: no prior pick to compare with
    # tau and the top-3 margin carry intervals too: tau 1 cannot be exceeded, the margin is over the 4th
    assert row["tau_low"] < 1.0 and row["tau_high"] == pytest.approx(1.0)
    assert row["top3_margin"] == pytest.approx(means["a"] - means["d"])
    assert row["top3_margin_low"] < row["top3_margin"] < row["top3_margin_high"]
    records2, arrays2 = constructed_run(datasets=("d1", "d2"))
    table2, _ = selection_table(records2, arrays2.__getitem__, n_resamples=200)
    row2 = table2[(table2["criterion"] == "synth_auroc[g]") & (table2["dataset"] == "d1")
                  & (table2["target"] == "detection")].iloc[0]
    prior = table2[(table2["criterion"] == "prior") & (table2["dataset"] == "d1") & (table2["target"] == "detection")]
    assert row2["vs_prior"] == pytest.approx(row2["selected_metric"] - prior["selected_metric"].iloc[0])
    # a criterion that carries no information is no better than chance here
    records, arrays = constructed_run(synth_equals_truth=False)
    table, _ = selection_table(records, arrays.__getitem__, intervals=False)
    row = table[(table["criterion"] == "synth_auroc[g]") & (table["target"] == "detection")].iloc[0]
    assert row["tau"] < 1.0


def test_random_pick_expectation_is_exact():
    truth = pd.Series({"a": 0.9, "b": 0.7, "c": 0.6, "d": 0.8})
    expected = random_expectation(truth)
    # regrets 0, 0.2, 0.3, 0.1 -> 0.15; three of four configurations are in the top 3
    assert expected["regret"] == pytest.approx(0.15) and expected["top3"] == pytest.approx(0.75)
    assert expected["tau"] == 0.0
    records, arrays = constructed_run()
    table, cells = selection_table(records, arrays.__getitem__, intervals=False)
    row = table[(table["criterion"] == "random") & (table["target"] == "detection")].iloc[0]
    means = cells.groupby("label")["image_auroc"].mean()
    assert row["regret"] == pytest.approx(float((means.max() - means).mean()))


def test_prior_is_leave_one_dataset_out():
    means = {"x": pd.DataFrame({"m": [0.9, 0.5, 0.7]}, index=["a", "b", "c"]),
             "y": pd.DataFrame({"m": [0.6, 0.8, 0.7]}, index=["a", "b", "c"]),
             "z": pd.DataFrame({"m": [0.1, 0.2, 0.3]}, index=["a", "b", "c"])}
    prior = prior_values(means, "z", "m")           # ranks on x: a1 c2 b3; on y: b1 c2 a3 -> a 2, b 2, c 2
    assert list(prior) == [-2.0, -2.0, -2.0]
    prior = prior_values(means, "x", "m")           # y: b1 c2 a3; z: c1 b2 a3 -> b 1.5, c 1.5, a 3
    assert prior.idxmin() == "a" and prior["b"] == prior["c"] == -1.5
    records, arrays = constructed_run(datasets=("d1",))
    table, _ = selection_table(records, arrays.__getitem__, intervals=False)
    assert "no other dataset" in table[table["criterion"] == "prior"]["note"].iloc[0]


def _permuted(arrays_of, seed: int = 1):
    def wrapped(cell_id):
        arrays = dict(arrays_of(cell_id))
        if "test_labels" in arrays:
            arrays["test_labels"] = np.random.default_rng(seed).permutation(arrays["test_labels"])
        return arrays
    return wrapped


def _criteria_and_grades(table, cells):
    measures = [c for c in cells.columns if c not in ("cell_id", "dataset", "label", "seed", "has_synth",
                                                       "selection_error", "image_auroc", "pixel_ap")]
    return cells.set_index("cell_id")[measures].sort_index(), table.set_index(["dataset", "target", "criterion"])


def test_permuting_test_labels_changes_grades_and_no_criterion(tmp_path):
    """On a real (tiny) run with selection on: the synth_* arrays are stored by the runner, and permuting
    the test labels of its records moves the grades while every criterion value stays bit-identical."""
    from bench.run.grid import load_grid
    from bench.run.plan import Plan
    from bench.run.runner import Runner
    from bench.run.store import ResultStore

    grid = load_grid("quick", ['datasets=["synthetic"]', "seeds=[0]", "defaults.dataset.image_size=32",
                               "dataset.synthetic.n_train=32", "dataset.synthetic.n_val=16",
                               "dataset.synthetic.n_test=24", "dataset.synthetic.n_pool=8",
                               'encoders=["vae"]', "encoder.vae.epochs=1", "encoder.vae.batch_size=16",
                               'heads=["gaussian", "knn", "patch_gaussian"]', 'localization=["gradient"]',
                               "selection.per_generator=4", "selection.mv_reference=16",
                               'selection.generators=["cutpaste", "fpi", "perlin"]'])
    Runner(Plan.of(grid), tmp_path / "run", cache_dir=tmp_path / "cache", progress=False).run()
    store = ResultStore(tmp_path / "run")
    records = store.records()
    arrays = store.arrays(records[0]["cell_id"])
    assert {"synth_scores", "synth_generator", "synth_mv_scores", "synth_pool_scores"} <= set(arrays)
    assert records[0]["selection"]["n_synth"] == len(arrays["synth_scores"]) > 0
    patch = next(r for r in records if r["head"] == "patch_gaussian")
    assert store.arrays(patch["cell_id"])["synth_pixsum_pos"].shape[0] == len(arrays["synth_scores"])

    table, cells = selection_table(records, store.arrays, intervals=False)
    table_p, cells_p = selection_table(records, _permuted(store.arrays), intervals=False)
    criteria, grades = _criteria_and_grades(table, cells)
    criteria_p, grades_p = _criteria_and_grades(table_p, cells_p)
    assert criteria.shape[1] >= 5
    pd.testing.assert_frame_equal(criteria, criteria_p)                      # not one criterion value moved
    detection = grades.xs("detection", level="target")
    detection_p = grades_p.xs("detection", level="target")
    assert not np.allclose(detection["best_metric"], detection_p["best_metric"])   # the grades did
    assert (detection["selected"].fillna("") == detection_p["selected"].fillna("")).all()


def test_pixel_summaries_give_pixel_ap_per_generator_and_mass_volume_is_the_reference_mass():
    from sklearn.metrics import average_precision_score

    from bench.analysis.pixsum import SYNTH_PREFIX, summarize
    from bench.run.synth import PIXEL_BINS
    from bench.selection.criteria import cell_measures, mass_volume_area

    rng = np.random.default_rng(0)
    masks = rng.uniform(size=(6, 16, 16)) < 0.1
    maps = rng.normal(size=(6, 16, 16)) + np.array([1.5, 1.5, 1.5, 0.5, 0.5, 0.5])[:, None, None] * masks
    generator = np.array(["a"] * 3 + ["b"] * 3)
    arrays = {"synth_scores": maps.reshape(6, -1).max(1), "synth_generator": generator,
              **summarize(maps, masks, n_thresholds=PIXEL_BINS, prefix=SYNTH_PREFIX)}
    assert arrays["synth_pixsum_pos"].sum() == masks.sum() and arrays["synth_pixsum_neg"].sum() == (~masks).sum()
    measures = cell_measures({}, arrays)
    for g in ("a", "b"):
        exact = average_precision_score(masks[generator == g].ravel(), maps[generator == g].ravel())
        assert measures[f"synth_pixel_ap[{g}]"] == pytest.approx(exact, abs=0.01)
    assert measures["synth_pixel_ap[a]"] > measures["synth_pixel_ap[b]"]
    # a record written before the shared summary (per-bin counts, bin edges) gives the same AP
    edges = np.r_[arrays["synth_pixsum_thresholds"], np.inf]
    legacy = {"synth_scores": arrays["synth_scores"], "synth_generator": generator, "synth_pix_edges": edges,
              "synth_pix_pos": arrays["synth_pixsum_pos"], "synth_pix_neg": arrays["synth_pixsum_neg"]}
    assert cell_measures({}, legacy)["synth_pixel_ap[b]"] == pytest.approx(measures["synth_pixel_ap[b]"], abs=1e-12)
    # half the reference below every normal, half above: the normal region holds half its mass at every level
    normal = np.arange(100.0)
    assert mass_volume_area(normal, np.r_[np.full(50, -1.0), np.full(50, 1e3)]) == pytest.approx(0.5)
    assert mass_volume_area(normal, np.full(10, 1e3)) == 0.0


def test_cost_estimate_counts_the_synthetic_scoring():
    from bench.cost.estimate import cell_seconds

    plain = {"kind": "latent", "n_val": 100, "n_test": 200, "timings": {"fit_s": 1.0, "predict_s": 3.0}}
    settings = {"generators": ["cutpaste", "fpi"], "per_generator": 50, "mv_reference": 50}
    # extra images 2 x min(100, 50) + 50 = 150 over 300 scored: predict time x 1.5
    assert cell_seconds(plain, settings, adjust=True) == pytest.approx(4.0 + 1.5)
    assert cell_seconds(plain, None, adjust=True) == pytest.approx(4.0)
    measured = {**plain, "timings": {"fit_s": 1.0, "predict_s": 3.0, "synth_predict_s": 1.0}}
    assert cell_seconds(measured, settings, adjust=True) == pytest.approx(4.0)       # already inside predict_s
    assert cell_seconds(measured, None, adjust=True) == pytest.approx(3.0)           # a grid without selection


@pytest.mark.parametrize("item, message", [
    ('selection.generators=["cutpaste", "nope"]', "not a registered generator"),
    ("selection.per_generator=-1", "whole number"),
    ("selection.colour=1", "unknown key"),
])
def test_selection_settings_are_validated(item, message):
    from bench.run.grid import GridError, load_grid
    from bench.run.validate import validate_grid

    with pytest.raises(GridError, match=message):
        validate_grid(load_grid("quick", [item]))
    from bench.run.synth import selection_settings

    assert selection_settings(None) is None and selection_settings({"enabled": False}) is None
    assert selection_settings(True)["per_generator"] == 200


def test_advice_for_an_unlabelled_dataset_names_the_criterion_the_labelled_ones_favour():
    from bench.selection.render import advice, render_markdown

    records, arrays = constructed_run(datasets=("d1", "d2"))
    table, cells = selection_table(records, arrays.__getitem__, intervals=False)
    prior = table[(table["criterion"] == "prior") & (table["dataset"] == "d2")].iloc[0]
    assert prior["selected"] == "a"                      # best on d1, the other dataset
    text = advice(table, cells, "d2")
    assert "synth_auroc[g]                   a" in text and "lowest mean regret" in text
    assert "### d1 — detection" in render_markdown(table)
    with pytest.raises(ValueError, match="no scored cells"):
        advice(table, cells, "elsewhere")


def test_tau_rows_equal_scipy_with_ties_and_the_tau_interval_follows_the_verdicts_rules():
    from types import SimpleNamespace

    from scipy.stats import kendalltau

    from bench.analysis.inference import ONE_SEED
    from bench.selection.intervals import tau_b_rows, tau_interval

    rng = np.random.default_rng(3)
    x = rng.integers(0, 4, size=9).astype(float)                # ties on both sides
    ys = rng.integers(0, 5, size=(6, 9)).astype(float)
    assert np.allclose(tau_b_rows(x, ys), [kendalltau(x, y).statistic for y in ys])

    values = pd.Series([0.9, 0.7, 0.5, 0.3], index=list("abcd"))
    truth = np.array([0.9, 0.7, 0.5, 0.3]) + rng.normal(0, 0.1, size=(500, 4))
    samples = SimpleNamespace(groups=np.arange(40).astype(str), units_per_class=lambda: (20, 20))
    # one seed of a stochastic fit: no interval, the verdicts' reason; deterministic: the test-set part only
    assert tau_interval(1.0, values, truth, samples, [], stochastic=True)[2] == ONE_SEED
    low1, high1, why = tau_interval(1.0, values, truth, samples, [], stochastic=False)
    assert why == "" and -1.0 <= low1 < 1.0 and high1 == 1.0
    # seeds that disagree widen it (the jackknife's seed part), 2 seeds of a stochastic fit: Hsu's df = 1
    low2, _, _ = tau_interval(0.6, values, truth, samples, [1.0, 0.2], stochastic=True)
    assert low2 < 0.6 - 1.0 or low2 == -1.0
