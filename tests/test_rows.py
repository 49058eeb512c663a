"""No row mixes configurations (bench.analysis.rows, issue 23 item 6): records of one label whose configurations
differ in more than the seed become rows of their own in the report, are kept out of claims' pairs, and
``run``/``report`` say so."""

from __future__ import annotations

import numpy as np

from bench.analysis.claims import evaluate_claims, parse_claim
from bench.analysis.rows import assign_rows, mixed_rows
from bench.metrics import evaluate
from bench.report.frames import cell_frame, entry_frame, seed_aggregate

LABELS = np.r_[np.zeros(30, int), np.ones(30, int)]


def record(encoder: str, seed: int, *, k: int | None = 5, finished: str = "2026-01-01T00:00:00+00:00",
           dataset: str = "synthetic", auroc: float = 0.8, fingerprint: str = "f0") -> dict:
    config = {"dataset.name": dataset, "encoder.name": encoder, "head.name": "knn", "localization": "gradient",
              "seed": seed, **({"head.k": k} if k is not None else {})}
    return {"cell_id": f"{dataset}__{encoder}__knn__s{seed}", "status": "ok", "dataset": dataset, "kind": "latent",
            "encoder": encoder, "head": "knn", "detector": None, "localization": "gradient", "setting": "uad",
            "seed": seed, "config": config, "dataset_fingerprint": fingerprint, "finished": finished,
            "metrics": {"image_auroc": auroc, "image_ap": auroc, "image_fpr95": 1 - auroc},
            "adequacy": {"passed": True}}


def test_one_configuration_is_one_row():
    records = [record("enc", s) for s in (0, 1, 2)] + [record("other", s, k=2) for s in (0, 1)]
    rows = assign_rows(records)
    assert {r.variant for r in rows} == {""} and [r.row for r in rows[:3]] == ["enc × knn"] * 3
    assert mixed_rows(records) == []


def test_the_newest_configuration_is_the_labels_own_and_the_others_are_named_rows():
    records = [record("enc", 0, k=2, finished="2026-02-01T00:00:00+00:00"), record("enc", 1), record("enc", 2),
               record("enc", 0, dataset="other")]                   # another dataset: not the same label
    rows = assign_rows(records)
    assert [r.row for r in rows] == ["enc × knn", "enc × knn [head.knn.k=5]", "enc × knn [head.knn.k=5]", "enc × knn"]
    assert mixed_rows(records) == ["seeds 1, 2 of `enc × knn` (synthetic) still have head.knn.k=5: re-run them or "
                                   "they are reported as their own row"]
    # a setting left unset reads as such, or as its default where a resolver knows it; other data is named too
    unset = [record("enc", 0, k=2, finished="2026-02-01T00:00:00+00:00"), record("enc", 1, k=None)]
    assert assign_rows(unset)[1].variant == "head.knn.k unset"
    assert assign_rows(unset, lambda role, name, param: 5)[1].variant == "head.knn.k=5 (default)"
    moved = [record("enc", 0, finished="2026-02-01T00:00:00+00:00", fingerprint="new"), record("enc", 1)]
    assert assign_rows(moved)[1].variant == "other data (fingerprint f0)"


def test_the_report_does_not_average_two_configurations():
    records = [record("enc", 0, k=2, auroc=0.9, finished="2026-02-01T00:00:00+00:00"), record("enc", 1, auroc=0.6)]
    agg = seed_aggregate(entry_frame(cell_frame(records)))
    image = agg.loc["synthetic"]
    image = image[image["levels"] == "image"]
    assert set(image.index) == {"enc × knn", "enc × knn [head.knn.k=5]"}
    assert image.loc["enc × knn", "image_auroc.mean"] == 0.9 and image.loc["enc × knn", "image_auroc.n"] == 1
    assert image.loc["enc × knn [head.knn.k=5]", "image_auroc.mean"] == 0.6
    # the mixed case before rows existed: one row of two seeds, mean 0.75
    same = [record("enc", 0, auroc=0.9), record("enc", 1, auroc=0.6)]
    assert seed_aggregate(entry_frame(cell_frame(same))).loc[("synthetic", "enc × knn"), "image_auroc.n"] == 2


