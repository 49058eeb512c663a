"""Pixel anomaly maps for encoder x head pairs: CRADL's gradient maps and reconstruction errors.

CRADL (Lüth et al. 2022) localises with the input gradient of the latent NLL,
|d NLL(f(x)) / dx|, then masks the background (x != 0), applies a 5x5 median filter (reflect
padding, ``MedianPool2d(same=True)``) and a 7x7 Gaussian with sigma 3 whose convolution pads with
**zeros** (``smooth_tensor`` in ``data_aug/square_noise.py``: ``Conv2d(padding=k // 2)``). Dropping
that post-processing changes pixel AP and Dice a lot, so it is the default for every map this
module makes; ``post=False`` gives the raw map.

**Fixed hot spots of strided trunks.** The input gradient of a network with stride-2 convolutions
or pooling is aliased: each output unit sees the input through the stride grid, so the gradient
concentrates on the same few pixel phases for every image (bright dots at fixed positions for
SimCLR's ResNet trunk; one central blob when the last stage is 2x2, as MSACL's ImageNet stem at
64 px). ``gradient_maps(..., smooth_samples=K, noise=sigma)`` averages the gradient over K noisy
copies of the input before taking the absolute value (SmoothGrad, Smilkov et al. 2017, "SmoothGrad:
removing noise by adding noise"; CRADL's own ``get_smooth_image_gradient`` with ``n_runs=20,
eps=0.1``), and ``shifts=s`` averages the absolute gradient over the s x s cyclic shifts of the
input (shifted back), so every pixel is seen at every phase of the stride grid: measured on an
untrained ResNet-18 at 64 px, the mean map's energy per (row mod 4, column mod 4) phase varies
about 2x without it and evenly with ``shifts=4``, while SmoothGrad alone (K=8, sigma 0.3) barely
changes it (``tests/test_localization.py``). The defaults (``smooth_samples=0, shifts=1``) are
CRADL's evaluation setting, one vanilla gradient.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms.functional import gaussian_blur

from datasets.base import to_float


def median_filter(x: torch.Tensor, size: int = 5) -> torch.Tensor:
    """Same-size median filter with reflect padding over ``[N, 1, H, W]`` (odd ``size``).

    On the CPU each pixel's window is one contiguous row of ``size²`` values and numpy's partition
    picks its middle: about 3x faster than ``torch.median`` across the unfolded window axis (it was
    most of a head's map time after its backward pass), and the same values, since a median is one
    of the window's values. NaN (which ``torch.median`` propagates), other devices and dtypes numpy
    lacks, or a map that needs its gradient take the torch path.
    """
    pad = size // 2
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    middle = (size * size - 1) // 2
    if (size % 2 and x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)
            and not x.requires_grad and not torch.isnan(x).any()):
        windows = np.lib.stride_tricks.sliding_window_view(padded.numpy(), (size, size), axis=(2, 3))
        rows = windows.reshape(*x.shape, size * size)                              # [N, C, H, W, size²]
        return torch.from_numpy(np.ascontiguousarray(np.partition(rows, middle, axis=-1)[..., middle]))
    patches = F.unfold(padded, size)                                               # [N, size², H*W]
    return patches.median(dim=1).values.view_as(x)


def gaussian_filter(x: torch.Tensor, sigma: float = 3.0, size: int = 7) -> torch.Tensor:
    """CRADL's ``smooth_tensor``: a ``size`` x ``size`` Gaussian over ``[N, 1, H, W]`` with zero padding.

    torchvision's ``gaussian_blur`` pads by reflection; padding with zeros first and cropping
    keeps every output pixel's window inside the zero border, which is exactly a zero-padded
    convolution.
    """
    pad = size // 2
    blurred = gaussian_blur(F.pad(x, (pad, pad, pad, pad)), kernel_size=[size, size], sigma=[sigma, sigma])
    return blurred[..., pad:pad + x.shape[-2], pad:pad + x.shape[-1]]


def postprocess(maps: torch.Tensor, images: torch.Tensor, *, median: int = 5, sigma: float = 3.0,
                kernel: int = 7) -> torch.Tensor:
    """CRADL's order: foreground mask (any channel != 0) -> median -> Gaussian. ``[N, 1, H, W]``."""
    foreground = (images != 0).any(dim=1, keepdim=True)
    maps = maps * foreground
    if median:
        maps = median_filter(maps, median)
    if sigma:
        maps = gaussian_filter(maps, sigma, kernel)
    return maps


def gradient_maps(encoder: torch.nn.Module, head: torch.nn.Module, images: np.ndarray, *,
                  batch_size: int = 64, device: str = "cpu", post: bool = True, smooth_samples: int = 0,
                  noise: float = 0.1, shifts: int = 1, seed: int = 0) -> np.ndarray:
    """``|d head(encoder(x)) / dx|`` per pixel (mean over channels), ``[N, H, W]`` float32.

    Both modules are in eval mode, so BatchNorm uses running statistics and a sample's map does
    not depend on the rest of its batch. ``smooth_samples=K > 0`` averages the signed gradient over
    K copies of ``x`` with Gaussian noise of std ``noise`` (images in [0, 1]) before the absolute
    value (SmoothGrad; see the module docstring); the noise is seeded by ``seed``. ``shifts=s > 1``
    averages the absolute gradient over the ``s x s`` cyclic shifts of the input by 0..s-1 pixels,
    each shifted back: every pixel is seen at every phase of a stride-``s`` grid, which removes the
    fixed hot spots of strided trunks (``s`` = the trunk's total stride up to the stage that
    dominates, 4 is enough for the ResNet stems here; cost x s²).
    """
    return gradient_maps_heads(encoder, [head], images, batch_size=batch_size, device=device, post=post,
                               smooth_samples=smooth_samples, noise=noise, shifts=shifts, seed=seed)[0]


def gradient_maps_heads(encoder: torch.nn.Module, heads: list, images: np.ndarray, *, batch_size: int = 64,
                        device: str = "cpu", post: bool = True, smooth_samples: int = 0, noise: float = 0.1,
                        shifts: int = 1, seed: int = 0) -> list[np.ndarray]:
    """:func:`gradient_maps` of several heads on one encoder, one list entry per head.

    Why: the encoder's forward pass is the same for every head, so it runs once per batch (and per
    shift and noisy copy) with its graph kept, and each head adds only its own backward pass; the
    maps equal those of separate :func:`gradient_maps` calls (same inputs, same noise, same ops).
    """
    if smooth_samples < 0 or noise < 0 or shifts < 1:
        raise ValueError(f"smooth_samples and noise must be >= 0 and shifts >= 1, got {smooth_samples}, {noise}, "
                         f"{shifts}")
    encoder.eval().to(device)
    for head in heads:
        head.eval().to(device)
    generator = torch.Generator().manual_seed(seed)
    out: list[list[torch.Tensor]] = [[] for _ in heads]
    last = len(heads) - 1
    for start in range(0, len(images), batch_size):
        x = to_float(images[start:start + batch_size], device)
        maps = [torch.zeros_like(x[:, :1]) for _ in heads]
        offsets = [(dy, dx) for dy in range(shifts) for dx in range(shifts)]
        for dy, dx in offsets:
            shifted = torch.roll(x, (dy, dx), dims=(2, 3))
            inputs = [shifted] if smooth_samples == 0 else [
                shifted + noise * torch.randn(x.shape, generator=generator).to(device) for _ in range(smooth_samples)]
            grads = [torch.zeros_like(x) for _ in heads]
            for noisy in inputs:
                noisy = noisy.detach().requires_grad_(True)
                z = encoder(noisy)                          # once for every head
                for i, head in enumerate(heads):
                    (step,) = torch.autograd.grad(head(z).sum(), noisy, retain_graph=i < last)
                    grads[i] += step / len(inputs)
            for i, grad in enumerate(grads):
                maps[i] += torch.roll(grad.abs().mean(dim=1, keepdim=True), (-dy, -dx), dims=(2, 3)) / len(offsets)
        for i, head_maps in enumerate(maps):
            if post:
                head_maps = postprocess(head_maps, x)
            out[i].append(head_maps[:, 0].float().cpu())
    return [torch.cat(parts).numpy() for parts in out]


@torch.no_grad()
def reconstruction_maps(encoder: torch.nn.Module, images: np.ndarray, *, batch_size: int = 128,
                        device: str = "cpu", post: bool = True) -> np.ndarray:
    """Squared reconstruction error per pixel (mean over channels) for encoders with ``reconstruct``."""
    encoder.eval().to(device)
    out = []
    for start in range(0, len(images), batch_size):
        x = to_float(images[start:start + batch_size], device)
        maps = (encoder.reconstruct(x) - x).pow(2).mean(dim=1, keepdim=True)
        if post:
            maps = postprocess(maps, x)
        out.append(maps[:, 0].float().cpu())
    return torch.cat(out).numpy()
