"""Fidelity of the dense heads (issue 16.3): image AUROC and pixel AP of named variants.

Each variant is a registered detector (``padim``, ``patchcore``) or ``imagenet/tf_efficientnet_lite0``
x a registered patch head, with keyword options; the script fits each on the normal training
images of a dataset and scores the test split with the suite's own metrics (``bench.metrics``:
image AUROC, pixel AP over all test pixels). The built-in variants isolate, on the current code,
each change that keeps its old behaviour behind an option:

* the map blur: ``sigma=None`` (default, 4 px at 224 px scaled to the image side) vs ``sigma=4``
  (4 px at every size, as before; both with scipy's reflect border);
* PatchCore's official per-stage pooling (``pool_layers=True``, default) vs 3x3 mean + concatenation;
* ``patch_flow`` (CFlow-AD, one FrEIA flow per stage) vs ``patch_flow_simple`` (one nflows flow
  on the concatenated stages, the previous ``patch_flow``), each at the dense grid's budget, and
  CFlow-AD with all patches and more passes (how much of the gap is the budget);
* PaDiM's channel fraction: 100 of EfficientNet-Lite0's 176 channels (57 %) vs 39 (22 %, the
  paper's 100 of 448 on ResNet-18).

Only the registry, the dataset factory and ``bench.metrics`` are used, so ``--variants`` given as
JSON also runs on an older checkout (run it from there with ``PYTHONPATH`` set to the checkout).

    OMP_NUM_THREADS=1 python -m bench.tools.dense_fidelity --dataset synthetic --sizes 32 64 128 \
        --n-train 200 --n-test 100 --seeds 0
    OMP_NUM_THREADS=1 python -m bench.tools.dense_fidelity --dataset busi --data-root DIR --sizes 64
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch

ENCODER = "imagenet/tf_efficientnet_lite0"

#: The dense grid's CPU budget for the CFlow-AD head (bench/grids/dense.toml).
FLOW = dict(meta_epochs=4, sub_epochs=4, lr=1e-3, patches_per_image=16)
#: The budget the dense grid gave the previous one-flow head (the same options as patch_flow_simple).
FLOW_SIMPLE = dict(n_blocks=4, hidden_features=128, epochs=8, patches_per_image=64)

VARIANTS: dict[str, dict] = {
    "padim": dict(detector="padim"),
    "padim sigma=4": dict(detector="padim", sigma=4.0),
    "padim d_reduced=39": dict(detector="padim", d_reduced=39),     # 22 % of 176, the paper's 100 of 448
    "patchcore": dict(detector="patchcore"),
    "patchcore sigma=4": dict(detector="patchcore", sigma=4.0),
    "patchcore pool_layers=false": dict(detector="patchcore", pool_layers=False),
    "patchcore pool_layers=false sigma=4": dict(detector="patchcore", pool_layers=False, sigma=4.0),
    "patch_flow": dict(head="patch_flow", **FLOW),
    "patch_flow all patches": dict(head="patch_flow", **{**FLOW, "patches_per_image": None}),
    "patch_flow 64 passes all patches": dict(head="patch_flow", **{**FLOW, "meta_epochs": 8, "sub_epochs": 8,
                                                                    "patches_per_image": None}),
    "patch_flow_simple": dict(head="patch_flow_simple", **FLOW_SIMPLE),
    "patch_flow_simple sigma=4": dict(head="patch_flow_simple", sigma=4.0, **FLOW_SIMPLE),
}


def build(spec: dict, image_size: int, in_chans: int):
    """The detector of one variant spec (``detector=`` or ``head=`` plus keyword options)."""
    from methods.detectors.patch import PatchDetector
    from methods.registry import create_detector, create_encoder, create_head

    options = dict(spec)
    if "detector" in options:
        return create_detector(options.pop("detector"), in_chans=in_chans, image_size=image_size, **options)
    encoder = create_encoder(options.pop("encoder", ENCODER), in_chans=in_chans, image_size=image_size)
    return PatchDetector(encoder, create_head(options.pop("head"), **options), fit_encoder=False)


def load(name: str, image_size: int, data_root: str | None, n_train: int, n_test: int, split_seed: int):
    from datasets.registry import create_dataset

    if name == "synthetic":     # the dense grid's conspicuous phantoms
        return create_dataset("synthetic", image_size=image_size, n_train=n_train, n_val=2, n_test=n_test,
                              n_pool=0, seed=split_seed, lesion_contrast=[0.2, 0.5], lesion_radius=[0.1, 0.25])
    if name == "busi":          # the dense grid's splits (80 training normals, 489 test images)
        return create_dataset("busi", root=data_root, image_size=image_size, train_fraction=0.6,
                              val_fraction=0.3, seed=split_seed)
    return create_dataset(name, root=data_root, image_size=image_size)


def measure(spec: dict, dataset, seed: int) -> dict:
    """Fit on the training split, score the test split: image AUROC, pixel AP, seconds."""
    from bench.metrics.evaluate import evaluate

    train, test = dataset.train, dataset.test
    detector = build(spec, int(test.images.shape[-1]), int(test.images.shape[1]))
    start = time.perf_counter()
    detector.fit(train, seed=seed, device="cpu")
    prediction = detector.predict(test.images, device="cpu")
    seconds = time.perf_counter() - start
    result = evaluate(np.asarray(prediction.scores), test.labels, prediction.maps, test.masks)
    return {"image_auroc": float(result["image_auroc"]), "pixel_ap": float(result["pixel_ap"]),
            "seconds": round(seconds, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tools.dense_fidelity", description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="synthetic")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--n-train", type=int, default=200)
    parser.add_argument("--n-test", type=int, default=100)
    parser.add_argument("--split-seed", type=int, default=0, help="dataset seed (phantoms / BUSI split)")
    parser.add_argument("--only", nargs="+", default=None, help="built-in variant names to run (default: all)")
    parser.add_argument("--variants", default=None,
                        help='JSON {"name": {"detector"|"head": ..., options}} instead of the built-in ones')
    parser.add_argument("--label", default="", help="a tag written in every output row (e.g. before/after)")
    parser.add_argument("--out", default=None, help="append one JSON line per result to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    variants = json.loads(args.variants) if args.variants else VARIANTS
    if args.only:
        unknown = sorted(set(args.only) - set(variants))
        if unknown:
            parser.error(f"unknown variants {unknown}; known: {sorted(variants)}")
        variants = {name: variants[name] for name in args.only}
    print("| label | variant | dataset | size | seed | image AUROC | pixel AP | s |")
    print("|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        dataset = load(args.dataset, size, args.data_root, args.n_train, args.n_test, args.split_seed)
        for seed in args.seeds:
            for name, spec in variants.items():
                row = measure(spec, dataset, seed)
                print(f"| {args.label} | {name} | {args.dataset} | {size} | {seed} | {row['image_auroc']:.3f} | "
                      f"{row['pixel_ap']:.3f} | {row['seconds']} |", flush=True)
                if args.out:
                    with open(args.out, "a") as handle:
                        handle.write(json.dumps({"label": args.label, "variant": name, "dataset": args.dataset,
                                                 "size": size, "seed": seed, **row}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
