"""``patch_gaussian_shared``: one Gaussian for the patch vectors of every position.

The position-free counterpart of PaDiM (Defard et al. 2021): images whose anatomy is not aligned
(ultrasound, shifted heads) break PaDiM's assumption that position (i, j) always shows the same
structure; a single Gaussian pools all positions, so it needs far fewer images per parameter
(one d x d covariance instead of P of them). Same regulariser and distance as ``patch_gaussian``.
"""

from __future__ import annotations

import torch

from methods.base import MethodError
from methods.heads._patch import PatchHead
from methods.heads.patch_gaussian import mahalanobis, streamed_patch_gaussians
from methods.registry import register_head


@register_head("patch_gaussian_shared", tiny=dict(d_reduced=16))
class SharedPatchGaussianHead(PatchHead):
    """One Gaussian over all patch vectors (``Sigma + epsilon I``), Mahalanobis distance per patch."""

    deterministic_fit = True       # closed-form Gaussians; a ``d_reduced`` channel subset makes it seeded

    def __init__(self, *, epsilon: float = 0.01, d_reduced: int | None = 100, **kwargs):
        super().__init__(d_reduced=d_reduced, **kwargs)
        if epsilon < 0:
            raise MethodError(f"patch_gaussian_shared: epsilon must be >= 0, got {epsilon}")
        self.epsilon = epsilon

    def _fit(self, patches, *, seed, device, progress) -> None:
        # every patch is one sample of the shared distribution: fold positions into the batch axis
        mean, precision = streamed_patch_gaussians((emb.reshape(-1, 1, emb.shape[-1]) for emb in patches()),
                                                   self.epsilon)
        self.mean_, self.precision_ = mean[0], precision[0]

    def _score(self, emb: torch.Tensor) -> torch.Tensor:
        return mahalanobis(emb - self.mean_.to(emb), self.precision_.to(emb))
