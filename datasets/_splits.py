"""Group-level, deterministic split helpers shared by the real-data readers.

Rules (the benchmark's "group-level, deterministic splits"): whole groups (patient, volume, case) go
to one split; group ids are sorted before a seeded ``numpy`` PCG64 generator permutes them, so
the split is identical on every machine and under every ``PYTHONHASHSEED`` (no ``set`` or dict
order is ever used). Where a source has no labelled validation split, one is carved from the
test pool by group and stratified by group label, so thresholds never see test labels.
"""

from __future__ import annotations

import sys
import zlib
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from datasets.base import AnomalyDataset, DatasetCard, DatasetError, Split, nonzero_foreground

SPLITS = ("train", "val", "test")


def stable_rng(seed: int, salt: str = "") -> np.random.Generator:
    """A generator that depends only on ``seed`` and ``salt`` (crc32, not Python's ``hash``)."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(salt.encode())])


def check_fraction(name: str, value: float, *, allow_zero: bool = True) -> float:
    value = float(value)
    if not (0.0 <= value < 1.0) or (not allow_zero and value == 0.0):
        low = "0 <=" if allow_zero else "0 <"
        raise DatasetError(f"{name} must satisfy {low} {name} < 1, got {value}")
    return value


def allocate(n: int, fractions: Sequence[float]) -> list[int]:
    """Split ``n`` items into parts of the given fractions (the last part takes the remainder).

    Largest-remainder rounding; a part with a positive fraction gets at least one item whenever
    there are enough items for every such part (so a tiny test set keeps a val *and* a test group).
    """
    fractions = list(fractions) + [max(0.0, 1.0 - sum(fractions))]
    exact = [round(f * n, 9) for f in fractions]     # 0.3 * 5 must not become 1.5000000000000002
    counts = [int(np.floor(e)) for e in exact]
    order = sorted(range(len(fractions)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    positive = [i for i, f in enumerate(fractions) if f > 0]
    if n >= len(positive):
        for i in positive:
            if counts[i] == 0:
                donor = max(positive, key=lambda j: (counts[j], -j))
                counts[donor] -= 1
                counts[i] += 1
    return counts


def group_table(groups: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted unique groups with whether each holds a normal and an anomalous item."""
    uniq, inverse = np.unique(groups.astype(str), return_inverse=True)
    has_normal = np.zeros(len(uniq), bool)
    has_anomaly = np.zeros(len(uniq), bool)
    np.logical_or.at(has_normal, inverse, labels == 0)
    np.logical_or.at(has_anomaly, inverse, labels == 1)
    return uniq, has_normal, has_anomaly


def _permuted(groups: np.ndarray, seed: int, salt: str) -> np.ndarray:
    groups = np.sort(groups.astype(str))
    return groups[stable_rng(seed, salt).permutation(len(groups))]


def carve_by_group(groups: np.ndarray, labels: np.ndarray, fraction: float, seed: int,
                   salt: str = "carve") -> np.ndarray:
    """Boolean mask of the items whose group is carved off (e.g. val out of a test pool).

    Stratified by group label (a group is anomalous if any of its items is), ``fraction`` of
    the groups of each stratum, at least one per stratum when it has two or more groups.
    """
    groups = np.asarray(groups).astype(str)
    labels = np.asarray(labels)
    if fraction <= 0 or len(groups) == 0:
        return np.zeros(len(groups), bool)
    uniq, _, has_anomaly = group_table(groups, labels)
    chosen: list[str] = []
    for stratum, members in (("normal", uniq[~has_anomaly]), ("anomalous", uniq[has_anomaly])):
        if len(members) < 2:
            continue
        k = allocate(len(members), [fraction])[0]
        chosen.extend(_permuted(members, seed, f"{salt}/{stratum}")[:k])
    return np.isin(groups, np.array(chosen, dtype=str))


def assign_by_group(groups: np.ndarray, labels: np.ndarray, train_fraction: float, val_fraction: float,
                    seed: int, salt: str = "assign") -> np.ndarray:
    """Tag every item ``train``/``val``/``test``/``unused`` with whole groups kept together.

    Groups holding normal items are split train/val/test by the fractions, separately for
    normal-only and mixed groups (stratified). Groups with anomalies only never go to training:
    they are split val/test in the ratio ``val : test``. Anomalous items of training groups are
    tagged ``unused`` (the training split is normal-only, and moving them elsewhere would leak
    the patient).
    """
    check_fraction("train_fraction", train_fraction, allow_zero=False)
    check_fraction("val_fraction", val_fraction)
    if train_fraction + val_fraction >= 1:
        raise DatasetError(f"train_fraction + val_fraction must be < 1 to leave a test split, got "
                           f"{train_fraction} + {val_fraction}")
    groups = np.asarray(groups).astype(str)
    labels = np.asarray(labels)
    uniq, has_normal, has_anomaly = group_table(groups, labels)
    where: dict[str, str] = {}
    strata = (("normal-only", uniq[has_normal & ~has_anomaly], [train_fraction, val_fraction],
               ("train", "val", "test")),
              ("mixed", uniq[has_normal & has_anomaly], [train_fraction, val_fraction], ("train", "val", "test")),
              ("anomalous-only", uniq[~has_normal], [val_fraction / (1 - train_fraction)], ("val", "test")))
    for name, members, fractions, names in strata:
        counts = allocate(len(members), fractions)
        order = _permuted(members, seed, f"{salt}/{name}")
        start = 0
        for split, count in zip(names, counts, strict=True):
            for g in order[start:start + count]:
                where[str(g)] = split
            start += count
    tags = np.array([where[g] for g in groups], dtype=object)
    tags[(tags == "train") & (labels == 1)] = "unused"
    return tags.astype(str)