def test_claims_pair_only_records_of_the_rows_own_configuration():
    rng = np.random.default_rng(0)
    records, arrays = [], {}
    for encoder, shift in (("good", 1.5), ("ctrl", 0.0)):
        for seed in (0, 1):
            k = 2 if (encoder == "good" and seed == 0) else 5
            rec = record(encoder, seed, k=k, finished=f"2026-0{2 - seed}-01T00:00:00+00:00")
            scores = rng.normal(size=60) + shift * LABELS
            rec["metrics"] = dict(evaluate(scores, LABELS))
            records.append(rec)
            arrays[rec["cell_id"]] = {"test_scores": scores, "test_labels": LABELS,
                                      "test_groups": np.arange(60).astype(str)}
    claim = parse_claim({"id": "c", "source": "t", "statement": "good beats ctrl", "metrics": ["image_auroc"],
                         "a": {"encoder": "good"}, "b": {"encoder": "ctrl"}, "match": ["seed", "head"]}, "test")
    row = evaluate_claims(records, [claim], arrays.__getitem__, n_resamples=300).table.iloc[0]
    assert row["n_pairs"] == 1 and row["n_seeds"] == 1, "seed 1 of `good × knn` has k=5, seed 0 k=2: not pooled"
    assert "another configuration" in row["note"] and "head.knn.k=5" in row["note"]


TINY_KNN = ["--set", 'datasets=["synthetic"]', "--set", "defaults.dataset.image_size=32",
            "--set", "dataset.synthetic.n_train=48", "--set", "dataset.synthetic.n_val=16",
            "--set", "dataset.synthetic.n_test=24", "--set", "dataset.synthetic.n_pool=0",
            "--set", 'encoders=["imagenet/tf_efficientnet_lite0"]', "--set", 'heads=["knn"]',
            "--set", 'localization=["gradient"]']


def test_run_and_report_say_what_was_set_aside_and_which_rows_mix(tmp_path, capsys):
    """The issue's case: knn (k=5) for seeds 0 and 1, then seed 0 alone re-run with k=2."""
    from bench.cli import main

    common = ["run", "--grid", "quick", *TINY_KNN, "--out", str(tmp_path / "run"), "--cache", str(tmp_path / "cache"),
              "--no-report", "--quiet", "--device", "cpu"]
    assert main([*common, "--set", "seeds=[0,1]"]) == 0
    assert "set aside" not in capsys.readouterr().out
    assert main([*common, "--set", "seeds=[0]", "--set", "head.knn.k=2"]) == 0
    printed = capsys.readouterr().out
    superseded = tmp_path / "run" / "records" / "superseded"
    assert "1 cells: 1 ok" in printed
    assert f"1 older record set aside this run, kept in {superseded}/" in printed
    assert ("note: seed 1 of `imagenet/tf_efficientnet_lite0 × knn` (synthetic) still has head.knn.k=5 (default): "
            "re-run it or it is reported as its own row") in printed
    # what `report` prints before its path (building the report itself is tested elsewhere), and its rows
    from bench.cli import record_notes
    from bench.report.sensitivity import registered_default
    from bench.run.store import ResultStore

    notes = record_notes(tmp_path / "run")
    assert notes[0].startswith(f"1 older record set aside so far, kept in {superseded}/") and "seed 1 of" in notes[1]
    labels = set(cell_frame(ResultStore(tmp_path / "run").records(), registered_default)["label"])
    assert labels == {"imagenet/tf_efficientnet_lite0 × knn", "imagenet/tf_efficientnet_lite0 × knn [head.knn.k=5 (default)]"}
