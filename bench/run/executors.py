"""Executors run units of work (``bench.run.work.Unit``) and hand each cell's outcome to the driver.

``LocalExecutor`` runs them one after another in this process (no extra dependency; the default), or
several at once in spawned processes (``--workers N|auto`` or ``[resources] workers``).
``RayExecutor`` (``python -m bench run --executor ray``) ships the same units to Ray tasks on this
machine or on a cluster. Both call :func:`bench.run.units.execute_unit`, which applies the unit's
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

import math
import os
import socket
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterable

#: The project root (the folder holding ``bench/``), put on Ray workers' ``PYTHONPATH``.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
EXECUTORS = ("local", "ray")
#: Seconds a TCP connect to a Ray cluster's address may take before it counts as unreachable.
PROBE_TIMEOUT_S = 3.0
START_HINT = "start one with `ray start --head` (or leave out --ray-address to start a local Ray runtime)"


class ExecutorError(RuntimeError):
    """Executor options that cannot be used, or an executor that cannot run this grid here (no cluster
    at the address, too few CPUs or GPUs per node): one line for the CLI, raised before any unit is
    submitted."""


# ---------------------------------------------------------------------------------------------
# Before anything is submitted: is there a cluster, and can it run one task?
# ---------------------------------------------------------------------------------------------


def parse_ray_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (also ``ray://HOST:PORT``, ``[IPv6]:PORT``) as ``(host, port)``; ExecutorError otherwise."""
    text = address.strip()
    rest = text.split("://", 1)[1] if "://" in text else text
    host, sep, port = rest.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536 or any(c in host for c in "/ "):
        raise ExecutorError(f"--ray-address {address}: expected auto or HOST:PORT (the address `ray start --head` "
                            "prints, e.g. 10.0.0.5:6379)")
    return host, int(port)


def ray_current_cluster_file() -> Path:
    """Where ``ray start`` records the address of this machine's cluster (Ray's temp folder)."""
    return Path(os.environ.get("RAY_TMPDIR") or tempfile.gettempdir()) / "ray" / "ray_current_cluster"


def find_running_cluster() -> tuple[str, str] | None:
    """``(address, where it came from)`` of the cluster ``--ray-address auto`` would join, or None."""
    if os.environ.get("RAY_ADDRESS", "").strip() not in ("", "auto"):
        return os.environ["RAY_ADDRESS"].strip(), "RAY_ADDRESS"
    marker = ray_current_cluster_file()
    try:
        text = marker.read_text().strip()
    except OSError:
        return None
    return (text, str(marker)) if text else None


def check_ray_address(address: str, timeout: float = PROBE_TIMEOUT_S) -> str:
    """The cluster address to pass to ``ray.init``, checked within seconds: ``auto`` must find a running
    cluster (``RAY_ADDRESS`` or Ray's ``ray_current_cluster`` file), and ``HOST:PORT`` must parse and
    answer as a gRPC server does (:func:`answers_grpc`). Ray itself would wait minutes ("Failed to
    connect to GCS") or raise a traceback; here each case is one :class:`ExecutorError` naming the
    address and what to run. (A network that intercepts every connection answers for any address.)"""
    source = None
    if address.strip() == "auto":
        found = find_running_cluster()
        if found is None:
            raise ExecutorError(f"--ray-address auto: no running Ray cluster found on this machine (RAY_ADDRESS is "
                                f"unset and {ray_current_cluster_file()} does not exist); {START_HINT}")
        address, source = found
    host, port = parse_ray_address(address)
    try:
        speaks_grpc = answers_grpc(host, port, timeout)
    except OSError as exc:
        speaks_grpc = False
        why = f"no answer in {timeout:g} s" if isinstance(exc, TimeoutError) else exc.strerror or type(exc).__name__
    else:
        why = "something listens there, but it is not a Ray cluster (no gRPC reply)"
    if not speaks_grpc:
        found = f" (from {source})" if source else ""
        raise ExecutorError(f"--ray-address {address}{found}: no Ray cluster answers at {host}:{port} ({why}); "
                            f"start one there with `ray start --head --port {port}`, or fix the address")
    return address


def answers_grpc(host: str, port: int, timeout: float) -> bool:
    """Whether an HTTP/2 (gRPC) server listens at ``host:port``, as a Ray cluster's GCS (or client
    server) does: it answers a client connection preface with a SETTINGS frame at once. ``ray.init``
    against a port that accepts TCP but speaks something else waits for minutes instead."""
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # + empty SETTINGS
    with socket.create_connection((host, port), timeout=timeout) as conn:
        conn.settimeout(timeout)
        conn.sendall(preface)
        header = b""
        try:
            while len(header) < 9:                  # a frame header: length (3), type (1), flags, stream id
                chunk = conn.recv(9 - len(header))
                if not chunk:
                    return False
                header += chunk
        except TimeoutError:
            return False
    return header[3] == 0x4                         # SETTINGS


