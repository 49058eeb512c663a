"""Claims (bench.analysis.claims, bench.analysis.inference): matching, DeLong, Holm, verdicts, the one-seed
rule, the permutation fallback, the gate on validation, the CLI and user claim files."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from bench.analysis import stats
from bench.analysis.claims import (
    ClaimError,
    CellInfo,
    build_comparisons,
    cell_attributes,
    evaluate_claims,
    load_claims,
    parse_claim,
)
from bench.analysis.inference import DEFAULT_RESAMPLES, ONE_SEED
from bench.metrics import evaluate
from bench.run.store import ResultStore

N = 80                                   # test cases: 40 normal, 40 anomalous, in patients of two
LABELS = np.r_[np.zeros(N // 2, int), np.ones(N // 2, int)]
GROUPS = np.arange(N) // 2
SIDE = 12
MASKS = np.zeros((N, SIDE, SIDE), np.uint8)
MASKS[LABELS == 1, 3:8, 4:9] = 1
N_VAL = 40
VAL_LABELS = np.r_[np.zeros(N_VAL // 2, int), np.ones(N_VAL // 2, int)]
PASSED = {"passed": True, "judged": True, "trained": True, "reasons": [], "measures": {}}


def write_cell(store: ResultStore, dataset: str, encoder: str, head: str, seed: int, signal: float, *,
               adequacy: dict | None = None, status: str = "ok", maps: bool = False, config: dict | None = None,
               val_signal: float | None = None, deterministic: bool | None = None):
    """One latent cell whose scores separate the classes by ``signal`` on test and ``val_signal`` (default:
    the same) on validation (seeded by its name); ``deterministic``: its record's ``deterministic_fit``."""
    rng = np.random.default_rng(stats.stable_seed(dataset, encoder, head, seed))
    scores = rng.normal(size=N) + signal * LABELS
    val_scores = rng.normal(size=N_VAL) + (signal if val_signal is None else val_signal) * VAL_LABELS
    arrays = {"test_scores": scores, "test_labels": LABELS, "test_groups": GROUPS.astype(str),
              "val_scores": val_scores, "val_labels": VAL_LABELS}
    if maps:
        test_maps = (rng.normal(size=MASKS.shape) + signal * MASKS).astype(np.float32)
        metrics = evaluate(scores, LABELS, test_maps, MASKS)
        arrays.update(test_maps=test_maps, test_masks=MASKS)
    else:
        metrics = evaluate(scores, LABELS)
    cell_id = f"{dataset}__{encoder.replace('/', '-')}__{head}__s{seed}"
    store.write({"cell_id": cell_id, "status": status, "error": "boom" if status == "failed" else None,
                 "dataset": dataset, "kind": "latent", "encoder": encoder, "head": head, "detector": None,
                 "localization": "gradient", "setting": "uad", "seed": seed,
                 "metrics": metrics if status != "failed" else {},
                 "metrics_unavailable": dict(metrics.unavailable) if status != "failed" else {},
                 "config": {"encoder.name": encoder, "head.name": head, **(config or {})},
                 "adequacy": adequacy or PASSED,
                 **({} if deterministic is None else {"deterministic_fit": deterministic})},
                arrays if status != "failed" else None)
    return cell_id


CLAIM = {"id": "a-beats-b", "source": "test", "statement": "A beats B", "metrics": ["image_auroc"],
         "where": {"kind": "latent"}, "a": {"encoder": "good"}, "b": {"encoder": "ctrl"},
         "match": ["seed", "head"]}


def run_with(tmp_path: Path, cells: list[tuple]) -> ResultStore:
    store = ResultStore(tmp_path / "run")
    for args in cells:
        write_cell(store, *args[:5], **(args[5] if len(args) > 5 else {}))
    return store


def verdict_of(store: ResultStore, claim: dict = CLAIM, **kwargs):
    result = evaluate_claims(store.records(), [parse_claim(claim, "test")], store.arrays, n_resamples=500, **kwargs)
    return result.table


