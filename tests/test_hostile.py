"""Hostile inputs, round two (issue 19): one probe per case that a probe of a fresh clone found
broken, each the way a user meets it (the CLI's exit status and its one line), so each stays fixed.

Filesystem failures are simulated where root (these tests' user) ignores permissions: a full disk
by writing to ``/dev/full`` (the kernel's own ENOSPC), a read-only folder by ``os.access`` or a
refused ``mkdir``, a file in the way by a path under a file.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from bench import cli
from bench.run.grid import load_grid
from bench.run.plan import Plan
from bench.run.runner import Runner
from bench.run.store import ResultStore
from test_executors import ray_runtime  # noqa: F401 - the suite's small local Ray runtime (2 CPUs, no GPU)

TINY = ['datasets=["synthetic"]', "seeds=[0]", "defaults.dataset.image_size=32",
        "dataset.synthetic.n_train=48", "dataset.synthetic.n_val=16", "dataset.synthetic.n_test=24",
        "dataset.synthetic.n_pool=0", 'encoders=["vae"]', "encoder.vae.epochs=1", "encoder.vae.batch_size=16",
        'heads=["gaussian"]', 'localization=["gradient"]']
CELL = "synthetic__vae__gaussian__s0"


def run_args(run_dir: Path, cache: Path, *overrides: str, report: bool = False, base=TINY) -> list[str]:
    args = ["run", "--quiet", "--out", str(run_dir), "--cache", str(cache)]
    args += ["--reports", str(run_dir.parent / "reports")] if report else ["--no-report"]
    for item in [*base, *overrides]:
        args += ["--set", item]
    return args


def bench(capsys, *argv: str) -> tuple[int, list[str], str]:
    """``python -m bench ARGV`` in this process: exit status, the ``error:`` lines, stdout."""
    code = cli.main(list(argv))
    out = capsys.readouterr()
    return code, [line for line in out.err.splitlines() if line.startswith("error:")], out.out


def assert_one_line(code: int, errors: list[str], *expected: str) -> None:
    assert code == 2, errors
    assert len(errors) == 1, errors
    for text in expected:
        assert text in errors[0], errors[0]


def runner(run_dir: Path, cache: Path, *overrides: str) -> Runner:
    return Runner(Plan.of(load_grid("quick", [*TINY, *overrides])), run_dir, cache_dir=cache, progress=False, device="cpu")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished one-cell run (and its cache), copied by the tests that tamper with it."""
    root = tmp_path_factory.mktemp("finished")
    summary = runner(root / "run", root / "cache").run()
    assert summary.ok == 1, summary.failures
    return root


@pytest.fixture
def run_copy(finished_run, tmp_path) -> tuple[Path, Path]:
    shutil.copytree(finished_run / "run", tmp_path / "run")
    shutil.copytree(finished_run / "cache", tmp_path / "cache")
    return tmp_path / "run", tmp_path / "cache"


# -- Ray fails fast ------------------------------------------------------------------------------
@pytest.fixture
def no_ray_cluster(monkeypatch, tmp_path):
    """No RAY_ADDRESS and an empty Ray temp folder: 'auto' finds nothing, whatever else runs here."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path / "ray_tmp"))


@pytest.fixture
def silent_port():
    """A local TCP port that accepts connections and never answers (not a Ray cluster)."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted = []

    def accept():
        try:
            while True:
                accepted.append(server.accept()[0])
        except OSError:
            return

    threading.Thread(target=accept, daemon=True).start()
    yield server.getsockname()[1]
    server.close()
    for conn in accepted:
        conn.close()


@pytest.mark.parametrize("address, expected", [
    ("127.0.0.1:1", ["127.0.0.1:1", "Connection refused", "ray start --head"]),
    ("auto", ["--ray-address auto", "no running Ray cluster", "ray start --head"]),
    ("notanaddress", ["--ray-address notanaddress", "HOST:PORT"]),
    ("127.0.0.1:99999", ["HOST:PORT"]),
    ("SILENT", ["not a Ray cluster", "ray start --head"]),
])
def test_a_cluster_address_that_cannot_work_is_one_line_in_seconds(address, expected, capsys, tmp_path,
                                                                 no_ray_cluster, silent_port):
    pytest.importorskip("ray")
    address = f"127.0.0.1:{silent_port}" if address == "SILENT" else address
    started = time.perf_counter()
    code, errors, _ = bench(capsys, *run_args(tmp_path / "run", tmp_path / "cache"),
                            "--executor", "ray", "--ray-address", address)
    assert time.perf_counter() - started < 15
    assert_one_line(code, errors, *expected)
    assert not (tmp_path / "run").exists()              # no lock, no run.json: refused before any work


