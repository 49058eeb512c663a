"""Feature preprocessing before a density head: an option of every head and an axis of the study.

Why an axis and not a constant: standardising each dimension with training statistics (CRADL's
rule) inflates near-constant dimensions of frozen ImageNet features; on real brain MRI it cost a
Ledoit-Wolf Gaussian 0.05 image AUROC. So the choice is measured, per head and per dataset:

* ``none``: the features as the encoder gives them.
* ``standardize``: z-score every dimension (CRADL); constant dimensions keep unit scale.
* ``l2``: every vector to unit Euclidean norm (cosine geometry; common for contrastive features).
* ``pca_whiten``: rotate onto the principal axes, keep the components that explain ``variance``
  (99 %) of the training variance, scale each to unit variance, and append one coordinate: the
  norm of the residual outside the kept subspace over the root of the mean discarded eigenvalue
  (the PPCA noise variance). That coordinate is DFM's feature reconstruction error (Ahuja et al.
  2019): without it a vector displaced orthogonally to the training span whitens to almost zero
  and its anomaly is invisible to every head. ``D`` features become ``D' + 1``.

The statistics are accumulated as streamed float64 moments, so patch heads can fit them over
millions of patch vectors without holding them (:meth:`FeaturePreprocessor.update`).
"""

from __future__ import annotations

import torch
from torch import nn

from methods.errors import MethodError


PREPROCESSING = ("none", "standardize", "l2", "pca_whiten")


def check_preprocess(value: str, who: str) -> str:
    if value not in PREPROCESSING:
        raise _error(f"{who}: preprocess='{value}' is not one of {PREPROCESSING}")
    return value


def _error(message: str) -> Exception:
    return MethodError(message)


class FeaturePreprocessor(nn.Module):
    """Fitted on training vectors ``[..., D]``; ``forward`` maps ``[..., D]`` to ``[..., D']``.

    Use ``fit(z)`` for a tensor in memory, or ``update(batch)`` repeatedly then ``finish()``.
    Differentiable (gradient maps pass through it).
    """

    def __init__(self, method: str = "none", variance: float = 0.99):
        super().__init__()
        self.method = check_preprocess(method, "preprocess")
        if not 0.0 < variance <= 1.0:
            raise _error(f"preprocess: variance must be in (0, 1], got {variance}")
        self.variance = variance
        self.register_buffer("shift_", torch.zeros(0))
        self.register_buffer("projection_", torch.zeros(0, 0))   # [D, D'] (diagonal scale as a matrix)
        self.register_buffer("basis_", torch.zeros(0, 0))        # pca_whiten: [D, D'] kept principal axes
        self.register_buffer("residual_scale_", torch.zeros(0))  # pca_whiten: 1 / sqrt(noise variance)
        self._n = 0
        self._sum = self._outer = None

    @property
    def needs_statistics(self) -> bool:
        return self.method in ("standardize", "pca_whiten")

    def update(self, z: torch.Tensor) -> None:
        """Add a batch of training vectors ``[..., D]`` to the streamed moments."""
        z = z.detach().reshape(-1, z.shape[-1]).double()
        if self._sum is None:
            self._sum = torch.zeros(z.shape[1], dtype=torch.float64, device=z.device)
            self._outer = torch.zeros(z.shape[1], z.shape[1], dtype=torch.float64, device=z.device) \
                if self.method == "pca_whiten" else torch.zeros(z.shape[1], dtype=torch.float64, device=z.device)
        self._n += len(z)
        self._sum += z.sum(0)
        self._outer += z.T @ z if self.method == "pca_whiten" else z.pow(2).sum(0)

    def finish(self) -> "FeaturePreprocessor":
        if not self.needs_statistics:
            return self
        if self._n < 2:
            raise _error(f"preprocess={self.method}: needs at least 2 training vectors, got {self._n}")
        n, mean = self._n, self._sum / self._n
        if self.method == "standardize":
            var = (self._outer - n * mean.pow(2)) / (n - 1)
            std = var.clamp_min(0).sqrt()
            std = torch.where(std > 1e-6 * std.max().clamp_min(1e-12), std, torch.ones_like(std))
            projection = torch.diag(1.0 / std)
        else:
            cov = (self._outer - n * torch.outer(mean, mean)) / (n - 1)
            eigval, eigvec = torch.linalg.eigh(0.5 * (cov + cov.T))
            eigval, eigvec = eigval.flip(0).clamp_min(0), eigvec.flip(1)
            total = eigval.sum()
            if total <= 0:
                raise _error("preprocess=pca_whiten: the training features do not vary")
            keep = int(torch.searchsorted(torch.cumsum(eigval, 0) / total,
                                          torch.tensor(self.variance, dtype=eigval.dtype, device=eigval.device)).item()) + 1
            keep = min(keep, int((eigval > 1e-10 * eigval[0]).sum()))
            projection = eigvec[:, :keep] / eigval[:keep].sqrt()
            # PPCA's isotropic noise variance: the mean discarded eigenvalue, floored so that
            # features lying exactly in a subspace do not divide by zero
            discarded = eigval[keep:].mean() if keep < len(eigval) else eigval.new_zeros(())
            noise = torch.maximum(discarded, 1e-6 * eigval[0])
            self.basis_, self.residual_scale_ = eigvec[:, :keep].float(), noise.rsqrt().reshape(1).float()
        self.shift_, self.projection_ = mean.float(), projection.float()
        self._sum = self._outer = None
        return self

    def fit(self, z: torch.Tensor) -> "FeaturePreprocessor":
        if self.needs_statistics:
            self.update(z)
        return self.finish()

    @property
    def out_dim(self) -> int | None:
        if not self.projection_.numel():
            return None
        return int(self.projection_.shape[1]) + (self.method == "pca_whiten")

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.method == "none":
            return z
        if self.method == "l2":
            return torch.nn.functional.normalize(z, dim=-1)
        if self.projection_.numel() == 0:
            raise _error(f"preprocess={self.method} is used before it was fitted")
        z = z - self.shift_.to(z)
        if self.method == "standardize":
            return z * torch.diagonal(self.projection_).to(z)
        basis = self.basis_.to(z)
        residual = z - (z @ basis) @ basis.T
        distance = torch.linalg.vector_norm(residual, dim=-1, keepdim=True) * self.residual_scale_.to(z)
        return torch.cat([z @ self.projection_.to(z), distance], dim=-1)