# ---------------------------------------------------------------------------------------------
# DeLong and Holm against hand-computed values
# ---------------------------------------------------------------------------------------------
def test_delong_hand_computed():
    # anomalous scores 0.9, 0.6; normal 0.7, 0.2: AUROC 3/4; placements V10 = [1, 1/2], V01 = [1/2, 1];
    # var = s10/m + s01/n = 0.125/2 + 0.125/2 = 0.125
    auc, cov = stats.delong([0.9, 0.6, 0.7, 0.2], [1, 1, 0, 0])
    assert auc[0] == pytest.approx(0.75) and cov[0, 0] == pytest.approx(0.125)
    # ties count one half: anomalous 0.5 vs normal 0.5 -> AUROC 0.5 with every placement 1/2, variance 0
    auc, cov = stats.delong([0.5, 0.5, 0.5, 0.5], [1, 1, 0, 0])
    assert auc[0] == pytest.approx(0.5) and cov[0, 0] == pytest.approx(0.0)


@pytest.mark.parametrize("clustered", [False, True])
def test_delong_covariance_agrees_with_the_bootstrap(clustered):
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(150, int), np.ones(100, int)]
    s1 = rng.normal(size=250) + y
    s2 = 0.6 * s1 + 0.8 * rng.normal(size=250) + 0.3 * y
    groups = np.arange(250) // 2 if clustered else None
    auc, cov = stats.delong(np.vstack([s1, s2]), y, groups)
    w = stats.group_bootstrap_weights(groups if clustered else np.arange(250), 3000, 1)
    boot = np.cov(np.vstack([stats.weighted_auroc(s1, y, w), stats.weighted_auroc(s2, y, w)]))
    assert auc == pytest.approx([stats.weighted_auroc(s1, y), stats.weighted_auroc(s2, y)])
    assert cov == pytest.approx(boot, rel=0.12)


def test_holm_hand_computed():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> monotone 0.02, 0.03, 0.06, 0.06
    assert stats.holm_adjust([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])


# ---------------------------------------------------------------------------------------------
# Matching
# ---------------------------------------------------------------------------------------------
def test_matching_pairs_cells_equal_on_the_match_attributes(tmp_path):
    cells = [("d1", enc, head, seed, sig) for enc, sig in (("good", 1.5), ("ctrl", 0.2)) for head in ("g", "k")
             for seed in (0, 1)]
    cells.append(("d1", "good", "only_a", 0, 1.0))                # a head B lacks: no pair
    store = run_with(tmp_path, cells)
    infos = [CellInfo(r, cell_attributes(r)) for r in store.records()]
    (comp,) = build_comparisons(parse_claim(CLAIM, "test"), infos)
    pairs = sorted((a.id, b.id) for a, b, _ in comp.pairs)
    assert len(pairs) == 4 and comp.n_a == 5 and comp.n_b == 4
    assert all(a.split("__")[2:] == b.split("__")[2:] for a, b in pairs)     # same head and seed
    records = {r["cell_id"]: r for r in store.records()}
    expected = np.mean([records[a]["metrics"]["image_auroc"] - records[b]["metrics"]["image_auroc"] for a, b in pairs])
    assert comp.effect == pytest.approx(expected)


def test_selectors_globs_negation_defaults_and_split(tmp_path):
    claim = parse_claim({**CLAIM, "a": {"encoder": "imagenet/*", "head.n_components": {"not": 1}},
                         "b": {"encoder": "ctrl"}, "match": ["seed", "backbone"], "split_by": ["encoder"],
                         "defaults": {"backbone": "resnet18"}}, "test")
    store = run_with(tmp_path, [("d1", "imagenet/resnet18", "g", 0, 1.0, {"config": {"head.n_components": 4}}),
                                ("d1", "imagenet/resnet34", "g", 0, 1.0),
                                ("d1", "imagenet/resnet18", "g1", 0, 1.0, {"config": {"head.n_components": 1}}),
                                ("d1", "ctrl", "g", 0, 0.0)])
    infos = [CellInfo(r, cell_attributes(r)) for r in store.records()]
    comps = {c.split: c for c in build_comparisons(claim, infos)}
    # imagenet/resnet18 pairs with ctrl (its backbone 'resnet18' = ctrl's default); resnet34 does not match
    assert set(comps) == {"imagenet/resnet18", "imagenet/resnet34"}
    assert len(comps["imagenet/resnet18"].pairs) == 1 and comps["imagenet/resnet18"].n_a == 1
    assert not comps["imagenet/resnet34"].pairs and "no matched pairs" in comps["imagenet/resnet34"].reason