def machine_resources() -> dict[str, float]:
    """CPUs and GPUs of this machine, as the local executor (and a local Ray runtime) can use them."""
    import torch

    return {"CPU": float(os.cpu_count() or 1), "GPU": float(torch.cuda.device_count())}


def check_task_resources(cpus: float, gpus: float, available: dict[str, float], where: str) -> None:
    """Refuse a task that no node can run (Ray would wait for it forever; the local executor would
    oversubscribe the machine). ``available``: the largest node's ``{"CPU": n, "GPU": m}``."""
    have_cpus, have_gpus = available.get("CPU", 0.0), available.get("GPU", 0.0)
    if cpus > have_cpus:
        raise ExecutorError(f"resources.cpus_per_task = {cpus:g}: {where} has at most {have_cpus:g} CPUs per "
                            f"machine; set it to {max(int(have_cpus), 1)} or less")
    if gpus > 0 and math.ceil(gpus) > have_gpus:
        raise ExecutorError(f"each task asks for {gpus:g} GPU (resources.gpu_per_task, or --device cuda), but "
                            f"{where} has {'no GPU' if have_gpus == 0 else f'at most {have_gpus:g} GPUs per machine'}; "
                            "lower it (--set resources.gpu_per_task=0 runs on the CPU)")


def ray_node_resources(ray) -> dict[str, float]:
    """The largest CPU and GPU counts of any live node of the connected Ray cluster."""
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive", n.get("alive", False))]
    return {"CPU": max((r.get("CPU", 0.0) for r in nodes), default=0.0),
            "GPU": max((r.get("GPU", 0.0) for r in nodes), default=0.0)}


