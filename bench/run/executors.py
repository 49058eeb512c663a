"""Executors run units of work (``bench.run.work.Unit``) and hand each cell's outcome to the driver.

``LocalExecutor`` runs them one after another in this process (no extra dependency; the default).
``RayExecutor`` (``python -m bench run --executor ray``) ships the same units to Ray tasks on this
machine or on a cluster. Both call :func:`bench.run.work.execute_unit`, which applies the unit's
settings (torch threads = ``[resources] cpus_per_task``, deterministic algorithms, mixed precision)
itself, so a unit computes the same bits wherever it runs.

**Who writes what, and why that is safe on a shared filesystem.** Workers (Ray tasks, or this
process) write *cache entries* only: trained encoders with their embeddings, fitted detectors and
decoded datasets. Entries are content-addressed (dataset fingerprint, component configuration,
seed), written under a temporary name and renamed into place, never replaced while valid, and
verified by checksum on read (``bench.run.cache``): two workers that build the same entry at once
write the same content, and a reader sees the whole entry or none of it. The *driver* alone writes
records, one atomic JSON + ``.npz`` per cell, only when a unit has returned all its outcomes, and it
holds the run directory's lock (``bench.run.store.RunLock``) meanwhile. A worker that dies mid-unit
therefore leaves no partial record; Ray runs the unit again (``max_retries``), and a unit whose
retries are spent is recorded as ``failed`` (stage ``worker``) so the grid goes on. Ctrl-C cancels
the tasks in flight; the records already written are complete, and rerunning resumes.

Ray needs ``--out`` and ``--cache`` on a filesystem every node sees at the same path (the driver
passes absolute paths), and every node must import the same project code: the driver puts its
project root on the workers' ``PYTHONPATH`` (so a git worktree runs its own code, not an editable
install elsewhere).
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterable

#: The project root (the folder holding ``bench/``), put on Ray workers' ``PYTHONPATH``.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
EXECUTORS = ("local", "ray")


class ExecutorError(ValueError):
    """Executor options that cannot be used; one line for the CLI."""


class LocalExecutor:
    """Units in grid order, in this process: today's behaviour and the reference for every other."""

    name = "local"

    def start(self, plan, ctx) -> None:
        """Nothing to warm: units run in this process after the preflight."""

    def close(self) -> None:
        """Nothing to shut down."""

    def run(self, units: Iterable, ctx, on_outcome: Callable) -> None:
        from bench.run.work import execute_unit

        for unit in units:
            for outcome in execute_unit(unit, ctx):
                on_outcome(outcome)


def run_unit_task(unit, ctx) -> list:
    """The body of a Ray task: every outcome of one unit, returned together (the driver writes them)."""
    from bench.run.work import execute_unit

    return list(execute_unit(unit, ctx))


def warm_worker(plan, ctx) -> int:
    """Import what the grid's units need and load its datasets in this worker (kept per process).

    Submitted once per task slot when the executor starts, before the driver's preflight, so that
    a fresh worker's imports and dataset loading overlap the preflight instead of delaying the
    first units. Anything that fails here fails again, and is recorded, in the unit itself.
    """
    import bench.metrics  # noqa: F401 - scipy, scikit-learn
    from bench.run.work import load_dataset
    from methods.registry import create_encoder, create_head

    for comp in plan.datasets():
        try:
            dataset = load_dataset(comp, ctx)
        except Exception:  # noqa: BLE001
            continue
        for enc in plan.encoders(comp):
            try:
                create_encoder(enc.name, in_chans=dataset.channels, image_size=dataset.image_size, **enc.kwargs)
            except Exception:  # noqa: BLE001
                pass
    for head in plan.heads():
        try:
            create_head(head.name, **head.kwargs)
        except Exception:  # noqa: BLE001
            pass
    return os.getpid()


