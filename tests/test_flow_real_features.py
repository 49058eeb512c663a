"""The flow head on features that made the old flow diverge (issue 16).

Why: on frozen EfficientNet-Lite0 features (values up to 6, dozens of all-zero dimensions, N=80 <
D=1280) and on standardised latents with 12-sigma values, the flow's first steps sent the NLL to
1e12 ("flow diverged at epoch 0, step 1"). The flow now z-scores its input inside the density and
has a LayerNorm in every coupling subnet; these tests fit it where it failed.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from conftest import SHARED_DATA
from methods.registry import create_head

#: A CPU-sized flow (the quick grid's width); the default architecture behaves the same, slower.
FLOW = dict(n_blocks=4, hidden_features=256, epochs=12)


def test_flow_fits_frozen_efficientnet_features_of_busi():
    if not (SHARED_DATA / "busi.npz").exists():
        pytest.skip(f"busi.npz not found in {SHARED_DATA} (set UAD_BENCH_SHARED_DATA); "
                    "the real-feature check needs the shipped BUSI file")
    from datasets.registry import create_dataset
    from methods.base import seed_everything
    from methods.registry import create_encoder

    torch.set_num_threads(1)
    data = create_dataset("busi", root=SHARED_DATA, image_size=64, seed=0)
    seed_everything(0)
    encoder = create_encoder("imagenet/tf_efficientnet_lite0", in_chans=data.channels, image_size=data.image_size)
    keep = np.flatnonzero(data.test.labels == 0).tolist() + np.flatnonzero(data.test.labels == 1)[:100].tolist()
    test_split = data.test.subset(np.array(keep))                # every normal, 100 lesions: a faster test
    train, test = encoder.embed(data.train), encoder.embed(test_split)
    assert (train.std(0) == 0).any() and train.max() > 3       # the awkward shape the old flow failed on
    head = create_head("flow", **{**FLOW, "epochs": 8}).fit(train, seed=0)   # preprocess="none", the default
    assert head.preprocess == "none" and np.isfinite(head.loss_history_).all()
    assert head.loss_history_[-1] < head.loss_history_[0]
    scores = head.score(test)
    assert np.isfinite(scores).all()
    assert roc_auc_score(test_split.labels, scores) > 0.55       # sanity: lesions rank above normals


def heavy_tailed(n: int = 96, d: int = 128, seed: int = 0) -> torch.Tensor:
    """Untrained-network-like activations (offset 20), a few sparse dimensions with one sample
    ~12 sigma out, and near-constant dimensions at a tiny scale."""
    g = torch.Generator().manual_seed(seed)
    z = 20.0 + 5.0 * torch.relu(torch.randn(n, d, generator=g))
    k = d // 8
    z[:, :k] = 0.0
    z[torch.arange(k) % n, torch.arange(k)] = 12.0
    z[:, k:2 * k] = 1e-3 * (1.0 + 1e-4 * torch.randn(n, k, generator=g))
    return z


@pytest.mark.parametrize("preprocess", ["none", "standardize"])
def test_flow_fits_heavy_tailed_features(preprocess):
    """The old flow stopped here at epoch 0, step 0 with ``none`` (NLL 2.4e4: no z-score)."""
    torch.set_num_threads(1)
    head = create_head("flow", preprocess=preprocess, **FLOW).fit(heavy_tailed(), seed=0)
    assert np.isfinite(head.loss_history_).all() and head.loss_history_[-1] < head.loss_history_[0]
    normal = heavy_tailed(seed=1)
    outlier = normal.clone()
    outlier[:, 40:48] += 60.0                                     # 12 sigma in a few ordinary dimensions
    scores, outlier_scores = head.score(normal), head.score(outlier)
    assert np.isfinite(scores).all() and np.isfinite(outlier_scores).all()
    assert np.median(outlier_scores) > np.median(scores)


def test_the_flow_density_is_exact_for_the_features_as_given():
    """The internal z-score is part of the density: at initialisation (identity couplings) the flow
    is the diagonal Gaussian with the training mean and (floored) std."""
    from methods.heads.flow import build_glow_flow, zscore_transform

    z = heavy_tailed(d=16).double()
    flow = build_glow_flow(16, n_blocks=2, hidden_features=8, clamp=2.0, zscore=zscore_transform(z)[0]).double()
    scale = 1.0 / flow._transform._transforms[0]._scale.double()
    expected = torch.distributions.Normal(z.mean(0), scale).log_prob(z).sum(1)
    torch.testing.assert_close(flow.log_prob(z), expected)
