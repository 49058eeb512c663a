"""Axis sensitivity: swept settings are found from the configurations alone, matched on everything
else, and summarised by the best cell, the matched mean and Kendall's tau (checked by hand)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from bench.analysis.axes import swept_axes
from bench.report.sensitivity import registered_default

# image AUROC of encoder e under preprocess p (seed means are what the analysis compares)
SCORES = {("a", "none"): 0.90, ("b", "none"): 0.80, ("c", "none"): 0.70, ("d", "none"): 0.60,
          ("a", "l2"): 0.65, ("b", "l2"): 0.85, ("c", "l2"): 0.75, ("d", "l2"): 0.55}


def cells(scores=SCORES, explicit_none=True, seeds=(0, 1)) -> pd.DataFrame:
    rows = []
    for (encoder, pre), value in scores.items():
        for seed in seeds:
            rows.append({"dataset": "set", "status": "ok", "encoder": encoder, "head": f"gaussian_{pre}",
                         "label": f"{encoder} × gaussian_{pre}", "image_auroc": value + (0.01 if seed else -0.01),
                         "config.seed": seed, "config.localization": "gradient", "config.encoder.name": encoder,
                         "config.head.name": "gaussian", "config.dataset.name": "set",
                         "config.head.preprocess": pre if (pre != "none" or explicit_none) else None})
    return pd.DataFrame(rows)


def test_axis_found_and_summarised_by_hand():
    [axis] = swept_axes(cells(), "image_auroc")
    assert (axis.dataset, axis.key, axis.reference) == ("set", "head.preprocess", "none")
    none, l2 = axis.choices
    assert none.value == "none" and none.best_label == "a × gaussian_none" and none.best == pytest.approx(0.90)
    assert l2.best_label == "b × gaussian_l2" and l2.best == pytest.approx(0.85)
    assert none.matched_mean == pytest.approx(0.75) and l2.matched_mean == pytest.approx(0.70)
    assert none.n_matched == 4
    # none ranks a > b > c > d; l2 ranks b > c > a > d. Pairs: (a,b) discordant, (a,c) discordant,
    # (a,d) concordant, (b,c) c, (b,d) c, (c,d) c: tau = (4 - 2) / 6
    assert l2.tau_cells == pytest.approx(1 / 3) and l2.tau_encoders == pytest.approx(1 / 3)
    assert math.isnan(none.tau_cells)


def test_left_out_setting_resolved_from_the_registry():
    frame = cells(explicit_none=False)
    unresolved = swept_axes(frame, "image_auroc")
    assert [c.value for c in unresolved[0].choices] == ["default", "l2"]
    resolved = swept_axes(frame, "image_auroc", resolve=lambda role, name, param: "none")
    assert [c.value for c in resolved[0].choices] == ["none", "l2"]
    # the real registry: a head's constructor leaves preprocess to the class default
    from methods.registry import HEADS

    assert registered_default("head", "gaussian", "preprocess") == HEADS.lookup("gaussian")[0].factory.default_preprocess
    assert registered_default("head", "no_such_head", "preprocess") is None


def test_lower_is_better_and_no_axis_without_a_match():
    [axis] = swept_axes(cells(), "image_auroc", lower_is_better=True)
    assert axis.choices[0].best_label == "d × gaussian_none"
    single = cells({("a", "none"): 0.9, ("b", "l2"): 0.8})     # the two choices never share the rest
    assert swept_axes(single, "image_auroc") == []
    failed = cells().assign(status="failed")
    assert swept_axes(failed, "image_auroc") == []