class RayExecutor:
    """Units as Ray tasks; the driver writes their outcomes in completion order (``ray.wait``).

    Args:
        address: ``None`` starts a local Ray runtime sized to this machine (all CPUs and GPUs);
            ``"auto"`` or ``"HOST:PORT"`` joins a running cluster (``ray start --head``). When Ray is
            already initialised in this process (tests), that runtime is used as it is.
        max_parallel: at most this many tasks in flight (``None``: as many as the resources allow).
        cpus_per_task, gpu_per_task: what each task asks Ray for; by default the grid's
            ``[resources]`` table (``cpus_per_task = 1``; ``gpu_per_task = 1`` when the device is
            CUDA, else 0). Each task runs torch with ``cpus_per_task`` threads.
        max_retries: how often Ray reruns a task whose worker process died (Python exceptions are
            recorded as failed cells by the unit itself and never retried).
        env: extra environment variables for the workers.
        task: the function a Ray task runs, ``(unit, ctx) -> [Outcome]`` (tests wrap it to kill a
            worker mid-unit); by default :func:`run_unit_task`.
    """

    name = "ray"

    def __init__(self, address: str | None = None, *, max_parallel: int | None = None,
                 cpus_per_task: int | None = None, gpu_per_task: float | None = None, max_retries: int = 3,
                 env: dict | None = None, task: Callable = run_unit_task):
        if max_parallel is not None and max_parallel < 1:
            raise ExecutorError(f"--max-parallel {max_parallel}: expected N >= 1")
        self.address, self.max_parallel, self.max_retries = address, max_parallel, max_retries
        self.cpus_per_task, self.gpu_per_task = cpus_per_task, gpu_per_task
        self.env = dict(env or {})
        self.task = task
        self.started_here = False
        self.warming: list = []

    def start(self, plan, ctx) -> None:
        """Connect (or start Ray) and warm one worker per task slot while the driver runs its preflight."""
        import ray

        self._connect(ray)
        task_ctx, cpus = self.task_context(ctx)
        slots = int(ray.cluster_resources().get("CPU", 1) // cpus) or 1
        if self.max_parallel is not None:
            slots = min(slots, self.max_parallel)
        warm = ray.remote(warm_worker).options(num_cpus=cpus, num_gpus=0, runtime_env=self.runtime_env())
        self.warming = [warm.remote(plan, task_ctx) for _ in range(slots)]

    def close(self) -> None:
        """Shut down a Ray runtime this executor started (after ``start`` without ``run``)."""
        if self.started_here:
            import ray

            ray.shutdown()
            self.started_here = False

    def runtime_env(self) -> dict:
        path = os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH")) if p)
        return {"env_vars": {"PYTHONPATH": path, **self.env}}

    def _connect(self, ray) -> None:
        if ray.is_initialized():
            return
        kwargs = dict(include_dashboard=False, log_to_driver=False, runtime_env=self.runtime_env())
        if self.address:
            ray.init(address=self.address, **kwargs)
        else:
            import torch

            ray.init(num_cpus=os.cpu_count(), num_gpus=torch.cuda.device_count(), **kwargs)
        self.started_here = True

    def task_context(self, ctx):
        """``ctx`` as workers get it: absolute paths (workers may start elsewhere), threads, executor."""
        cpus = self.cpus_per_task or ctx.threads or 1
        return replace(ctx, cache_dir=str(Path(ctx.cache_dir).resolve()),
                       data_root=str(Path(ctx.data_root).resolve()) if ctx.data_root else None,
                       threads=cpus, executor="ray", progress=False), cpus   # worker bars go nowhere

    def run(self, units: Iterable, ctx, on_outcome: Callable) -> None:
        import ray

        from bench.run.work import failed, now

        self._connect(ray)
        try:
            task_ctx, cpus = self.task_context(ctx)
            gpus = self.gpu_per_task if self.gpu_per_task is not None else (1 if ctx.cuda else 0)
            remote = ray.remote(self.task).options(
                num_cpus=cpus, num_gpus=gpus, max_retries=self.max_retries, retry_exceptions=False,
                runtime_env=self.runtime_env())
            ctx_ref = ray.put(task_ctx)
            queue = list(units)
            queue.reverse()
            in_flight: dict = {}
            try:
                while queue or in_flight:
                    while queue and (self.max_parallel is None or len(in_flight) < self.max_parallel):
                        unit = queue.pop()
                        in_flight[remote.remote(unit, ctx_ref)] = (unit, now())
                    done, _ = ray.wait(list(in_flight), num_returns=1)
                    unit, started = in_flight.pop(done[0])
                    try:
                        outcomes = ray.get(done[0])
                    except (ray.exceptions.RayError, OSError) as exc:    # retries spent: worker died again
                        outcomes = [failed(cell, task_ctx, exc, "worker", started, unit.fingerprint)
                                    for cell in unit.cells]
                    for outcome in outcomes:
                        on_outcome(outcome)
            except BaseException:                         # Ctrl-C (or a failing write): stop the cluster work
                for ref in [*in_flight, *self.warming]:
                    ray.cancel(ref, force=True)
                raise
        finally:
            self.warming = []
            self.close()


def make_executor(name: str, grid=None, *, address: str | None = None, max_parallel: int | None = None):
    """The executor ``--executor NAME`` asks for, with the grid's ``[resources]`` table; the one
    place executor options are checked."""
    if name == "local":
        if address or max_parallel:
            raise ExecutorError("--ray-address and --max-parallel apply to --executor ray only")
        return LocalExecutor()
    if name == "ray":
        try:
            import ray  # noqa: F401
        except ImportError as exc:
            raise ImportError("--executor ray needs Ray: pip install -e '.[ray]' (or pip install ray)") from exc
        resources = (grid.data.get("resources", {}) if grid is not None else {})
        return RayExecutor(address, max_parallel=max_parallel, cpus_per_task=resources.get("cpus_per_task"),
                           gpu_per_task=resources.get("gpu_per_task"))
    raise ExecutorError(f"unknown executor '{name}' (choose from {', '.join(EXECUTORS)})")