def test_bad_claims_are_one_line_errors(tmp_path):
    with pytest.raises(ClaimError, match="unknown metric"):
        parse_claim({**CLAIM, "metrics": ["image_auc"]}, "f.toml")
    with pytest.raises(ClaimError, match="missing 'b'"):
        parse_claim({k: v for k, v in CLAIM.items() if k != "b"}, "f.toml")
    with pytest.raises(ClaimError, match="direction"):
        parse_claim({**CLAIM, "direction": "up"}, "f.toml")
    with pytest.raises(ClaimError, match="not found"):
        load_claims(tmp_path / "nothing.toml")


# ---------------------------------------------------------------------------------------------
# Verdicts
# ---------------------------------------------------------------------------------------------
SEEDS = (0, 1, 2, 3, 4)


def test_supported_contradicted_inconclusive(tmp_path):
    strong = run_with(tmp_path / "s", [("d1", e, "g", s, sig) for e, sig in (("good", 2.0), ("ctrl", 0.0))
                                       for s in SEEDS])
    row = verdict_of(strong).iloc[0]
    assert row["verdict"] == "supported" and row["effect"] > 0.3 and row["p_holm"] < 0.05
    assert row["ci_low"] > 0 and row["test"].startswith("DeLong") and row["n_pairs"] == len(SEEDS)

    reverse = run_with(tmp_path / "r", [("d1", e, "g", s, sig) for e, sig in (("good", 0.0), ("ctrl", 2.0))
                                        for s in SEEDS])
    row = verdict_of(reverse).iloc[0]            # one two-sided test: its sign says which verdict
    assert row["verdict"] == "contradicted" and row["effect"] < -0.3 and row["p_holm"] < 0.05
    assert row["ci_high"] < 0 and "p_holm_opposite" not in row

    equal = run_with(tmp_path / "e", [("d1", e, "g", s, 1.0) for e in ("good", "ctrl") for s in SEEDS])
    row = verdict_of(equal).iloc[0]
    assert row["verdict"] == "inconclusive" and row["ci_low"] < 0 < row["ci_high"]


def test_interval_is_the_one_the_test_inverts(tmp_path):
    from scipy.stats import t as student

    store = run_with(tmp_path, [("d1", e, "g", s, sig) for e, sig in (("good", 0.6), ("ctrl", 0.3)) for s in SEEDS])
    row = verdict_of(store).iloc[0]
    half = student.ppf(0.975, row["df"]) * row["se"]
    assert row["ci_low"] == pytest.approx(row["effect"] - half)
    assert row["ci_high"] == pytest.approx(row["effect"] + half)
    assert row["p"] == pytest.approx(2 * student.sf(abs(row["effect"]) / row["se"], row["df"]))
    assert row["se"] ** 2 == pytest.approx(row["v_test"] + row["v_seed"]) and row["v_seed"] > 0
    assert 4 <= row["df"] <= 19                  # Satterthwaite from 5 seeds: between S - 1 and min(I10, I01) - 1
    assert (row["ci_low"] > 0) == (row["p"] < 0.05)
    three = run_with(tmp_path / "three", [("d1", e, "g", s, sig) for e, sig in (("good", 0.6), ("ctrl", 0.3))
                                          for s in SEEDS[:3]])
    assert verdict_of(three).iloc[0]["df"] == 2                # fewer than 5 seeds: Hsu's min(df_test, S - 1)


def test_one_seed_of_a_stochastic_fit_is_inconclusive(tmp_path):
    store = run_with(tmp_path, [("d1", e, "g", 0, sig) for e, sig in (("good", 3.0), ("ctrl", 0.0))])
    row = verdict_of(store).iloc[0]
    assert row["verdict"] == "inconclusive" and row["reason"] == ONE_SEED and row["effect"] > 0.4
    assert math.isnan(row["p_holm"]) and math.isnan(row["ci_low"])


