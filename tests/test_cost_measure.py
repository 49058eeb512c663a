"""Cost before commitment (bench.cost.measure): measured estimates, detector extrapolation, --budget."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.run.grid import load_grid

pytestmark = pytest.mark.usefixtures("one_thread")   # small convs: no OpenMP oversubscription

TINY = ['datasets=["synthetic"]', "seeds=[0, 1]", "defaults.dataset.image_size=32", "dataset.synthetic.n_train=48",
        "dataset.synthetic.n_val=16", "dataset.synthetic.n_test=24", "dataset.synthetic.n_pool=0",
        'encoders=["vae"]', "encoder.vae.epochs=3", "encoder.vae.batch_size=16", 'heads=["gaussian"]',
        'localization=["gradient"]']


def context(tmp_path: Path, grid):
    from bench.run.work import RunContext

    return RunContext.for_grid(grid, data_root=None, cache_dir=str(tmp_path / "cache"), device="cpu")


def test_estimate_measures_every_pending_unit(tmp_path):
    from bench.cost.measure import estimate_grid

    grid = load_grid("quick", TINY + ['detectors=[{name = "ae", id = "ae", epochs = 4, batch_size = 16, input_size = 32}]'])
    from bench.run.plan import Plan

    estimate = estimate_grid(Plan.of(grid), context(tmp_path, grid))
    labels = sorted(u.label for u in estimate.units)
    assert labels == ["synthetic × ae (seed 0)", "synthetic × ae (seed 1)", "synthetic × vae (seed 0)",
                      "synthetic × vae (seed 1)"]
    vae = next(u for u in estimate.units if u.label == "synthetic × vae (seed 0)")
    assert vae.how == "measured" and vae.parts["fit_s"] > 0 and vae.parts["maps_s"] > 0 and vae.parts["cells"]
    assert estimate.seconds == pytest.approx(sum(u.seconds for u in estimate.units))
    text = "\n".join(estimate.lines())
    assert "planned wall time" in text and "measured" in text and "on cpu" in text


def test_a_detector_fit_is_extrapolated_to_its_epochs(tmp_path):
    """Measured on a subset at 1 and 2 epochs: fixed cost + cost per epoch x the grid's epochs x (train / subset)."""
    from bench.cost.measure import SUBSET, detector_fit_costs, detector_fit_seconds
    from bench.run.work import load_dataset

    grid = load_grid("quick", TINY + ['detectors=[{name = "ae", id = "ae", epochs = 500, batch_size = 16, '
                                      'input_size = 32}]'])
    dataset = load_dataset(grid.components("datasets")[0], context(tmp_path, grid))
    costs = detector_fit_costs(grid.components("detectors")[0], dataset, "cpu", [])
    assert costs["lengths"] == {"epochs": 500} and costs["subset"] == SUBSET
    per_image_epoch = costs["per_length_s"]["epochs"]
    assert per_image_epoch > 0
    assert detector_fit_seconds(costs, 48) == pytest.approx(costs["fixed_s"] + per_image_epoch * 500 * 48)
    assert detector_fit_seconds(costs, 96) > 1.9 * (detector_fit_seconds(costs, 48) - costs["fixed_s"])


def test_measuring_stops_at_its_budget_and_plans_what_it_timed(tmp_path, capsys):
    """--check of a grid too big to probe still prints a plan: units past the measuring budget are
    listed as not timed, with the option that times more."""
    from bench.cli import main
    from bench.cost.measure import estimate_grid
    from bench.run.plan import Plan

    grid = load_grid("quick", TINY)
    estimate = estimate_grid(Plan.of(grid), context(tmp_path, grid), budget_s=0.0)   # spent before the first unit
    assert [u.how for u in estimate.units] == ["unestimated", "unestimated"]
    text = "\n".join(estimate.lines())
    assert "planned wall time 0" in text and "for the 0 units timed" in text
    assert "not timed (counted as 0 s): 2 units (2 cells), measuring stopped at its 0 s budget" in text
    # cells the preflight found not applicable are not counted as cells to compute
    first = Plan.of(grid).cells[0].cell_id
    skipped = estimate_grid(Plan.of(grid), context(tmp_path, grid), budget_s=0.0, not_applicable={first: "why"})
    assert "2 units (1 cells to compute)" in "\n".join(skipped.lines())
    args = ["run", "--out", str(tmp_path / "run"), "--cache", str(tmp_path / "cache"), "--reports",
            str(tmp_path / "reports"), "--quiet", "--check", "--measure-budget", "0"] + [a for s in TINY for a in ("--set", s)]
    assert main(args) == 0 and "--measure-budget SECONDS times more" in capsys.readouterr().out


def test_budget_refuses_before_any_work(tmp_path, capsys):
    from bench.cli import main

    args = ["run", "--out", str(tmp_path / "run"), "--cache", str(tmp_path / "cache"), "--reports",
            str(tmp_path / "reports"), "--quiet"] + [a for s in TINY for a in ("--set", s)]
    assert main(args + ["--budget", "0.00001"]) == 2
    captured = capsys.readouterr()
    assert "exceeds --budget" in captured.err and "planned wall time" in captured.out
    assert not (tmp_path / "run" / "records").exists() and not (tmp_path / "cache" / "encoders").exists()
    # --check prints the estimate too, and a generous budget lets the check pass
    assert main(args + ["--budget", "100", "--check"]) == 0
    assert "planned wall time" in capsys.readouterr().out


def test_detector_probing_stops_at_its_time_budget(tmp_path, monkeypatch):
    """A detector whose fit is all set-up (a Lightning-based peer) is not fitted again and again at
    doubling lengths: with no budget left, one fit at the base length and one doubled are all it gets."""
    import methods.registry
    from bench.cost import measure
    from bench.run.work import load_dataset

    grid = load_grid("quick", TINY + ['detectors=[{name = "ae", id = "ae", epochs = 500, batch_size = 16, '
                                      'input_size = 32}]'])
    dataset = load_dataset(grid.components("datasets")[0], context(tmp_path, grid))
    built = []
    create = methods.registry.create_detector
    monkeypatch.setattr(methods.registry, "create_detector", lambda *a, **k: built.append(k) or create(*a, **k))
    monkeypatch.setattr(measure, "PROBE_BUDGET_S", 0.0)
    monkeypatch.setattr(measure, "WARM_ENOUGH_S", 0.0)       # the first fit counts as the base timing
    monkeypatch.setattr(measure, "MIN_DELTA_S", 1e9)         # the doubled fit never stands out
    notes: list[str] = []
    costs = measure.detector_fit_costs(grid.components("detectors")[0], dataset, "cpu", notes)
    assert [k.get("epochs") for k in built] == [500, 1, 2]   # lengths, base, one doubling
    assert costs["per_length_s"]["epochs"] >= 0 and "probe budget" in notes[0] and "ae" in notes[0]