@pytest.mark.parametrize("executor, setting, expected", [
    ("local", "resources.cpus_per_task=1000", "resources.cpus_per_task = 1000: this machine has at most"),
    ("ray", "resources.cpus_per_task=1000", "resources.cpus_per_task = 1000: this machine"),
    ("local", "resources.gpu_per_task=2", "GPU"),
])
def test_tasks_larger_than_the_machine_are_refused(executor, setting, expected, capsys, tmp_path):
    if executor == "ray":
        pytest.importorskip("ray")
    if "gpu" in setting:
        import torch

        if torch.cuda.device_count() >= 2:
            pytest.skip("this machine has two GPUs")
    code, errors, _ = bench(capsys, *run_args(tmp_path / "run", tmp_path / "cache", setting), "--executor", executor)
    assert_one_line(code, errors, expected)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("kwargs, expected", [
    ({"cpus_per_task": 1000}, "resources.cpus_per_task = 1000: the local Ray runtime has at most 2 CPUs"),
    ({"cpus_per_task": 1, "gpu_per_task": 1}, "has no GPU"),
])
def test_a_cluster_that_cannot_run_one_task_is_refused_before_submission(ray_runtime, kwargs, expected, tmp_path,
                                                                        monkeypatch):
    from bench.run.executors import ExecutorError, RayExecutor

    submitted = []
    monkeypatch.setattr(ray_runtime, "remote", lambda *a, **k: submitted.append(a) or pytest.fail("submitted"))
    run = runner(tmp_path / "run", tmp_path / "cache")
    started = time.perf_counter()
    with pytest.raises(ExecutorError, match=expected):
        RayExecutor(**kwargs).run([], run.context, lambda outcome: None)
    with pytest.raises(ExecutorError, match=expected):
        RayExecutor(**kwargs).start(run.grid, run.context)
    assert not submitted and time.perf_counter() - started < 10


# -- set aside means kept ------------------------------------------------------------------------
def test_alternating_configurations_keep_every_superseded_record(tmp_path):
    sizes = [16, 8, 16, 8, 16]
    hashes = []
    for size in sizes:
        run = runner(tmp_path / "run", tmp_path / "cache", f"encoder.vae.latent_dim={size}")
        assert run.run().ok == 1
        hashes.append(run.store.read(CELL)["config_hash"])
    aside = tmp_path / "run" / "records" / "superseded"
    kept = sorted(aside.glob(f"{CELL}.*.json"))
    assert len(kept) == 4 and len(list(aside.glob(f"{CELL}.*.npz"))) == 4
    assert sorted(json.loads(p.read_text())["config_hash"] for p in kept) == sorted(hashes[:4])
    for path in kept:                                   # each record beside its own arrays
        assert path.with_suffix(".npz").exists()


def test_a_record_corrupted_twice_keeps_both_copies(run_copy):
    run_dir, cache = run_copy
    store = ResultStore(run_dir)
    texts = []
    for n in range(2):
        text = store.json_path(CELL).read_text()[: 30 + n]            # truncated, differently each time
        store.json_path(CELL).write_text(text)
        texts.append(text)
        assert runner(run_dir, cache).run().ok == 1
    kept = sorted((run_dir / "records" / "corrupt").glob(f"{CELL}.*.json"))
    assert sorted(p.read_text() for p in kept) == sorted(texts)


# -- done means verified -------------------------------------------------------------------------
def test_a_resumed_degenerate_cell_still_fails_the_run(tmp_path, capsys):
    base = [item for item in TINY if not item.startswith("encoder.vae.")]
    args = run_args(tmp_path / "run", tmp_path / "cache", 'encoders=["random/resnet18"]', base=base)  # constant
    first, _, out_first = bench(capsys, *args)
    again, _, out_again = bench(capsys, *args)
    assert (first, again) == (1, 1)
    assert "1 degenerate" in out_first
    assert "1 already done (1 of them degenerate)" in out_again


