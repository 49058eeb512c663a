"""Density heads: one generic test set over every registered head, then head-specific checks.

The generic tests read ``list_heads()``, so a new file under ``methods/heads/`` is covered without
editing this file; ``FAST_KWARGS`` only shrinks heads that would be slow at default settings.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.covariance import LedoitWolf
from sklearn.metrics import roc_auc_score
from sklearn.mixture import GaussianMixture

from methods.base import MethodError
from methods.registry import create_head, list_heads

FAST_KWARGS: dict[str, dict] = {
    "flow": dict(epochs=3, n_blocks=2, hidden_features=32),
}

N_TRAIN, DIM = 48, 64  # fewer samples than dimensions, as with 100 embeddings of 512-d


def awkward_features(n: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    """Gaussian features with a constant and a collinear column, optionally shifted (outliers)."""
    z = torch.randn(n, DIM, generator=torch.Generator().manual_seed(seed))
    z[:, 0] = 3.0
    z[:, 1] = 2.0 * z[:, 2] + 1.0
    return z + shift


def make_head(name: str, **overrides):
    """The density models under test see z-scored features (``preprocess`` has its own tests below)."""
    return create_head(name, **{"preprocess": "standardize", **FAST_KWARGS.get(name, {}), **overrides})


def fitted(name: str, seed: int = 0):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # clamping/retry warnings are tested per head
        return make_head(name).fit(awkward_features(N_TRAIN, seed=1), seed=seed)


HEADS = list_heads(dense=False)     # patch heads take feature maps: tests/test_patch_heads.py


def test_the_documented_heads_are_registered():
    assert {"gaussian", "gmm", "flow", "knn"} <= set(HEADS)


@pytest.mark.parametrize("name", HEADS)
def test_scores_are_finite_and_differentiable(name):
    head = fitted(name)
    z = awkward_features(20, seed=2).requires_grad_(True)
    scores = head(z)
    assert scores.shape == (20,) and scores.dtype == torch.float32
    assert torch.isfinite(scores).all()
    scores.sum().backward()
    assert torch.isfinite(z.grad).all()
    assert z.grad.abs().sum() > 0
    numpy_scores = head.score(z.detach())
    assert isinstance(numpy_scores, np.ndarray) and numpy_scores.shape == (20,)
    np.testing.assert_allclose(numpy_scores, scores.detach().numpy(), rtol=1e-5)


@pytest.mark.parametrize("name", HEADS)
def test_shifted_points_score_higher(name):
    head = fitted(name)
    inliers, outliers = awkward_features(40, seed=3), awkward_features(40, seed=4, shift=1.5)
    scores = head.score(torch.cat([inliers, outliers]))
    assert roc_auc_score(np.r_[np.zeros(40), np.ones(40)], scores) > 0.9


@pytest.mark.parametrize("name", HEADS)
def test_fit_is_deterministic_given_the_seed(name):
    query = awkward_features(10, seed=5)
    first, second = fitted(name, seed=7).score(query), fitted(name, seed=7).score(query)
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("name", HEADS)
def test_non_finite_training_features_raise(name):
    z = awkward_features(N_TRAIN, seed=1)
    z[3, 5] = float("nan")
    with pytest.raises(MethodError, match="NaN"):
        make_head(name).fit(z, seed=0)


@pytest.mark.parametrize("name", HEADS)
def test_scoring_before_fit_raises(name):
    with pytest.raises(MethodError, match="before fit"):
        make_head(name)(torch.zeros(2, DIM))


# -- gaussian -----------------------------------------------------------------------------------
def test_gaussian_is_mahalanobis_under_ledoit_wolf_when_n_below_d():
    z = awkward_features(N_TRAIN, seed=1)
    head = create_head("gaussian").fit(z, seed=0)
    standardised = head.preprocessor(z).double().numpy()
    lw = LedoitWolf().fit(standardised)
    assert 0 < head.shrinkage_ <= 1 and head.shrinkage_ == pytest.approx(lw.shrinkage_)
    assert np.linalg.eigvalsh(head.precision_.numpy()).min() > 0
    query = awkward_features(6, seed=9)
    centred = head.preprocessor(query).double().numpy() - lw.location_
    expected = np.einsum("nd,de,ne->n", centred, np.linalg.inv(lw.covariance_), centred)
    np.testing.assert_allclose(head.score(query), expected, rtol=1e-4)


# -- gmm ----------------------------------------------------------------------------------------
def test_gmm_torch_log_density_equals_sklearn():
    rng = np.random.default_rng(0)
    z = torch.from_numpy(np.concatenate([rng.normal(0, 1, (150, 6)), rng.normal(4, 0.5, (150, 6))]))
    head = create_head("gmm", n_components=3).fit(z, seed=3)
    standardised = head.preprocessor(z).numpy()
    relative = 1e-5 * standardised.var(0).mean()           # reg_covar is relative to the feature scale
    reference = GaussianMixture(3, covariance_type="full", reg_covar=relative, max_iter=200,
                                random_state=3).fit(standardised)
    query = torch.from_numpy(rng.normal(2, 2, (50, 6)))
    expected = reference.score_samples(head.preprocessor(query).numpy())
    np.testing.assert_allclose(-head(query).detach().numpy(), expected, atol=1e-4, rtol=0)
    assert head.reg_covar_ == 1e-5 and head.covar_floor_ == pytest.approx(relative) and head.n_components_ == 3


def test_gmm_clamps_components_to_the_sample_count():
    with pytest.warns(UserWarning, match="n_components=4"):
        head = create_head("gmm", n_components=4).fit(awkward_features(3, seed=1), seed=0)
    assert head.n_components_ == 3


class _FailsBelow(GaussianMixture):
    """A GaussianMixture that reports an ill-defined covariance unless reg_covar is large."""

    threshold = 1e-3

    def fit(self, X, y=None):
        if self.reg_covar < self.threshold * (1 - 1e-9):
            raise ValueError("Fitting the mixture model failed because some components have "
                             "ill-defined empirical covariance")
        return super().fit(X, y)


def test_gmm_raises_reg_covar_until_the_fit_succeeds(monkeypatch):
    import methods.heads.gmm as gmm_module

    monkeypatch.setattr(gmm_module, "GaussianMixture", _FailsBelow)
    with pytest.warns(UserWarning, match="retrying with reg_covar"):
        head = create_head("gmm", n_components=2).fit(awkward_features(N_TRAIN, seed=1), seed=0)
    assert head.reg_covar_ == pytest.approx(1e-3)
    assert torch.isfinite(head(awkward_features(4, seed=2))).all()


def test_gmm_names_head_k_n_d_when_no_regularisation_helps(monkeypatch):
    import methods.heads.gmm as gmm_module

    monkeypatch.setattr(_FailsBelow, "threshold", 1.0)
    monkeypatch.setattr(gmm_module, "GaussianMixture", _FailsBelow)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(MethodError, match=rf"gmm.*K=2, N={N_TRAIN}, D={DIM}"):
            create_head("gmm", n_components=2).fit(awkward_features(N_TRAIN, seed=1), seed=0)


# -- flow ---------------------------------------------------------------------------------------
def test_flow_divergence_raises_instead_of_returning_nan():
    with pytest.raises(MethodError, match="diverged at epoch"):
        make_head("flow", lr=1e6, epochs=20).fit(awkward_features(N_TRAIN, seed=1), seed=0)


def test_flow_training_lowers_the_nll():
    head = make_head("flow", epochs=15).fit(awkward_features(N_TRAIN, seed=1), seed=0)
    assert len(head.loss_history_) == 15
    assert head.loss_history_[-1] < head.loss_history_[0] - 1.0


def test_untrained_flow_is_the_standard_normal():
    from methods.heads.flow import build_glow_flow

    torch.manual_seed(0)
    flow = build_glow_flow(7, n_blocks=2, hidden_features=16, clamp=2.0)
    x = torch.randn(5, 7)
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(x).sum(1)
    torch.testing.assert_close(flow.log_prob(x), expected)


def test_coupling_fast_path_matches_nflows_and_soft_clamps(monkeypatch):
    from methods.heads.flow import SoftClampAffineCoupling, build_glow_flow

    torch.manual_seed(0)
    flow = build_glow_flow(9, n_blocks=2, hidden_features=16, clamp=2.0).double()
    for parameter in flow.parameters():  # move away from the identity initialisation
        torch.nn.init.normal_(parameter, std=0.3)
    x = torch.randn(6, 9, dtype=torch.float64)
    fast_z, fast_logdet = flow._transform(x)
    restored, inverse_logdet = flow._transform.inverse(fast_z)
    torch.testing.assert_close(restored, x)
    torch.testing.assert_close(inverse_logdet, -fast_logdet)
    monkeypatch.setattr(SoftClampAffineCoupling, "_split", lambda self, inputs: (None, None))
    slow_z, slow_logdet = flow._transform(x)
    torch.testing.assert_close(fast_z, slow_z)
    torch.testing.assert_close(fast_logdet, slow_logdet)
    coupling = next(m for m in flow.modules() if isinstance(m, SoftClampAffineCoupling))
    log_scale, _ = coupling._log_scale_and_shift(torch.full((1, 2 * coupling.num_transform_features), 1e6))
    assert (log_scale <= 2.0).all() and (log_scale > 1.9).all()


# -- knn ----------------------------------------------------------------------------------------
def test_knn_is_mean_distance_to_nearest_training_points_in_any_chunking():
    z, query = awkward_features(N_TRAIN, seed=1), awkward_features(23, seed=2)
    head = create_head("knn", k=3, chunk_size=5).fit(z, seed=0)
    distances = torch.cdist(head.preprocessor(query), head.preprocessor(z))
    expected = distances.topk(3, largest=False).values.mean(1)
    np.testing.assert_allclose(head.score(query), expected.numpy(), rtol=1e-5)


def test_knn_subsamples_training_set_with_the_seed_and_clamps_k():
    z = awkward_features(N_TRAIN, seed=1)
    first = create_head("knn", max_train=10).fit(z, seed=4)
    second = create_head("knn", max_train=10).fit(z, seed=4)
    assert first.train_.shape == (10, DIM) and torch.equal(first.train_, second.train_)
    with pytest.warns(UserWarning, match="k=5"):
        small = create_head("knn").fit(z[:3], seed=0)
    assert small.k_ == 3


# -- feature preprocessing (an option of every head) ---------------------------------------------
def test_preprocessing_options_do_what_they_say():
    from methods.preprocess import FeaturePreprocessor

    gen = torch.Generator().manual_seed(0)
    z = torch.randn(400, 6, generator=gen) @ torch.randn(6, 6, generator=gen) + 3.0
    z[:, 5] = 1.0                                                      # a constant dimension
    std = FeaturePreprocessor("standardize").fit(z)(z)
    assert torch.allclose(std[:, :5].mean(0), torch.zeros(5), atol=1e-4)
    assert torch.allclose(std[:, :5].std(0), torch.ones(5), atol=1e-3) and torch.all(std[:, 5] == 0)
    white = FeaturePreprocessor("pca_whiten", variance=0.999).fit(z)(z)
    assert white.shape[1] == 5 + 1               # the constant direction is dropped; + the residual norm
    cov = torch.cov(white[:, :5].T.double())
    assert torch.allclose(cov, torch.eye(5, dtype=cov.dtype), atol=1e-3)
    assert FeaturePreprocessor("pca_whiten", variance=0.5).fit(z)(z).shape[1] < 5 + 1
    assert torch.allclose(FeaturePreprocessor("l2").fit(z)(z).norm(dim=1), torch.ones(400))
    streamed = FeaturePreprocessor("pca_whiten")
    for chunk in z.split(64):
        streamed.update(chunk)
    assert torch.allclose(streamed.finish()(z), FeaturePreprocessor("pca_whiten").fit(z)(z), atol=1e-4)


@pytest.mark.parametrize("preprocess", ["none", "standardize", "l2", "pca_whiten"])
def test_every_head_takes_every_preprocessing(preprocess):
    z = torch.randn(60, 8, generator=torch.Generator().manual_seed(1))
    for name in ("gaussian", "knn"):
        head = create_head(name, preprocess=preprocess).fit(z, seed=0)
        assert np.isfinite(head.score(z[:5])).all() and head.preprocess == preprocess
    with pytest.raises(MethodError, match="preprocess"):
        create_head("gaussian", preprocess="whiten")


def test_every_global_head_defaults_to_the_features_as_given():
    for name in HEADS:
        assert create_head(name, **FAST_KWARGS.get(name, {})).preprocess == "none", name


def test_pca_whiten_keeps_an_anomaly_outside_the_training_span():
    from methods.preprocess import FeaturePreprocessor

    gen = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(12, 12, generator=gen)).Q
    z = torch.randn(300, 4, generator=gen) * torch.tensor([4.0, 3.0, 2.0, 1.0]) @ basis[:, :4].T
    z = z + 0.01 * torch.randn(300, 12, generator=gen)                 # a thin shell around a 4-D span
    normal = torch.randn(20, 4, generator=gen) @ basis[:, :4].T
    outside = normal + 100.0 * basis[:, 8]                              # displaced orthogonally to the span
    prep = FeaturePreprocessor("pca_whiten").fit(z)
    assert prep.out_dim == prep(z).shape[1] == 4 + 1
    assert (prep(outside)[:, -1] > 100 * prep(normal)[:, -1].max()).all()
    head = create_head("gaussian", preprocess="pca_whiten").fit(z, seed=0)
    assert head.score(outside).min() > 100 * head.score(normal).max()
    x = outside.clone().requires_grad_(True)
    head(x).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("scale", [1e-3, 1e3])
def test_gmm_regularisation_follows_the_feature_scale(scale):
    z, query = awkward_features(N_TRAIN, seed=1), awkward_features(10, seed=2) + 0.5
    reference = create_head("gmm", n_components=2).fit(z, seed=0)
    scaled = create_head("gmm", n_components=2).fit(z * scale, seed=0)
    assert scaled.reg_covar_ == reference.reg_covar_
    assert scaled.covar_floor_ == pytest.approx(reference.covar_floor_ * scale ** 2)
    d = z.shape[1]                                    # -log p shifts by D log(scale) under rescaling
    np.testing.assert_allclose(scaled.score(query * scale), reference.score(query) + d * np.log(scale),
                               rtol=1e-4)
