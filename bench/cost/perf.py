"""``python -m bench perf``: the suite's speed and memory figures, printed (never asserted in tests).

(a) Training throughput of an encoder inside the suite (``Encoder.fit``) divided by a bare
    PyTorch loop with the same model, data, augmentation, loss and batch size. Target >= 0.97.
(b) Wall time of the quick grid restricted to E encoders x 4 heads divided by the same grid with
    1 head, each with a fresh encoder cache. Target <= 1.10 (issue 27): heads reuse the cached
    embeddings instead of retraining the encoder, and their gradient maps share the encoder's
    forward pass (one backward pass per head). Printed with the CPU-time ratio beside it.
(c) Peak memory: process RSS (and CUDA allocations on a GPU).
(d) Pixel metrics (``bench.metrics.evaluate``) on 2M pixels, with and without a foreground:
    seconds per call (the tests check the values, never the time).
(e) ``--device cuda`` (or ``--per-encoder`` on any device): for each trainable encoder, training
    throughput inside the suite (mixed precision, channels-last) vs a bare loop over the same
    model, batch and ``training_step``; gradient-map throughput, suite vs bare; peak GPU memory.

(g) ``--families [GRID]``: training throughput (images/s inside ``Encoder.fit``) of SimCLR and every
    self-supervised family at the encoder settings of GRID (default ``families``: the same trunk and
    image size for all but MAE's ViT), each over the same number of optimiser steps.

``--profile GRID``: where GRID's wall time goes (``bench.cost.profile``).

(f) ``--executor ray``: the quick grid's wall time under Ray divided by the local executor's, each
with a fresh cache (target <= 1.15 on a 2-core machine). ``--estimate GRID --gpus N [--run DIR]``:
the estimated wall time of a grid on N GPUs from the timings of existing records
(``bench.cost.estimate``); nothing is trained.
"""

from __future__ import annotations

import os
import resource
import shutil
import sys
import time
from pathlib import Path

import numpy as np


def _synthetic(n: int, image_size: int):
    from datasets import create_dataset

    return create_dataset("synthetic", image_size=image_size, n_train=n, n_val=40, n_test=80, n_pool=0)


def bare_loop_throughput(encoder, images: np.ndarray, batch_size: int, steps: int, device: str) -> float:
    """The loop a researcher would write by hand around the same SimCLR pieces, in images/s."""
    import torch

    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    _sync(device)
    t0 = time.perf_counter()            # timed like Encoder.fit: set-up and first step included
    encoder.to(device).train()
    data = torch.from_numpy(images).to(device)
    opt = torch.optim.Adam(encoder.parameters(), lr=1e-3, weight_decay=1e-6)

    def step():
        idx = torch.randint(0, len(data), (batch_size,), generator=generator).to(device)
        x = data[idx].float() / 255
        views = torch.cat([encoder.augment(x, generator), encoder.augment(x, generator)])
        z0, z1 = encoder.projection(encoder.backbone(views)).chunk(2)
        loss = encoder.criterion(z0, z1)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(steps):
        step()
    _sync(device)
    return steps * batch_size / (time.perf_counter() - t0)


