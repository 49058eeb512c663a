"""Executors: Ray gives the local executor's bits, resumes its runs, survives a killed worker."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time

import numpy as np
import pytest

from bench.run.grid import GridError, load_grid
from bench.run.plan import Plan
from bench.run.runner import Runner
from bench.run.work import RunContext, unit_settings
from bench.run.store import ResultStore
from bench.run.validate import validate_grid

TINY = ['datasets=["synthetic"]', "seeds=[0]", "defaults.dataset.image_size=32",
        "dataset.synthetic.n_train=48", "dataset.synthetic.n_val=16", "dataset.synthetic.n_test=24",
        "dataset.synthetic.n_pool=0", "encoder.vae.epochs=1", "encoder.vae.batch_size=16",
        'encoders=["vae", "imagenet/tf_efficientnet_lite0"]', 'heads=["gaussian", "knn", "gmm"]',
        "head.gmm.n_components=2",
        # torch threads are part of "the same bits": both executors run each unit with this many
        "resources.cpus_per_task=1"]


def tiny_grid(*extra: str):
    return load_grid("quick", TINY + ['localization=["gradient", "reconstruction"]', *extra])


def same_results(a_dir, b_dir) -> int:
    """Assert bit-identical metrics and arrays for every record; return the number of records."""
    a, b = ResultStore(a_dir), ResultStore(b_dir)
    ra = {r["cell_id"]: r for r in a.records()}
    rb = {r["cell_id"]: r for r in b.records()}
    assert ra.keys() == rb.keys()
    for cid in ra:
        assert ra[cid]["status"] == rb[cid]["status"] == "ok", cid
        assert ra[cid]["metrics"] == rb[cid]["metrics"], cid
        xa, xb = a.arrays(cid), b.arrays(cid)
        assert set(xa) == set(xb), cid
        for key in xa:
            assert np.array_equal(xa[key], xb[key]), (cid, key)
    return len(ra)


# ---------------------------------------------------------------------------------------------
# Without Ray: grid keys, unit settings, precision helpers
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("item, message", [
    ("resources.cpus_per_task=0", "cpus_per_task"), ("resources.cpus_per_task=1.5", "cpus_per_task"),
    ("resources.gpu_per_task=1.5", "gpu_per_task"), ("resources.gpu_per_task=-1", "gpu_per_task"),
    ("resources.gpus_per_task=1", "did you mean 'gpu_per_task'"), ("amp=1", "amp"),
    ('deterministic="yes"', "deterministic")])
def test_runtime_keys_are_validated(item, message):
    with pytest.raises(GridError, match=message):
        validate_grid(load_grid("quick", [item]))


def test_runtime_keys_reach_the_context():
    import torch

    validate_grid(load_grid("quick", ["resources.gpu_per_task=0.5", "resources.cpus_per_task=2", "amp=false",
                                      "deterministic=true"]))
    grid = load_grid("quick", ["resources.cpus_per_task=2", "amp=false", "deterministic=true"])
    ctx = RunContext.for_grid(grid, data_root=None, cache_dir="c", device="cpu")
    assert (ctx.threads, ctx.amp, ctx.deterministic) == (2, False, True)
    default = RunContext.for_grid(load_grid("quick"), data_root=None, cache_dir="c", device="cpu")
    # no [resources]: the driver's own thread count is pinned for every unit
    assert (default.threads, default.amp, default.deterministic) == (torch.get_num_threads(), None, False)
    import os

    assert default.runtime() == {"executor": "local", "torch_threads": torch.get_num_threads(),
                                 "worker_pid": os.getpid(),     # which process ran the unit (parallel workers)
                                 "amp": False, "deterministic": False, "channels_last": False}


def test_unit_settings_apply_and_restore():
    import torch

    threads = torch.get_num_threads()
    ctx = RunContext("g", None, "c", "cpu", threads=1, deterministic=True)
    with unit_settings(ctx):
        assert torch.get_num_threads() == 1 and torch.are_deterministic_algorithms_enabled()
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert torch.get_num_threads() == threads and not torch.are_deterministic_algorithms_enabled()


def test_precision_is_a_no_op_on_cpu():
    import torch

    import pickle

    from methods.precision import Device, amp_dtype, autocast, grad_scaler, use_channels_last

    cpu = Device("cpu", amp=True, channels_last=True)
    assert amp_dtype(cpu) is None and grad_scaler(cpu) is None
    assert not use_channels_last(cpu, torch.nn.Conv2d(1, 1, 3))
    with autocast(cpu):
        assert torch.ones(2, 2).matmul(torch.ones(2, 2)).dtype == torch.float32
    assert amp_dtype(Device("cuda", amp=False)) is None        # amp = false wins even on CUDA
    assert not use_channels_last(Device("cuda", channels_last=False))
    again = pickle.loads(pickle.dumps(Device("cuda:1", amp=False)))    # travels to Ray workers as it is
    assert again == "cuda:1" and again.amp is False and torch.zeros(1).to(Device("cpu")).device.type == "cpu"


# ---------------------------------------------------------------------------------------------
# With a local Ray runtime (2 CPUs)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_runtime():
    ray = pytest.importorskip("ray")
    from bench.run.executors import PROJECT_ROOT

    if not ray.is_initialized():
        ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": str(PROJECT_ROOT)}})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def both_runs(ray_runtime, tmp_path_factory):
    """The tiny grid under the local executor and under Ray, each with a fresh cache."""
    from bench.run.executors import RayExecutor

    root = tmp_path_factory.mktemp("executors")
    grid = tiny_grid()
    local = Runner(Plan.of(grid), root / "local", cache_dir=root / "cache_local", progress=False, device="cpu").run()
    executor = RayExecutor(cpus_per_task=1)
    runner = Runner(Plan.of(grid), root / "ray", cache_dir=root / "cache_ray", progress=False, device="cpu",
                    executor=executor)
    executor.start(runner.plan, runner.context)             # as `bench run` does: workers warm up during the preflight
    remote = runner.run()
    return root, grid, local, remote


def test_ray_gives_the_local_bits(both_runs):
    root, _, local, remote = both_runs
    for summary in (local, remote):
        assert (summary.ok, summary.failed, summary.not_applicable) == (9, 0, 3), summary.failures
    assert same_results(root / "local", root / "ray") == 9
    records = ResultStore(root / "ray").records()
    assert {r["host"]["executor"] for r in records} == {"ray"}
    assert {r["host"]["torch_threads"] for r in records} == {1}
    # workers trained in their own processes and wrote the cache, the driver wrote the records
    assert any((root / "cache_ray" / "encoders").iterdir())


def test_default_threads_give_the_local_bits_too(ray_runtime, tmp_path):
    """Without [resources], every unit runs with the driver's thread count on either executor."""
    import torch

    from bench.run.executors import RayExecutor

    base = [item for item in TINY if not item.startswith("resources.")]
    grid = load_grid("quick", base + ['encoders=["vae"]', 'heads=["gaussian", "gmm"]', 'localization=["gradient"]'])
    local = Runner(Plan.of(grid), tmp_path / "local", cache_dir=tmp_path / "c1", progress=False, device="cpu").run()
    remote = Runner(Plan.of(grid), tmp_path / "ray", cache_dir=tmp_path / "c2", progress=False, device="cpu",
                    executor=RayExecutor()).run()
    assert local.ok == remote.ok == 2, (local.failures, remote.failures)
    assert same_results(tmp_path / "local", tmp_path / "ray") == 2
    threads = {r["host"]["torch_threads"] for r in ResultStore(tmp_path / "ray").records()}
    assert threads == {torch.get_num_threads()}


