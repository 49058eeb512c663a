"""DDAD-ASR against hand-computed references (issue 16, item 7).

The official code (caiyu6666/DDAD-ASR, ``test.py::evaluate``) scores an image by the spatial mean of
``rec = (x - mu_NDM)^2``, ``intra = std_K(NDM outputs)`` (torch's unbiased std) and
``inter = |mu_UDM - mu_NDM|``; ASR-Net sees ``[inter, intra]`` and the image score is the mean of
its softmax anomaly channel. Here the AEs are replaced by fixed affine maps ``a_k x + b_k`` so every
number can be checked by hand or with NumPy.
"""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import pytest
import torch
from torch import nn

from datasets.base import AnomalyDataset, DatasetCard, Split
from methods.base import MethodError
from methods.detectors._pool import unlabeled_pool
from methods.detectors.ddad_asr import DDADASR, discrepancies, refine_input


class Affine(nn.Module):
    """A stand-in AE: ``a * x + b``."""

    def __init__(self, a: float, b: float):
        super().__init__()
        self.a, self.b = a, b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a * x + self.b


def ensemble(*ab: tuple[float, float]) -> nn.ModuleList:
    return nn.ModuleList(Affine(a, b) for a, b in ab)


def test_discrepancies_by_hand():
    x = torch.zeros(1, 1, 2, 2)
    ndm = ensemble((1, 0), (1, 1), (1, 2))          # outputs 0, 1, 2 everywhere
    udm = ensemble((1, 3), (1, 3), (1, 6))          # outputs 3, 3, 6: mean 4
    maps = discrepancies(ndm, udm, x)
    # unbiased std of (0, 1, 2) = sqrt(((-1)^2 + 0 + 1^2) / (3 - 1)) = 1 (the biased one would be 0.816)
    assert torch.allclose(maps["intra"], torch.ones(1, 1, 2, 2))
    assert torch.allclose(maps["inter"], torch.full((1, 1, 2, 2), 3.0))     # |4 - 1|
    assert torch.allclose(maps["rec"], torch.ones(1, 1, 2, 2))              # (0 - 1)^2: the NDM mean, not the UDM's


