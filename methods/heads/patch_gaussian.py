"""``patch_gaussian``: one multivariate Gaussian per patch position (PaDiM).

Defard, Setkov, Loesch, Audigier, "PaDiM: a Patch Distribution Modeling Framework for Anomaly
Detection and Localization", ICPR workshops 2021 (arXiv 2011.08785): every patch position (i, j)
gets its own Gaussian N(mu_ij, Sigma_ij) of the concatenated multi-stage features, with
``Sigma + epsilon I`` (epsilon = 0.01) so the covariance stays invertible; the patch score is the
Mahalanobis distance. Stages are brought to the finest grid by nearest upsampling and a seeded
random subset of ``d_reduced`` channels is kept (100 in the paper), the PaDiM recipe.
"""

from __future__ import annotations

import torch

from methods.base import MethodError
from methods.heads._patch import PatchHead
from methods.registry import register_head


def streamed_patch_gaussians(patches, epsilon: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``[P, d]`` and precision ``[P, d, d]`` of each position from ``[B, P, d]`` batches.

    Float64 running sums (the estimator of ``np.cov``), so memory is O(P d^2) however many images
    there are; ``einsum('bpi,bpj->pij')`` is a batched matmul, never a ``[B, P, d, d]`` tensor.
    """
    n, sum_x, sum_xx = 0, None, None
    for emb in patches:
        emb = emb.double()
        bx, bxx = emb.sum(0), torch.einsum("bpi,bpj->pij", emb, emb)
        sum_x, sum_xx = (bx, bxx) if sum_x is None else (sum_x + bx, sum_xx + bxx)
        n += len(emb)
    if n < 2:
        raise MethodError(f"patch_gaussian: needs at least 2 training images for a covariance, got {n}")
    mean = sum_x / n
    cov = (sum_xx - n * mean[:, :, None] * mean[:, None, :]) / (n - 1)
    cov = cov + epsilon * torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
    return mean.float(), torch.linalg.inv(cov).float()


def mahalanobis(diff: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
    """``sqrt(diff^T P diff)`` over the last axis; ``precision`` is ``[d, d]`` or ``[P, d, d]``."""
    eq = "bpi,ij->bpj" if precision.ndim == 2 else "bpi,pij->bpj"
    return (torch.einsum(eq, diff, precision) * diff).sum(-1).clamp_min(0).sqrt()


@register_head("patch_gaussian", tiny=dict(d_reduced=16))
class PatchGaussianHead(PatchHead):
    """A Gaussian per patch position, Mahalanobis distance per patch (PaDiM).

    Args:
        epsilon: covariance regulariser (0.01, the paper's).
        d_reduced: random channel subset (PaDiM's 100 by default here); see :class:`PatchHead`.
    """

    deterministic_fit = True       # closed-form Gaussians; a ``d_reduced`` channel subset makes it seeded

    def __init__(self, *, epsilon: float = 0.01, d_reduced: int | None = 100, **kwargs):
        super().__init__(d_reduced=d_reduced, **kwargs)
        if epsilon < 0:
            raise MethodError(f"patch_gaussian: epsilon must be >= 0, got {epsilon}")
        self.epsilon = epsilon

    def _fit(self, patches, *, seed, device, progress) -> None:
        self.mean_, self.precision_ = streamed_patch_gaussians(patches(), self.epsilon)

    def _score(self, emb: torch.Tensor) -> torch.Tensor:
        if emb.shape[1] != self.mean_.shape[0]:
            raise MethodError(f"patch_gaussian: fitted on {self.mean_.shape[0]} patch positions, got {emb.shape[1]} "
                              "(a different image size?)")
        return mahalanobis(emb - self.mean_.to(emb), self.precision_.to(emb))
