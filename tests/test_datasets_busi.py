"""``busi`` loader (fake file in the real layout + the real file when present) and foreground masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from datasets import DatasetError, Split, create_dataset
from datasets._splits import assemble
from datasets.base import DatasetCard, nonzero_foreground
from datasets.synthetic import PhantomGenerator
from tests.conftest import SHARED_DATA


def write_fake_busi(root: Path, n=(20, 30, 10), size: int = 32) -> Path:
    rng = np.random.default_rng(0)
    subtype = np.array(["normal"] * n[0] + ["benign"] * n[1] + ["malignant"] * n[2])
    images = rng.integers(0, 256, (len(subtype), size, size), dtype=np.uint8)
    masks = np.zeros_like(images)
    masks[subtype != "normal", 8:16, 8:16] = 1
    images[-1] = images[n[0]]                      # a pixel-identical duplicate (as benign 433 / malignant 145)
    names = np.array([f"{s} ({i}).png" for i, s in enumerate(subtype)])
    path = root / "busi.npz"
    np.savez(path, images=images, masks=masks, labels=(subtype != "normal").astype(np.uint8),
             subtype=subtype, names=names, orig_hw=np.full((len(subtype), 2), 500, np.int16))
    return path


def test_busi_fake_file_splits(tmp_path):
    write_fake_busi(tmp_path)
    ds = create_dataset("busi", root=tmp_path, image_size=16, train_fraction=0.5, val_fraction=0.3, seed=1)
    assert ds.train.n_anomalous == 0 and len(ds.train) == 10
    assert ds.val.n_normal == 3 and ds.test.n_normal == 7                 # the other 10 normals, 30 % to val
    assert ds.val.n_anomalous + ds.test.n_anomalous == 39                 # 40 lesion images, one duplicate dropped
    assert ds.test.images.shape[1:] == (1, 16, 16) and ds.test.masks.shape[1:] == (1, 16, 16)
    assert ds.test.masks[ds.test.labels == 1].any() and not ds.test.masks[ds.test.labels == 0].any()
    assert ds.test.foreground is None
    again = create_dataset("busi", root=tmp_path, image_size=16, train_fraction=0.5, val_fraction=0.3, seed=1)
    np.testing.assert_array_equal(ds.test.groups, again.test.groups)
    other = create_dataset("busi", root=tmp_path, image_size=16, train_fraction=0.5, val_fraction=0.3, seed=2)
    assert not np.array_equal(np.sort(ds.train.groups), np.sort(other.train.groups))


def test_busi_errors(tmp_path):
    with pytest.raises(DatasetError, match="busi.npz not found"):
        create_dataset("busi", root=tmp_path)
    write_fake_busi(tmp_path)
    with pytest.raises(DatasetError, match="image_size"):
        create_dataset("busi", root=tmp_path, image_size=256)
    with pytest.raises(DatasetError, match="train_fraction"):
        create_dataset("busi", root=tmp_path, train_fraction=1.0)


def test_busi_real_file():
    if not (SHARED_DATA / "busi.npz").exists():
        pytest.skip(f"busi.npz not found in {SHARED_DATA} (set UAD_BENCH_SHARED_DATA)")
    ds = create_dataset("busi", root=SHARED_DATA, image_size=64)
    total = sum(len(s) for s in (ds.train, ds.val, ds.test))
    assert total == 779 and ds.config["duplicates_dropped"] == 1      # benign 433 = malignant 145
    assert len(ds.train) == 80 and ds.train.n_anomalous == 0            # 60 % of 133 normals
    assert ds.val.n_normal + ds.test.n_normal == 53
    lesion = ds.test.masks[ds.test.labels == 1].reshape(ds.test.n_anomalous, -1)
    assert (lesion.sum(1) > 0).all() and ds.test.images.shape[-1] == 64


def test_split_validates_and_subsets_foreground():
    images = np.zeros((3, 1, 8, 8), np.uint8)
    with pytest.raises(DatasetError, match="foreground must have shape"):
        Split(images, np.zeros(3), foreground=np.ones((3, 1, 4, 4)))
    body = np.zeros((3, 8, 8)); body[1, 2:4, 2:4] = 5
    split = Split(images, np.zeros(3), foreground=body)
    assert split.foreground.shape == (3, 1, 8, 8) and split.foreground.max() == 1
    assert split.subset(np.array([1])).foreground.sum() == 4


def test_synthetic_foreground_is_intracranial_and_holds_the_lesions():
    split = PhantomGenerator(32, seed=0).split("test", 12, 6)
    fg = split.foreground.astype(bool)
    head = split.images > 0
    assert fg.any(1).any() and (fg <= head).all() and fg.sum() < head.sum()    # skull ring excluded
    assert not (split.masks.astype(bool) & ~fg).any()


def test_nonzero_foreground_in_assemble():
    images = np.zeros((4, 1, 8, 8), np.uint8); images[:, :, 2:6, 2:6] = 9
    tags = np.array(["train", "train", "val", "test"])
    ds = assemble("x", {"images": images}, np.array([0, 0, 0, 1]), np.arange(4).astype(str), tags,
                  DatasetCard("x"), {}, source="x", quiet=True, foreground="nonzero")
    assert ds.test.foreground.sum() == 16 and np.array_equal(ds.val.foreground, nonzero_foreground(images[2:3]))
