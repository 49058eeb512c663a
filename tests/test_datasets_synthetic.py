"""The embedded ``synthetic`` phantom dataset: contract, determinism, masks and difficulty."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from datasets import DatasetError, create_dataset
from datasets.registry import DATASETS
from datasets.synthetic import CARD, PhantomGenerator, synthetic

SMALL = dict(n_train=4, n_val=6, n_test=6, n_pool=4)


@pytest.fixture(scope="module")
def medium():
    """Enough subjects at 32 px for the statistical checks, generated once (< 1 s)."""
    return synthetic(image_size=32, n_train=40, n_val=20, n_test=160, n_pool=10, seed=3)


@pytest.mark.parametrize("size", [32, 64, 256])
def test_shapes_dtypes_and_counts(size):
    ds = synthetic(image_size=size, **SMALL)
    for split, n in (("train", 4), ("val", 6), ("test", 6), ("pool", 4)):
        s = getattr(ds, split)
        assert s.images.shape == (n, 1, size, size) and s.images.dtype == np.uint8
        assert s.masks.shape == (n, 1, size, size) and s.masks.dtype == np.uint8
        assert set(np.unique(s.masks)) <= {0, 1}
    assert ds.train.n_anomalous == 0
    assert (ds.val.n_normal, ds.val.n_anomalous) == (3, 3)
    assert (ds.test.n_normal, ds.test.n_anomalous) == (3, 3)
    assert (ds.pool.n_normal, ds.pool.n_anomalous) == (2, 2)
    assert ds.image_size == size and ds.channels == 1


def test_anomaly_fraction_rounds_but_keeps_both_classes():
    ds = synthetic(image_size=32, n_train=2, n_val=10, n_test=7, n_pool=0, anomaly_fraction=0.3)
    assert ds.val.n_anomalous == 3 and ds.test.n_anomalous == 2 and ds.pool is None
    tiny = synthetic(image_size=32, n_train=2, n_val=2, n_test=2, n_pool=0, anomaly_fraction=0.05)
    assert tiny.val.n_anomalous == 1 and tiny.test.n_normal == 1


def test_same_seed_identical_other_seed_different():
    a = synthetic(image_size=32, seed=5, **SMALL)
    b = synthetic(image_size=32, seed=5, **SMALL)
    c = synthetic(image_size=32, seed=6, **SMALL)
    for split in ("train", "val", "test", "pool"):
        sa, sb, sc = getattr(a, split), getattr(b, split), getattr(c, split)
        np.testing.assert_array_equal(sa.images, sb.images)
        np.testing.assert_array_equal(sa.masks, sb.masks)
        np.testing.assert_array_equal(sa.labels, sb.labels)
        np.testing.assert_array_equal(sa.groups, sb.groups)
        assert not np.array_equal(sa.images, sc.images)


def test_same_arrays_in_another_process():
    """No hidden state (hash seeds, global RNG): a fresh interpreter builds the same bytes."""
    code = ("import hashlib; from datasets.synthetic import synthetic; "
            "d = synthetic(image_size=32, n_train=3, n_val=2, n_test=4, n_pool=2, seed=7); "
            "print(hashlib.sha256(b''.join(getattr(d, s).images.tobytes() + getattr(d, s).masks.tobytes() "
            "for s in ('train', 'val', 'test', 'pool'))).hexdigest())")
    project = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=project, capture_output=True, text=True,
                         env={"PYTHONPATH": str(project), "PYTHONHASHSEED": "123"}, check=True)
    d = synthetic(image_size=32, n_train=3, n_val=2, n_test=4, n_pool=2, seed=7)
    here = hashlib.sha256(b"".join(getattr(d, s).images.tobytes() + getattr(d, s).masks.tobytes()
                                   for s in ("train", "val", "test", "pool"))).hexdigest()
    assert out.stdout.strip() == here


def test_an_image_does_not_depend_on_how_many_others_exist():
    few = synthetic(image_size=32, n_train=3, n_val=2, n_test=2, n_pool=0)
    many = synthetic(image_size=32, n_train=9, n_val=2, n_test=2, n_pool=0)
    np.testing.assert_array_equal(few.train.images, many.train.images[:3])


def test_splits_use_different_subjects():
    ds = synthetic(image_size=32, **SMALL)
    assert not np.array_equal(ds.train.images[:2], ds.pool.images[:2])
    all_groups = np.concatenate([getattr(ds, s).groups for s in ("train", "val", "test", "pool")])
    assert len(np.unique(all_groups)) == len(all_groups)
    assert ds.test.groups[0] == "syn-s0-test-000000"


def test_background_is_exactly_zero_and_head_is_nonzero(medium):
    images = np.concatenate([medium.train.images, medium.test.images])[:, 0]
    assert (images[:, 0, :] == 0).all() and (images[:, :, -1] == 0).all()
    for image in images:
        head = image != 0
        _, count = ndimage.label(head)
        assert count == 1, "the head must be one connected region"
        np.testing.assert_array_equal(ndimage.binary_fill_holes(head), head)  # no 0 inside the head


def test_masks_only_on_anomalies_and_inside_the_head(medium):
    for split in (medium.val, medium.test, medium.pool):
        area = split.masks.reshape(len(split), -1).sum(1)
        assert (area[split.labels == 0] == 0).all()
        assert (area[split.labels == 1] > 0).all()
        assert (split.images[split.masks == 1] > 0).all()
    assert medium.train.masks.sum() == 0


def test_lesions_change_only_masked_pixels():
    gen = PhantomGenerator(image_size=48, seed=1)
    for index in range(6):
        normal, empty = gen.subject("test", index, anomalous=False)
        anomalous, mask = gen.subject("test", index, anomalous=True)
        assert empty.sum() == 0 and mask.sum() > 0
        np.testing.assert_array_equal(anomalous[mask == 0], normal[mask == 0])
        # Lesions sit in the brain, well inside the outer head boundary (skull + CSF gap).
        eroded = ndimage.binary_erosion(normal > 0, iterations=1)
        assert eroded[mask == 1].all()


def test_anomalies_are_detectable_but_not_trivial(medium):
    test = medium.test
    x = test.images[:, 0].astype(float)
    foreground = x > 0
    mean_intensity = (x * foreground).sum((1, 2)) / foreground.sum((1, 2))
    auroc = roc_auc_score(test.labels, mean_intensity)
    assert 0.2 < auroc < 0.8, f"mean intensity alone separates the classes (AUROC {auroc:.2f})"

    gen = PhantomGenerator(image_size=32, seed=3)
    contrast, sign, area = [], [], []
    for i in np.flatnonzero(test.labels == 1):
        anomalous, mask = gen.subject("test", int(i), anomalous=True)
        normal, _ = gen.subject("test", int(i), anomalous=False)
        np.testing.assert_array_equal(anomalous, test.images[i, 0])
        delta = anomalous.astype(float)[mask == 1] - normal[mask == 1]
        contrast.append(np.abs(delta).mean())
        sign.append(np.sign(delta.mean()))
        area.append(mask.sum())
    contrast, area = np.array(contrast), np.array(area)
    assert np.median(contrast) > 10, "most lesions must stand out from ~2-8 grey levels of noise"
    assert (contrast < 12).sum() >= 3, "some lesions must be subtle"
    assert (contrast > 30).mean() > 0.1, "some lesions must be obvious"
    assert 0.25 < (np.array(sign) > 0).mean() < 0.75, "hyper- and hypo-intense lesions"
    assert area.max() >= 8 * area.min(), "lesion sizes must range from small to large"


def test_normal_subjects_vary(medium):
    x = medium.train.images[:, 0]
    head_area = (x > 0).reshape(len(x), -1).sum(1)
    assert head_area.std() / head_area.mean() > 0.05
    assert len({img.tobytes() for img in x}) == len(x)


def test_registry_card_and_config():
    assert "synthetic" in DATASETS
    ds = create_dataset("synthetic", root="ignored-folder", image_size=32, **SMALL)
    assert ds.name == "synthetic" and ds.registry_name == "synthetic"
    assert ds.card is CARD and "MIT" in CARD.license and CARD.modality
    assert DATASETS.lookup("synthetic")[0].tags["card"] is CARD
    json.dumps(ds.config)  # cache keys must be serialisable
    assert ds.config["image_size"] == 32 and ds.config["generator"].startswith("phantom-")
    assert ds.config["lesion_contrast"] == [0.05, 0.40]


def test_bad_arguments_raise():
    with pytest.raises(TypeError):
        synthetic(image_size=32, n_images=3)
    with pytest.raises(DatasetError, match="image_size"):
        synthetic(image_size=16)
    with pytest.raises(DatasetError, match="anomaly_fraction"):
        synthetic(image_size=32, anomaly_fraction=1.0, **SMALL)
    with pytest.raises(DatasetError, match="n_val"):
        synthetic(image_size=32, n_train=2, n_val=1, n_test=2, n_pool=0)
    with pytest.raises(DatasetError, match="seed"):
        synthetic(image_size=32, seed=-1, **SMALL)