def test_discrepancies_match_numpy_per_pixel():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (2, 1, 4, 4)).astype(np.float32)
    a_ndm, b_ndm = [0.9, 1.2, 0.5], [0.1, -0.3, 0.0]
    a_udm, b_udm = [1.1, 0.7, 1.0], [0.2, 0.0, -0.4]
    maps = discrepancies(ensemble(*zip(a_ndm, b_ndm)), ensemble(*zip(a_udm, b_udm)), torch.from_numpy(x))
    ndm = np.stack([a * x + b for a, b in zip(a_ndm, b_ndm)])
    udm = np.stack([a * x + b for a, b in zip(a_udm, b_udm)])
    np.testing.assert_allclose(maps["intra"].numpy(), ndm.std(0, ddof=1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(maps["inter"].numpy(), np.abs(udm.mean(0) - ndm.mean(0)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(maps["rec"].numpy(), (x - ndm.mean(0)) ** 2, rtol=1e-5, atol=1e-6)


def test_refine_input_is_inter_then_intra():
    maps = {"inter": torch.zeros(1, 1, 2, 2), "intra": torch.ones(1, 1, 2, 2)}
    dual = refine_input(maps, "asr_dual")
    assert dual.shape == (1, 2, 2, 2) and dual[:, 0].eq(0).all() and dual[:, 1].eq(1).all()
    assert torch.equal(refine_input(maps, "asr_intra"), maps["intra"])


def fake_fitted(score: str) -> DDADASR:
    det = DDADASR(input_size=16, image_size=16, score=score, batch_size=3)
    det.ndm_ = ensemble((0.9, 0.1), (1.2, -0.3), (0.5, 0.0))
    det.udm_ = ensemble((1.1, 0.2), (0.7, 0.0), (1.0, -0.4))
    det.refiners_ = {}
    return det


@pytest.mark.parametrize("score", ["rec", "intra", "inter"])
def test_image_score_is_the_spatial_mean_of_the_map(score: str):
    images = np.random.default_rng(1).integers(0, 256, (5, 1, 16, 16), dtype=np.uint8)
    got = fake_fitted(score).predict(images)
    x = images.astype(np.float32) / 255 * 2 - 1                   # ToTensor + Normalize(0.5, 0.5)
    ndm = np.stack([a * x + b for a, b in [(0.9, 0.1), (1.2, -0.3), (0.5, 0.0)]])
    udm = np.stack([a * x + b for a, b in [(1.1, 0.2), (0.7, 0.0), (1.0, -0.4)]])
    maps = {"intra": ndm.std(0, ddof=1), "inter": np.abs(udm.mean(0) - ndm.mean(0)), "rec": (x - ndm.mean(0)) ** 2}
    np.testing.assert_allclose(got.scores, maps[score].mean((1, 2, 3)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.maps, maps[score][:, 0], rtol=1e-5, atol=1e-6)


def test_asr_image_score_is_the_mean_anomaly_probability():
    class Logits(nn.Module):
        """Channel 1 logit = inter (channel 0 of the input), channel 0 logit = 0."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cat([torch.zeros_like(x[:, :1]), x[:, :1]], dim=1)

    det = fake_fitted("asr_dual")
    det.refiners_["asr_dual"] = Logits()
    images = np.random.default_rng(2).integers(0, 256, (4, 1, 16, 16), dtype=np.uint8)
    x = images.astype(np.float32) / 255 * 2 - 1
    ndm = np.stack([a * x + b for a, b in [(0.9, 0.1), (1.2, -0.3), (0.5, 0.0)]])
    udm = np.stack([a * x + b for a, b in [(1.1, 0.2), (0.7, 0.0), (1.0, -0.4)]])
    inter = np.abs(udm.mean(0) - ndm.mean(0))[:, 0]
    probability = 1 / (1 + np.exp(-inter))                       # softmax([0, inter])[1]
    np.testing.assert_allclose(det.predict(images).scores, probability.mean((1, 2)), rtol=1e-5)


def pool_dataset(n_train: int = 30, n_pool_normal: int = 40, n_pool_anomalous: int = 60) -> AnomalyDataset:
    """Each image is filled with its own id: train 0.., pool normals 100.., pool anomalies 150.."""
    def split(values, labels) -> Split:
        values = np.asarray(values)
        return Split(np.broadcast_to(values[:, None, None, None], (len(values), 1, 4, 4)).astype(np.uint8).copy(),
                     np.asarray(labels, np.int64), None, values.astype(str))

    pool_values = list(range(100, 100 + n_pool_normal)) + list(range(150, 150 + n_pool_anomalous))
    return AnomalyDataset("ids", split(range(n_train), [0] * n_train), split([99], [0]), split([98, 250], [0, 1]),
                          DatasetCard("ids"),
                          pool=split(pool_values, [0] * n_pool_normal + [1] * n_pool_anomalous))


# (8, 5): 8 * 0.6 = 4.8 rounds to 5; the official int(extra_data * ar) takes 4 (declared in methods/README.md)
@pytest.mark.parametrize("size, anomalous", [(50, 30), (10, 6), (7, 4), (8, 5), (None, 18)])
def test_pool_holds_round_size_times_rate_anomalies(size, anomalous):
    data = pool_dataset()
    pool = unlabeled_pool(data, anomaly_rate=0.6, size=size, seed=0)
    ids = pool.images[:, 0, 0, 0].astype(int)
    total = 30 if size is None else size                     # size=None: as many as the training split
    assert len(pool) == total and pool.labels.sum() == anomalous
    assert ((ids >= 150) == (pool.labels == 1)).all() and (ids >= 100).all()   # all from the pool, labels kept
    assert len(set(ids)) == total                                              # no image twice


def test_pool_draw_is_seeded():
    data = pool_dataset()
    first, again = (unlabeled_pool(data, anomaly_rate=0.6, size=20, seed=3) for _ in range(2))
    other = unlabeled_pool(data, anomaly_rate=0.6, size=20, seed=4)
    assert np.array_equal(first.images, again.images)
    assert set(first.images[:, 0, 0, 0]) != set(other.images[:, 0, 0, 0])


def test_pool_takes_every_candidate_when_the_lists_are_exactly_the_size():
    """Then the official "first N normal + first M abnormal" and the suite's seeded draw coincide."""
    data = pool_dataset(n_pool_normal=20, n_pool_anomalous=30)
    pool = unlabeled_pool(data, anomaly_rate=0.6, size=50, seed=7)
    assert sorted(pool.images[:, 0, 0, 0]) == list(range(100, 120)) + list(range(150, 180))


#: the registered tiny settings (not read through the registry: loading it imports every detector)
TINY = dict(input_size=32, epochs=2, batch_size=16, hidden_dim=64, asr_epochs=1, asr_channels=8)


def tiny_fit(device="cpu", **kwargs) -> DDADASR:
    data = pool_dataset(n_train=20)
    rng = np.random.default_rng(0)
    for split in (data.train, data.pool):
        split.images = rng.integers(0, 256, (len(split), 1, 32, 32), dtype=np.uint8)
    det = DDADASR(in_chans=1, image_size=32, **{**TINY, **kwargs})
    return det.fit(data.train, seed=0, device=device, unlabeled=unlabeled_pool(data, 0.6, size=10, seed=0))


def test_ensemble_size_and_distinct_members():
    det = tiny_fit(ensemble_size=3, score="intra")
    assert len(det.ndm_) == len(det.udm_) == 3
    weights = [m.encoder[0].weight for m in (*det.ndm_, *det.udm_)]
    assert all(not torch.equal(weights[i], weights[j]) for i in range(6) for j in range(i))
    assert len(tiny_fit(ensemble_size=2, score="intra").ndm_) == 2
    with pytest.raises(MethodError, match="ensemble_size"):
        DDADASR(ensemble_size=1)


def test_grid_amp_choice_reaches_every_training_loop(monkeypatch):
    """``amp = false`` travels in a ``Device``; the six AE loops and ASR-Net's must see it (not ``data.device``)."""
    import methods.precision
    from methods.precision import Device

    seen = []

    def recording_autocast(device):
        seen.append(device)
        return nullcontext()

    monkeypatch.setattr(methods.precision, "autocast", recording_autocast)
    tiny_fit(device=Device("cpu", amp=False), score="asr_dual")
    assert seen, "no training loop asked for autocast"
    assert all(isinstance(d, Device) and d.amp is False for d in seen), {type(d).__name__ for d in seen}
