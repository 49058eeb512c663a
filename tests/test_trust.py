"""Trustworthy runs: bad configuration refused up front, finished results never lost, broken cells
named, long fits never thrown away (validation, preflight, record keys, caches, locks)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

from bench import cli
from bench.run.grid import load_grid
from bench.run.plan import Plan
from bench.run.runner import Runner
from bench.run.store import ResultStore, RunLock, RunLockedError
from fake_layouts import FakeLayouts

TINY = ['datasets=["synthetic"]', "seeds=[0]", "defaults.dataset.image_size=32",
        "dataset.synthetic.n_train=48", "dataset.synthetic.n_val=16", "dataset.synthetic.n_test=24",
        "dataset.synthetic.n_pool=0", 'encoders=["vae"]', "encoder.vae.epochs=1", "encoder.vae.batch_size=16",
        'heads=["gaussian", "knn"]', 'localization=["gradient"]']
DDAD = "input_size = 32, epochs = 1, batch_size = 16, hidden_dim = 64, asr_epochs = 1, asr_channels = 8"


def runner(tmp_path, *overrides, base=TINY, data_root=None):
    grid = load_grid("quick", [*base, *overrides])
    return Runner(Plan.of(grid), tmp_path / "run", cache_dir=tmp_path / "cache", progress=False, data_root=data_root)


def cli_run(tmp_path, capsys, *overrides, extra=()):
    args = ["run", "--quiet", "--no-report", "--out", str(tmp_path / "run"), "--cache", str(tmp_path / "cache")]
    for item in [*TINY, *overrides]:
        args += ["--set", item]
    code = cli.main(args + list(extra))
    return code, capsys.readouterr()


def mtimes(store: ResultStore) -> dict:
    return {p.name: p.stat().st_mtime_ns for p in store.records_dir.glob("*.*")}


# -- validate before any work ------------------------------------------------------------------
@pytest.mark.parametrize("override, expected", [
    ("foo=1", "unknown key 'foo'"),
    ("seed=[5]", "did you mean 'seeds'"),
    ("encoder.vaee.epochs=50", "encoder.vaee: no encoder 'vaee' in this grid's encoders; did you mean 'vae'"),
    ("encoder.vae.epochs=0", "encoder.vae.epochs = 0: must be >= 1"),
    ("encoder.vae.epochs=-1", "encoder.vae.epochs = -1: must be >= 1"),
    ("encoder.vae.epochz=3", "encoder.vae: unknown parameter 'epochz'; did you mean 'epochs'"),
    ("encoder.vae.epochs=abc", "encoder.vae.epochs = 'abc': expected int"),
    ("encoder.vae.lr=0", "encoder.vae.lr = 0: must be > 0"),
    ('heads=["gausian"]', "unknown head 'gausian'; did you mean 'gaussian'"),
    ('localization=["gradients"]', "unknown map kind 'gradients'; did you mean 'gradient'"),
    ("maps.gradient.shift=2", "maps.gradient: unknown option 'shift'; did you mean 'shifts'"),
    ("maps.gradient.shifts=0", "maps.gradient.shifts = 0: must be >= 1"),
])
def test_bad_settings_are_one_line_exit_2_and_write_nothing(tmp_path, capsys, override, expected):
    code, out = cli_run(tmp_path, capsys, override)
    assert code == 2
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], lines
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


def test_bad_set_on_a_finished_run_leaves_its_records_alone(tmp_path, capsys):
    summary = runner(tmp_path).run()
    assert summary.ok == 2
    store = ResultStore(tmp_path / "run")
    before = mtimes(store)
    code, _ = cli_run(tmp_path, capsys, "encoder.vae.epochs=abc")
    assert code == 2 and mtimes(store) == before
    assert all(r["status"] == "ok" for r in store.records())


def test_out_naming_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "run").write_text("not a directory")
    code, out = cli_run(tmp_path, capsys)
    assert code == 2 and out.err.strip().count("\n") == 0 and "is an existing file" in out.err


# -- nothing finished is ever lost -------------------------------------------------------------
def test_another_configuration_keeps_the_old_record_aside(tmp_path):
    runner(tmp_path).run()
    store = ResultStore(tmp_path / "run")
    old = store.read("synthetic__vae__knn__s0")
    summary = runner(tmp_path, "head.knn.k=3").run()
    assert summary.resumed == 1 and summary.ok == 1          # the gaussian cell is unchanged
    aside = list((store.records_dir / "superseded").glob("synthetic__vae__knn__s0.*.json"))
    assert len(aside) == 1 and json.loads(aside[0].read_text())["config_hash"] == old["config_hash"]
    assert (aside[0].with_suffix(".npz")).exists()
    assert store.read("synthetic__vae__knn__s0")["config"]["head.k"] == 3


def test_resume_follows_the_data_not_the_path(tmp_path):
    roots = [tmp_path / "a", tmp_path / "b"]
    for seed, root in enumerate(roots):
        FakeLayouts(root, seed=seed).write_folders(n_patients=12)
    base = ['datasets=["folders"]', "seeds=[0]", "defaults.dataset.image_size=32", 'encoders=["vae"]',
            "encoder.vae.epochs=1", "encoder.vae.batch_size=8", 'heads=["gaussian"]', 'localization=["gradient"]',
            "dataset.folders.path=\"my_dataset\"", "dataset.folders.val_fraction=0.2"]
    first = runner(tmp_path, base=base, data_root=roots[0]).run()
    again = runner(tmp_path, base=base, data_root=roots[0]).run()
    other = runner(tmp_path, base=base, data_root=roots[1]).run()
    assert (first.ok, again.resumed, other.resumed, other.ok) == (1, 1, 0, 1)
    assert len(list((tmp_path / "run" / "records" / "superseded").glob("*.json"))) == 1


def test_unreadable_record_is_moved_aside_and_recomputed(tmp_path):
    runner(tmp_path).run()
    store = ResultStore(tmp_path / "run")
    path = store.json_path("synthetic__vae__knn__s0")
    path.write_text(path.read_text()[:40])            # truncated
    summary = runner(tmp_path).run()
    assert summary.ok == 1 and summary.resumed == 1
    assert list((store.records_dir / "corrupt").glob("synthetic__vae__knn__s0.*"))


# -- degenerate is a status --------------------------------------------------------------------
def test_constant_embeddings_are_degenerate_and_the_run_says_so(tmp_path):
    summary = runner(tmp_path, 'encoders=["random/resnet18"]').run()    # 32 px: every embedding equal
    assert summary.degenerate == 2 and summary.ok == 0 and not summary.clean
    for record in ResultStore(tmp_path / "run").records():
        assert record["status"] == "degenerate" and "same embedding" in record["error"]
        assert record["metrics"]["image_auroc"] == 0.5


# -- corruption is named and repaired ----------------------------------------------------------
def test_corrupt_encoder_cache_entry_is_named_moved_aside_and_rebuilt(tmp_path):
    runner(tmp_path).run()
    entries = [p for p in (tmp_path / "cache" / "encoders").iterdir() if not p.name.startswith(".")]
    assert len(entries) == 1
    npz = entries[0] / "embeddings.npz"
    npz.write_bytes(npz.read_bytes()[:100])
    with pytest.warns(UserWarning, match=f"{entries[0].name}.*moved to"):
        summary = runner(tmp_path, "head.knn.k=2").run()
    assert summary.ok == 1
    assert list((tmp_path / "cache" / "encoders" / ".corrupt").iterdir())
    assert (entries[0] / "meta.json").exists()                 # rebuilt in place
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert runner(tmp_path, "head.knn.k=4").run().ok == 1     # and now it is trusted again


def test_nan_pixels_name_the_file(tmp_path):
    from PIL import Image

    from datasets._io import convert
    from datasets.base import DatasetError

    array = np.ones((8, 8), np.float32)
    array[2, 3] = np.nan
    path = tmp_path / "scan.tif"
    Image.fromarray(array, mode="F").save(path)
    with pytest.raises(DatasetError, match=r"scan\.tif: 1 of 64 pixels are NaN"):
        convert(Image.open(path), 1, path=path)


# -- one runner per run directory ---------------------------------------------------------------
def test_a_live_runner_holds_the_directory_and_a_dead_one_does_not(tmp_path):
    import socket

    lock_path = tmp_path / "run" / ".lock"
    lock_path.parent.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        lock_path.write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname(), "since": "now"}))
        with pytest.raises(RunLockedError, match=f"in use by PID {sleeper.pid}"):
            RunLock(tmp_path / "run").acquire()
    finally:
        sleeper.kill()
        sleeper.wait()
    with RunLock(tmp_path / "run"):            # the owner is dead: its stale lock is taken over
        assert json.loads(lock_path.read_text())["pid"] == os.getpid()
    assert not lock_path.exists()


# -- issue 11: empty validation split, fitted detectors cached, preflight -----------------------
def test_empty_validation_split_gives_na_dice_and_every_other_metric(tmp_path):
    FakeLayouts(tmp_path / "data").write_medianomaly("brats2021", n_train=8, n_normal=4, n_abnormal=4)
    base = ['datasets=["medianomaly/brats2021"]', "seeds=[0]", "defaults.dataset.image_size=32",
            "dataset.medianomaly/brats2021.val_fraction=0.0", 'encoders=["vae"]', "encoder.vae.epochs=1",
            "encoder.vae.batch_size=4", 'heads=["gaussian"]', 'localization=["gradient"]',
            'detectors=[{name = "ae", input_size = 32, epochs = 1, batch_size = 4, hidden_dim = 32}]']
    summary = runner(tmp_path, base=base, data_root=tmp_path / "data").run()
    assert summary.ok == 2, summary.failures
    for record in ResultStore(tmp_path / "run").records():
        assert record["n_val"] == 0
        metrics = record["metrics"]
        assert metrics.get("pixel_dice") is None
        no_threshold = "no validation scores to choose the image threshold"      # thresholds come from validation
        assert record["metrics_unavailable"] == {"pixel_dice": "no validation split",
                                                 "pixel_dice_fg": "no validation split",   # BraTS has a brain mask
                                                 "image_f1": no_threshold, "image_sensitivity": no_threshold,
                                                 "image_specificity": no_threshold}
        for key in ("image_auroc", "pixel_auroc", "pixel_ap", "pixel_aupro", "pixel_dice_oracle", "pixel_ap_fg"):
            assert 0 <= metrics[key] <= 1, key


def ddad_base(*detectors: str) -> list[str]:
    return [*TINY[:6], "dataset.synthetic.n_pool=24", 'encoders=[]', 'heads=[]',
            "detectors=[" + ", ".join(detectors) + "]"]


def test_one_detector_fit_serves_its_score_variants(tmp_path, monkeypatch):
    from methods.detectors.ddad_asr import DDADASR

    calls = {"fit": 0, "asr": 0}
    fit, refine = DDADASR.fit, DDADASR._fit_refine

    def counting_fit(self, *a, **k):
        calls["fit"] += 1
        return fit(self, *a, **k)

    def counting_refine(self, *a, **k):
        calls["asr"] += 1
        return refine(self, *a, **k)

    monkeypatch.setattr(DDADASR, "fit", counting_fit)
    monkeypatch.setattr(DDADASR, "_fit_refine", counting_refine)
    variants = [f'{{name = "ddad_asr", id = "ddad_{s}", score = "{s}", {DDAD}}}' for s in ("inter", "rec", "asr_dual")]
    summary = runner(tmp_path, base=ddad_base(*variants)).run()
    assert summary.ok == 3, summary.failures
    assert calls == {"fit": 1, "asr": 1}      # six AEs once; the ASR-Net only for the score that needs it
    records = {r["detector"]: r for r in ResultStore(tmp_path / "run").records()}
    assert [records[f"ddad_{s}"]["detector_cached"] for s in ("inter", "rec", "asr_dual")] == [False, True, True]
    assert len({r["detector_cache"] for r in records.values()}) == 1


def test_a_failure_after_fit_keeps_the_fit_for_the_rerun(tmp_path, monkeypatch):
    from methods.detectors.ae import AutoencoderDetector

    ae = '{name = "ae", input_size = 32, epochs = 1, batch_size = 16, hidden_dim = 32}'
    predict = AutoencoderDetector.predict

    def broken(self, *a, **k):
        raise RuntimeError("injected after fit")

    monkeypatch.setattr(AutoencoderDetector, "predict", broken)
    summary = runner(tmp_path, base=ddad_base(ae)).run()
    assert summary.failed == 1
    record = ResultStore(tmp_path / "run").records()[0]
    assert record["stage"] == "detector ae predict" and "injected after fit" in record["error"]

    def no_fit(self, *a, **k):
        raise AssertionError("the rerun must use the cached fit")

    monkeypatch.setattr(AutoencoderDetector, "predict", predict)
    monkeypatch.setattr(AutoencoderDetector, "fit", no_fit)
    summary = runner(tmp_path, base=ddad_base(ae)).run()
    assert summary.ok == 1, summary.failures
    assert ResultStore(tmp_path / "run").records()[0]["detector_cached"] is True


def test_preflight_names_every_problem_before_any_training(tmp_path, capsys, monkeypatch):
    from methods.encoders._training import TrainableEncoder

    def no_training(self, *a, **k):
        raise AssertionError("nothing may train before the preflight passed")

    monkeypatch.setattr(TrainableEncoder, "fit", no_training)
    args = ["run", "--quiet", "--no-report", "--out", str(tmp_path / "run"), "--cache", str(tmp_path / "cache")]
    for item in [*TINY, "dataset.synthetic.n_pool=0",
                 f'detectors=[{{name = "ddad_asr", {DDAD}}}, '
                 f'{{name = "padim", weights = "{tmp_path}/missing.pth"}}]']:
        args += ["--set", item]
    code = cli.main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert any("detector.ddad_asr" in line and "no unlabeled pool" in line for line in err), err
    assert any("detector.padim" in line and "missing.pth does not exist" in line for line in err), err
    assert err[-1] == "preflight: 2 problem(s); nothing was run"
    assert not (tmp_path / "run" / "records").exists()
    assert cli.main(args[:-2] + ["--check"]) == 0           # without the bad detectors: the check passes


# -- the fault test -----------------------------------------------------------------------------
FAULT_GRID = """
name = "fault"
seeds = [0, 1]
datasets = ["synthetic"]
encoders = ["vae"]
heads = ["gaussian", "knn"]
localization = ["gradient"]
[defaults.dataset]
image_size = 32
[dataset.synthetic]
n_train = 32
n_val = 8
n_test = 16
n_pool = 0
[encoder.vae]
epochs = 2
batch_size = 16
"""


def test_sigkill_at_random_moments_then_resume_finishes_every_cell_once(tmp_path):
    import random
    import time

    grid = tmp_path / "fault.toml"
    grid.write_text(FAULT_GRID)
    command = [sys.executable, "-m", "bench", "run", "--grid", str(grid), "--out", str(tmp_path / "run"),
               "--cache", str(tmp_path / "cache"), "--no-report", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    reference = subprocess.run(command[:-6] + ["--out", str(tmp_path / "reference"), "--cache",
                                               str(tmp_path / "reference_cache"), "--no-report", "--quiet"],
                               env=env, capture_output=True, text=True)
    full = time.perf_counter() - started
    assert reference.returncode == 0, reference.stderr
    rng = random.Random(7)
    kills = 0
    for _ in range(10):
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.2, full))
        if proc.poll() is None:
            proc.kill()
            kills += 1
        proc.wait()
    final = subprocess.run(command, env=env, capture_output=True, text=True)
    assert final.returncode == 0, final.stderr
    assert kills >= 5, "most of the ten kills must land while the runner works"
    store, expected = ResultStore(tmp_path / "run"), ResultStore(tmp_path / "reference")
    names = sorted(p.name for p in store.records_dir.iterdir())
    assert names == sorted(p.name for p in expected.records_dir.iterdir()), names   # no tmp, aside or extra file
    for record in store.records():
        assert record["status"] == "ok"
        assert record["metrics"] == expected.read(record["cell_id"])["metrics"]
        assert store.arrays(record["cell_id"])["test_scores"].shape == (16,)


def test_map_options_reach_the_maps_and_the_record(tmp_path):
    from methods.maps import map_kind, map_kinds

    assert {"gradient", "reconstruction"} <= set(map_kinds())
    assert map_kind("gradient").head_dependent and not map_kind("reconstruction").head_dependent
    plain = runner(tmp_path / "a", 'heads=["gaussian"]').run()
    shifted = runner(tmp_path / "b", 'heads=["gaussian"]', "maps.gradient.shifts=2").run()
    assert plain.ok == shifted.ok == 1
    a = ResultStore(tmp_path / "a" / "run").records()[0]
    b = ResultStore(tmp_path / "b" / "run").records()[0]
    assert "maps.shifts" not in a["config"] and b["config"]["maps.shifts"] == 2
    assert a["metrics"]["image_auroc"] == b["metrics"]["image_auroc"]          # maps only
    maps_a = ResultStore(tmp_path / "a" / "run").arrays(a["cell_id"])["test_maps"]
    maps_b = ResultStore(tmp_path / "b" / "run").arrays(b["cell_id"])["test_maps"]
    assert not np.allclose(maps_a, maps_b)