def test_one_seed_of_deterministic_fits_is_decided(tmp_path):
    store = run_with(tmp_path, [("d1", e, "g", 0, sig, {"deterministic": True})
                                for e, sig in (("good", 3.0), ("ctrl", 0.0))])
    row = verdict_of(store).iloc[0]
    assert row["verdict"] == "supported" and row["v_seed"] == 0 and row["deterministic"]
    assert row["df"] == 19                                   # min(I10, I01) - 1: 20 patients per class
    # one deterministic and one stochastic cell: still one seed of a stochastic fit
    store = run_with(tmp_path / "mixed", [("d1", "good", "g", 0, 3.0, {"deterministic": True}),
                                          ("d1", "ctrl", "g", 0, 0.0, {"deterministic": False})])
    assert verdict_of(store).iloc[0]["reason"] == ONE_SEED


def test_lower_is_better_metrics_flip_the_direction(tmp_path):
    store = run_with(tmp_path, [("d1", e, "g", s, sig) for e, sig in (("good", 2.5), ("ctrl", 0.0)) for s in SEEDS])
    rows = verdict_of(store, {**CLAIM, "metrics": ["image_auroc", "image_fpr95"]}).set_index("metric")
    assert rows.loc["image_fpr95", "effect"] < 0 < rows.loc["image_auroc", "effect"]
    assert rows.loc["image_auroc", "verdict"] == "supported" and rows.loc["image_fpr95", "verdict"] == "supported"
    rows = verdict_of(store, {**CLAIM, "metrics": ["image_fpr95"], "direction": "less"})
    assert rows.iloc[0]["verdict"] == "contradicted"


def test_permutation_fallback_with_three_plus_three_cases():
    """A perfect against a constant score on 3 + 3 cases: DeLong's variance is 0 (the old p was 0). The
    exact swap test (Venkatraman & Begg 1996): of the 2**6 swap patterns only the identity and the full
    swap reach |AUROC(A) - AUROC(B)| = 0.5, so p = 2 / 64."""
    labels = np.array([0, 0, 0, 1, 1, 1])
    arrays = {"a": {"test_scores": np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9]), "test_labels": labels},
              "b": {"test_scores": np.full(6, 0.5), "test_labels": labels}}
    records = [{"cell_id": cid, "status": "ok", "dataset": "d", "kind": "latent", "encoder": enc, "head": "g",
                "seed": 0, "metrics": {"image_auroc": evaluate(arrays[cid]["test_scores"], labels)["image_auroc"]},
                "deterministic_fit": True, "adequacy": PASSED} for cid, enc in (("a", "good"), ("b", "ctrl"))]
    row = evaluate_claims(records, [parse_claim(CLAIM, "t")], arrays.__getitem__).table.iloc[0]
    assert row["effect"] == pytest.approx(0.5) and row["test"].startswith("exact permutation (64")
    assert row["p"] == pytest.approx(2 / 64) and row["p"] > 0
    # B no longer constant: the t p is available too, but 3 cases per class still hand over to the permutation
    arrays["b"]["test_scores"] = np.array([0.5, 0.1, 0.9, 0.2, 0.6, 0.3])
    records[1]["metrics"]["image_auroc"] = evaluate(arrays["b"]["test_scores"], labels)["image_auroc"]
    row = evaluate_claims(records, [parse_claim(CLAIM, "t")], arrays.__getitem__).table.iloc[0]
    assert "permutation" in row["test"] and row["p"] >= 2 / 64


