"""The unlabeled pool of one-class semi-supervised detectors (DDAD-ASR's UDM training data).

DDAD-ASR (Cai et al., MedIA 2023) trains its "unknown distribution module" on the normal
training images plus ``extra_data`` unlabeled images of which a fraction ``ar`` (0.6 by default)
is anomalous; the official loader takes the first N normal and M abnormal entries of the labelled
candidate list (``data.json["train"]["unlabeled"]``). Here the candidates are ``dataset.pool``
(never drawn from test, group-disjoint from every split) and the draw is seeded.

Labels stay in the returned split only so the realised anomaly rate can be reported; a detector
must never read them. ``anomaly_rate=0`` gives the pure-UAD ablation (a pool of normals only).
"""

from __future__ import annotations

import warnings

import numpy as np

from datasets.base import AnomalyDataset, Split
from methods.base import MethodError


def unlabeled_pool(dataset: AnomalyDataset, anomaly_rate: float = 0.6, size: int | None = None,
                   seed: int = 0) -> Split:
    """Draw ``size`` unlabeled images, ``round(size * anomaly_rate)`` of them anomalous.

    ``size=None`` uses as many images as the training split holds (the official configs use
    roughly that: RSNA 4,000 for 3,851 training normals, Brain Tumor 1,000 for 1,000, LAG 1,500
    for 1,500), reduced if ``dataset.pool`` has too few anomalies for the requested rate.

    Deviation, stated in the split's name and a warning: where the pool has too few normals (or
    no pool exists and the rate is 0), the missing normals are drawn from the training split, so
    those images appear in both the NDM and the UDM training data.

    Raises:
        MethodError: the rate is outside [0, 1], the pool has too few anomalies for an explicit
            ``size``, or nothing can be drawn at all.
    """
    name = getattr(dataset, "name", "dataset")
    if not 0.0 <= anomaly_rate <= 1.0:
        raise MethodError(f"unlabeled_pool({name}): anomaly_rate must be in [0, 1], got {anomaly_rate}")
    if size is not None and size < 1:
        raise MethodError(f"unlabeled_pool({name}): size must be >= 1, got {size}")
    pool, train = dataset.pool, dataset.train
    if pool is None and anomaly_rate > 0:
        raise MethodError(f"unlabeled_pool({name}): the dataset has no unlabeled pool (dataset.pool is None), "
                          f"so anomaly_rate={anomaly_rate} cannot be met; use anomaly_rate=0 or a loader with a pool")
    pool_normal = np.flatnonzero(pool.labels == 0) if pool is not None else np.empty(0, dtype=int)
    pool_anomalous = np.flatnonzero(pool.labels == 1) if pool is not None else np.empty(0, dtype=int)

    if size is None:
        size = len(train)
        if anomaly_rate > 0:
            size = min(size, int(np.floor(len(pool_anomalous) / anomaly_rate + 1e-9)))
    n_anomalous = int(round(size * anomaly_rate))
    if n_anomalous > len(pool_anomalous):
        raise MethodError(f"unlabeled_pool({name}): size={size} at anomaly_rate={anomaly_rate} needs "
                          f"{n_anomalous} anomalous images, the pool has {len(pool_anomalous)}")
    n_normal = size - n_anomalous
    if size < 1 or (anomaly_rate > 0 and n_anomalous == 0):
        raise MethodError(f"unlabeled_pool({name}): the pool has {len(pool_anomalous)} anomalous images, too few "
                          f"for anomaly_rate={anomaly_rate}")

    rng = np.random.default_rng(seed)
    take_anomalous = np.sort(rng.permutation(pool_anomalous)[:n_anomalous])
    take_normal = np.sort(rng.permutation(pool_normal)[:n_normal])
    borrowed = n_normal - len(take_normal)
    if borrowed > len(train):
        raise MethodError(f"unlabeled_pool({name}): needs {n_normal} normal images, the pool has "
                          f"{len(pool_normal)} and the training split {len(train)}")

    parts = []
    if pool is not None:
        parts.append(pool.subset(np.concatenate([take_normal, take_anomalous]).astype(int)))
    split_name = f"unlabeled(rate={anomaly_rate:g}, n={size})"
    if borrowed:
        take_train = np.sort(rng.permutation(len(train))[:borrowed])
        parts.append(train.subset(take_train))
        split_name = f"unlabeled(rate={anomaly_rate:g}, n={size}, {borrowed} normals borrowed from train)"
        warnings.warn(f"unlabeled_pool({name}): the pool has only {len(pool_normal)} normal images; "
                      f"{borrowed} normals were drawn from the training split (documented deviation)",
                      stacklevel=2)
    images = np.concatenate([p.images for p in parts])
    labels = np.concatenate([p.labels for p in parts])
    groups = np.concatenate([p.groups for p in parts])
    ids = np.concatenate([p.case_ids() for p in parts])
    order = rng.permutation(len(images))       # no label-sorted order for a method to exploit
    return Split(images[order], labels[order], None, groups[order], name=split_name, ids=ids[order])
