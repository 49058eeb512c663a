"""Cost of a grid without its data (issue 24 item 7) and cell counts that say why (item 9)."""

from __future__ import annotations

import pytest

GRID = '''
name = "mini"
seeds = [0, 1]
datasets = ["synthetic", "busi"]
encoders = ["vae", "random/resnet18"]
heads = ["gaussian"]
localization = ["gradient", "reconstruction"]
detectors = [{name = "ae", id = "ae_a", latent_dim = 4, epochs = 1}]
[defaults.dataset]
image_size = 32
[dataset.synthetic]
n_train = 40
n_val = 10
n_test = 20
n_pool = 0
[encoder.vae]
epochs = 1
'''


@pytest.mark.usefixtures("one_thread")
def test_check_plans_without_generating_or_reading_the_data(tmp_path, monkeypatch, capsys):
    import datasets.synthetic as synthetic
    from bench.cli import main

    def never(*args, **kwargs):
        raise AssertionError("--check generated phantoms")

    monkeypatch.setattr(synthetic.PhantomGenerator, "split", never)
    grid = tmp_path / "mini.toml"
    grid.write_text(GRID)
    (tmp_path / "empty").mkdir()
    code = main(["run", "--grid", str(grid), "--check", "--data-root", str(tmp_path / "empty"), "--out",
                 str(tmp_path / "run"), "--cache", str(tmp_path / "cache")])
    out, err = capsys.readouterr()
    assert code == 2                                               # busi is missing: a problem, named
    assert "dataset.busi: does not load" in err and "preflight: 1 problem(s)" in err
    assert "planned wall time" in out                              # ... and still a planned time
    assert "busi × vae (seed 1), 2 cells" in out and "synthetic × ae_a (seed 0), 1 cell" in out
    assert "20 cells: 16 to compute, 4 not applicable (reconstruction maps need an encoder that reconstructs" in out
    assert "()" not in out


def test_identical_causes_are_one_line():
    from bench.run.grid import load_grid
    from bench.run.plan import Plan
    from bench.run.preflight import _Causes

    plan = Plan.of(load_grid("quick", ['datasets=["synthetic", "busi"]', "seeds=[0, 1, 2]", "encoders=[]",
                                       'heads=[]', 'detectors=["padim", "patchcore"]']))
    causes = _Causes()
    for cell in plan.cells:
        causes.add("ImageNet weights for wide_resnet50_2 not available offline", f"detector.{cell.detector.id}",
                   [cell])
    assert causes.lines() == ["ImageNet weights for wide_resnet50_2 not available offline: 12 cells "
                              "(detector.padim, detector.patchcore × 2 datasets × 3 seeds)"]


def test_the_run_summary_says_why_cells_are_not_applicable():
    from bench.run.grid import load_grid
    from bench.run.plan import Plan
    from bench.run.runner import RunSummary
    from bench.run.work import Outcome

    cell = Plan.of(load_grid("quick", ["seeds=[0]"])).cells[0]
    summary = RunSummary(None, total=2)
    summary.count(Outcome(cell, "not_applicable", why="reconstruction maps need an encoder that reconstructs"))
    assert "1 not applicable (reconstruction maps need an encoder that reconstructs: 1)" in summary.line()
