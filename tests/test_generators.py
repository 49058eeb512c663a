"""Anomaly generators of the label-free selection set (issue 25): masks are exactly the changed pixels."""

from __future__ import annotations

import numpy as np
import pytest

from datasets import create_dataset
from datasets.generators import GENERATORS, create_generator, list_generators, synthesise
from datasets.generators._synthset import build_set, synthetic_validation


@pytest.fixture(scope="module")
def val():
    return create_dataset("synthetic", image_size=32, n_train=2, n_val=16, n_test=2, n_pool=0).val


@pytest.mark.parametrize("name", list_generators())
def test_mask_marks_exactly_the_changed_pixels(name, val):
    generator = create_generator(name, **GENERATORS.tiny(name))
    normal = val.images[val.labels == 0]
    for i in range(3):
        fg = val.foreground[np.flatnonzero(val.labels == 0)[i], 0].astype(bool)
        made = synthesise(generator, normal[i], np.random.default_rng(i), normal[np.arange(len(normal)) != i], fg)
        assert made is not None, name
        image, mask = made
        assert image.dtype == np.uint8 and image.shape == normal[i].shape and mask.shape == normal[i].shape[1:]
        changed = (image != normal[i]).any(axis=0)
        np.testing.assert_array_equal(mask.astype(bool), changed)          # exactly the changed pixels
        np.testing.assert_array_equal(image[:, ~changed], normal[i][:, ~changed])   # the rest untouched
        assert 0 < mask.sum() < 0.6 * mask.size, (name, int(mask.sum()))
        assert not mask[~fg].any(), f"{name}: changed pixels outside the body"


def test_set_is_seeded_cached_and_made_of_validation_normals(val, tmp_path):
    a = synthetic_validation(val, ["cutpaste", "fpi"], per_generator=5, seed=3, cache_dir=tmp_path)
    b = synthetic_validation(val, ["cutpaste", "fpi"], per_generator=5, seed=3, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("synthval-*.npz"))) == 1 and a.key == b.key
    np.testing.assert_array_equal(a.images, b.images)
    assert sorted(set(a.generator)) == ["cutpaste", "fpi"] and (a.generator == "fpi").sum() <= 5
    assert (val.labels[a.source] == 0).all()                  # sources are validation normals only
    c = build_set(val, ["cutpaste", "fpi"], per_generator=5, seed=4)
    assert not np.array_equal(a.images, c.images)             # another seed, another set
    # generator k's images do not depend on which other generators are in the set
    alone = build_set(val, ["fpi"], per_generator=5, seed=3)
    np.testing.assert_array_equal(alone.images, a.images[a.generator == "fpi"])


def test_msacl_encoder_uses_the_moved_simulator():
    from datasets.generators._lesion_synthesis import LesionSynthesis
    from methods.encoders import msacl

    assert msacl.LesionSynthesis is LesionSynthesis
