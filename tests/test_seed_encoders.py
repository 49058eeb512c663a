"""The seed encoders (CRADL, MSACL) and the msacl_patch detector: layouts, pieces, and that they detect.

The registry test (tests/test_registry.py) already checks every encoder's contract (shapes, no NaNs,
gradients reach the input); these tests pin what is specific to the two papers and run each
method once on the synthetic phantoms at tiny settings, asserting a clearly-above-chance AUROC.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from datasets.base import Split
from datasets.registry import create_dataset
from methods.base import MethodError, seed_everything
from methods.encoders.cradl import DCGANEncoder
from methods.encoders.msacl import LesionSynthesis
from methods.registry import create_detector, create_encoder, create_head

#: Observed with seeds 0-2 at these settings: cradl 0.69-0.75 (an untrained DCGAN scores about the same
#: on these phantoms), msacl 0.84-0.88, msacl_patch 0.85; the bars sit > 3 standard errors above 0.5.
CRADL_MIN_AUROC, MSACL_MIN_AUROC, PATCH_MIN_AUROC = 0.62, 0.72, 0.72


pytestmark = pytest.mark.usefixtures("one_thread")   # conftest: one intra-op thread per module


@pytest.fixture(scope="module")
def phantoms():
    """Synthetic phantoms at 32 px with conspicuous lesions (contrast 0.2-0.5, radius 10-25 % of the
    half-width): at the default difficulty, which includes lesions of contrast 0.05 and 1.5 px,
    no encoder trained for seconds on a CPU separates the classes reliably, so a detection test
    there would be a coin flip. 400 test images keep the AUROC's standard error near 0.03."""
    return create_dataset("synthetic", image_size=32, n_train=600, n_val=4, n_test=400,
                          lesion_contrast=[0.2, 0.5], lesion_radius=[0.1, 0.25])


def _images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((n, 1, size, size)) * 255).astype(np.uint8)


# -- CRADL ---------------------------------------------------------------------------------------
def test_dcgan_layout_matches_cradl_at_128px():
    encoder = create_encoder("cradl", image_size=128)
    stages = encoder.backbone.stages
    assert len(stages) == 6                                          # log2(128) - 1
    shapes, h = [], torch.zeros(2, 1, 128, 128)
    with torch.no_grad():
        for stage in stages:
            h = stage(h)
            shapes.append(tuple(h.shape[1:]))
    assert shapes == [(64, 64, 64), (128, 32, 32), (256, 16, 16), (512, 8, 8), (1024, 4, 4), (512, 1, 1)]
    convs = [m for m in encoder.backbone.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.kernel_size == (4, 4) and c.bias is not None for c in convs)
    assert [c.stride for c in convs] == [(2, 2)] * 5 + [(1, 1)] and convs[-1].padding == (0, 0)
    last = list(stages[-1].children())
    assert isinstance(last[0], nn.BatchNorm2d) and isinstance(last[1], nn.ReLU) and isinstance(last[-1], nn.Conv2d)
    assert not isinstance(stages[0], nn.Sequential), "the first conv has no BN/ReLU before it"
    assert encoder.out_dim == 512


def test_dcgan_generalises_to_other_sizes_and_rejects_odd_ones():
    assert len(DCGANEncoder(1, 64, width=4, z_dim=8).stages) == 5
    assert DCGANEncoder(1, 32, width=4, z_dim=8)(torch.zeros(2, 1, 32, 32)).shape == (2, 8)
    with pytest.raises(ValueError, match="power-of-two"):
        DCGANEncoder(1, 28)


def test_projection_head_has_no_batchnorm_and_halves_z():
    encoder = create_encoder("cradl", image_size=32, width=8, z_dim=64)
    layers = list(encoder.projection.modules())
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in layers)
    linears = [m for m in layers if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(64, 64), (64, 32)]
    assert any(isinstance(m, nn.ReLU) for m in layers)


def test_heads_see_the_encoder_output_not_the_projection():
    seed_everything(0)
    encoder = create_encoder("cradl", image_size=32, width=8, z_dim=64, epochs=1, batch_size=8, warmup_epochs=0)
    images = _images(16, 32)
    encoder.fit(Split(images, np.zeros(16)), seed=0)
    z = encoder.embed(images, batch_size=8)
    assert z.shape == (16, 64)
    with torch.no_grad():
        x = torch.from_numpy(images).float() / 255
        assert torch.allclose(z, encoder.backbone(encoder.augment.to_units(x)), atol=1e-5)
    head = create_head("gaussian").fit(z, seed=0)
    assert head.location_.shape == (64,)              # fitted on the 64-d encoder output


