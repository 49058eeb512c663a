"""The claims' verdicts are calibrated: a seeded, small run of bench.tools.calibration (issue 23).

Tolerances come from the Monte-Carlo error of the replicates drawn here. The test fails for the
inference of before issue 23 (family-wise 16 % with 2 seeds) and for Satterthwaite's df at 2 seeds
(23 %, measured by the full tool), so a regression in the reference or the variance shows here.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.tools import calibration as cal


def _rates(result: dict, null: bool) -> tuple[float, float, list]:
    rows, any_verdict, _ = result[null]
    fwer = float(np.mean(any_verdict))
    covered = [c for m in cal.METRICS for _, c in rows[m] if c is not None]
    return fwer, float(np.mean(covered)) if covered else float("nan"), covered


@pytest.mark.parametrize("design, replicates", [(cal.Design("u200", 2), 80), (cal.Design("c12", 1, True), 40)])
def test_family_wise_rate_and_coverage_under_the_null(design, replicates):
    result = cal.run_design(design, replicates, seed=11, resamples=100, reference=None, settings=(True,))
    fwer, coverage, covered = _rates(result, True)
    se = math.sqrt(0.05 * 0.95 / replicates)
    assert fwer <= 0.05 + 2 * se, f"{design.name}: family-wise rate {fwer:.3f}"
    assert covered, "every comparison undecided: nothing was tested"
    assert coverage >= 0.93 - 2 * math.sqrt(0.95 * 0.05 / len(covered)), f"{design.name}: coverage {coverage:.3f}"


def test_one_seed_of_a_stochastic_fit_never_decides():
    result = cal.run_design(cal.Design("u200", 1), 10, seed=3, resamples=50, reference=None, settings=(True, False))
    for null in (True, False):
        rows, any_verdict, _ = result[null]
        assert not any(any_verdict) and all(v == "inconclusive" for m in cal.METRICS for v, _ in rows[m])


def test_power_is_there_when_the_seeds_agree():
    """Deterministic fits on 200 cases: the +0.08 AUROC difference is found in most runs."""
    result = cal.run_design(cal.Design("u200", 1, True), 20, seed=5, resamples=100, reference=None, settings=(False,))
    rows, _, truth = result[False]
    power = np.mean([v == "supported" for v, _ in rows["image_auroc"]])
    assert truth["image_auroc"] == pytest.approx(0.078, abs=0.005)
    assert power >= 0.3 and not any(v == "contradicted" for m in cal.METRICS for v, _ in rows[m])