def _no_metrics(run_dir: Path) -> None:
    path = run_dir / "records" / f"{CELL}.json"
    record = json.loads(path.read_text())
    record.update(status="ok", metrics={})
    path.write_text(json.dumps(record))


def _word_metric(run_dir: Path) -> None:
    path = run_dir / "records" / f"{CELL}.json"
    record = json.loads(path.read_text())
    record["metrics"]["image_auroc"] = "high"
    path.write_text(json.dumps(record))


def _garbage_arrays(run_dir: Path) -> None:
    (run_dir / "records" / f"{CELL}.npz").write_bytes(os.urandom(2048))


def _without_pixel_metrics(*names: str):
    def tamper(run_dir: Path) -> None:
        path = run_dir / "records" / f"{CELL}.json"
        record = json.loads(path.read_text())
        assert "pixel_aupro" in record["metrics"]              # synthetic has masks: the cell scored maps
        for name in names or [m for m in record["metrics"] if m.startswith("pixel_")]:
            record["metrics"].pop(name)
        path.write_text(json.dumps(record))
    return tamper


@pytest.mark.parametrize("tamper, expected", [
    (_no_metrics, "metric image_auroc is missing"),
    (_word_metric, "metric image_auroc = 'high'"),
    (_garbage_arrays, f"{CELL}.npz does not load"),
    (_without_pixel_metrics("pixel_aupro"), "metric pixel_aupro is missing"),
    (_without_pixel_metrics(), f"{CELL}.npz holds maps, but the record has no pixel metrics"),
])
def test_a_record_that_only_claims_to_be_done_is_refused_and_recomputed(run_copy, tamper, expected, capsys,
                                                                       tmp_path):
    run_dir, cache = run_copy
    tamper(run_dir)
    code, errors, _ = bench(capsys, "report", str(run_dir), "--out", str(tmp_path / "report"), "--fast")
    assert_one_line(code, errors, f"{CELL}.json", expected)
    with pytest.warns(UserWarning, match="recomputed"):
        summary = runner(run_dir, cache).run()
    assert (summary.ok, summary.resumed) == (1, 0)
    assert len(list((run_dir / "records" / "corrupt").glob(f"{CELL}.unverified.*.json"))) == 1
    assert ResultStore(run_dir).records()[0]["metrics"]["image_auroc"] > 0


# -- reports belong to one run -------------------------------------------------------------------
def test_report_out_never_takes_another_runs_folder(run_copy, capsys, tmp_path):
    run_a, _ = run_copy
    run_b = tmp_path / "run_b"
    shutil.copytree(run_a, run_b)
    folder = tmp_path / "report_a"
    assert bench(capsys, "report", str(run_a), "--out", str(folder), "--fast")[0] == 0
    readme = (folder / "README.md").read_text()
    code, errors, _ = bench(capsys, "report", str(run_b), "--out", str(folder), "--fast")
    assert_one_line(code, errors, f"holds the report of {run_a.resolve()}", "--out DIR")
    assert (folder / ".source").read_text().strip() == str(run_a.resolve())
    assert (folder / "README.md").read_text() == readme


def test_report_out_never_overwrites_a_folder_of_other_files(run_copy, capsys, tmp_path):
    run_a, _ = run_copy
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "README.md").write_text("# mine\n")
    code, errors, _ = bench(capsys, "report", str(run_a), "--out", str(foreign), "--fast")
    assert_one_line(code, errors, "not a report folder", "--out DIR")
    assert (foreign / "README.md").read_text() == "# mine\n" and not (foreign / ".source").exists()


