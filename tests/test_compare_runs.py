"""Only relevant claims, and one report over several runs (issue 24, items 4 and 6)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from bench.analysis import stats
from bench.metrics import evaluate
from bench.run.store import ResultStore

N = 60
LABELS = np.r_[np.zeros(N // 2, int), np.ones(N // 2, int)]


def write_cell(run_dir: Path, encoder: str, seed: int, signal: float, *, epochs: int = 1,
               data: str = "data-v1", labels: np.ndarray = LABELS) -> str:
    """One latent cell of dataset ``d1`` with a config hash and a dataset fingerprint, as the runner writes."""
    rng = np.random.default_rng(stats.stable_seed(encoder, seed, epochs))
    scores = rng.normal(size=N) + signal * labels
    config = {"encoder.name": encoder, "head.name": "g", "encoder.epochs": epochs, "seed": seed}
    cell_id = f"d1__{encoder}__g__s{seed}"
    ResultStore(run_dir).write(
        {"cell_id": cell_id, "status": "ok", "error": None, "dataset": "d1", "kind": "latent", "method": f"{encoder} × g",
         "encoder": encoder, "head": "g", "detector": None, "localization": "gradient", "setting": "uad", "seed": seed,
         "metrics": evaluate(scores, labels), "config": config, "config_hash": stats.stable_seed(*config.items()),
         "dataset_fingerprint": data, "timings": {"total_s": 0.1}},
        {"test_scores": scores, "test_labels": labels, "test_groups": (np.arange(N) // 2).astype(str)})
    return cell_id


def test_builtin_claims_without_cells_are_one_line_and_can_be_turned_off(tmp_path, capsys):
    from bench.cli import main

    run = tmp_path / "run"
    for seed in (0, 1):
        write_cell(run, "good", seed, 2.0)
    assert main(["claims", str(run), "--out", str(tmp_path / "c")]) == 0
    printed = capsys.readouterr().out
    assert "not testable" not in printed.replace("0 not testable", "")
    line = next(l for l in printed.splitlines() if "built-in claim" in l)
    assert "cradl-contrastive-beats-vae" in line
    (run / "run.json").write_text('{"overrides": ["claims.builtin=false"], "grid_source": ""}')
    assert main(["claims", str(run), "--out", str(tmp_path / "c2")]) == 0
    assert "built-in claim" not in capsys.readouterr().out


def test_set_claims_builtin_is_accepted_by_the_grid():
    from bench.run.grid import load_grid
    from bench.run.validate import validate_grid

    grid = load_grid("quick", ["claims.builtin=false"])
    validate_grid(grid)
    assert grid.data["claims"]["builtin"] is False


def test_one_report_over_two_runs_pairs_cells_across_them(tmp_path):
    from bench.cli import main

    a, b = tmp_path / "run_a", tmp_path / "run_b"
    for seed in (0, 1, 2):
        write_cell(a, "good", seed, 2.0)
        write_cell(b, "ctrl", seed, 0.0)
    write_cell(b, "good", 0, 2.0)                          # the same cell in both runs: taken once
    write_cell(b, "good", 1, 1.0, epochs=5)                # same name, another configuration: kept apart
    out = tmp_path / "both"
    assert main(["report", str(a), str(b), "--out", str(out), "--no-builtin"]) == 0
    readme = (out / "README.md").read_text()
    assert "## Runs combined" in readme
    assert "1 cell(s) present in more than one run" in readme and "d1__good__g__s0 (run_a and run_b)" in readme
    assert "good × g (run_b)" in readme
    rows = list(csv.DictReader((out / "tables" / "d1" / "paired_all.csv").open()))
    pairs = {(r.get("a") or r.get("method_a"), r.get("b") or r.get("method_b")) for r in rows}
    flat = {x for p in pairs for x in p}
    assert {"good × g", "ctrl × g"} <= flat, rows[:2]


def test_runs_with_different_test_sets_are_never_paired(tmp_path):
    from bench.report.runs import CombinedStore

    a, b = tmp_path / "run_a", tmp_path / "run_b"
    write_cell(a, "good", 0, 2.0)
    write_cell(b, "ctrl", 0, 0.0, data="data-v2", labels=LABELS[::-1].copy())
    records = CombinedStore([a, b]).records()
    assert sorted(r["dataset"] for r in records) == ["d1", "d1 (run_b)"]