def suite_throughput(make_encoder, dataset, batch_size: int, steps: int, device: str) -> float:
    """``Encoder.fit`` over ``steps`` optimiser steps, set-up included (``fit_seconds_``)."""
    n = len(dataset.train)
    steps_per_epoch = n // batch_size
    encoder = make_encoder(epochs=max(1, steps // steps_per_epoch))
    encoder.fit(dataset.train, seed=0, device=device)
    return encoder.images_seen_ / encoder.fit_seconds_


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def grid_ratio(n_encoders: int, out: Path, device: str, image_size: int,
               cpu: list | None = None) -> tuple[float, float]:
    """Wall time of E encoders x 4 heads and of E encoders x 1 head, fresh caches for both.

    Both runs use the ``quick`` grid's own settings (only the encoders, heads and map kinds are
    restricted), so the ratio says what reusing embeddings saves in the grid people run. ``cpu``, when
    given, receives the CPU seconds of this process for each run (less stretched than wall time when
    other work shares the machine).
    """
    from bench.run.grid import load_grid
    from bench.run.plan import Plan
    from bench.run.runner import Runner

    encoders = ["simclr", "vae", "moco", "imagenet/tf_efficientnet_lite0"][:n_encoders]
    base = [f"encoders={encoders!r}".replace("'", '"'), 'localization=["gradient"]', "seeds=[0]",
            f"defaults.dataset.image_size={image_size}"]
    all_heads = ["gaussian", "gmm", "flow", "knn"]

    def with_heads(heads: list[str]) -> list[str]:
        return base + [f"heads={heads!r}".replace("'", '"')]

    # Warm-up, untimed: one epoch of everything, so the process's one-time costs (imports, thread
    # pools, the decoded dataset) fall on neither timed run; the first timed run used to pay them
    # (about 5 s here: 1.22 with the 4-head run first, 1.17 with it second).
    tiny = [f"encoder.{name}.epochs=1" for name in encoders if "/" not in name] + ["head.flow.epochs=1"]
    warm_dir = out / "warm_up"
    shutil.rmtree(warm_dir, ignore_errors=True)
    Runner(Plan.of(load_grid("quick", with_heads(all_heads) + tiny)), warm_dir / "run", device=device,
           cache_dir=warm_dir / "cache", progress=False).run()
    times = []
    for heads in (all_heads, ["gaussian"]):
        run_dir, cache = out / f"grid_{len(heads)}h", out / f"cache_{len(heads)}h"
        for path in (run_dir, cache):
            shutil.rmtree(path, ignore_errors=True)
        grid = load_grid("quick", with_heads(heads))
        t0, c0 = time.perf_counter(), time.process_time()
        summary = Runner(Plan.of(grid), run_dir, device=device, cache_dir=cache, progress=False).run()
        times.append(time.perf_counter() - t0)
        if cpu is not None:
            cpu.append(time.process_time() - c0)
        if summary.failed:
            print(f"  warning: {summary.failed} failed cells: {summary.failures}", file=sys.stderr)
    return times[0], times[1]


def metrics_seconds(n_images: int = 500, side: int = 64, repeats: int = 3) -> tuple[float, float]:
    """Best-of-``repeats`` wall time of ``evaluate`` on ``n_images x side x side`` maps (all pixels, foreground)."""
    from scipy import ndimage

    from bench.metrics import evaluate

    rng = np.random.default_rng(0)
    masks = ndimage.binary_dilation(rng.random((n_images, side, side)) < 0.002, structure=np.ones((1, 5, 5)))
    maps = (rng.random(masks.shape) + masks).astype(np.float32)
    scores = maps.reshape(n_images, -1).max(axis=1)
    labels = masks.reshape(n_images, -1).any(axis=1).astype(int)
    foreground = np.zeros((n_images, 1, side, side), np.uint8)
    foreground[:, :, side // 8:-side // 8, side // 8:-side // 8] = 1
    times = []
    for fg in (None, foreground):
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            evaluate(scores, labels, maps, masks, val_maps=maps[:50], val_masks=masks[:50], test_foreground=fg)
            best = min(best, time.perf_counter() - t0)
        times.append(best)
    return times[0], times[1]


def executor_ratio(out: Path, device: str, overrides: list[str]) -> tuple[float, float, str]:
    """Wall time of the quick grid under Ray and under the local executor, each with a fresh cache."""
    from bench.run.executors import RayExecutor
    from bench.run.grid import load_grid

    grid = load_grid("quick", overrides)
    times = {}
    for name in ("local", "ray"):
        run_dir, cache = out / f"exec_{name}", out / f"exec_{name}_cache"
        for path in (run_dir, cache):
            shutil.rmtree(path, ignore_errors=True)
        executor = RayExecutor() if name == "ray" else None
        t0 = time.perf_counter()               # Ray: start-up of the runtime and its workers included
        summary = Runner_(grid, run_dir, device, cache, executor)
        times[name] = time.perf_counter() - t0
        print(f"  {name}: {summary.line()}")
    return times["ray"], times["local"], grid.name


def Runner_(grid, run_dir, device, cache, executor):  # noqa: N802 - tiny helper
    """As ``bench run`` does it: Ray starts (and warms its workers) before the preflight."""
    from bench.run.plan import Plan
    from bench.run.runner import Runner

    runner = Runner(Plan.of(grid), run_dir, device=device, cache_dir=cache, progress=False, executor=executor)
    if executor is not None:
        executor.start(runner.plan, runner.context)
    return runner.run()


def bare_training_throughput(encoder, images: np.ndarray, batch_size: int, steps: int, device: str) -> float:
    """A hand-written loop around ``encoder.training_step`` (same precision as the suite), in img/s."""
    import torch

    from methods.precision import autocast, backward_step, grad_scaler

    generator = torch.Generator().manual_seed(0)
    _sync(device)
    t0 = time.perf_counter()
    encoder.to(device).train()
    data = torch.from_numpy(images).to(device)
    opt = torch.optim.Adam(encoder.parameters(), lr=1e-4)
    scaler = grad_scaler(device)
    for _ in range(steps):
        idx = torch.randint(0, len(data), (batch_size,), generator=generator).to(device)
        with autocast(device):
            loss = encoder.training_step(data[idx].float() / 255, generator)
        opt.zero_grad()
        backward_step(loss.float(), opt, scaler)
    _sync(device)
    return steps * batch_size / (time.perf_counter() - t0)


def map_throughput(encoder, head, images: np.ndarray, device: str, batch_size: int) -> tuple[float, float]:
    """Gradient maps in img/s: the suite's ``gradient_maps`` and a bare loop doing the same work."""
    import torch

    from datasets.base import to_float
    from methods.localization import gradient_maps, postprocess

    gradient_maps(encoder, head, images[:batch_size], batch_size=batch_size, device=device)   # warm-up
    _sync(device)
    t0 = time.perf_counter()
    gradient_maps(encoder, head, images, batch_size=batch_size, device=device)
    _sync(device)
    suite = len(images) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for start in range(0, len(images), batch_size):
        x = to_float(images[start:start + batch_size], device).requires_grad_(True)
        (grad,) = torch.autograd.grad(head(encoder(x)).sum(), x)
        postprocess(grad.abs().mean(1, keepdim=True), x.detach()).cpu()
    _sync(device)
    return suite, len(images) / (time.perf_counter() - t0)


def per_encoder(device: str, image_size: int, batch_size: int, steps: int) -> None:
    """(e): each trainable encoder's training and its gradient maps, suite vs bare, with peak memory."""
    import torch

    from methods.precision import amp_dtype
    from methods.registry import create_encoder, create_head

    dataset = _synthetic(max(2 * batch_size, 128), image_size)
    cuda = device.startswith("cuda")
    print(f"(e) per encoder, {image_size}px, batch {batch_size}, {steps} steps, autocast {amp_dtype(device)}:")
    for name in ("simclr", "moco", "vae"):
        steps_per_epoch = len(dataset.train) // batch_size
        kwargs = dict(in_chans=1, image_size=image_size, batch_size=batch_size, warmup_epochs=0)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        enc = create_encoder(name, epochs=max(1, steps // steps_per_epoch), **kwargs)
        enc.fit(dataset.train, seed=0, device=device)
        suite = enc.images_seen_ / enc.fit_seconds_
        bare = bare_training_throughput(create_encoder(name, epochs=1, **kwargs), dataset.train.images,
                                        batch_size, steps, device)
        head = create_head("gaussian").fit(enc.embed(dataset.train, device=device), device=device)
        maps_suite, maps_bare = map_throughput(enc, head, dataset.test.images, device, batch_size // 2)
        mem = f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB" if cuda else ""
        print(f"  {name:7s} training: suite {suite:.1f} img/s, bare {bare:.1f} img/s -> {suite / bare:.3f}; "
              f"gradient maps: suite {maps_suite:.1f} img/s, bare {maps_bare:.1f} img/s -> "
              f"{maps_suite / maps_bare:.3f}{mem}")


def family_throughput(grid_name: str, device: str, steps: int, image_size: int | None = None) -> list[tuple]:
    """(g): ``(name, images/s, batch, seconds)`` of SimCLR and every family's ``fit`` at ``grid_name``'s
    encoder settings, ``steps`` optimiser steps each (epochs sized so, no warm-up) on synthetic images."""
    from bench.run.grid import load_grid
    from methods.encoders._ssl import SSLEncoder
    from methods.registry import ENCODERS, create_encoder

    grid = load_grid(grid_name, [])
    size = image_size or int(grid.data.get("defaults", {}).get("dataset", {}).get("image_size", 64))
    settings = grid.data.get("encoder", {})
    names = ["simclr"] + [e.name for e in ENCODERS.entries() if not e.family and isinstance(e.factory, type)
                          and issubclass(e.factory, SSLEncoder)]
    rows = []
    for name in names:
        kwargs = {k: v for k, v in settings.get(name, {}).items() if k not in ("epochs", "warmup_epochs")}
        batch = int(kwargs.pop("batch_size", 64))
        dataset = _synthetic(4 * batch, size)
        steps_per_epoch = len(dataset.train) // batch
        encoder = create_encoder(name, in_chans=1, image_size=size, batch_size=batch, warmup_epochs=0,
                                 epochs=max(1, steps // steps_per_epoch), **kwargs)
        encoder.fit(dataset.train, seed=0, device=device)
        rows.append((name, encoder.images_seen_ / encoder.fit_seconds_, batch, encoder.fit_seconds_))
    return rows


def measure_unrecorded(plan, run_dir: Path, args) -> None:
    """Units no record times: measured on this device as ``run --check`` does (stand-ins of the declared
    sizes where the data is absent), then scheduled on ``--gpus`` (LPT)."""
    from bench.cost.estimate import _fmt, lpt
    from bench.cost.measure import estimate_grid
    from bench.run.preflight import preflight
    from bench.run.runner import resolve_device
    from bench.run.store import ResultStore
    from bench.run.work import RunContext

    device = resolve_device(args.device)
    ctx = RunContext.for_grid(plan.grid, data_root=getattr(args, "data_root", None),
                              cache_dir=str(Path(args.out) / "cache"), device=device)
    print(f"measuring the units no record times on {device} (as `bench run --check` does; nothing is trained):")
    checked = preflight(plan, ctx, plan_only=True)
    for problem in checked.problems:
        print(f"  problem: {problem}")
    records = ResultStore(run_dir).records(skip_bad=True) if (run_dir / "records").is_dir() else []
    units = plan.units(plan.cells, lambda ds: "")
    estimate = estimate_grid(plan, ctx, records, units=[u for u in units if u.dataset in checked.datasets],
                             datasets=checked.datasets)
    print("\n".join(f"  {line}" for line in estimate.lines(top=10)))
    gpu_per_task = float(plan.grid.data.get("resources", {}).get("gpu_per_task", 1) or 1)
    times = [u.seconds for u in estimate.units]
    for n in args.gpus:
        slots = max(1, int(n / gpu_per_task))
        print(f"  {n} GPU(s), {slots} task(s) at once: LPT schedule {_fmt(lpt(times, slots))} at the speed of {device}")


def main(args) -> int:
    import torch

    from bench.run.runner import resolve_device
    from methods.registry import create_encoder

    if getattr(args, "estimate", None):
        from bench.cost.estimate import estimate_report
        from bench.run.grid import load_grid
        from bench.run.plan import Plan

        grid = load_grid(args.estimate, [])
        run_dir = Path(args.run) if args.run else Path("runs") / grid.name
        plan = Plan.of(grid)
        lines = estimate_report(plan, run_dir, args.gpus)
        print("\n".join(lines))
        if not lines[1].rstrip().endswith("unestimated (no record of that encoder/detector): 0"):
            measure_unrecorded(plan, run_dir, args)
        return 0
    device = resolve_device(args.device)
    if getattr(args, "families", None):
        print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
              f"(g) training throughput at grid '{args.families}' settings, {args.steps} steps each:")
        rows = family_throughput(args.families, device, args.steps)
        base = rows[0][1]
        for name, rate, batch, seconds in rows:
            print(f"  {name:13s} {rate:7.1f} img/s  (batch {batch}, {seconds:.1f} s)  x{rate / base:.2f} of simclr")
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if getattr(args, "executor", "local") == "ray":
        print(f"device {device}, {os.cpu_count()} CPUs; quick grid, fresh cache for each executor")
        t_ray, t_local, name = executor_ratio(out, device, args.grid_set)
        print(f"(f) grid '{name}': Ray {t_ray:.1f} s, local {t_local:.1f} s -> ratio {t_ray / t_local:.3f} "
              f"(target <= 1.15)")
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads")

    dataset = _synthetic(max(4 * args.batch_size, args.batch_size * 4), args.image_size)

    def make(epochs: int):
        return create_encoder("simclr", in_chans=1, image_size=args.image_size, epochs=epochs,
                              batch_size=args.batch_size, warmup_epochs=0)

    make(1).fit(dataset.train, seed=0, device=device)    # process warm-up (kernels, allocator) for both loops
    suite = suite_throughput(make, dataset, args.batch_size, args.steps, device)
    bare = bare_loop_throughput(make(1), dataset.train.images, args.batch_size, args.steps, device)
    print(f"(a) SimCLR (small ResNet-10) training, batch {args.batch_size}, {args.image_size}px: "
          f"suite {suite:.1f} img/s, "
          f"bare PyTorch loop {bare:.1f} img/s -> ratio {suite / bare:.3f} (target >= 0.97)")

    cpu: list = []
    if args.skip_grid:
        t4 = t1 = float("nan")
        cpu = [float("nan")] * 2
    else:
        t4, t1 = grid_ratio(args.encoders, out, device, args.image_size, cpu)
    print(f"(b) quick grid, {args.encoders} encoders x 4 heads: {t4:.1f} s; x 1 head: {t1:.1f} s "
          f"-> ratio {t4 / t1:.3f} (target <= 1.10); CPU time {cpu[0]:.1f} s vs {cpu[1]:.1f} s -> {cpu[0] / cpu[1]:.3f}")

    plain, with_fg = metrics_seconds()
    print(f"(d) evaluate on 2M pixels: {plain:.2f} s; with foreground variants: {with_fg:.2f} s")

    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    line = f"(c) peak memory: process RSS {peak_kib / 1024:.0f} MiB"
    if device.startswith("cuda"):
        line += f", CUDA allocated {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB"
    print(line)
    if device.startswith("cuda") or getattr(args, "per_encoder", False):
        per_encoder(device, args.image_size, args.batch_size, args.steps)
    return 0