def test_obuchowski_factors_hand_computed():
    # clusters c0: (anomalous 0.9, normal 0.2), c1: (anomalous 0.6), c2: (normal 0.7, normal 0.1), c3: (anomalous 0.8)
    # V10 = 1, 2/3, 1; V01 = 1, 2/3, 1; AUROC = 8/9; per-cluster a = 1/9, -2/9, 0, 1/9 and b = 1/9, 0, -1/9, 0
    # I = 4, I10 = 3, I01 = 2: S10 = 3/(2*3) * 6/81, S01 = 2/(1*3) * 2/81, S11 = 4/3 * 1/81
    # var = S10/3 + S01/3 + 2 S11/9 = 47/2187 (one factor I/(I-1) for all three would give 40/2187)
    scores = [0.9, 0.2, 0.6, 0.7, 0.1, 0.8]
    labels = [1, 0, 1, 0, 0, 1]
    groups = ["c0", "c0", "c1", "c2", "c2", "c3"]
    auc, cov = stats.delong(scores, labels, groups)
    assert auc[0] == pytest.approx(8 / 9) and cov[0, 0] == pytest.approx(47 / 2187)


def test_pixel_metric_uses_a_resolving_bootstrap(tmp_path):
    store = run_with(tmp_path, [("d1", e, "g", s, sig, {"maps": True}) for e, sig in (("good", 1.5), ("ctrl", 0.1))
                                for s in SEEDS])
    result = evaluate_claims(store.records(), [parse_claim({**CLAIM, "metrics": ["pixel_ap"]}, "t")], store.arrays)
    row = result.table.iloc[0]
    assert row["test"].startswith("bootstrap variance") and row["n_resamples"] == DEFAULT_RESAMPLES
    assert row["verdict"] == "supported" and row["ci_low"] > 0 and row["v_test"] > 0


def test_not_testable_says_why(tmp_path):
    failed = {"passed": False, "judged": True, "trained": True, "measures": {},
              "reasons": ["loss: still falling at the end"]}
    store = run_with(tmp_path, [("d1", "good", "g", s, 2.0, {"adequacy": failed}) for s in SEEDS]
                     + [("d1", "ctrl", "g", s, 0.0) for s in SEEDS])
    row = verdict_of(store).iloc[0]
    assert row["verdict"] == "not testable"
    assert "not adequately trained at this scale" in row["reason"] and "still falling" in row["reason"]
    assert math.isnan(row["p_holm"])

    # a failed cell and a cell of a dataset without B are not evidence either
    store = run_with(tmp_path / "f", [("d1", "good", "g", 0, 2.0, {"status": "failed"}), ("d1", "ctrl", "g", 0, 0.0),
                                      ("d2", "good", "g", 0, 2.0)])
    rows = verdict_of(store).set_index("dataset")
    assert rows.loc["d1", "verdict"] == "not testable" and rows.loc["d1", "reason"].startswith("failed")
    assert "no cells of group B" in rows.loc["d2", "reason"]

    # pixel metrics without masks
    store = run_with(tmp_path / "p", [("d1", e, "g", 0, 1.0) for e in ("good", "ctrl")])
    row = verdict_of(store, {**CLAIM, "metrics": ["pixel_ap"]}).iloc[0]
    assert row["verdict"] == "not testable" and "metric unavailable" in row["reason"]


def test_some_pairs_excluded_are_noted(tmp_path):
    failed = {"passed": False, "judged": True, "trained": True, "measures": {}, "reasons": ["collapsed"]}
    store = run_with(tmp_path, [("d1", "good", "g", 0, 2.0, {"adequacy": failed})]
                     + [("d1", "good", "g", s, 2.0) for s in (1, 2)] + [("d1", "ctrl", "g", s, 0.0) for s in SEEDS])
    row = verdict_of(store).iloc[0]
    assert row["n_pairs"] == 2 and row["n_excluded"] == 1 and "collapsed" in row["note"]