def test_a_damaged_diagnostics_cache_entry_is_rebuilt(tmp_path):
    from bench.analysis.diagnostics import DiagnosticsCache

    emb = tmp_path / "enc"
    emb.mkdir()
    rng = np.random.default_rng(0)
    np.savez(emb / "embeddings.npz", train=rng.normal(size=(30, 4)), val=rng.normal(size=(10, 4)),
             test=rng.normal(size=(20, 4)), test_labels=np.r_[np.zeros(10, int), np.ones(10, int)],
             val_labels=np.zeros(10, int))
    cache = DiagnosticsCache(tmp_path / "cache", seed=0, tsne_points=20)
    coords, labels = cache.tsne(emb)
    [entry] = list((tmp_path / "cache").glob("*.npz"))
    for damage in (entry.read_bytes()[:50], b""):          # truncated by a killed report; empty
        entry.write_bytes(damage)
        again, _ = cache.tsne(emb)
        np.testing.assert_allclose(again, coords)
        assert entry.stat().st_size > 50 and not list((tmp_path / "cache").glob(".*.tmp"))
    values = cache.diagnostics(emb)
    [json_entry] = list((tmp_path / "cache").glob("*.json"))
    json_entry.write_bytes(b"\xff{")
    assert cache.diagnostics(emb) == values


# -- every path and filesystem error is one line ---------------------------------------------------
@pytest.fixture
def full_disk_under(monkeypatch):
    """``full_disk_under(folder)``: files written under ``folder`` go to /dev/full (ENOSPC on write)."""
    real_mkstemp, real_write_bytes = tempfile.mkstemp, Path.write_bytes
    folders: list[Path] = []

    def inside(path) -> bool:
        return any(Path(path).resolve().is_relative_to(f.resolve()) for f in folders)

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and inside(dir):
            return os.open("/dev/full", os.O_WRONLY), str(Path(dir) / ".never-created.tmp")
        return real_mkstemp(*args, dir=dir, **kwargs)

    def write_bytes(self, data):
        if inside(self):
            with open("/dev/full", "wb") as fh:
                return fh.write(data) and fh.flush()
        return real_write_bytes(self, data)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(Path, "write_bytes", write_bytes)
    return folders.append


def test_a_full_disk_under_the_records_is_one_line_and_keeps_what_was_written(tmp_path, capsys, full_disk_under):
    full_disk_under(tmp_path / "run" / "records")
    code, errors, _ = bench(capsys, *run_args(tmp_path / "run", tmp_path / "cache"))
    assert_one_line(code, errors, f"no space left on device under {tmp_path / 'run' / 'records'}")
    assert not (tmp_path / "run" / ".lock").exists()
    assert not list((tmp_path / "run").rglob("*.tmp"))


def test_a_full_disk_under_the_cache_says_so_in_the_failed_cell(tmp_path, capsys, full_disk_under):
    full_disk_under(tmp_path / "cache" / "encoders")
    code, _, _ = bench(capsys, *run_args(tmp_path / "run", tmp_path / "cache"))
    assert code == 1
    record = ResultStore(tmp_path / "run").read(CELL)
    assert record["status"] == "failed"
    assert f"no space left on device under {tmp_path / 'cache' / 'encoders'}" in record["error"]
    assert "unexpected pos" not in record["error"]


def _a_file_at(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("a file")
    return path


@pytest.mark.parametrize("case", ["out under a file", "records is a file", "reports under a file",
                                  "cache under a file", "out not writable", "reports not writable",
                                  "mkdir refused", "grid not utf-8", "out is the cache"])
def test_run_path_errors_are_one_line(case, tmp_path, capsys, monkeypatch):
    run_dir, cache = tmp_path / "run", tmp_path / "cache"
    args = run_args(run_dir, cache, report=True)
    expected: list[str] = []
    if case == "out under a file":
        run_dir = _a_file_at(tmp_path / "blocker") / "run"
        args = run_args(run_dir, cache)
        expected = [f"is under {tmp_path / 'blocker'}, which is a file"]
    elif case == "records is a file":
        _a_file_at(run_dir / "records")
        expected = [f"{run_dir / 'records'} is a file"]
    elif case == "reports under a file":
        args[args.index("--reports") + 1] = str(_a_file_at(tmp_path / "reports_file") / "reports")
        expected = ["reports folder", "which is a file"]
    elif case == "cache under a file":
        args[args.index("--cache") + 1] = str(_a_file_at(tmp_path / "cache_file") / "cache")
        expected = ["cache folder", "which is a file"]
    elif case in ("out not writable", "reports not writable"):
        locked = tmp_path / "locked"
        locked.mkdir()
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: Path(p) != locked and real_access(p, mode, **kw))
        if case == "out not writable":
            args[args.index("--out") + 1] = str(locked / "run")
        else:
            args[args.index("--reports") + 1] = str(locked / "reports")
        expected = [f"{locked} is not writable"]
    elif case == "mkdir refused":                       # what a read-only folder does to a non-root user
        real_mkdir = Path.mkdir

        def mkdir(self, *a, **kw):
            if self == run_dir:
                raise PermissionError(errno.EACCES, "Permission denied", str(self))
            return real_mkdir(self, *a, **kw)

        monkeypatch.setattr(Path, "mkdir", mkdir)
        expected = [f"{run_dir}: permission denied"]
    elif case == "grid not utf-8":
        grid = tmp_path / "latin1.toml"
        grid.write_bytes('name = "caf\u00e9"\nseeds = [0]\n'.encode("latin-1"))
        args[args.index("run") + 1:args.index("run") + 1] = ["--grid", str(grid)]
        expected = [f"grid file {grid} is not UTF-8"]
    elif case == "out is the cache":
        args[args.index("--cache") + 1] = str(run_dir)
        expected = ["is the cache folder"]
    code, errors, _ = bench(capsys, *args)
    assert_one_line(code, errors, *expected)
    assert not (tmp_path / "reports").exists()