def test_cradl_views_are_in_cradl_units():
    encoder = create_encoder("cradl", image_size=32, width=8, z_dim=16,
                             augment={"translate": 0.0, "rotate": 0.0, "scale": (1.0, 1.0), "brightness": (1.0, 1.0)},
                             noise=0.0)
    x = torch.rand(4, 1, 32, 32)
    view = encoder.augment(x, torch.Generator().manual_seed(0))
    assert torch.allclose(view, 3 * x - 1.5, atol=1e-5)            # [0, 1] -> [-1.5, 1.5], nothing else
    noisy = create_encoder("cradl", image_size=32, width=8, z_dim=16).augment(x, torch.Generator().manual_seed(0))
    assert noisy.min() >= -1.5 and noisy.max() <= 1.5 and not torch.allclose(noisy, view)
    masked = create_encoder("cradl", image_size=32, width=8, z_dim=16, noise_masks=True, noise=0.0,
                            augment={"translate": 0.0, "rotate": 0.0, "scale": (1.0, 1.0), "brightness": (1.0, 1.0)})
    squares = masked.augment(x.repeat(8, 1, 1, 1), torch.Generator().manual_seed(1))
    changed = (squares != 3 * x.repeat(8, 1, 1, 1) - 1.5).flatten(1).any(1)
    assert changed.any() and not changed.all()                        # 0-3 squares: some images keep none


# -- MSACL ---------------------------------------------------------------------------------------
def test_lesion_synthesis_makes_the_requested_lesions(phantoms):
    x = torch.from_numpy(phantoms.train.images[:8]).float() / 255
    counts = torch.tensor([0, 1, 2, 3, 3, 2, 1, 0])
    out, masks = LesionSynthesis()(x, counts, torch.Generator().manual_seed(0))
    assert masks.shape == (8, 3, 32, 32)
    assert torch.equal((masks.flatten(2).amax(-1) > 0).sum(1), counts)
    assert torch.equal(out[counts == 0], x[counts == 0])
    touched = (out - x).abs().flatten(1).amax(1)
    assert (touched[counts > 0] > 0.05).all()
    near = nn.functional.max_pool2d(masks.amax(1, keepdim=True), 7, 1, 3) > 0   # lesions + a soft edge
    assert torch.equal(out[~near], x[~near]), "pixels away from every lesion must be untouched"
    with pytest.raises(ValueError, match="lesion counts"):
        LesionSynthesis()(x, torch.full((8,), 4), None)


def test_msacl_centres_are_fixed_by_the_untrained_encoder():
    images = _images(24, 32, seed=3)
    split = Split(images, np.zeros(24))
    fitted = []
    for epochs in (0, 2):
        seed_everything(5)
        encoder = create_encoder("msacl", image_size=32, epochs=epochs, batch_size=8, optimizer="adam", lr=1e-3)
        assert not encoder.centres_ready
        fitted.append(encoder.fit(split, seed=5))
    untrained, trained = fitted
    assert untrained.centres_.shape == (4, 512) and torch.isfinite(untrained.centres_).all()
    assert torch.equal(untrained.centres_, trained.centres_), "centres must not move during training"
    assert not any(p is trained.centres_ for p in trained.parameters())
    weights = [(a - b).abs().max().item() for a, b in zip(untrained.parameters(), trained.parameters())]
    assert max(weights) > 0, "the encoder itself must have trained"
    # Recomputing with the trained weights gives other centres: they are really frozen, not refreshed.
    fresh = trained.init_centres(images, torch.Generator().manual_seed(0)).clone()
    assert not torch.allclose(fresh, untrained.centres_)


def test_msacl_feature_maps_and_loss_terms():
    seed_everything(0)
    encoder = create_encoder("msacl", image_size=64, batch_size=8)
    x = torch.rand(4, 1, 64, 64)
    maps = encoder.eval().feature_maps(x)
    layer2, layer3 = maps["layer2"], maps["layer3"]
    assert layer2.shape == (4, 128, 8, 8) and layer3.shape == (4, 256, 4, 4)
    with pytest.raises(MethodError, match="centres"):
        encoder.losses(x, torch.Generator().manual_seed(0))
    encoder.init_centres(_images(8, 64), torch.Generator().manual_seed(0))
    parts = encoder.train().losses(x, torch.Generator().manual_seed(0))
    assert set(parts) == {"contrastive", "centre", "class"}
    assert all(torch.isfinite(v) and v > 0 for v in parts.values())