def drop_shared_groups(tags: np.ndarray, groups: np.ndarray,
                       priority: Sequence[str] = ("test", "val", "train")) -> tuple[np.ndarray, dict]:
    """Published splits that share a group: keep it in the first split of ``priority``.

    Items of the shared group in later splits are tagged ``unused`` and counted, so a leaking
    source (a patient in both train and test) is repaired visibly instead of silently.
    """
    tags = np.asarray(tags).astype(object).copy()
    groups = np.asarray(groups).astype(str)
    dropped: dict[str, int] = {}
    seen = np.array([], dtype=str)
    for split in priority:
        here = tags == split
        clash = here & np.isin(groups, seen)
        if clash.any():
            dropped[split] = int(clash.sum())
            tags[clash] = "unused"
        seen = np.union1d(seen, groups[here & ~clash])
    return tags.astype(str), dropped


def carve_val_from_test(tags: np.ndarray, groups: np.ndarray, labels: np.ndarray, fraction: float,
                        seed: int, salt: str) -> tuple[np.ndarray, str]:
    """Move ``fraction`` of the test groups (stratified) to ``val``; returns tags and a card note."""
    check_fraction("val_fraction", fraction)
    tags = np.asarray(tags).astype(object).copy()
    in_test = np.flatnonzero(tags == "test")
    carved = carve_by_group(np.asarray(groups)[in_test], np.asarray(labels)[in_test], fraction, seed, salt)
    tags[in_test[carved]] = "val"
    note = (f"the source has no labelled validation split: val = {fraction:.0%} of the test groups "
            f"carved by group, stratified by label, seed {seed} (sorted ids + PCG64); test = the rest")
    if fraction == 0:
        note = "val_fraction=0: val is empty and test is the published test set (oracle thresholds only)"
    return tags.astype(str), note


def file_ids(records, folder) -> np.ndarray | None:
    """Each record's image file relative to ``folder`` (POSIX separators), or None when a record holds
    an array instead of a file (volume slices): the case names of per-image outputs."""
    from pathlib import Path

    out = []
    for record in records:
        if not isinstance(record.image, (str, Path)):
            return None
        path = Path(record.image)
        try:
            out.append(path.relative_to(folder).as_posix())
        except ValueError:
            out.append(path.name)
    return np.array(out, dtype=str)


def sizes_text(dataset: AnomalyDataset) -> str:
    parts = []
    for name in SPLITS:
        s = getattr(dataset, name).summary()
        parts.append(f"{name} {s['n']} ({s['normal']} normal, {s['anomalous']} anomalous, {s['groups']} groups)")
    return "; ".join(parts)


def assemble(name: str, arrays: dict[str, np.ndarray], labels: np.ndarray, groups: np.ndarray,
             tags: np.ndarray, card: DatasetCard, config: dict, *, source: object,
             split_note: str = "", quiet: bool = False, foreground: str | None = None,
             ids: np.ndarray | None = None) -> AnomalyDataset:
    """Build the :class:`AnomalyDataset` from decoded arrays and per-item split tags.

    ``foreground="nonzero"`` gives every split a body mask of the non-zero pixels (brain MRI with
    a zeroed background); ``None`` leaves it unset (the whole image counts). ``ids`` names every
    item (:func:`file_ids`: the file name relative to the source folder), carried into each split.

    The card is copied with the actual split sizes appended; sizes, dropped counts and cache
    info go to ``config``; one summary line is printed to stderr.
    """
    tags = np.asarray(tags).astype(str)
    labels = np.asarray(labels, dtype=np.int64)
    groups = np.asarray(groups).astype(str)
    images = arrays["images"]
    masks = arrays.get("masks")
    if foreground not in (None, "nonzero"):
        raise DatasetError(f"{source}: foreground must be None or 'nonzero', got {foreground!r}")

    def split(tag: str) -> Split:
        idx = np.flatnonzero(tags == tag)
        body = nonzero_foreground(images[idx]) if foreground == "nonzero" else None
        return Split(images[idx], labels[idx], None if masks is None else masks[idx], groups[idx], tag, body,
                     None if ids is None else np.asarray(ids).astype(str)[idx])

    train = split("train")
    if train.n_normal == 0:
        raise DatasetError(f"{source}: no normal training images; expected a non-empty normal set")
    pool = split("pool") if (tags == "pool").any() else None
    unused = int((tags == "unused").sum())
    dataset = AnomalyDataset(name, train, split("val"), split("test"), card, config, pool=pool)
    sizes = sizes_text(dataset)
    text = "; ".join(t for t in (card.splits, split_note, f"this build: {sizes}") if t)
    if unused:
        text += f"; {unused} images unused (anomalous slices of training groups or shared groups dropped)"
    dataset.card = replace(card, splits=text)
    dataset.config.update({"split_sizes": dataset.summary(), "unused": unused})
    if pool is not None:
        dataset.config["pool_size"] = pool.summary()
    if not quiet:
        hit = " [cache hit]" if config.get("cache_hit") else ""
        print(f"{name}: {sizes}{hit}", file=sys.stderr)
    return dataset
