"""End to end: a tiny grid runs, resumes without recomputation, records failures and goes on."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from bench.analysis.pixsum import pixel_counts_of
from bench.analysis.stats import pixel_metric_samples
from bench.run.grid import load_grid
from bench.report import cell_frame
from bench.run.plan import Plan
from bench.run.runner import Runner
from bench.run.work import panel_indices
from bench.run.store import ResultStore

TINY = ['datasets=["synthetic"]', "seeds=[0]", "defaults.dataset.image_size=32",
        "dataset.synthetic.n_train=48", "dataset.synthetic.n_val=16", "dataset.synthetic.n_test=24",
        "dataset.synthetic.n_pool=0",
        "encoder.vae.epochs=1", "encoder.vae.batch_size=16", "head.flow.epochs=2", "head.flow.n_blocks=1",
        "head.flow.hidden_features=16"]


def tiny_grid(*extra: str):
    return load_grid("quick", TINY + ['encoders=["vae", "imagenet/tf_efficientnet_lite0"]', 'heads=["gaussian", "knn"]',
                                      'localization=["gradient", "reconstruction"]', *extra])


def run(grid, tmp_path, **kw):
    return Runner(Plan.of(grid), tmp_path / "run", cache_dir=tmp_path / "cache", progress=False, **kw).run()


def test_tiny_grid_end_to_end(tmp_path):
    summary = run(tiny_grid(), tmp_path)
    # 2 encoders x 2 heads x gradient + vae x 2 heads x reconstruction; the frozen encoder cannot reconstruct
    assert (summary.ok, summary.failed, summary.not_applicable) == (6, 0, 2), summary.failures
    store = ResultStore(tmp_path / "run")
    records = store.records()
    assert len(records) == 6
    for rec in records:
        assert rec["status"] == "ok"
        m = rec["metrics"]
        for key in ("image_auroc", "image_ap", "image_fpr95", "pixel_auroc", "pixel_ap", "pixel_aupro",
                    "pixel_dice", "pixel_dice_oracle"):
            assert m[key] is not None and 0 <= m[key] <= 1, (rec["cell_id"], key)
        assert rec["config"]["dataset.n_train"] == 48 and rec["versions"]["torch"]
        # frozen ImageNet features with a closed-form head are seed-independent; a trained VAE is not
        assert rec["deterministic_fit"] is rec["encoder"].startswith("imagenet/"), rec["cell_id"]
        arrays = store.arrays(rec["cell_id"])
        assert arrays["test_scores"].shape == (24,) and arrays["test_maps"].shape == (24, 32, 32)
        # the compact pixel summary is stored too and gives back the record's Dice exactly (issue 23)
        summary_samples = pixel_metric_samples(pixel_counts_of({k: v for k, v in arrays.items() if "pixsum" in k}))
        assert summary_samples["pixel_dice"][0] == pytest.approx(m["pixel_dice"], abs=1e-9)
        assert summary_samples["pixel_aupro"][0] == pytest.approx(m["pixel_aupro"], abs=0.01)
    frame = cell_frame(store.records())
    assert set(frame["method"]) >= {"vae × gaussian", "vae × knn [reconstruction]", "imagenet/tf_efficientnet_lite0 × knn"}
    # encoders were trained once: only the first cell of each encoder carries the fit time
    fits = frame.groupby("encoder")["time.encoder_fit_s"].apply(lambda s: int((s > 0).sum()))
    assert fits["vae"] == 1


def test_rerun_resumes_without_recomputing(tmp_path):
    grid = tiny_grid()
    run(grid, tmp_path)
    store = ResultStore(tmp_path / "run")
    before = {p.name: p.stat().st_mtime_ns for p in store.records_dir.glob("*.json")}
    summary = run(grid, tmp_path)
    assert summary.resumed == 8 - 2 and summary.ok == 0 and summary.failed == 0
    after = {p.name: p.stat().st_mtime_ns for p in store.records_dir.glob("*.json")}
    assert before == after


def test_interrupted_run_resumes(tmp_path, monkeypatch):
    from methods.heads.knn import KNNHead

    # an encoder group fits all its heads before scoring any (they share the gradient maps' encoder
    # pass), so the crash comes in the second group: the first group's cells are finished, the VAE is cached
    grid = tiny_grid('encoders=["imagenet/tf_efficientnet_lite0", "vae"]')
    original = KNNHead.fit
    calls = {"n": 0}

    def crash_on_second(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(KNNHead, "fit", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        run(grid, tmp_path)
    store = ResultStore(tmp_path / "run")
    finished = {r["cell_id"]: r for r in store.records()}
    assert 0 < len(finished) < 6
    mtimes = {cid: store.json_path(cid).stat().st_mtime_ns for cid in finished}
    monkeypatch.undo()
    summary = run(grid, tmp_path)
    assert summary.resumed == len(finished) and summary.ok == 6 - len(finished)
    assert all(store.json_path(cid).stat().st_mtime_ns == t for cid, t in mtimes.items())
    # the VAE was trained and cached before the crash: the resumed run loads it, trains nothing
    resumed_vae = [r for r in store.records() if r["cell_id"] not in finished and r["encoder"] == "vae"]
    assert resumed_vae and all(r["encoder_cached"] and r["timings"]["encoder_fit_s"] == 0 for r in resumed_vae)


def test_failing_cell_is_recorded_and_grid_goes_on(tmp_path):
    grid = tiny_grid('heads=["gaussian", "flow"]', "head.flow.lr=1e9", "head.flow.epochs=30",
                     'localization=["gradient"]')
    summary = run(grid, tmp_path)
    assert summary.failed == 2 and summary.ok == 2
    store = ResultStore(tmp_path / "run")
    failed = [r for r in store.records() if r["status"] == "failed"]
    assert {r["head"] for r in failed} == {"flow"}
    assert all("flow" in r["error"] and r["traceback"] for r in failed)
    # a changed configuration is recomputed, the finished cells are not
    summary = run(tiny_grid('heads=["gaussian", "flow"]', 'localization=["gradient"]'), tmp_path)
    assert summary.resumed == 2 and summary.ok == 2 and summary.failed == 0


def test_missing_dataset_fails_its_cells_only(tmp_path):
    grid = tiny_grid('datasets=["synthetic", "medmnist/pneumoniamnist"]', 'localization=["gradient"]',
                     'encoders=["vae"]')
    summary = Runner(Plan.of(grid), tmp_path / "run", cache_dir=tmp_path / "cache", progress=False,
                     data_root=tmp_path / "empty").run()
    assert summary.ok == 2 and summary.failed == 2
    errors = {r["error"] for r in ResultStore(tmp_path / "run").records() if r["status"] == "failed"}
    assert all("pneumoniamnist" in e for e in errors)


def test_smoke_on_real_pneumoniamnist(tmp_path, shared_data):
    """Quick settings on real data: train on normals, test on the official test split."""
    grid = load_grid("quick", ['datasets=["medmnist/pneumoniamnist"]', "seeds=[0]",
                               "defaults.dataset.image_size=32", "dataset.medmnist/pneumoniamnist.max_train=200",
                               "dataset.medmnist/pneumoniamnist.max_test=120",
                               'encoders=["imagenet/tf_efficientnet_lite0"]', 'heads=["gaussian", "knn"]',
                               'localization=["gradient"]'])
    summary = Runner(Plan.of(grid), tmp_path / "run", cache_dir=tmp_path / "cache", progress=False,
                     data_root=shared_data).run()
    assert summary.ok == 2, summary.failures
    for rec in ResultStore(tmp_path / "run").records():
        assert 0 <= rec["metrics"]["image_auroc"] <= 1
        assert rec["metrics"].get("pixel_auroc") is None      # MedMNIST has no masks
        assert rec["n_train"] == 200 and rec["n_test"] == 120


def test_panel_rule_is_deterministic():
    from datasets.base import Split

    labels = np.array([0, 1, 1, 0, 1, 1, 1])
    masks = np.zeros((7, 1, 4, 4), np.uint8)
    for i, area in enumerate([0, 3, 1, 0, 5, 2, 4]):
        masks[i, 0].flat[:area] = 1
    idx = panel_indices(Split(np.zeros((7, 1, 4, 4), np.uint8), labels, masks), n_anomalous=2, n_normal=1)
    assert idx.tolist() == [2, 4, 0]      # smallest and largest lesion by the quantile rule, first normal


def test_cli_help_does_not_import_torch():
    code = "import sys, bench.cli; bench.cli.build_parser().format_help(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_cli_list_and_bad_grid():
    out = subprocess.run([sys.executable, "-m", "bench", "list", "heads"], capture_output=True, text=True)
    assert out.returncode == 0 and "gaussian" in out.stdout.split()
    out = subprocess.run([sys.executable, "-m", "bench", "run", "--grid", "nope"], capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.strip().startswith("error: grid 'nope' not found")
    assert len(out.stderr.strip().splitlines()) == 1


def test_record_arrays_are_an_npz_that_numpy_reads_back_exactly(tmp_path):
    """Records' arrays are written at deflate level 1 (faster than numpy's default): still an .npz that
    ``np.load`` reads without pickle, every dtype and shape as given."""
    from bench.run.store import ResultStore

    rng = np.random.default_rng(0)
    arrays = {"test_maps": rng.random((5, 16, 16)).astype(np.float32), "test_labels": np.r_[0, 0, 1, 1, 1],
              "test_masks": rng.random((5, 16, 16)) > 0.9, "test_ids": np.array(["a.png", "b.png", "c", "d", "e"]),
              "test_scores": rng.normal(size=5)}
    store = ResultStore(tmp_path / "run")
    store.write({"cell_id": "c0", "status": "ok", "metrics": {}}, arrays)
    with np.load(store.arrays_path("c0"), allow_pickle=False) as back:
        assert sorted(back.files) == sorted(arrays)
        for name, value in arrays.items():
            assert back[name].dtype == value.dtype and np.array_equal(back[name], value)
