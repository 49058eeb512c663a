"""``python -m bench perf``: the suite's speed and memory figures, printed (never asserted in tests).

(a) Training throughput of an encoder inside the suite (``Encoder.fit``) divided by a bare
    PyTorch loop with the same model, data, augmentation, loss and batch size. Target >= 0.9.
(b) Wall time of the quick grid restricted to E encoders x 4 heads divided by the same grid with
    1 head, each with a fresh encoder cache. Target <= 1.3: heads reuse the cached embeddings
    instead of retraining the encoder.
(c) Peak memory: process RSS (and CUDA allocations on a GPU).
(d) Pixel metrics (``bench.metrics.evaluate``) on 2M pixels, with and without a foreground:
    seconds per call (the tests check the values, never the time).
"""

from __future__ import annotations

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


def grid_ratio(n_encoders: int, out: Path, device: str, image_size: int) -> tuple[float, float]:
    """Wall time of E encoders x 4 heads and of E encoders x 1 head, fresh caches for both.

    Both runs use the ``quick`` grid's own settings (only the encoders, heads and map kinds are
    restricted), so the ratio says what reusing embeddings saves in the grid people run.
    """
    from bench.grid import load_grid
    from bench.runner import Runner

    encoders = ["simclr", "vae", "moco", "imagenet/tf_efficientnet_lite0"][:n_encoders]
    base = [f"encoders={encoders!r}".replace("'", '"'), 'localization=["gradient"]', "seeds=[0]",
            f"defaults.dataset.image_size={image_size}"]
    times = []
    for heads in (["gaussian", "gmm", "flow", "knn"], ["gaussian"]):
        run_dir, cache = out / f"grid_{len(heads)}h", out / f"cache_{len(heads)}h"
        for path in (run_dir, cache):
            shutil.rmtree(path, ignore_errors=True)
        grid = load_grid("quick", base + [f"heads={heads!r}".replace("'", '"')])
        t0 = time.perf_counter()
        summary = Runner(grid, run_dir, device=device, cache_dir=cache, progress=False).run()
        times.append(time.perf_counter() - t0)
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


def main(args) -> int:
    import torch

    from bench.runner import resolve_device
    from methods.registry import create_encoder

    device = resolve_device(args.device)
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
          f"bare PyTorch loop {bare:.1f} img/s -> ratio {suite / bare:.3f} (target >= 0.9)")

    if args.skip_grid:
        t4 = t1 = float("nan")
    else:
        t4, t1 = grid_ratio(args.encoders, out, device, args.image_size)
    print(f"(b) quick grid, {args.encoders} encoders x 4 heads: {t4:.1f} s; x 1 head: {t1:.1f} s "
          f"-> ratio {t4 / t1:.3f} (target <= 1.3)")

    plain, with_fg = metrics_seconds()
    print(f"(d) evaluate on 2M pixels: {plain:.2f} s; with foreground variants: {with_fg:.2f} s")

    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    line = f"(c) peak memory: process RSS {peak_kib / 1024:.0f} MiB"
    if device.startswith("cuda"):
        line += f", CUDA allocated {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB"
    print(line)
    return 0