def test_a_failed_sanity_claim_gates_the_encoder(tmp_path):
    sanity = {**CLAIM, "id": "sanity", "sanity": True, "a": {"encoder": ["good", "weak"]}, "b": {"encoder": "ctrl"},
              "split_by": ["encoder"]}
    other = {**CLAIM, "id": "weak-vs-good", "a": {"encoder": "weak"}, "b": {"encoder": "good"}, "direction": "less"}
    store = run_with(tmp_path, [("d1", e, "g", s, sig) for e, sig in (("good", 2.0), ("weak", 0.0), ("ctrl", 0.0))
                                for s in SEEDS])
    result = evaluate_claims(store.records(), [parse_claim(sanity, "t"), parse_claim(other, "t")], store.arrays,
                             n_resamples=300)
    rows = result.table.set_index(["claim", "split"])
    assert rows.loc[("sanity", "good"), "verdict"] == "supported"
    assert rows.loc[("sanity", "weak"), "verdict"] == "inconclusive"
    gated = rows.loc[("weak-vs-good", "")]
    assert gated["verdict"] == "not testable" and "untrained control" in gated["reason"]
    assert set(result.table["family"]) == {"sanity", "claims"}
    assert set(result.table[result.table["family"] == "sanity"]["tested_on"]) == {"validation"}
    assert rows.loc[("sanity", "good"), "tested_on"] == "validation"


def _gate_run(tmp_path, weak_test: float, weak_val: float) -> tuple:
    sanity = {**CLAIM, "id": "sanity", "sanity": True, "a": {"encoder": "weak"}, "b": {"encoder": "ctrl"}}
    other = {**CLAIM, "id": "weak-vs-ctrl2", "a": {"encoder": "weak"}, "b": {"encoder": "ctrl2"}}
    store = run_with(tmp_path, [("d1", "weak", "g", s, weak_test, {"val_signal": weak_val}) for s in SEEDS]
                     + [("d1", c, "g", s, 0.0) for c in ("ctrl", "ctrl2") for s in SEEDS])
    return store, [parse_claim(sanity, "t"), parse_claim(other, "t")]


def test_the_gate_is_decided_on_validation(tmp_path):
    # strong on validation, nothing on test: the gate opens (and the test-set claim is judged on its own)
    store, claims = _gate_run(tmp_path / "open", weak_test=0.0, weak_val=3.0)
    rows = evaluate_claims(store.records(), claims, store.arrays, n_resamples=200).table.set_index("claim")
    assert rows.loc["sanity", "verdict"] == "supported" and rows.loc["weak-vs-ctrl2", "verdict"] != "not testable"
    # strong on test, nothing on validation: the gate stays closed
    store, claims = _gate_run(tmp_path / "closed", weak_test=3.0, weak_val=0.0)
    rows = evaluate_claims(store.records(), claims, store.arrays, n_resamples=200).table.set_index("claim")
    assert rows.loc["sanity", "verdict"] == "inconclusive"
    assert rows.loc["weak-vs-ctrl2", "verdict"] == "not testable" and "sanity" in rows.loc["weak-vs-ctrl2", "reason"]

    # permuting the TEST labels (every cell alike) leaves the gate's row unchanged
    store, claims = _gate_run(tmp_path / "perm", weak_test=1.0, weak_val=1.0)
    order = np.random.default_rng(0).permutation(N)

    def permuted(cell_id):
        arrays = dict(store.arrays(cell_id))
        arrays["test_labels"] = arrays["test_labels"][order]
        return arrays

    plain = evaluate_claims(store.records(), claims, store.arrays, n_resamples=200).table.set_index("claim")
    shuffled = evaluate_claims(store.records(), claims, permuted, n_resamples=200).table.set_index("claim")
    for column in ("effect", "p", "ci_low", "ci_high", "verdict"):
        assert plain.loc["sanity", column] == shuffled.loc["sanity", column], column


def test_no_anomalies_on_validation_closes_the_gate(tmp_path):
    store, claims = _gate_run(tmp_path, weak_test=3.0, weak_val=3.0)

    def normals_only(cell_id):
        arrays = dict(store.arrays(cell_id))
        arrays["val_labels"] = np.zeros_like(arrays["val_labels"])
        return arrays

    rows = evaluate_claims(store.records(), claims, normals_only, n_resamples=200).table.set_index("claim")
    assert rows.loc["sanity", "verdict"] == "not testable" and "validation" in rows.loc["sanity", "reason"]
    gated = rows.loc["weak-vs-ctrl2"]
    assert gated["verdict"] == "not testable" and "not testable on validation" in gated["reason"]


