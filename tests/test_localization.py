"""Map post-processing as CRADL's code does it, and the stride artefact of gradient maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from methods.localization import gaussian_filter, gradient_maps


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
