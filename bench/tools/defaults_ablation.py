"""Image AUROC of each global head with ``preprocess="none"`` (the default) vs the previous default.

Why: issue 16 made ``none`` every head's default (the representation as the encoder gives it) where
it had been ``l2`` (gaussian, gmm, knn) and ``standardize`` (flow). This measures what that costs or
gains on the shipped real sets, so the closing note reports it honestly; the default stays neutral
either way (the preprocessing is an axis of the study, not a default to tune)::

    python -m bench.tools.defaults_ablation --data-root ../shared/data        # prints a markdown table

Frozen encoders only (no training: minutes on one CPU thread); embeddings are computed once per
encoder x dataset x seed and shared by every head. The flow uses the quick grid's CPU size.
The table in methods/README.md is these defaults (it took about an hour on a loaded 2-core CPU;
``--datasets``/``--encoders`` split it into parallel runs).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections import defaultdict

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from datasets.registry import create_dataset, default_data_root
from methods.base import seed_everything
from methods.registry import create_encoder, create_head

#: The default before issue 16, per head.
OLD_DEFAULT = {"gaussian": "l2", "gmm": "l2", "knn": "l2", "flow": "standardize"}
#: The flow at the quick grid's CPU size (bench/grids/quick.toml); the other heads at their defaults.
HEAD_KWARGS = {"flow": dict(n_blocks=4, hidden_features=256, epochs=25, milestones=(15, 20))}
ENCODERS = ("imagenet/tf_efficientnet_lite0", "random/resnet18")
DATASETS = ("medmnist/pneumoniamnist", "medmnist/breastmnist", "busi")


def dataset_kwargs(name: str, image_size: int, max_train: int) -> dict:
    if name.startswith("medmnist/"):
        return dict(image_size=image_size, max_train=max_train, download=False)
    return dict(image_size=image_size)


def embeddings(encoder: str, data, seed: int) -> dict[str, tuple[torch.Tensor, np.ndarray]]:
    seed_everything(seed)
    model = create_encoder(encoder, in_chans=data.channels, image_size=data.image_size)
    return {name: (model.embed(getattr(data, name)), getattr(data, name).labels) for name in ("train", "test")}


def image_auroc(head: str, preprocess: str, feats: dict, seed: int) -> float:
    (train, _), (test, labels) = feats["train"], feats["test"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")              # GMM clamping/retry warnings
        model = create_head(head, preprocess=preprocess, **HEAD_KWARGS.get(head, {})).fit(train, seed=seed)
    return float(roc_auc_score(labels, model.score(test)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default=str(default_data_root()))
    parser.add_argument("--encoders", nargs="+", default=list(ENCODERS))
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--heads", nargs="+", default=list(OLD_DEFAULT))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--max-train", type=int, default=500, help="cap on MedMNIST training normals")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    scores: dict[tuple, list[float]] = defaultdict(list)          # (encoder, head, dataset, preprocess)
    sizes: dict[str, str] = {}
    started = time.time()
    for dataset in args.datasets:
        for seed in args.seeds:
            data = create_dataset(dataset, root=args.data_root, seed=seed,
                                  **dataset_kwargs(dataset, args.image_size, args.max_train))
            sizes[dataset] = (f"train {len(data.train)}, test {len(data.test)} "
                              f"({data.test.n_anomalous} anomalous)")
            for encoder in args.encoders:
                feats = embeddings(encoder, data, seed)
                for head in args.heads:
                    for preprocess in ("none", OLD_DEFAULT[head]):
                        auroc = image_auroc(head, preprocess, feats, seed)
                        scores[encoder, head, dataset, preprocess].append(auroc)
                        print(f"{dataset} seed {seed} {encoder} {head} {preprocess}: {auroc:.3f} "
                              f"({time.time() - started:.0f} s)", file=sys.stderr, flush=True)

    print(f"Image AUROC, mean over seeds {args.seeds}; `none` (new default) vs the previous default; "
          f"{args.image_size} px, MedMNIST training normals capped at {args.max_train}; "
          f"{time.time() - started:.0f} s on {args.threads} thread(s).\n")
    for dataset, size in sizes.items():
        print(f"* {dataset}: {size}")
    for encoder in args.encoders:
        print(f"\n**{encoder}**\n")
        print("| head | previous default | " + " | ".join(f"{d}: none / previous" for d in args.datasets)
              + " | mean: none / previous |")
        print("|---|---|" + "---|" * (len(args.datasets) + 1))
        for head in args.heads:
            old = OLD_DEFAULT[head]
            cells = [(np.mean(scores[encoder, head, d, "none"]), np.mean(scores[encoder, head, d, old]))
                     for d in args.datasets]
            means = np.mean(cells, axis=0)
            print(f"| {head} | {old} | " + " | ".join(f"{a:.3f} / {b:.3f}" for a, b in cells)
                  + f" | {means[0]:.3f} / {means[1]:.3f} |")


if __name__ == "__main__":
    main()