@pytest.mark.parametrize("first, then", [("local", "ray"), ("ray", "local")])
def test_resume_across_executors(both_runs, first, then, tmp_path):
    from bench.run.executors import LocalExecutor, RayExecutor

    root, grid, _, _ = both_runs
    run_dir = tmp_path / "run"
    shutil.copytree(root / first, run_dir)
    cache = tmp_path / "cache"
    shutil.copytree(root / f"cache_{first}", cache)
    store = ResultStore(run_dir)
    removed = [r["cell_id"] for r in store.records() if r["head"] == "knn"]
    assert len(removed) == 3
    for cid in removed:                                  # the run "stopped" before its knn cells
        store.json_path(cid).unlink()
        store.json_path(cid).with_suffix(".npz").unlink()
    executor = RayExecutor(cpus_per_task=1) if then == "ray" else LocalExecutor()
    summary = Runner(Plan.of(grid), run_dir, cache_dir=cache, progress=False, device="cpu", executor=executor).run()
    assert (summary.resumed, summary.ok, summary.failed) == (6, 3, 0), summary.failures
    assert same_results(root / "local", run_dir) == 9
    finished = {r["cell_id"]: r["host"]["executor"] for r in store.records()}
    assert {finished[cid] for cid in removed} == {then}


class CountingRunner(Runner):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.accepted: list[str] = []

    def accept(self, outcome, summary):
        self.accepted.append(outcome.cell.cell_id)
        super().accept(outcome, summary)