def local_workers(workers: int | str | None, threads: int | None) -> int:
    """Units run at once by the local executor: ``"auto"`` fills the machine's cores with units of
    ``threads`` torch threads each (at least one unit), a number is taken as it is, None is 1."""
    if workers in (None, 1):
        return 1
    if workers == "auto":
        return max(1, (os.cpu_count() or 1) // max(1, threads or 1))
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ExecutorError(f"workers = {workers!r}: expected a whole number >= 1 or \"auto\"")
    return workers


class LocalExecutor:
    """Units on this machine: one after another in this process (``workers=1``, the reference for every
    other executor), or up to ``workers`` at once in a pool of spawned processes.

    Why processes: units of different seeds (and encoders) are independent, and on a CPU a unit on
    one core is often faster per core than the same unit on two (small convolutions scale poorly
    with threads). Each unit runs with the context's pinned thread count (:func:`execute_unit`),
    so a record is bit for bit the sequential run's at the same ``threads``; the pool returns each
    unit's outcomes to this process, which alone writes records. A single pending unit runs here.
    """

    name = "local"

    def __init__(self, workers: int = 1):
        if workers < 1:
            raise ExecutorError(f"--workers {workers}: expected N >= 1")
        self.workers = workers

    @property
    def slots(self) -> int:
        return self.workers

    def context(self, ctx, cpus_per_task: int | None = None):
        """``ctx`` with torch threads per unit so that ``workers`` units do not oversubscribe the cores
        (unless the grid pins ``[resources] cpus_per_task``)."""
        if self.workers <= 1 or cpus_per_task:
            return ctx
        return replace(ctx, threads=max(1, (os.cpu_count() or 1) // self.workers))

    def start(self, plan, ctx) -> None:
        """Nothing to warm: units run after the preflight."""

    def close(self) -> None:
        """Nothing to shut down (the pool lives only inside ``run``)."""

    def run(self, units: Iterable, ctx, on_outcome: Callable) -> None:
        from bench.run.units import execute_unit

        units = list(units)
        if self.workers <= 1 or len(units) <= 1:
            for unit in units:
                for outcome in execute_unit(unit, ctx):
                    on_outcome(outcome)
            return
        self._run_pool(units, ctx, on_outcome)

    def _run_pool(self, units: list, ctx, on_outcome: Callable) -> None:
        import multiprocessing
        import pickle
        from concurrent.futures import ProcessPoolExecutor, as_completed
        from concurrent.futures.process import BrokenProcessPool

        from bench.run.work import failed, now

        task_ctx = replace(ctx, progress=False)             # worker bars would interleave
        spawn = multiprocessing.get_context("spawn")        # no forked torch/OpenMP state
        with ProcessPoolExecutor(max_workers=min(self.workers, len(units)), mp_context=spawn,
                                 initializer=adopt_datasets, initargs=(loaded_datasets(ctx),)) as pool:
            futures = {pool.submit(run_unit_task, unit, task_ctx): (unit, now()) for unit in units}
            try:
                for future in as_completed(futures):
                    unit, started = futures[future]
                    try:
                        outcomes = future.result()
                    except (BrokenProcessPool, OSError, EOFError, pickle.PicklingError) as exc:   # worker died, or
                        # its outcomes could not travel back: the unit is recorded as failed, the grid goes on
                        outcomes = [failed(cell, task_ctx, exc, "worker", started, unit.fingerprint)
                                    for cell in unit.cells]
                    for outcome in outcomes:
                        on_outcome(outcome)
            except BaseException:                # Ctrl-C or a failing write: drop the units not started
                for future in futures:
                    future.cancel()
                raise


def loaded_datasets(ctx) -> dict:
    """The datasets this process has loaded for ``ctx`` (the preflight's), to hand to worker processes."""
    import pickle

    from bench.run import work

    out = {}
    for key, value in work._DATASETS.items():
        if key[1:] != (ctx.data_root, ctx.cache_dir):
            continue
        try:
            pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # noqa: BLE001 - a loader holding something unpicklable: the worker loads it itself
            continue
        out[key] = value
    return out


def adopt_datasets(datasets: dict) -> None:
    """Pool initializer: a worker starts with the driver's loaded datasets (generated or decoded once per
    run, not once per process; the arrays are the same, so are the results)."""
    from bench.run import work

    work._DATASETS.update(datasets)


def run_unit_task(unit, ctx) -> list:
    """The body of a Ray task: every outcome of one unit, returned together (the driver writes them)."""
    from bench.run.units import execute_unit

    return list(execute_unit(unit, ctx))


def warm_worker(plan, ctx) -> int:
    """Import what the grid's units need and load its datasets in this worker (kept per process).

    Submitted once per task slot when the executor starts, before the driver's preflight, so that
    a fresh worker's imports and dataset loading overlap the preflight instead of delaying the
    first units. Anything that fails here fails again, and is recorded, in the unit itself.
    """
    import bench.metrics  # noqa: F401 - scipy, scikit-learn
    from bench.plugins import ensure_plugins
    from bench.run.work import load_dataset

    ensure_plugins(ctx.plugins)
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
        try:
            self.check_resources(ray, ctx)
        except ExecutorError:
            self.close()
            raise
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

    def task_resources(self, ctx) -> tuple[float, float]:
        """``(CPUs, GPUs)`` each task asks Ray for."""
        gpus = self.gpu_per_task if self.gpu_per_task is not None else (1 if ctx.cuda else 0)
        return self.task_context(ctx)[1], gpus

    def check_resources(self, ray, ctx) -> None:
        """Refuse tasks no node of the cluster can run (Ray would queue them forever, silently)."""
        cpus, gpus = self.task_resources(ctx)
        where = f"the Ray cluster at {self.address}" if self.address else "the local Ray runtime"
        check_task_resources(cpus, gpus, ray_node_resources(ray), where)

    def runtime_env(self) -> dict:
        path = os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH")) if p)
        return {"env_vars": {"PYTHONPATH": path, **self.env}}

    def _connect(self, ray) -> None:
        if ray.is_initialized():
            return
        kwargs = dict(include_dashboard=False, log_to_driver=False, runtime_env=self.runtime_env())
        if self.address:
            address = check_ray_address(self.address)
            try:
                ray.init(address=address, **kwargs)
            except (ConnectionError, ValueError, TimeoutError, RuntimeError) as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise ExecutorError(f"--ray-address {self.address}: Ray could not join the cluster ({first}); "
                                    f"{START_HINT} (if a cluster is running there, its authentication must match: "
                                    "recent Ray starts clusters with token authentication, see RAY_AUTH_MODE)") from None
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
            self.check_resources(ray, ctx)
            task_ctx, cpus = self.task_context(ctx)
            gpus = self.task_resources(ctx)[1]
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


def make_executor(name: str, grid=None, *, address: str | None = None, max_parallel: int | None = None,
                  workers: int | str | None = None):
    """The executor ``--executor NAME`` asks for, with the grid's ``[resources]`` table.

    Checked here, before the preflight: the per-task resources against this machine (local executor,
    or a local Ray runtime) and a cluster address (it must answer within seconds); a cluster's nodes
    are checked once joined (``RayExecutor.start``/``run``), still before any task is submitted.
    """
    resources = (grid.data.get("resources", {}) if grid is not None else {})
    if name == "local":
        if address or max_parallel:
            raise ExecutorError("--ray-address and --max-parallel apply to --executor ray only")
        check_task_resources(resources.get("cpus_per_task", 1), resources.get("gpu_per_task", 0),
                             machine_resources(), "this machine")
        workers = resources.get("workers") if workers is None else workers
        return LocalExecutor(local_workers(workers, resources.get("cpus_per_task", 1)))
    if name == "ray":
        try:
            import ray  # noqa: F401
        except ImportError as exc:
            raise ImportError("--executor ray needs Ray: pip install -e '.[ray]' (or pip install ray)") from exc
        if address:
            check_ray_address(address)
        else:
            check_task_resources(resources.get("cpus_per_task", 1), resources.get("gpu_per_task", 0),
                                 machine_resources(), "this machine (its local Ray runtime)")
        return RayExecutor(address, max_parallel=max_parallel, cpus_per_task=resources.get("cpus_per_task"),
                           gpu_per_task=resources.get("gpu_per_task"))
    raise ExecutorError(f"unknown executor '{name}' (choose from {', '.join(EXECUTORS)})")
