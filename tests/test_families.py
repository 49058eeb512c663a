"""The self-supervised families (issue 26): every one crosses with every patch head and map kind, and
the adequacy guard's collapse checks fire on collapsed fits of losses that declare no chance level.

The family list is read from the registry (every encoder built on ``methods.encoders._ssl``), so a
new family file is covered here with no edit; global heads and feature maps are crossed with every
encoder in ``test_registry.py``.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

from bench.analysis.adequacy import COLLAPSE_STD, assess_encoder, dimension_spread, encoder_adequacy, \
    representation_checks, untrained_reference
from datasets.synthetic import PhantomGenerator, PhantomSpec
from methods.detectors.patch import PatchDetector
from methods.encoders._ssl import SSLEncoder, vit_stage_indices
from methods.maps import MAP_KINDS, map_kind
from methods.registry import ENCODERS, HEADS, create_encoder, create_head, list_heads

SIZE = 32
pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.filterwarnings("ignore::FutureWarning")]


def family_names() -> list[str]:
    return [e.name for e in ENCODERS.entries()
            if not e.family and inspect.isclass(e.factory) and issubclass(e.factory, SSLEncoder)]


@pytest.fixture(scope="module")
def phantoms():
    gen = PhantomGenerator(SIZE, seed=0, spec=PhantomSpec(lesion_radius=(0.15, 0.25), lesion_contrast=(0.3, 0.5)))
    return gen.split("train", 32, 0), gen.split("test", 8, 4)


_FITTED: dict[str, SSLEncoder] = {}


def fitted(name: str, train) -> SSLEncoder:
    if name not in _FITTED:
        torch.manual_seed(0)
        encoder = create_encoder(name, in_chans=1, image_size=SIZE, **ENCODERS.tiny(name))
        _FITTED[name] = encoder.fit(train, seed=0).eval()
    return _FITTED[name]


def test_the_families_are_registered():
    assert {"byol", "simsiam", "dino", "barlow_twins", "vicreg", "mae", "lejepa"} <= set(family_names())


@pytest.mark.parametrize("head", list_heads(dense=True))
@pytest.mark.parametrize("name", family_names())
def test_every_family_crosses_with_every_patch_head(name, head, phantoms):
    train, test = phantoms
    detector = PatchDetector(fitted(name, train), create_head(head, **HEADS.tiny(head)), fit_encoder=False,
                             batch_size=16).fit(train, seed=0)
    pred = detector.predict(test.images[:4])
    assert pred.scores.shape == (4,) and pred.maps.shape == (4, SIZE, SIZE)
    assert np.isfinite(pred.scores).all() and np.isfinite(pred.maps).all()


@pytest.mark.parametrize("kind", MAP_KINDS.names())
@pytest.mark.parametrize("name", family_names())
def test_every_family_gives_every_applicable_map_kind(name, kind, phantoms):
    train, test = phantoms
    encoder = fitted(name, train)
    maker = map_kind(kind)
    if not maker.applies(encoder):
        pytest.skip(f"{kind} does not apply to {name}")
    head = create_head("gaussian").fit(encoder.embed(train.images), seed=0)
    maps = maker.make(encoder, head, test.images[:3])
    assert maps.shape == (3, SIZE, SIZE) and np.isfinite(maps).all() and maps.std() > 0


def test_vit_stages_are_patch_token_grids():
    assert vit_stage_indices(12) == [3, 7, 11] and vit_stage_indices(2) == [0, 1] and vit_stage_indices(1) == [0]
    encoder = create_encoder("mae", in_chans=1, image_size=SIZE, **ENCODERS.tiny("mae")).eval()
    maps = encoder.feature_maps(torch.rand(2, 1, SIZE, SIZE))
    side = SIZE // encoder.patch_size
    assert all(m.shape == (2, encoder.out_dim, side, side) for m in maps.values())


# --- the adequacy guard on losses without a chance level ---------------------------------------------

def test_families_declare_their_chance_level_or_get_the_collapse_checks():
    for name in family_names():
        encoder = create_encoder(name, in_chans=1, image_size=SIZE, **ENCODERS.tiny(name))
        assert encoder.chance_loss(8) is None or name == "dino", name
    rng = np.random.default_rng(0)
    spread = rng.normal(size=(80, 16))
    cone = 1000.0 + rng.normal(size=(80, 16))       # every image in one narrow cone: full rank, no spread
    reasons, measures = representation_checks(spread, cone)
    assert measures["effective_rank"] > 10 and not reasons        # the rank alone misses it ...
    reasons, measures = representation_checks(spread, cone, dimension_collapse=True)
    assert measures["dimension_spread"] < COLLAPSE_STD and any("per-dimension spread" in r for r in reasons)
    assert dimension_spread(spread) > 0.5
    assert representation_checks(spread, spread[::-1], dimension_collapse=True)[0] == []


class _Stub:
    """An encoder the guard reads through its attributes only (trainable, batch size, no chance level)."""

    trainable, batch_size = True, 16

    def chance_loss(self, batch):
        return None


CONVERGED = [2.0 * np.exp(-e / 3) for e in range(20)]


def test_chance_free_guard_fires_on_each_failure():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(6, 16)) * 3
    train = centres[rng.integers(0, 6, 120)] + 0.1 * rng.normal(size=(120, 16))
    close = centres[rng.integers(0, 6, 40)] + 0.1 * rng.normal(size=(40, 16))
    far = rng.normal(size=(40, 16)) * 3
    ok = assess_encoder(_Stub(), CONVERGED, close, train_embeddings=train, untrained_train=train, untrained_val=far)
    assert ok["passed"], ok["reasons"]
    assert "no chance level" in ok["measures"]["criteria"]
    still = assess_encoder(_Stub(), list(np.linspace(1.0, 0.0, 20)), close, train_embeddings=train)
    assert any("still falling" in r for r in still["reasons"])
    worse = assess_encoder(_Stub(), CONVERGED, far, train_embeddings=train, untrained_train=train, untrained_val=close)
    assert any("no better than untrained" in r for r in worse["reasons"])
    shrunk = assess_encoder(_Stub(), CONVERGED, 50.0 + 0.01 * close, train_embeddings=train,
                            untrained_train=train, untrained_val=close)
    assert any("per-dimension spread" in r for r in shrunk["reasons"])


def test_dino_at_its_uniform_collapse_fails_the_guard():
    """DINO's cross-entropy at ln(K) is the uniform collapse (both distributions flat over the K
    prototypes): the history below is the shape a CPU run on PneumoniaMNIST produced (K = 1024)."""
    dino = create_encoder("dino", in_chans=1, image_size=SIZE, **{**ENCODERS.tiny("dino"), "output_dim": 1024})
    assert dino.chance_loss(64) == pytest.approx(np.log(1024))
    stuck = [5.74, 7.04, 7.06, 6.98, 6.95, 6.94, 6.935, 6.9344, 6.9338, 6.9338, 6.9335]
    verdict = assess_encoder(dino, stuck, n_train=300)
    assert not verdict["passed"] and any("not below chance" in r for r in verdict["reasons"])
    assert assess_encoder(dino, [6.9, 5.0, 4.2, 4.0, 3.95, 3.94, 3.94, 3.94], n_train=300)["passed"]


def test_guard_fires_on_a_collapsed_simsiam_fit():
    """SimSiam without its predictor (the paper's collapsing ablation), trained for real, then its
    output made constant as the ablation ends (Chen & He 2021, Fig. 2): the guard says collapsed;
    the same fit with its real output is not called collapsed."""
    from datasets import create_dataset

    data = create_dataset("synthetic", image_size=SIZE, n_train=32, n_val=16, n_test=8, n_pool=0)
    encoder = create_encoder("simsiam", in_chans=1, image_size=SIZE, predictor=False, epochs=4, batch_size=8,
                             proj_dim=32, warmup_epochs=0)
    reference = untrained_reference(encoder, data)
    encoder.fit(data.train, seed=0)
    embeddings = {"train": encoder.embed(data.train.images).numpy(), "val": encoder.embed(data.val.images).numpy()}
    healthy = encoder_adequacy(encoder, encoder.history_, embeddings, data, reference)
    assert not any(r.startswith("collapsed") for r in healthy["reasons"]), healthy["reasons"]
    constant = torch.from_numpy(embeddings["train"]).mean(0, keepdim=True)
    encoder.forward = lambda x: constant.expand(len(x), -1) + 0.0 * x.mean()
    collapsed_emb = {"train": encoder.embed(data.train.images).numpy(), "val": encoder.embed(data.val.images).numpy()}
    verdict = encoder_adequacy(encoder, encoder.history_, collapsed_emb, data, reference)
    assert not verdict["passed"]
    assert any("effective rank" in r for r in verdict["reasons"])
    assert verdict["measures"]["dimension_spread"] < COLLAPSE_STD


@pytest.mark.parametrize("name", family_names())
def test_the_cost_estimator_times_every_family(name, phantoms):
    """``bench.cost.measure`` times a family's own ``training_step`` + ``after_step`` before a run
    (nothing family-specific in the estimator)."""
    from bench.cost.measure import training_step_seconds

    train, _ = phantoms
    encoder = create_encoder(name, in_chans=1, image_size=SIZE, **ENCODERS.tiny(name))
    seconds = training_step_seconds(encoder, train.images, 8, "cpu")
    assert 0 < seconds < 30