def test_killed_worker_is_retried_and_every_cell_completes_once(ray_runtime, both_runs, tmp_path):
    from bench.run.executors import RayExecutor

    root, grid, _, _ = both_runs
    pid_file = tmp_path / "stalled.pid"
    claim = str(pid_file)
    killed = {}

    def stalling_task(unit, ctx):
        """Ray task body (shipped by value): after the unit's first outcome, the first task to claim
        the file writes its PID there and stalls until the test kills it; the retry runs normally."""
        from bench.run.units import execute_unit

        outcomes = []
        for outcome in execute_unit(unit, ctx):
            outcomes.append(outcome)
            if len(outcomes) == 1:
                try:
                    fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                except FileExistsError:
                    continue
                with os.fdopen(fd, "w") as fh:
                    fh.write(str(os.getpid()))
                time.sleep(600)
        return outcomes

    def kill_the_stalled_worker():
        deadline = time.time() + 120
        while time.time() < deadline:
            if pid_file.exists() and pid_file.read_text().strip():
                killed["pid"] = int(pid_file.read_text())
                killed["records_then"] = len(list((tmp_path / "run" / "records").glob("*.json")))
                os.kill(killed["pid"], signal.SIGKILL)
                return
            time.sleep(0.2)

    killer = threading.Thread(target=kill_the_stalled_worker, daemon=True)
    killer.start()
    runner = CountingRunner(Plan.of(grid), tmp_path / "run", cache_dir=tmp_path / "cache", progress=False, device="cpu",
                            executor=RayExecutor(cpus_per_task=1, max_retries=2, task=stalling_task))
    summary = runner.run()
    killer.join(timeout=5)
    assert killed.get("pid") not in (None, os.getpid()), "no worker stalled"
    assert (summary.ok, summary.failed, summary.not_applicable) == (9, 0, 3), summary.failures
    assert sorted(runner.accepted) == sorted(set(runner.accepted)) and len(runner.accepted) == 12
    records_dir = tmp_path / "run" / "records"
    assert not list(records_dir.glob(".*tmp")) and not (records_dir / "superseded").exists()
    assert same_results(root / "local", tmp_path / "run") == 9


def test_ctrl_c_cancels_outstanding_tasks_and_leaves_complete_records(ray_runtime, both_runs, tmp_path,
                                                                      monkeypatch):
    from bench.run.executors import RayExecutor

    root, grid, _, _ = both_runs
    cancelled = []
    real_cancel = ray_runtime.cancel
    monkeypatch.setattr(ray_runtime, "cancel", lambda ref, **kw: (cancelled.append(ref), real_cancel(ref, **kw)))

    class InterruptedRunner(Runner):
        def accept(self, outcome, summary):
            if summary.ok == 2:
                raise KeyboardInterrupt
            super().accept(outcome, summary)

    grid3 = load_grid("quick", TINY + ['localization=["gradient"]', "seeds=[0, 1]"])
    with pytest.raises(KeyboardInterrupt):
        InterruptedRunner(Plan.of(grid3), tmp_path / "run", cache_dir=tmp_path / "cache", progress=False, device="cpu",
                          executor=RayExecutor(cpus_per_task=1, max_parallel=2)).run()
    assert cancelled, "tasks in flight were not cancelled"
    store = ResultStore(tmp_path / "run")
    assert len(store.records()) == 2 and all(r["status"] == "ok" for r in store.records())
    summary = Runner(Plan.of(grid3), tmp_path / "run", cache_dir=tmp_path / "cache", progress=False, device="cpu",
                     executor=RayExecutor(cpus_per_task=1)).run()
    assert (summary.resumed, summary.ok, summary.failed) == (2, 10, 0), summary.failures


@pytest.mark.parametrize("argv", [["--ray-address", "auto"], ["--max-parallel", "2"],
                                  ["--executor", "ray", "--max-parallel", "0"]])
def test_cli_rejects_ray_options_that_cannot_apply(argv, tmp_path, capsys):
    from bench.cli import main

    assert main(["run", "--out", str(tmp_path / "run"), "--check", *argv]) == 2
    assert "error:" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_an_autocast_fit_is_not_served_to_an_fp32_run(monkeypatch):
    """Cache keys come from one function and include the autocast dtype of a CUDA fit (bf16/fp16),
    so a fit made under autocast is never loaded by a run with ``amp = false`` (or on the CPU)."""
    import torch

    from bench.run.cache import fit_key

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    common = dict(run_name="t", data_root=None, cache_dir="/tmp/unused", threads=1)
    amp = RunContext(device="cuda", amp=True, **common)
    fp32 = RunContext(device="cuda", amp=False, **common)
    cpu = RunContext(device="cpu", amp=True, **common)
    assert amp.fit_precision() == torch.bfloat16 and fp32.fit_precision() is None and cpu.fit_precision() is None
    assert amp.fit_precision(trains=False) is None                   # a frozen encoder's fit has no precision
    data, spec = {"name": "synthetic", "content": "abc"}, {"name": "ae", "id": "ae", "epochs": 2}
    keys = {fit_key("detector", data, spec, 0, precision=ctx.fit_precision()) for ctx in (amp, fp32, cpu)}
    assert len(keys) == 2                                              # fp32 on CUDA == fp32 on the CPU
    assert fit_key("detector", data, spec, 0, precision=amp.fit_precision()) not in {
        fit_key("detector", data, spec, 0, precision=None)}
