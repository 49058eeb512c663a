"""timm-style: every registered encoder and head is built and run on a tiny input, crossed.

Nothing here lists families or members: a family declares the member its tests use
(``@register_encoder("imagenet", family=True, example="tf_efficientnet_lite0")``), so a new file
is covered by these tests with no edit here, and a broken one fails them. Detectors are built and
run the same way in ``test_detectors.py::test_every_detector_fits_and_predicts``, datasets in
``test_readers.py`` (every reader on a fake tree), ``test_datasets_synthetic.py`` and
``test_datasets_medmnist.py``; ``test_every_registered_dataset_is_loaded_by_a_test`` keeps that so.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from datasets._shared.registry import Registry, UnknownEntryError
from datasets import DATASETS
from datasets.base import Split
from methods.base import seed_everything
from methods.registry import ENCODERS, HEADS, create_encoder, create_head, list_heads

SIZE = 32
pytestmark = pytest.mark.usefixtures("one_thread")


def encoder_names() -> list[str]:
    """One buildable name per entry: the entry itself, or its family's declared example member."""
    return [f"{e.name}/{e.tags.get('example', '<no example declared>')}" if e.family else e.name
            for e in ENCODERS.entries()]


def build(name: str, size: int = SIZE):
    """Create ``name`` with the tiny settings its registration declares; an entry that declares an
    optional package (``requires="open_clip"``) is skipped, with the reason, where it is not installed."""
    requires = ENCODERS.lookup(name)[0].tags.get("requires")
    if requires:
        pytest.importorskip(requires, reason=f"{name} needs the optional package '{requires}'")
    return create_encoder(name, in_chans=1, image_size=size, **ENCODERS.tiny(name))


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return (np.random.default_rng(0).random((16, 1, SIZE, SIZE)) * 255).astype(np.uint8)


_FITTED: dict[str, tuple] = {}


def fitted(name: str, images: np.ndarray):
    """The encoder fitted once on the tiny images, and its training embeddings (shared by tests)."""
    if name not in _FITTED:
        torch.manual_seed(0)
        encoder = build(name)
        encoder.fit(Split(images, np.zeros(len(images))), seed=0)
        _FITTED[name] = encoder, encoder.embed(images, batch_size=8)
    return _FITTED[name]


def test_every_family_declares_an_example_member():
    missing = [e.name for e in ENCODERS.entries() if e.family and "example" not in e.tags]
    assert not missing, f"families without example=... in their @register_encoder: {missing}"


@pytest.mark.parametrize("name", encoder_names())
def test_encoder_contract(name, images):
    encoder, z = fitted(name, images)
    assert z.shape == (16, encoder.out_dim) and encoder.out_dim > 0
    assert torch.isfinite(z).all(), "embeddings included NaNs"
    assert z.std(dim=0).max() > 0, "every image got the same embedding"
    x = torch.rand(4, 1, SIZE, SIZE, requires_grad=True)
    encoder.eval()
    out = encoder(x)
    assert out.shape == (4, encoder.out_dim)
    out.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0, \
        "gradients must reach the input (CRADL gradient maps)"
    if encoder.reconstructs:
        assert encoder.reconstruct(x.detach()).shape == x.shape


@pytest.mark.parametrize("head_name", list_heads(dense=False))
@pytest.mark.parametrize("name", encoder_names())
def test_every_encoder_crossed_with_every_head(name, head_name, images):
    """Fit the head on the encoder's embeddings; scores are finite and their gradient reaches the pixels."""
    encoder, z = fitted(name, images)
    head = create_head(head_name, **HEADS.tiny(head_name)).fit(z, seed=0)
    scores = head.score(z)
    assert scores.shape == (16,) and np.isfinite(scores).all()
    x = torch.rand(3, 1, SIZE, SIZE, requires_grad=True)
    encoder.eval()
    head.eval()
    score = head(encoder(x))
    assert score.shape == (3,) and torch.isfinite(score).all()
    (grad,) = torch.autograd.grad(score.sum(), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0, f"{name} × {head_name}: no gradient at the input"


def test_embed_is_deterministic_in_eval_mode(images):
    encoder = build("random/resnet18")
    assert torch.equal(encoder.embed(images[:6], batch_size=4), encoder.embed(images[:6], batch_size=6))


def test_training_is_seeded(images):
    split = Split(images, np.zeros(16))
    runs = []
    for _ in range(2):
        seed_everything(3)                      # the runner seeds before building each component
        runs.append(create_encoder("vae", image_size=SIZE, epochs=1, batch_size=8).fit(split, seed=3).embed(images))
    a, b = runs
    assert torch.allclose(a, b)


def test_every_registered_dataset_is_loaded_by_a_test():
    """A dataset whose name no test loads (create_dataset / LAYOUTS entry) fails here."""
    tests = "\n".join(p.read_text() for p in Path(__file__).parent.glob("test_*.py") if p.name != Path(__file__).name)
    unloaded = [e.name for e in DATASETS.entries()
                if not re.search(rf"[\"']{re.escape(e.name)}(/[\w.-]+)?[\"']", tests)]
    assert not unloaded, f"registered datasets no test loads: {unloaded}"


def test_registry_families_and_errors():
    reg = Registry("thing", "methods.heads")
    reg._loaded = True

    @reg.register("plain")
    def plain(x=1):
        return {"x": x}

    @reg.register("fam", family=True, example="abc")
    def fam(member, y=2):
        return {"member": member, "y": y}

    assert reg.create("plain", x=None) == {"x": None}       # None is passed through, as given
    assert reg.create("fam/abc.def", y=3) == {"member": "abc.def", "y": 3}
    assert reg.names() == ["fam/<name>", "plain"]
    with pytest.raises(UnknownEntryError, match="unknown thing 'nope'.*plain"):
        reg.create("nope")
    with pytest.raises(UnknownEntryError):
        reg.create("fam")                                  # a family needs a member
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("plain")(lambda: None)


@pytest.mark.parametrize("name", encoder_names())
def test_every_encoder_declares_and_returns_named_feature_maps(name):
    """Patch heads cross with every encoder: ``dense`` is declared and the maps are named 4-D stages."""
    encoder = build(name).eval()
    assert type(encoder).dense is True
    with torch.no_grad():
        maps = encoder.feature_maps(torch.rand(2, 1, 32, 32))
    assert isinstance(maps, dict) and len(maps) >= 2
    for stage, value in maps.items():
        assert isinstance(stage, str) and value.ndim == 4 and value.shape[0] == 2 and torch.isfinite(value).all()
    sides = [value.shape[-1] for value in maps.values()]
    assert sides == sorted(sides, reverse=True), "stages are ordered finest first"


def test_datasets_that_decode_files_declare_it():
    """The runner passes ``cache_dir`` to datasets that declare ``decodes_files`` (it never probes)."""
    import inspect

    for entry in DATASETS.entries():
        takes = "cache_dir" in inspect.signature(entry.factory).parameters
        assert takes == bool(entry.tags.get("decodes_files")), entry.name