@pytest.mark.parametrize("case", ["out is a file", "empty records", "records is a file", "out not writable"])
def test_report_path_errors_are_one_line(case, run_copy, capsys, tmp_path, monkeypatch):
    run_dir, _ = run_copy
    out = tmp_path / "report"
    if case == "out is a file":
        _a_file_at(out)
        expected = [f"report folder {out} is a file"]
    elif case == "empty records":
        for path in (run_dir / "records").iterdir():
            path.unlink()
        expected = [f"{run_dir} has no records yet"]
    elif case == "records is a file":
        shutil.rmtree(run_dir / "records")
        _a_file_at(run_dir / "records")
        expected = ["is a file"]
    else:
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: Path(p) != tmp_path and real_access(p, mode, **kw))
        expected = [f"{tmp_path} is not writable"]
    code, errors, _ = bench(capsys, "report", str(run_dir), "--out", str(out), "--fast")
    assert_one_line(code, errors, *expected)


def test_a_report_that_cannot_be_written_after_a_run_is_one_line_and_keeps_the_records(tmp_path, capsys,
                                                                                       full_disk_under):
    full_disk_under(tmp_path / "reports")
    code, errors, out = bench(capsys, *run_args(tmp_path / "run", tmp_path / "cache", report=True))
    assert_one_line(code, errors, "no space left on device under", "the records are complete")
    assert "1 cells: 1 ok" in out and ResultStore(tmp_path / "run").read(CELL)["status"] == "ok"


def test_a_truncated_data_file_is_named(tmp_path, capsys):
    source = Path(__file__).resolve().parents[2] / "shared" / "data" / "busi.npz"
    data = source.read_bytes()[:100_000] if source.is_file() else b"PK\x03\x04" + os.urandom(5000)
    (tmp_path / "busi.npz").write_bytes(data)
    code, errors, _ = bench(capsys, "show", "dataset", "busi", "--load", "--data-root", str(tmp_path))
    assert_one_line(code, errors, str(tmp_path / "busi.npz"), "not a readable .npz")


