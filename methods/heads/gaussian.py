"""One Gaussian with a Ledoit-Wolf shrunk covariance: the Mahalanobis-distance head.

Why shrinkage: real embeddings have fewer samples than dimensions (100 x 512), constant and
collinear dimensions, so the empirical covariance is singular. Ledoit & Wolf (2004, "A
well-conditioned estimator for large-dimensional covariance matrices") shrink it towards a scaled
identity by the amount that minimises the expected squared error, which keeps it positive definite
whenever any feature varies. It is the single-component (K=1) version of CRADL's GMM head.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import torch
from sklearn.covariance import LedoitWolf

from methods.base import DensityHead, MethodError
from methods.registry import register_head


@register_head("gaussian")
class GaussianHead(DensityHead):
    """Squared Mahalanobis distance under a Ledoit-Wolf Gaussian (= -2 log p + const).

    ``-2 log N(z | mu, S) = (z - mu)^T S^-1 (z - mu) + log det(2 pi S)``; the second term does not
    depend on ``z``, so ranking, AUROC and gradient maps are those of the negative log-likelihood.

    Args:
        reg_covar: added to the covariance diagonal after shrinkage; it only matters in the
            degenerate case where the shrinkage target is zero (one sample, or every feature constant).
    """

    deterministic_fit = True       # closed form (mean, Ledoit-Wolf covariance): no random numbers

    def __init__(self, reg_covar: float = 1e-6, preprocess: str | None = None):
        super().__init__(preprocess)
        if reg_covar < 0:
            raise ValueError(f"gaussian head: reg_covar must be >= 0, got {reg_covar}")
        self.reg_covar = reg_covar
        self.shrinkage_: float | None = None
        self.register_buffer("location_", torch.zeros(0, dtype=torch.float64))
        self.register_buffer("precision_", torch.zeros(0, 0, dtype=torch.float64))

    def _fit(self, z: torch.Tensor, *, seed: int, device: str = "cpu", progress: bool = False) -> None:
        x = z.double().numpy()
        lw = LedoitWolf(store_precision=False).fit(x)
        covariance = lw.covariance_ + self.reg_covar * np.eye(x.shape[1])
        try:
            factor = scipy.linalg.cho_factor(covariance, lower=True)
        except np.linalg.LinAlgError as err:
            raise MethodError(f"gaussian head: shrunk covariance is not positive definite "
                              f"(N={x.shape[0]}, D={x.shape[1]}); raise reg_covar") from err
        precision = scipy.linalg.cho_solve(factor, np.eye(x.shape[1]))
        self.shrinkage_ = float(lw.shrinkage_)
        self.location_ = torch.from_numpy(lw.location_.astype(np.float64))
        self.precision_ = torch.from_numpy(0.5 * (precision + precision.T))

    def _score(self, z: torch.Tensor) -> torch.Tensor:
        # float64: distances reach 1e6 in directions the training data never moved in.
        centred = z.double() - self.location_.to(z.device)
        distance = ((centred @ self.precision_.to(z.device)) * centred).sum(-1)
        return distance.clamp_min(0.0).to(z.dtype)