# -- detection on the synthetic phantoms ---------------------------------------------------------
def _auroc(dataset, scores) -> float:
    return roc_auc_score(dataset.test.labels, scores)


def test_cradl_with_gaussian_head_detects_phantom_lesions(phantoms):
    seed_everything(0)
    encoder = create_encoder("cradl", image_size=32, width=16, z_dim=64, epochs=12, batch_size=64, lr=1e-3,
                             warmup_epochs=1)
    encoder.fit(phantoms.train, seed=0)
    head = create_head("gaussian").fit(encoder.embed(phantoms.train), seed=0)
    auroc = _auroc(phantoms, head.score(encoder.embed(phantoms.test)))
    assert auroc > CRADL_MIN_AUROC, f"cradl x gaussian image AUROC {auroc:.3f}"


@pytest.fixture(scope="module")
def msacl_patch(phantoms):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    seed_everything(0)
    detector = create_detector("msacl_patch", in_chans=1, image_size=32, epochs=5, batch_size=32, optimizer="sgd",
                               lr=0.05, warmup_epochs=1)
    # The encoder trains on 160 images (the expensive part); the patch Gaussians see them too.
    detector.fit(Split(phantoms.train.images[:160], phantoms.train.labels[:160]), seed=0)
    torch.set_num_threads(before)
    return detector


def test_msacl_with_gaussian_head_detects_phantom_lesions(phantoms, msacl_patch):
    # msacl_patch trains exactly create_encoder("msacl", ...).fit(train, seed=0); reuse that encoder.
    encoder = msacl_patch.encoder
    head = create_head("gaussian").fit(encoder.embed(phantoms.train), seed=0)
    auroc = _auroc(phantoms, head.score(encoder.embed(phantoms.test)))
    assert auroc > MSACL_MIN_AUROC, f"msacl x gaussian image AUROC {auroc:.3f}"


def test_msacl_patch_detects_and_localises_phantom_lesions(phantoms, msacl_patch):
    prediction = msacl_patch.predict(phantoms.test.images)
    assert prediction.scores.shape == (len(phantoms.test),)
    assert prediction.maps.shape == (len(phantoms.test), 32, 32) and np.isfinite(prediction.maps).all()
    auroc = _auroc(phantoms, prediction.scores)
    assert auroc > PATCH_MIN_AUROC, f"msacl_patch image AUROC {auroc:.3f}"
    pixel = roc_auc_score(phantoms.test.masks.reshape(-1) > 0, prediction.maps.reshape(-1))
    assert pixel > 0.7, f"msacl_patch pixel AUROC {pixel:.3f}"


def test_msacl_patch_is_seeded_and_keeps_its_contract():
    images = _images(16, 32, seed=4)
    runs = []
    for _ in range(2):
        detector = create_detector("msacl_patch", in_chans=1, image_size=32, epochs=1, batch_size=8, d_reduced=16)
        assert detector.setting == "uad"
        assert detector.fit(Split(images, np.zeros(16)), seed=2) is detector
        runs.append(detector.predict(images[:5]))
    assert runs[0].scores.shape == (5,) and runs[0].maps.shape == (5, 32, 32) and runs[0].maps.std() > 0
    np.testing.assert_array_equal(runs[0].scores, runs[1].scores)
    np.testing.assert_array_equal(runs[0].maps, runs[1].maps)
    with pytest.raises(MethodError, match="channels"):
        detector.predict(np.zeros((2, 3, 32, 32), np.uint8))


def test_msacl_patch_rejects_bad_input(phantoms):
    detector = create_detector("msacl_patch", in_chans=1, image_size=32, epochs=1, batch_size=8)
    with pytest.raises(MethodError, match="before fit"):
        detector.predict(phantoms.test.images[:2])
    with pytest.raises(MethodError, match="msacl_patch.*in_chans=1"):
        detector.fit(Split(np.zeros((4, 3, 32, 32), np.uint8), np.zeros(4)), seed=0)
