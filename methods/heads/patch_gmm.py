"""``patch_gmm``: a Gaussian mixture over the patch vectors of all positions.

The mixture generalises ``patch_gaussian_shared`` to several tissue types (CRADL's GMM head,
Lüth et al. 2023, arXiv 2301.02126, applied per patch instead of per image): background, skull and
parenchyma patches each get components instead of being forced into one ellipsoid. Fitted with
scikit-learn's EM on ``patches_per_image`` seeded random patches of every training image; the
patch score is the negative log-likelihood.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.mixture import GaussianMixture

from methods.base import MethodError
from methods.heads._patch import PatchHead
from methods.heads._sampling import sample_patches
from methods.registry import register_head


@register_head("patch_gmm", tiny=dict(n_components=2, patches_per_image=16, d_reduced=16, max_iter=5))
class PatchGMMHead(PatchHead):
    """Full-covariance GMM (scikit-learn) over patch vectors; score = -log p.

    Args:
        n_components: mixture size (4); reg_covar: added to every covariance diagonal.
        patches_per_image: random patches per training image used for EM (None: all).
        max_iter: EM iterations; d_reduced: random channel subset (50 by default: EM cost grows with d^2).
    """

    def __init__(self, *, n_components: int = 4, reg_covar: float = 1e-3, patches_per_image: int | None = 64,
                 max_iter: int = 100, d_reduced: int | None = 50, **kwargs):
        super().__init__(d_reduced=d_reduced, **kwargs)
        if n_components < 1:
            raise MethodError(f"patch_gmm: n_components must be >= 1, got {n_components}")
        self.n_components = n_components
        self.reg_covar = reg_covar
        self.patches_per_image = patches_per_image
        self.max_iter = max_iter

    def _fit(self, patches, *, seed, device, progress) -> None:
        vectors, _ = sample_patches(patches(), self.patches_per_image, torch.Generator().manual_seed(seed))
        x = vectors.double().cpu().numpy()
        if len(x) < self.n_components:
            raise MethodError(f"patch_gmm: {len(x)} training patches for {self.n_components} components")
        self.gmm_ = GaussianMixture(self.n_components, covariance_type="full", reg_covar=self.reg_covar,
                                    max_iter=self.max_iter, random_state=seed % 2**32).fit(x)

    def _score(self, emb: torch.Tensor) -> torch.Tensor:
        flat = emb.flatten(0, 1).double().cpu().numpy()
        nll = -self.gmm_.score_samples(flat)
        return torch.from_numpy(np.ascontiguousarray(nll)).to(emb.device).float().view(len(emb), -1)
