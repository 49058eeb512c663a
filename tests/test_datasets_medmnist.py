"""``medmnist/<flag>``: real PneumoniaMNIST/BreastMNIST files plus tiny fake files, all offline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from datasets import DatasetError, create_dataset
from datasets.medmnist import (NORMAL_LABELS, card_for, default_normal_classes, flags_2d, medmnist,
                               stratified_subsample)


def load(flag: str, root: Path, **kwargs):
    return create_dataset(f"medmnist/{flag}", root=root, download=False, **kwargs)


def write_fake(root: Path, flag: str, *, size: int = 28, channels: int = 1, n_classes: int = 2,
               multilabel: bool = False, n=(24, 10, 10), seed: int = 0) -> Path:
    """An ``.npz`` in the official layout (keys ``<split>_images``/``<split>_labels``)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, count in zip(("train", "val", "test"), n):
        shape = (count, size, size) + ((3,) if channels == 3 else ())
        arrays[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        if multilabel:
            labels = (rng.random((count, n_classes)) < 0.15).astype(np.uint8)
            labels[: count // 2] = 0  # plenty of "no finding" rows
        else:
            labels = (np.arange(count) % n_classes).astype(np.uint8)[:, None]
        arrays[f"{split}_labels"] = labels
    path = root / (f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz")
    np.savez(path, **arrays)
    return path


@pytest.fixture(scope="module")
def pneumonia(shared_data):
    return load("pneumoniamnist", shared_data)


# -- real files ------------------------------------------------------------------------------------
def test_pneumonia_counts_and_raw_pixels(pneumonia, shared_data):
    ds = pneumonia
    assert len(ds.train) == 1214 and ds.train.n_anomalous == 0
    assert (ds.test.n_normal, ds.test.n_anomalous) == (234, 390)
    assert len(ds.val) == 524 and ds.val.n_normal > 0 and ds.val.n_anomalous > 0
    assert ds.pool.n_anomalous == 4708 - 1214 and ds.pool.n_normal == 0
    assert ds.train.images.shape == (1214, 1, 28, 28) and ds.train.images.dtype == np.uint8
    assert ds.test.masks is None and not ds.has_masks
    raw = np.load(shared_data / "pneumoniamnist.npz")
    np.testing.assert_array_equal(ds.train.images[:, 0], raw["train_images"][raw["train_labels"][:, 0] == 0])
    np.testing.assert_array_equal(ds.test.labels, raw["test_labels"][:, 0])
    assert ds.train.groups[0].startswith("pneumoniamnist-train-") and ds.test.groups[3] == "pneumoniamnist-test-00003"
    json.dumps(ds.config)


def test_pneumonia_resized_to_64(shared_data, pneumonia):
    ds = load("pneumoniamnist", shared_data, image_size=64, max_val=20, max_test=20)
    assert ds.train.images.shape == (1214, 1, 64, 64) and ds.image_size == 64
    reference = F.interpolate(torch.from_numpy(pneumonia.train.images[:5]).float(), size=(64, 64),
                              mode="bilinear", align_corners=False, antialias=True)
    np.testing.assert_array_equal(ds.train.images[:5], reference.round().clamp(0, 255).byte().numpy())
    assert abs(ds.train.images.mean() - pneumonia.train.images.mean()) < 1.0
    assert ds.config["image_size"] == 64 and ds.config["size"] == 28


def test_breast_normal_class_is_one(shared_data):
    ds = load("breastmnist", shared_data)
    raw = np.load(shared_data / "breastmnist.npz")
    assert len(ds.train) == int((raw["train_labels"] == 1).sum())
    assert ds.test.n_anomalous == int((raw["test_labels"] == 0).sum())  # malignant
    np.testing.assert_array_equal(ds.test.labels, 1 - raw["test_labels"][:, 0])
    assert ds.config["normal_classes"] == [1]


def test_channels_repeat_gray_to_three(shared_data, pneumonia):
    ds = load("pneumoniamnist", shared_data, channels=3, max_train=10, max_val=4, max_test=4)
    assert ds.channels == 3
    np.testing.assert_array_equal(ds.train.images[:, 0], ds.train.images[:, 2])
    assert load("pneumoniamnist", shared_data, channels=1, max_train=3, max_val=4, max_test=4).channels == 1


def test_max_subsampling_is_stratified_sorted_and_deterministic(shared_data, pneumonia):
    a = load("pneumoniamnist", shared_data, max_train=50, max_val=30, max_test=40, seed=1)
    b = load("pneumoniamnist", shared_data, max_train=50, max_val=30, max_test=40, seed=1)
    c = load("pneumoniamnist", shared_data, max_train=50, max_val=30, max_test=40, seed=2)
    assert (len(a.train), len(a.val), len(a.test)) == (50, 30, 40)
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(a, split).groups, getattr(b, split).groups)
        np.testing.assert_array_equal(getattr(a, split).images, getattr(b, split).images)
        groups = getattr(a, split).groups
        assert list(groups) == sorted(groups)
        assert np.isin(groups, getattr(pneumonia, split).groups).all()
    assert not np.array_equal(a.train.groups, c.train.groups)
    assert (a.test.n_normal, a.test.n_anomalous) == (15, 25)  # 234:390 of 624, scaled to 40
    assert a.config["max_test"] == 40


def test_stratified_subsample_keeps_a_rare_class():
    labels = np.array([0] * 98 + [1] * 2)
    index = stratified_subsample(labels, 10, np.random.default_rng(0))
    assert len(index) == 10 and labels[index].sum() == 1 and list(index) == sorted(index)
    np.testing.assert_array_equal(stratified_subsample(labels, None, np.random.default_rng(0)), np.arange(100))


# -- errors ------------------------------------------------------------------------------------------
def test_missing_file_is_one_line_naming_the_path(tmp_path):
    with pytest.raises(DatasetError) as info:
        load("pneumoniamnist", tmp_path / "empty")
    message = str(info.value)
    assert "\n" not in message and str(tmp_path / "empty" / "pneumoniamnist.npz") in message
    assert "--data-root" in message
    with pytest.raises(DatasetError, match="pneumoniamnist_128.npz"):
        load("pneumoniamnist", tmp_path, size=128)


@pytest.mark.parametrize("flag, kind", [("notamnist", "unknown"), ("organmnist3d", "3D")])
def test_unknown_or_3d_flag_lists_valid_flags(tmp_path, flag, kind):
    with pytest.raises(DatasetError, match=kind) as info:
        load(flag, tmp_path)
    assert "pneumoniamnist" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(DatasetError):
        card_for(flag)


def test_flag_without_natural_normal_needs_normal_classes(tmp_path):
    write_fake(tmp_path, "bloodmnist", channels=3, n_classes=8)
    with pytest.raises(DatasetError, match="normal_classes") as info:
        load("bloodmnist", tmp_path)
    assert "\n" not in str(info.value)
    ds = load("bloodmnist", tmp_path, normal_classes=[0, "eosinophil"])
    assert ds.config["normal_classes"] == [0, 1] and ds.channels == 3
    assert len(ds.train) == 6 and ds.test.n_normal == 4 and ds.test.n_anomalous == 6  # labels i % 8
    with pytest.raises(DatasetError, match="not a label"):
        load("bloodmnist", tmp_path, normal_classes=[8])
    with pytest.raises(DatasetError, match="every class"):
        load("bloodmnist", tmp_path, normal_classes=list(range(8)))


def test_bad_arguments(tmp_path, shared_data):
    with pytest.raises(DatasetError, match="size"):
        load("pneumoniamnist", shared_data, size=100)
    with pytest.raises(DatasetError, match="channels"):
        load("pneumoniamnist", shared_data, channels=2)
    with pytest.raises(DatasetError, match="max_val"):
        load("pneumoniamnist", shared_data, max_val=0)
    with pytest.raises(TypeError):
        medmnist("pneumoniamnist", shared_data, download=False, imagesize=64)
    (tmp_path / "breastmnist.npz").write_bytes(b"not a zip file")
    with pytest.raises(DatasetError, match="breastmnist.npz"):
        load("breastmnist", tmp_path)


# -- fake files for what the shared folder lacks ----------------------------------------------
def test_rgb_to_luminance(tmp_path):
    write_fake(tmp_path, "dermamnist", channels=3, n_classes=7)
    native = load("dermamnist", tmp_path)
    gray = load("dermamnist", tmp_path, channels=1)
    assert native.channels == 3 and gray.channels == 1
    rgb = native.test.images.astype(float)
    expected = np.rint(0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2])
    assert np.abs(gray.test.images[:, 0] - expected).max() <= 1
    assert native.config["normal_classes"] == [5]  # melanocytic nevi


def test_stored_size_variant_is_read(tmp_path):
    write_fake(tmp_path, "octmnist", size=64, n_classes=4)
    ds = load("octmnist", tmp_path, size=64, image_size=64)
    assert ds.train.images.shape[1:] == (1, 64, 64) and ds.config["file"] == "octmnist_64.npz"
    assert ds.config["normal_classes"] == [3]
    small = load("octmnist", tmp_path, size=64, image_size=32)
    assert small.image_size == 32


def test_chest_multilabel_normal_means_no_finding(tmp_path):
    path = write_fake(tmp_path, "chestmnist", n_classes=14, multilabel=True, n=(30, 20, 20))
    raw = np.load(path)
    ds = load("chestmnist", tmp_path)
    np.testing.assert_array_equal(ds.test.labels, raw["test_labels"].any(axis=1).astype(int))
    assert len(ds.train) == int((~raw["train_labels"].any(axis=1)).sum())
    # normal_classes on a multi-label set: findings of those labels alone still count as normal.
    relaxed = load("chestmnist", tmp_path, normal_classes=["nodule"])
    only_nodule = raw["test_labels"].copy()
    only_nodule[:, 5] = 0
    np.testing.assert_array_equal(relaxed.test.labels, only_nodule.any(axis=1).astype(int))


# -- the normal-class map and cards ------------------------------------------------------------
def test_normal_map_matches_medmnist_info():
    from medmnist import INFO

    expected = {"pneumoniamnist": (0,), "breastmnist": (1,), "chestmnist": (), "dermamnist": (5,),
                "octmnist": (3,), "retinamnist": (0,), "pathmnist": (6,)}
    for flag, indices in expected.items():
        assert default_normal_classes(flag) == indices
        for i in indices:
            assert INFO[flag]["label"][str(i)] in NORMAL_LABELS[flag]
    for flag in ("bloodmnist", "tissuemnist", "organamnist", "organcmnist", "organsmnist"):
        assert default_normal_classes(flag) is None
    assert "organmnist3d" not in flags_2d() and len(flags_2d()) == 12


@pytest.mark.parametrize("flag", ["pneumoniamnist", "breastmnist", "chestmnist", "bloodmnist", "pathmnist"])
def test_card_for_every_kind_of_flag(flag):
    card = card_for(flag)
    assert card.name == f"medmnist/{flag}" and card.modality and card.license.startswith("CC BY")
    assert "no patient ids" in card.notes and card.normal
    if flag == "bloodmnist":
        assert "normal_classes" in card.normal
