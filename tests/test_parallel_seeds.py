"""Issue 27: the local executor runs independent units (seeds) in worker processes, bit for bit as in sequence."""

from __future__ import annotations

import pytest

from bench.run.grid import GridError, load_grid
from bench.run.plan import Plan
from bench.run.runner import Runner
from bench.run.store import ResultStore
from bench.run.validate import validate_grid

from tests.test_executors import same_results

TWO_SEEDS = ['datasets=["synthetic"]', "seeds=[0, 1]", "defaults.dataset.image_size=32",
             "dataset.synthetic.n_train=32", "dataset.synthetic.n_val=8", "dataset.synthetic.n_test=16",
             "dataset.synthetic.n_pool=0", "encoder.vae.epochs=1", "encoder.vae.batch_size=16",
             'encoders=["vae"]', 'heads=["gaussian", "knn"]', 'localization=["gradient"]',
             "resources.cpus_per_task=1"]


def test_two_seeds_in_two_worker_processes_give_the_sequential_records(tmp_path):
    from bench.run.executors import LocalExecutor

    grid = load_grid("quick", TWO_SEEDS)
    seq = Runner(Plan.of(grid), tmp_path / "seq", cache_dir=tmp_path / "c1", progress=False, device="cpu").run()
    par = Runner(Plan.of(grid), tmp_path / "par", cache_dir=tmp_path / "c2", progress=False, device="cpu",
                 executor=LocalExecutor(workers=2)).run()
    assert seq.ok == par.ok == 4, (seq.failures, par.failures)
    assert same_results(tmp_path / "seq", tmp_path / "par") == 4
    import os

    by_seed = {}
    for record in ResultStore(tmp_path / "par").records():
        by_seed.setdefault(record["seed"], set()).add(record["host"]["worker_pid"])
    assert set(by_seed) == {0, 1}
    pids = set().union(*by_seed.values())
    assert pids and os.getpid() not in pids, "the units ran in worker processes, the driver wrote the records"


def test_workers_setting_is_checked_and_sizes_threads():
    from bench.run.executors import ExecutorError, LocalExecutor, local_workers, make_executor

    assert local_workers("auto", 1) >= 1 and local_workers(None, 1) == 1 and local_workers(3, 1) == 3
    with pytest.raises(ExecutorError, match="workers"):
        local_workers(0, 1)
    grid = load_grid("quick", TWO_SEEDS[:-1] + ["resources.workers=2"])
    validate_grid(grid)
    executor = make_executor("local", grid)
    assert executor.workers == 2 and executor.slots == 2
    ctx = Runner(Plan.of(grid), "unused", progress=False, device="cpu").context
    import os

    assert executor.context(ctx).threads == max(1, (os.cpu_count() or 1) // 2)
    assert executor.context(ctx, cpus_per_task=1) is ctx, "a pinned cpus_per_task is kept"
    assert LocalExecutor().context(ctx) is ctx
    with pytest.raises(GridError, match="workers"):
        validate_grid(load_grid("quick", TWO_SEEDS + ["resources.workers=0"]))
