"""``bench predict``: a finished cell applied to new images from its cached fit; every record's
``test_scores.csv`` (issue 24 item 8)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bench.cli import main
from bench.run.grid import load_grid
from bench.run.plan import Plan
from bench.run.predict import PredictError, predict_cell
from bench.run.runner import Runner
from bench.run.store import ResultStore

TINY = ['datasets=["synthetic"]', "seeds=[0]", "defaults.dataset.image_size=32", "dataset.synthetic.n_train=48",
        "dataset.synthetic.n_val=16", "dataset.synthetic.n_test=24", "dataset.synthetic.n_pool=0",
        'encoders=["vae"]', "encoder.vae.epochs=1", "encoder.vae.batch_size=16", 'heads=["gaussian"]',
        'localization=["gradient"]']
CELL = "synthetic__vae__gaussian__s0"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    summary = Runner(Plan.of(load_grid("quick", TINY)), root / "run", cache_dir=root / "cache", progress=False).run()
    assert summary.ok == 1, summary.failures
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((40, 50)) * 255).astype(np.uint8)).save(images / "scan a.png")
    Image.fromarray((rng.random((40, 40, 3)) * 255).astype(np.uint8)).save(images / "scan_b.jpg")   # RGB -> grey
    return root


def test_every_record_has_test_scores_csv_with_case_ids(finished_run):
    store = ResultStore(finished_run / "run")
    record = store.read(CELL)
    table = pd.read_csv(store.scores_path(CELL))
    arrays = store.arrays(CELL)
    assert list(table.columns) == ["case", "group", "label", "score", "anomalous_at_val_threshold"]
    assert list(table["case"]) == list(arrays["test_ids"]) and len(table) == 24
    assert np.allclose(table["score"], arrays["test_scores"], rtol=1e-6)
    threshold = record["metrics"]["image_threshold"]
    assert (table["anomalous_at_val_threshold"] == (table["score"] >= threshold)).all()
    flagged = table["anomalous_at_val_threshold"].astype(bool)
    labels = table["label"].astype(bool)
    assert record["metrics"]["image_sensitivity"] == pytest.approx((flagged & labels).sum() / labels.sum())


def test_predict_writes_scores_maps_and_overlays(finished_run, capsys):
    out = finished_run / "pred"
    code = main(["predict", str(finished_run / "run"), "--cell", CELL, "--images", str(finished_run / "images"),
                 "--out", str(out)])
    assert code == 0
    assert "reproduces the record's 24 test scores" in capsys.readouterr().out
    table = pd.read_csv(out / "scores.csv")
    assert list(table["file"]) == ["scan a.png", "scan_b.jpg"]
    threshold = ResultStore(finished_run / "run").read(CELL)["metrics"]["image_threshold"]
    assert np.allclose(table["threshold"], threshold)
    assert (table["anomalous"] == (table["score"] >= threshold).astype(int)).all()
    assert np.load(out / "maps" / "scan a.npy").shape == (32, 32)
    assert (out / "overlays" / "scan_b.png").stat().st_size > 1000


def test_predict_refuses_an_uncached_fit_in_one_line(finished_run, capsys):
    with pytest.raises(PredictError, match="its fit is not cached .*re-run the grid with the same cache"):
        predict_cell(finished_run / "run", CELL, finished_run / "images", finished_run / "x",
                     cache_dir=finished_run / "elsewhere")
    code = main(["predict", str(finished_run / "run"), "--cell", "nope", "--images", str(finished_run / "images"),
                 "--out", str(finished_run / "y")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "no record of cell 'nope'" in err


def test_predict_an_end_to_end_detector_from_its_cached_fit(tmp_path, finished_run):
    grid = load_grid("quick", [item for item in TINY if not item.startswith(("encoders", "heads", "localization",
                                                                              "encoder."))]
                     + ['encoders=[]', 'heads=[]', 'detectors=["ae"]', "detector.ae.epochs=1",
                        "detector.ae.batch_size=16", "detector.ae.input_size=32"])
    summary = Runner(Plan.of(grid), tmp_path / "run", cache_dir=tmp_path / "cache", progress=False).run()
    assert summary.ok == 1, summary.failures
    result = predict_cell(tmp_path / "run", "synthetic__ae__s0", finished_run / "images", tmp_path / "out")
    assert result.n_images == 2 and result.n_maps == 2 and "reproduces" in result.notes[-1]
    assert len(pd.read_csv(tmp_path / "out" / "scores.csv")) == 2
