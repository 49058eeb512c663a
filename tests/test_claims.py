"""Claims (bench.analysis.claims): matching, DeLong, Holm, verdicts, the CLI and user claim files."""

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
    resamples_for,
)
from bench.metrics import evaluate
from bench.run.store import ResultStore

N = 80                                   # test cases: 40 normal, 40 anomalous, in patients of two
LABELS = np.r_[np.zeros(N // 2, int), np.ones(N // 2, int)]
GROUPS = np.arange(N) // 2
SIDE = 12
MASKS = np.zeros((N, SIDE, SIDE), np.uint8)
MASKS[LABELS == 1, 3:8, 4:9] = 1
PASSED = {"passed": True, "judged": True, "trained": True, "reasons": [], "measures": {}}


def write_cell(store: ResultStore, dataset: str, encoder: str, head: str, seed: int, signal: float, *,
               adequacy: dict | None = None, status: str = "ok", maps: bool = False, config: dict | None = None):
    """One latent cell whose scores separate the classes by ``signal`` (seeded by its name)."""
    rng = np.random.default_rng(stats.stable_seed(dataset, encoder, head, seed))
    scores = rng.normal(size=N) + signal * LABELS
    arrays = {"test_scores": scores, "test_labels": LABELS, "test_groups": GROUPS.astype(str)}
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
                 "adequacy": adequacy or PASSED}, arrays if status != "failed" else None)
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


def test_resamples_resolve_the_correction():
    assert resamples_for(1, 0.05) == 2000
    b = resamples_for(40, 0.05)
    assert 40 / (b + 1) < 0.05 / 10                     # Holm's smallest threshold is resolvable
    assert resamples_for(10_000, 0.05) == 20000


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
SEEDS = (0, 1, 2)


def test_supported_contradicted_inconclusive(tmp_path):
    strong = run_with(tmp_path / "s", [("d1", e, "g", s, sig) for e, sig in (("good", 2.0), ("ctrl", 0.0))
                                       for s in SEEDS])
    row = verdict_of(strong).iloc[0]
    assert row["verdict"] == "supported" and row["effect"] > 0.3 and row["p_holm"] < 1e-4
    assert row["ci_low"] > 0 and row["test"].startswith("DeLong") and row["n_pairs"] == 3

    reverse = run_with(tmp_path / "r", [("d1", e, "g", s, sig) for e, sig in (("good", 0.0), ("ctrl", 2.0))
                                        for s in SEEDS])
    row = verdict_of(reverse).iloc[0]
    assert row["verdict"] == "contradicted" and row["effect"] < -0.3 and row["p_holm"] > 0.5

    equal = run_with(tmp_path / "e", [("d1", e, "g", s, 1.0) for e in ("good", "ctrl") for s in SEEDS])
    row = verdict_of(equal).iloc[0]
    assert row["verdict"] == "inconclusive" and row["ci_low"] < 0 < row["ci_high"]


def test_pixel_metric_uses_a_resolving_bootstrap(tmp_path):
    store = run_with(tmp_path, [("d1", e, "g", s, sig, {"maps": True}) for e, sig in (("good", 1.5), ("ctrl", 0.1))
                                for s in SEEDS])
    result = evaluate_claims(store.records(), [parse_claim({**CLAIM, "metrics": ["pixel_ap"]}, "t")], store.arrays)
    row = result.table.iloc[0]
    assert row["test"].startswith("bootstrap") and row["n_resamples"] == resamples_for(1, 0.05)
    assert row["verdict"] == "supported" and row["p"] == pytest.approx(1 / (row["n_resamples"] + 1))


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