def test_one_holm_over_the_whole_run(tmp_path):
    sanity = {**CLAIM, "id": "sanity", "sanity": True, "a": {"encoder": "good"}, "b": {"encoder": "ctrl"}}
    second = {**CLAIM, "id": "mid-beats-ctrl", "a": {"encoder": "mid"}, "metrics": ["image_auroc", "image_ap"]}
    store = run_with(tmp_path, [("d1", e, "g", s, sig) for e, sig in (("good", 2.5), ("mid", 0.5), ("ctrl", 0.0))
                                for s in SEEDS])
    table = evaluate_claims(store.records(), [parse_claim(c, "t") for c in (sanity, CLAIM, second)], store.arrays,
                            n_resamples=300).table
    live = table[np.isfinite(table["p"])]
    assert len(live) == 4 and set(live["family"]) == {"sanity", "claims"}
    assert live["p_holm"].to_numpy() == pytest.approx(stats.holm_adjust(live["p"].to_numpy()))
    assert not any("opposite" in c for c in table.columns)


# ---------------------------------------------------------------------------------------------
# Files: the CLI, user claims, the built-in claims on the report's fake run
# ---------------------------------------------------------------------------------------------
def test_bench_claims_cli_writes_the_files_with_a_user_claim(tmp_path, capsys):
    from bench.cli import main

    store = run_with(tmp_path, [("d1", e, "g", s, sig) for e, sig in (("good", 2.0), ("ctrl", 0.0)) for s in SEEDS])
    user = tmp_path / "mine.toml"
    user.write_text('[[claim]]\nid = "mine"\nsource = "me"\nstatement = "good beats ctrl"\nmetrics = ["image_auroc"]\n'
                    'a = { encoder = "good" }\nb = { encoder = "ctrl" }\nmatch = ["seed", "head"]\n')
    out = tmp_path / "report"
    assert main(["claims", str(store.run_dir), "--claims", str(user), "--out", str(out), "--resamples", "300"]) == 0
    printed = capsys.readouterr().out
    assert "mine" in printed and "supported" in printed
    for name in ("claims.md", "claims.csv", "claims.tex", "figures/claims_forest.png"):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader((out / "claims.csv").open()))
    assert {"claim", "dataset", "metric", "effect", "ci_low", "ci_high", "p_holm", "verdict", "reason"} <= set(rows[0])
    mine = [r for r in rows if r["claim"] == "mine"]
    assert len(mine) == 1 and mine[0]["verdict"] == "supported"
    assert {r["claim"] for r in rows} == {"mine"}   # built-in claims with no cells here are counted, not listed
    assert "built-in claims have no cells on both sides in this run (cradl-" in printed
    assert "\\begin{tabular}" in (out / "claims.tex").read_text()
    assert main(["claims", str(store.run_dir), "--claims", str(tmp_path / "none.toml"), "--out", str(out)]) == 2


def test_grid_claims_table_names_files_relative_to_the_grid(tmp_path):
    from bench.analysis.claims import claims_for_run

    (tmp_path / "grids").mkdir()
    (tmp_path / "grids" / "extra.toml").write_text(
        '[[claim]]\nid = "from-grid"\nstatement = "s"\nmetrics = ["image_ap"]\na = { encoder = "x" }\nb = { encoder = "y" }\n')
    run = tmp_path / "run"
    run.mkdir()
    grid_file = tmp_path / "grids" / "g.toml"
    source = 'name = "g"\n[claims]\nfiles = ["extra.toml"]\nbuiltin = false\n'
    (run / "run.json").write_text(json.dumps({"grid_source": source, "grid_file": str(grid_file)}))
    assert [c.id for c in claims_for_run(run)] == ["from-grid"]


def test_builtin_claims_parse():
    from bench.analysis.claims import builtin_claim_files

    files = builtin_claim_files()
    ids = {c.id for f in files for c in load_claims(f)}
    assert {"trained-beats-untrained", "cradl-contrastive-beats-vae", "cradl-mixture-beats-gaussian",
            "recontrast-adapted-beats-frozen", "ddad-ocssl-beats-uad", "ddad-asr-beats-inter", "ddad-asr-beats-intra",
            "msacl-beats-imagenet-patch", "dense-beats-gradient"} <= ids
