"""Components declare whether their fit depends on the seed (issue 23: the one-seed rule of the claims)."""

from __future__ import annotations

import pytest

from methods.base import DensityHead, Detector, Encoder
from methods.detectors.latent import LatentDetector
from methods.registry import create_encoder, create_head, list_heads


def test_base_classes_default_to_stochastic():
    assert Encoder.deterministic_fit is False and DensityHead.deterministic_fit is False
    assert Detector.deterministic_fit is False


@pytest.mark.parametrize("name", list_heads())
def test_heads_declare_a_bool(name):
    head = create_head(name)
    assert isinstance(head.deterministic_fit, bool)
    assert head.deterministic_fit is (name in {"gaussian", "knn"}), name      # defaults: subsets/coresets are seeded


def test_seeded_subsets_make_a_closed_form_head_stochastic():
    assert create_head("knn", max_train=100).deterministic_fit is False
    assert create_head("patch_gaussian", d_reduced=None).deterministic_fit is True
    assert create_head("patch_knn", coreset_ratio=1.0).deterministic_fit is True


def test_a_latent_detector_is_deterministic_only_when_both_parts_are():
    frozen, control = create_encoder("imagenet/tf_efficientnet_lite0"), create_encoder("random/resnet18")
    assert frozen.deterministic_fit is True and control.deterministic_fit is False
    assert LatentDetector(frozen, create_head("gaussian"), None).deterministic_fit is True
    assert LatentDetector(frozen, create_head("gmm"), None).deterministic_fit is False
    assert LatentDetector(control, create_head("gaussian"), None).deterministic_fit is False
