"""The answer on screen (issue 24 item 3): top cells with seed intervals, testable verdicts, flagged cells."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import t

from bench.report.answer import answer_text, seed_interval, verdict_lines
from bench.report.builder import ReportBuilder
from tests.test_report import make_fake_run


def test_seed_interval_is_the_t_interval_of_the_mean():
    assert seed_interval(0.8, float("nan"), 1) == "0.800 (1 seed)"
    half = t.ppf(0.975, 2) * 0.03 / np.sqrt(3)
    assert seed_interval(0.8, 0.03, 3) == f"0.800 ± {half:.3f} (3 seeds)"


def test_answer_ranks_top_cells_and_flags_inadequate_and_degenerate(tmp_path):
    run = make_fake_run(tmp_path, {"synth_masks": True})
    # one cell fails the adequacy guard, one is degenerate
    rec_dir = run / "records"
    for name, patch in (("synth_masks-enc_bad-knn-s0", {"adequacy": {"passed": False, "reasons": ["loss still falling"]}}),
                        ("synth_masks-enc_mid-knn-s1", {"status": "degenerate", "error": "all 60 test scores are equal"})):
        path = rec_dir / f"{name}.json"
        record = json.loads(path.read_text())
        record.update(patch)
        path.write_text(json.dumps(record))
    builder = ReportBuilder(run, tmp_path / "report", full=False)
    text = answer_text(builder)
    lines = text.splitlines()
    assert lines[0] == "synth_masks:"
    auroc = lines[lines.index("  image AUROC (top 5 of 7):") + 1:][:5]
    # best first: enc_good x gauss has the largest signal in the fake run, over 2 seeds
    assert auroc[0].split()[1:4] == ["enc_good", "×", "gauss"] and "(2 seeds)" in auroc[0]
    means = [float(line.split("  ")[-1].split()[0]) for line in auroc]
    assert means == sorted(means, reverse=True)
    assert any(line.strip().startswith("1.") for line in lines[lines.index("  pixel AP (top 5 of 8):"):])
    assert "  § synth_masks-enc_bad-knn-s0: loss still falling" in lines
    assert any(line.startswith("  degenerate synth_masks-enc_mid-knn-s1") for line in lines)
    assert "enc_mid × knn degenerate" in text     # marked where it is ranked


def test_verdict_lines_list_only_testable_comparisons():
    table = pd.DataFrame([
        {"claim": "a", "split": None, "dataset": "d", "metric": "image_auroc", "effect": 0.1, "ci_low": 0.05,
         "ci_high": 0.15, "verdict": "supported"},
        {"claim": "b", "split": None, "dataset": "d", "metric": "image_auroc", "effect": float("nan"),
         "ci_low": float("nan"), "ci_high": float("nan"), "verdict": "not testable"}])
    lines = verdict_lines(table)
    assert lines[0] == "verdicts (1 testable of 2 comparisons):"
    assert len(lines) == 2 and "supported: a · d · image_auroc effect +0.100 [+0.050, +0.150]" in lines[1]
    assert "none of the 1" in verdict_lines(table.iloc[1:])[0]


@pytest.mark.parametrize("what", ["heads", "datasets", "grids"])
def test_bench_list_gives_one_line_of_description_per_entry(what, capsys):
    from bench.cli import grid_description, main
    from datasets import DATASETS
    from methods.registry import HEADS

    assert main(["list", what]) == 0
    lines = capsys.readouterr().out.splitlines()
    expected = {"heads": lambda n: HEADS.lookup(n)[0].summary, "grids": grid_description,
                "datasets": lambda n: DATASETS.lookup(n.split("/")[0] + ("/x" if "/" in n else ""))[0].summary}[what]
    rows = [line for line in lines if not line.startswith("(")]
    assert rows and all(len(line.split(None, 1)) == 2 for line in rows)      # name, then a description
    for line in rows:
        name, description = line.split(None, 1)
        assert description == " ".join(expected(name).split()) and description
