"""``bench perf --estimate``: unit times from records, extrapolation, LPT bound."""

from __future__ import annotations

from bench.run.grid import load_grid
from bench.cost.estimate import estimate_report, estimate_units, lpt
from bench.run.plan import Plan
from bench.run.store import ResultStore

GRID = ['datasets=["synthetic"]', "seeds=[0]", 'encoders=["vae", "simclr"]', 'heads=["gaussian", "knn"]',
        'localization=["gradient"]', "encoder.vae.epochs=2", "dataset.synthetic.n_train=100"]


def record(cell, timings, **extra):
    return {"cell_id": cell.cell_id, "config_hash": cell.config_hash(), "config": cell.config(), "kind": cell.kind,
            "dataset": cell.dataset.id, "seed": cell.seed, "encoder": cell.encoder.id, "head": cell.head.id,
            "detector": None, "localization": cell.localization, "status": "ok", "timings": timings,
            "host": {"device": "cpu"},
            "metrics": {"image_auroc": 0.7, "image_ap": 0.6, "image_fpr95": 0.5}, **extra}


def test_lpt():
    assert lpt([5, 4, 3, 3, 3], 2) == 10          # LPT is not optimal (9): {5, 3} {4, 3, 3}
    assert lpt([10], 4) == 10 and lpt([1, 1, 1, 1], 4) == 1 and lpt([3, 3, 2, 2, 2], 2) == 7


def test_measured_and_extrapolated_units(tmp_path):
    grid = Plan.of(load_grid("quick", GRID))
    cells = {c.cell_id: c for c in grid.cells}
    vae = [c for c in cells.values() if c.encoder.id == "vae"]
    records = [record(vae[0], {"dataset_s": 1.0, "encoder_fit_s": 10.0, "embed_s": 2.0, "head_fit_s": 1.0,
                               "score_s": 0.5, "maps_s": 3.0, "metrics_s": 0.5}),
               record(vae[1], {"dataset_s": 0.0, "encoder_fit_s": 0.0, "embed_s": 0.0, "head_fit_s": 2.0,
                               "score_s": 0.5, "maps_s": 3.0, "metrics_s": 0.5})]
    est = {e.label: e for e in estimate_units(grid, records)}
    measured = est["synthetic × vae (seed 0)"]
    assert measured.how == "measured" and measured.seconds == 1 + 10 + 2 + 5 + 6
    assert est["synthetic × simclr (seed 0)"].how == "unestimated"

    # the same records, a grid with 4 epochs and 200 training images: training scales x4, heads x2
    bigger = Plan.of(load_grid("quick", GRID + ["encoder.vae.epochs=4", "dataset.synthetic.n_train=200"]))
    est = {e.label: e for e in estimate_units(bigger, records)}
    e = est["synthetic × vae (seed 0)"]
    assert e.how == "extrapolated" and e.seconds > 40

    store = ResultStore(tmp_path / "run")
    for rec in records:
        store.write(rec)
    lines = estimate_report(grid, tmp_path / "run", [1, 4])
    text = "\n".join(lines)
    assert "measured (same configuration): 1" in text and "unestimated (no record of that encoder/detector): 1" in text
    assert "4 GPU(s)" in text and "CPU records" in text
