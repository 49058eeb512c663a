"""Gaussian mixture head: CRADL's GMM (Lüth et al., 2023, arXiv:2301.02126) via scikit-learn.

Fitted with :class:`sklearn.mixture.GaussianMixture` and then re-implemented in torch (log-density
from ``means_``, ``precisions_cholesky_`` and ``weights_``, combined with ``logsumexp``), because
CRADL's pixel maps are ``|d(-log p(f(x))) / dx|`` and sklearn's ``score_samples`` has no gradient.

Known differences from CRADL's own torch GMM (``latent_gen/gmm_general.py``):

* initialisation: sklearn starts from k-means labels; CRADL starts from U[0, 1) means and identity
  covariances and runs an identity-covariance ("k-means-like") EM phase before full-covariance EM;
* CRADL's M-step forms the scatter from ``(x - mu) * w`` and divides by ``sum(w)``, which squares
  the responsibilities; sklearn is textbook EM. Identical for K=1, different for K>1;
* stopping: sklearn uses ``tol`` on the lower bound and ``max_iter``; CRADL |d mean log-lik| < 1e-2;
* regularisation: ``reg_covar`` is relative to the mean feature variance (CRADL standardises first,
  where the two agree up to the mean variance of 1).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from sklearn.mixture import GaussianMixture

from methods.base import DensityHead, MethodError
from methods.registry import register_head

MAX_REG_COVAR = 1e-1


@register_head("gmm", tiny=dict(max_iter=5, n_components=2))
class GMMHead(DensityHead):
    """Gaussian mixture (full covariances); score = -log p(z), differentiable in torch.

    ``reg_covar`` is *relative to the feature scale*: sklearn adds ``reg_covar x`` the mean
    per-dimension variance of the training features to every covariance diagonal (kept in
    ``covar_floor_``). Why: sklearn's ``reg_covar`` is absolute, so raw features with values ~1e-3
    were swamped by it and features ~1e3 went singular; relative, the head behaves the same under
    any rescaling of the features, which ``preprocess="none"`` (the default) needs.
    When sklearn reports an ill-defined covariance (fewer samples than dimensions, collapsed
    components), ``reg_covar`` is raised x10 up to 1e-1 with a warning; the relative value actually
    used is kept in ``reg_covar_``. ``n_components`` is clamped to the number of samples (``n_components_``).
    """

    def __init__(self, n_components: int = 4, covariance_type: str = "full", reg_covar: float = 1e-5,
                 max_iter: int = 200, n_init: int = 1, tol: float = 1e-3, preprocess: str | None = None):
        super().__init__(preprocess)
        if covariance_type != "full":
            raise ValueError(f"gmm head: only covariance_type='full' is implemented in torch, "
                             f"got {covariance_type!r}")
        if n_components < 1:
            raise ValueError(f"gmm head: n_components must be >= 1, got {n_components}")
        if not 0 < reg_covar <= MAX_REG_COVAR:
            raise ValueError(f"gmm head: reg_covar must be in (0, {MAX_REG_COVAR}], got {reg_covar}")
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.tol = tol
        self.n_components_: int | None = None
        self.reg_covar_: float | None = None
        self.covar_floor_: float | None = None
        self.converged_: bool | None = None
        self.register_buffer("means_", torch.zeros(0, 0, dtype=torch.float64))
        self.register_buffer("precisions_cholesky_", torch.zeros(0, 0, 0, dtype=torch.float64))
        self.register_buffer("weights_", torch.zeros(0, dtype=torch.float64))

    def _fit(self, z: torch.Tensor, *, seed: int, device: str = "cpu", progress: bool = False) -> None:
        n, d = z.shape
        if n < 2:
            raise MethodError(f"gmm head: needs at least 2 training embeddings, got {n}")
        k = self.n_components
        if k > n:
            warnings.warn(f"gmm head: n_components={k} > {n} training samples; using {n}", stacklevel=3)
            k = n
        x = z.double().numpy()
        scale = float(x.var(0).mean())
        scale = scale if scale > 0 else 1.0          # constant features: nothing to be relative to
        reg, last_error = self.reg_covar, None
        while reg <= MAX_REG_COVAR * (1 + 1e-9):
            mixture = GaussianMixture(n_components=k, covariance_type="full", reg_covar=reg * scale,
                                      max_iter=self.max_iter, n_init=self.n_init, tol=self.tol,
                                      random_state=seed)
            try:
                mixture.fit(x)
                break
            except (ValueError, np.linalg.LinAlgError) as err:
                last_error = err
                reg *= 10
                if reg <= MAX_REG_COVAR * (1 + 1e-9):
                    warnings.warn(f"gmm head: fit failed (K={k}, N={n}, D={d}): "
                                  f"{str(err).splitlines()[0]}; retrying with reg_covar={reg:g}",
                                  stacklevel=3)
        else:
            raise MethodError(f"gmm head: GaussianMixture failed for K={k}, N={n}, D={d} even with "
                              f"reg_covar={MAX_REG_COVAR:g}: {last_error}") from last_error
        self.n_components_ = k
        self.reg_covar_ = reg
        self.covar_floor_ = reg * scale
        self.converged_ = bool(mixture.converged_)
        self.means_ = torch.from_numpy(mixture.means_.astype(np.float64))
        self.precisions_cholesky_ = torch.from_numpy(mixture.precisions_cholesky_.astype(np.float64))
        self.weights_ = torch.from_numpy(mixture.weights_.astype(np.float64))

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """``log p(z)`` of preprocessed features in float64 (equals sklearn's ``score_samples``)."""
        x = z.double()
        means = self.means_.to(x.device)
        prec_chol = self.precisions_cholesky_.to(x.device)
        log_det = torch.log(torch.diagonal(prec_chol, dim1=-2, dim2=-1)).sum(-1)     # [K]
        squared = torch.stack([((x - means[j]) @ prec_chol[j]).square().sum(-1)
                               for j in range(len(means))], dim=1)                    # [N, K]
        log_gauss = -0.5 * (x.shape[1] * math.log(2 * math.pi) + squared) + log_det
        return torch.logsumexp(log_gauss + torch.log(self.weights_.to(x.device)), dim=1)

    def _score(self, z: torch.Tensor) -> torch.Tensor:
        return (-self.log_prob(z)).to(z.dtype)