# -- a report killed mid-figure leaves no truncated file -----------------------------------------
def test_a_figure_interrupted_mid_write_leaves_no_partial_file(run_copy, tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    from bench.report import build_report

    run_dir, _ = run_copy
    real_savefig = Figure.savefig

    def dies_half_way(self, target, *args, **kwargs):
        real_savefig(self, target, *args, **kwargs)
        if hasattr(target, "truncate"):
            target.truncate(target.tell() // 2)
        else:
            Path(target).write_bytes(Path(target).read_bytes()[:100])
        raise KeyboardInterrupt                        # as a SIGKILL would, mid-file

    monkeypatch.setattr(Figure, "savefig", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        # drawn in this process (figure workers do not see the patched savefig; they write through the
        # same save_figure); full: a one-row matrix draws no heatmap
        build_report(run_dir, tmp_path / "report", figure_workers=0)
    assert not [p for p in (tmp_path / "report").rglob("*") if p.suffix in (".png", ".pdf") or
                p.name.endswith(".tmp")]


def test_sigkill_during_report_never_leaves_a_truncated_figure(run_copy, tmp_path):
    run_dir, _ = run_copy
    out = tmp_path / "report"
    command = [sys.executable, "-m", "bench", "report", str(run_dir), "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not list(out.rglob("*.png")):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    for path in out.rglob("*"):
        if path.suffix == ".png":
            assert path.read_bytes().endswith(b"IEND\xaeB`\x82"), path
        elif path.suffix == ".pdf":
            assert path.read_bytes().rstrip().endswith(b"%%EOF"), path
    finished = subprocess.run(command + ["--fast"], env=env, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    assert not list(out.rglob("*.tmp"))


# -- validation covers values --------------------------------------------------------------------
@pytest.mark.parametrize("override, expected", [
    ("encoder.vae.lr=nan", "encoder.vae.lr = nan: must be a finite number"),
    ("encoder.vae.lr=inf", "encoder.vae.lr = inf: must be a finite number"),
    ("dataset.synthetic.n_train=1", "dataset.synthetic.n_train = 1: must be >= 2"),
    ("dataset.synthetic.n_test=1", "dataset.synthetic.n_test = 1: must be >= 2"),
    ("encoder.vae.batch_size=1", "encoder.vae.batch_size = 1: must be >= 2"),
    ("seeds=[99999999999999999999]", "seeds: 99999999999999999999 is outside [0, 4294967295]"),
    ("seeds=[-1]", "seeds: -1 is outside"),
    ("seeds=[0, 0]", "0 appears more than once"),
    ('localization=["gradient", "gradient"]', "'gradient' appears more than once"),
    ('datasets="synthetic"', 'datasets = \'synthetic\': expected a list, e.g. datasets = ["synthetic"]'),
    ('encoders="vae"', "encoders = 'vae': expected a list"),
    ('heads="gaussian"', "heads = 'gaussian': expected a list"),
    ("localization=[]", "localization = []: give at least one"),
    ("seeds=[]", "seeds = []: give at least one"),
    ('name="../../../x"', "name = '../../../x': a grid's name must be a plain file name"),
    ('name=""', "name = '': a grid's name must be a plain file name"),
    ('name="."', "must be a plain file name"),
])
def test_bad_values_are_refused_before_any_work(override, expected, tmp_path, capsys):
    code, errors, _ = bench(capsys, *run_args(tmp_path / "run", tmp_path / "cache", override), "--check")
    assert_one_line(code, errors, expected)
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


def test_the_largest_seed_and_a_spaced_name_are_fine(tmp_path, capsys):
    code, _, out = bench(capsys, *run_args(tmp_path / "run", tmp_path / "cache", "seeds=[4294967295]",
                                           'name="my grid"'), "--check")
    assert code == 0 and "preflight: ok" in out


# -- the test suite leaves the checkout as it found it ---------------------------------------------
def test_default_caches_are_outside_the_checkout(tmp_path):
    from bench.run.cache import default_cache_dir
    from conftest import PROJECT

    assert not default_cache_dir().resolve().is_relative_to(PROJECT)
    run = Runner(Plan.of(load_grid("quick", TINY)), tmp_path / "run", progress=False, device="cpu")
    assert not Path(run.context.cache_dir).resolve().is_relative_to(PROJECT)


def test_the_checkout_guard_sees_an_ignored_file(tmp_path):
    from conftest import PROJECT, checkout_state

    before = checkout_state()
    if before is None:
        pytest.skip("not a git checkout")
    probe = PROJECT / "runs" / "cache" / "datasets" / f".guard-probe-{os.getpid()}.npz"
    created = [p for p in probe.parents if not p.exists() and PROJECT in p.parents]
    try:
        probe.parent.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"x")
        assert checkout_state() - before == {f"!! {probe.relative_to(PROJECT).as_posix()}"}
    finally:
        probe.unlink(missing_ok=True)
        for folder in created:                      # deepest first: parents are listed leaf to root
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
    assert checkout_state() == before


def test_numpy_seed_range_is_what_validation_allows():
    """The bound is numpy's: 2**32 - 1 seeds a RandomState, 2**32 does not."""
    from bench.run.validate import SEED_RANGE

    np.random.RandomState(SEED_RANGE[1])
    with pytest.raises(ValueError):
        np.random.RandomState(SEED_RANGE[1] + 1)
