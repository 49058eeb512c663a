"""Cross-check: the suite's PaDiM and PatchCore against anomalib's, same weights, same data.

Why: a peer in the grid is only a reference if, configured alike, it gives the suite's numbers.
Both sides use EfficientNet-Lite0 with the offline ImageNet weights, the same stages, input side,
resize and seed, on the suite's synthetic phantoms and BUSI (read by the suite's ``busi`` dataset);
the suite's metrics score both. Each (dataset, method) runs in a fresh process (one torch thread),
so its wall time and peak RSS are its own. Prints a markdown table::

    python -m bench.tools.peers_check --data-root /path/to/data        # busi.npz in there
    python -m bench.tools.peers_check --datasets synthetic --input-size 224 --seed 0

Blur: anomalib smooths maps by sigma 4 px at its input side, the suite by 4 px per 224 px of the
image side; the suite side gets ``sigma = 4 * image / input`` here, so both blur alike at any input.

"patchcore (as anomalib)" is the suite's PatchCore switched to anomalib's choices (no per-stage
pooling to 1024, Euclidean distances, re-weighted image score with 9 neighbours): the rows show
which of the named design differences (methods/README.md) moves the numbers. Needs the [peers] extra.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

#: (label, registry name, extra constructor arguments)
METHODS = [
    ("padim", "padim", {}),
    ("anomalib/padim", "anomalib/padim", {}),
    ("patchcore", "patchcore", {}),
    ("patchcore (as anomalib)", "patchcore",
     dict(pool_layers=False, count_include_pad=True, metric="euclidean", reweight=True, reweight_neighbours=9)),
    ("anomalib/patchcore", "anomalib/patchcore", {}),
]
#: (suite label, anomalib label) pairs of the table
PAIRS = [("padim", "anomalib/padim"), ("patchcore", "anomalib/patchcore"),
         ("patchcore (as anomalib)", "anomalib/patchcore")]
DATASETS = {
    "synthetic": dict(n_train=100, n_val=10, n_test=100, n_pool=0, lesion_contrast=[0.2, 0.5],
                      lesion_radius=[0.1, 0.25]),
    "busi": dict(train_fraction=0.6, val_fraction=0.3),
}


def run_one(dataset: str, label: str, *, data_root: str | None, image_size: int, input_size: int,
            seed: int) -> dict:
    """Fit and score one method on one dataset in this process; timings and peak RSS included."""
    import resource

    import torch

    torch.set_num_threads(1)
    from bench.metrics.evaluate import evaluate
    from datasets import create_dataset
    from methods.base import seed_everything
    from methods.registry import create_detector

    name, kwargs = next((n, k) for lbl, n, k in METHODS if lbl == label)
    if not name.startswith("anomalib/"):
        # anomalib blurs by 4 px at the input side, the suite by 4 px per 224 px of the image side;
        # stated explicitly, both blur by the same amount (the suite's default where input = 224)
        kwargs = {**kwargs, "sigma": 4.0 * image_size / input_size}
    ds = create_dataset(dataset, root=data_root, image_size=image_size, seed=seed, **DATASETS[dataset])
    detector = create_detector(name, in_chans=ds.channels, image_size=ds.image_size, input_size=input_size,
                               **kwargs)
    t0 = time.perf_counter()
    seed_everything(seed)
    detector.fit(ds.train, seed=seed, device="cpu")
    t1 = time.perf_counter()
    pred = detector.predict(ds.test.images, device="cpu")
    t2 = time.perf_counter()
    metrics = evaluate(pred.scores, ds.test.labels, pred.maps, ds.test.masks)
    return {"dataset": dataset, "method": label, "image_auroc": metrics["image_auroc"],
            "pixel_ap": metrics.get("pixel_ap"), "fit_s": t1 - t0, "predict_s": t2 - t1, "wall_s": t2 - t0,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "n_train": len(ds.train), "n_test": len(ds.test)}


def _child(dataset: str, label: str, args) -> dict:
    cmd = [sys.executable, "-m", "bench.tools.peers_check", "--one", dataset, label,
           "--image-size", str(args.image_size), "--input-size", str(args.input_size), "--seed", str(args.seed)]
    if args.data_root:
        cmd += ["--data-root", args.data_root]
    # the peers fix glibc's mmap threshold (anomalib_peers._steady_malloc); the suite's side gets the
    # same allocator setting, so the peak RSS columns compare like with like
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "131072"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        return {"dataset": dataset, "method": label, "error": last}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _fmt(value, digits=3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def table(results: list[dict], args) -> str:
    by = {(r["dataset"], r["method"]): r for r in results}
    lines = [f"Cross-check at input {args.input_size} px (images {args.image_size} px), seed {args.seed}, blur sigma "
             f"{4.0 * args.image_size / args.input_size:.2f} px at the image side on both sides, "
             "EfficientNet-Lite0 (offline ImageNet weights), one CPU thread.", "",
             "| dataset | metric | suite | value | anomalib | value | difference |", "|---|---|---|---|---|---|---|"]
    for dataset in args.datasets:
        for suite, peer in PAIRS:
            a, b = by.get((dataset, suite), {}), by.get((dataset, peer), {})
            for metric in ("image_auroc", "pixel_ap"):
                va, vb = a.get(metric), b.get(metric)
                diff = None if va is None or vb is None else va - vb
                lines.append(f"| {dataset} | {metric} | {suite} | {_fmt(va)} | {peer} | {_fmt(vb)} | "
                             f"{'n/a' if diff is None else f'{diff:+.3f}'} |")
    lines += ["", "| dataset | method | fit s | predict s | wall s | peak RSS MB | train / test |",
              "|---|---|---|---|---|---|---|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['dataset']} | {r['method']} | failed: {r['error']} | | | | |")
            continue
        lines.append(f"| {r['dataset']} | {r['method']} | {r['fit_s']:.1f} | {r['predict_s']:.1f} | "
                     f"{r['wall_s']:.1f} | {r['peak_rss_mb']:.0f} | {r['n_train']} / {r['n_test']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tools.peers_check", description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=os.environ.get("UAD_BENCH_DATA"))
    parser.add_argument("--datasets", type=lambda v: v.split(","), default=["synthetic", "busi"])
    parser.add_argument("--image-size", type=int, default=128, help="dataset side (BUSI's npz holds 128 px)")
    parser.add_argument("--input-size", type=int, default=128,
                        help="side both backbones see (default 128, the images' side; 224 is the papers')")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--one", nargs=2, metavar=("DATASET", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(*args.one, data_root=args.data_root, image_size=args.image_size,
                                 input_size=args.input_size, seed=args.seed)))
        return 0
    from methods.detectors.anomalib_peers import INSTALL_HINT, available

    if not available():
        print(f"error: {INSTALL_HINT}", file=sys.stderr)
        return 2
    results = []
    for dataset in args.datasets:
        for label, _, _ in METHODS:
            results.append(_child(dataset, label, args))
            print(f"{dataset} {label}: " + (results[-1].get("error") or
                  f"image AUROC {_fmt(results[-1]['image_auroc'])}, pixel AP {_fmt(results[-1]['pixel_ap'])}, "
                  f"{results[-1]['wall_s']:.0f} s"), file=sys.stderr, flush=True)
    print(table(results, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
