"""Map post-processing as CRADL's code does it, and the stride artefact of gradient maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from methods.localization import gaussian_filter, gradient_maps, median_filter


def test_gaussian_filter_is_cradls_zero_padded_smooth_tensor():
    """CRADL's smooth_tensor: a normalised 7x7 2-D Gaussian (sigma 3) in a Conv2d with padding 3 (zeros)."""
    x = torch.rand(3, 1, 20, 17)
    size, sigma = 7, 3.0
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    kernel = torch.exp(-((yy - 3.0) ** 2 + (xx - 3.0) ** 2) / (2 * sigma ** 2))
    reference = torch.nn.functional.conv2d(x, (kernel / kernel.sum()).view(1, 1, size, size), padding=size // 2)
    assert torch.allclose(gaussian_filter(x, sigma, size), reference, atol=1e-6)
    ones = gaussian_filter(torch.ones(1, 1, 16, 16))
    assert ones[0, 0, 8, 8] == pytest.approx(1.0, abs=1e-6) and ones[0, 0, 0, 0] < 0.6, "zeros pad the border"


@pytest.mark.parametrize("size", [3, 5, 7])
def test_median_filter_is_the_median_of_each_reflect_padded_window(size):
    """The CPU path (numpy's partition of contiguous windows) gives torch.median's values exactly;
    NaN propagates as in torch, and a map that needs its gradient keeps it."""
    generator = torch.Generator().manual_seed(size)
    x = torch.round(torch.rand(4, 1, 19, 23, generator=generator) * 6) / 6      # many ties
    x[0, 0, :4] = 0
    pad = size // 2
    windows = torch.nn.functional.unfold(torch.nn.functional.pad(x, (pad,) * 4, mode="reflect"), size)
    reference = windows.median(dim=1).values.view_as(x)
    assert torch.equal(median_filter(x, size), reference)
    assert torch.equal(median_filter(x.double(), size), reference.double())
    x[1, 0, 5, 5] = float("nan")
    assert median_filter(x, size)[1, 0, 5, 5].isnan() and not median_filter(x, size)[2].isnan().any()
    y = torch.rand(2, 1, 8, 8, requires_grad=True)
    median_filter(y, size).sum().backward()
    assert y.grad is not None and y.grad.sum() == pytest.approx(2 * 8 * 8)


def _phase_ratio(mean_map: np.ndarray, stride: int = 4) -> float:
    """Largest over smallest share of the map's mass on one (row mod s, column mod s) phase."""
    phases = np.array([[mean_map[a::stride, b::stride].sum() for b in range(stride)] for a in range(stride)])
    return float(phases.max() / phases.min())


def test_shift_averaged_gradients_remove_the_fixed_stride_pattern():
    """The mean gradient map of normal images from a strided trunk favours some pixel phases (fixed hot
    spots on every case); averaging over the 4 x 4 input shifts spreads the mass evenly."""
    from datasets import create_dataset
    from methods.registry import create_encoder, create_head

    torch.manual_seed(0)
    normals = create_dataset("synthetic", image_size=64, n_train=32, n_val=2, n_test=2, n_pool=0).train.images
    encoder = create_encoder("random/resnet18", in_chans=1, image_size=64)
    head = create_head("gaussian").fit(encoder.embed(normals, batch_size=32), seed=0)
    vanilla = gradient_maps(encoder, head, normals[:16], post=False).mean(axis=0)
    averaged = gradient_maps(encoder, head, normals[:16], post=False, shifts=4).mean(axis=0)
    assert _phase_ratio(vanilla) > 1.5, "the artefact this option exists for"
    assert _phase_ratio(averaged) < 1.3
    with pytest.raises(ValueError, match="shifts >= 1"):
        gradient_maps(encoder, head, normals[:2], shifts=0)


def test_view_scale_multiplies_sampling_coordinates_as_batchgenerators():
    """scale > 1 samples a larger field of view (a centred square shrinks), as CRADL's SpatialTransform."""
    from methods.encoders._augment import ViewAugment

    x = torch.zeros(1, 1, 32, 32)
    x[..., 8:24, 8:24] = 1.0
    area = {}
    for s in (0.8, 1.25):
        aug = ViewAugment(translate=0.0, rotate=0.0, scale=(s, s), brightness=(1.0, 1.0), noise=0.0)
        area[s] = float(aug(x, torch.Generator().manual_seed(0)).sum())
    assert area[1.25] < 256 < area[0.8]


def _one_head_reference(encoder, head, images, *, batch_size, shifts=1, smooth_samples=0, noise=0.1, seed=0):
    """The per-head path as it was before heads shared the encoder pass: a forward and a backward per head."""
    from datasets.base import to_float
    from methods.localization import postprocess

    encoder.eval()
    head.eval()
    generator = torch.Generator().manual_seed(seed)
    out = []
    for start in range(0, len(images), batch_size):
        x = to_float(images[start:start + batch_size], "cpu")
        maps = torch.zeros_like(x[:, :1])
        offsets = [(dy, dx) for dy in range(shifts) for dx in range(shifts)]
        for dy, dx in offsets:
            shifted = torch.roll(x, (dy, dx), dims=(2, 3))
            inputs = [shifted] if smooth_samples == 0 else [
                shifted + noise * torch.randn(x.shape, generator=generator) for _ in range(smooth_samples)]
            grad = torch.zeros_like(x)
            for noisy in inputs:
                noisy = noisy.detach().requires_grad_(True)
                (step,) = torch.autograd.grad(head(encoder(noisy)).sum(), noisy)
                grad += step / len(inputs)
            maps += torch.roll(grad.abs().mean(dim=1, keepdim=True), (-dy, -dx), dims=(2, 3)) / len(offsets)
        out.append(postprocess(maps, x)[:, 0])
    return torch.cat(out).numpy()


@pytest.mark.parametrize("options", [{}, {"shifts": 2, "smooth_samples": 1, "noise": 0.2}])
def test_heads_sharing_one_encoder_pass_give_each_heads_own_maps(options):
    """Issue 27: the maps of 3 heads made from one encoder forward pass per batch equal, to 1e-5, each
    head's maps made alone (forward + backward per head), with SmoothGrad noise and shifts too."""
    from datasets import create_dataset
    from methods.localization import gradient_maps_heads
    from methods.registry import create_encoder, create_head

    torch.manual_seed(0)
    data = create_dataset("synthetic", image_size=64, n_train=24, n_val=2, n_test=2, n_pool=0)
    encoder = create_encoder("random/resnet18", in_chans=1, image_size=64)
    z = encoder.embed(data.train.images, batch_size=24)
    heads = [create_head("gaussian").fit(z, seed=0), create_head("knn").fit(z, seed=0),
             create_head("flow", n_blocks=1, hidden_features=8, epochs=1).fit(z, seed=0)]
    shared = gradient_maps_heads(encoder, heads, data.test.images, batch_size=1, **options)
    for head, maps in zip(heads, shared):
        reference = _one_head_reference(encoder, head, data.test.images, batch_size=1, **options)
        assert maps.shape == reference.shape == (2, 64, 64) and np.abs(reference).max() > 0
        np.testing.assert_allclose(maps, reference, rtol=1e-5, atol=1e-5 * float(np.abs(reference).max()))
    differ = np.abs(shared[0] - shared[1]).max() / np.abs(shared[0]).max()
    assert differ > 1e-2, "each head gets its own maps, not the first head's"


def test_latent_detectors_on_one_memo_make_every_heads_maps_in_one_pass(monkeypatch):
    """Detectors of one encoder group fitted before predicting share one ``make_many`` call per split, and
    each gets its own head's maps (as a detector with no peers makes them)."""
    from datasets import create_dataset
    from methods.detectors.latent import LatentDetector, SplitMemo
    from methods.maps.gradient import GradientMaps
    from methods.registry import create_encoder, create_head

    torch.manual_seed(0)
    data = create_dataset("synthetic", image_size=64, n_train=24, n_val=2, n_test=4, n_pool=0)
    encoder = create_encoder("random/resnet18", in_chans=1, image_size=64)
    memo = SplitMemo()
    detectors = [LatentDetector(encoder, create_head(name), "gradient", batch_size=4, fit_encoder=False, memo=memo)
                 .fit(data.train) for name in ("gaussian", "knn")]
    calls = []
    original = GradientMaps.make_many
    monkeypatch.setattr(GradientMaps, "make_many",
                        lambda self, enc, heads, images, **kw: calls.append(len(heads)) or original(self, enc, heads,
                                                                                               images, **kw))
    shared = [d.predict(data.test.images).maps for d in detectors]
    assert calls == [2], "one call makes both heads' maps"
    for det, maps in zip(detectors, shared):
        alone = LatentDetector(encoder, det.head, "gradient", batch_size=4, fit_encoder=False).predict(data.test.images)
        assert np.abs(alone.maps).max() > 0
        np.testing.assert_allclose(maps, alone.maps, rtol=1e-5, atol=1e-5 * float(np.abs(alone.maps).max()))
