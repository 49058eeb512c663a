"""timm-style: one parametrised test over every registered encoder, so a new file is covered."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

from bench.registry import Registry, UnknownEntryError
from datasets.base import Split
from methods.base import seed_everything
from methods.registry import ENCODERS, create_encoder, list_encoders

#: Which member stands in for a family in tests (offline: real weights only for the EfficientNet).
FAMILY_MEMBERS = {"imagenet": "tf_efficientnet_lite0", "random": "resnet18"}
#: Tiny training settings, passed to an encoder only where its __init__ takes them.
TINY = {"epochs": 1, "batch_size": 8, "warmup_epochs": 0}


def encoder_names() -> list[str]:
    names = []
    for entry in ENCODERS.entries():
        names.append(f"{entry.name}/{FAMILY_MEMBERS.get(entry.name, 'resnet18')}" if entry.family else entry.name)
    return names


def build(name: str, size: int = 32):
    """Create ``name`` with the TINY settings its constructor accepts (families take none)."""
    entry, _ = ENCODERS.lookup(name)
    params = inspect.signature(entry.factory).parameters
    tiny = {k: v for k, v in TINY.items() if k in params}
    return create_encoder(name, in_chans=1, image_size=size, **tiny)


@pytest.mark.parametrize("name", encoder_names())
def test_encoder_contract(name):
    torch.manual_seed(0)
    encoder = build(name)
    rng = np.random.default_rng(0)
    images = (rng.random((16, 1, 32, 32)) * 255).astype(np.uint8)
    encoder.fit(Split(images, np.zeros(16)), seed=0)
    z = encoder.embed(images, batch_size=8)
    assert z.shape == (16, encoder.out_dim) and encoder.out_dim > 0
    assert torch.isfinite(z).all(), "embeddings included NaNs"
    x = torch.rand(4, 1, 32, 32, requires_grad=True)
    encoder.eval()
    out = encoder(x)
    assert out.shape == (4, encoder.out_dim)
    out.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0, \
        "gradients must reach the input (CRADL gradient maps)"
    if callable(getattr(encoder, "reconstruct", None)):
        assert encoder.reconstruct(x.detach()).shape == x.shape


def test_embed_is_deterministic_in_eval_mode():
    encoder = build("random/resnet18")
    images = (np.random.default_rng(1).random((6, 1, 32, 32)) * 255).astype(np.uint8)
    assert torch.equal(encoder.embed(images, batch_size=4), encoder.embed(images, batch_size=6))


def test_training_is_seeded():
    images = (np.random.default_rng(2).random((16, 1, 32, 32)) * 255).astype(np.uint8)
    split = Split(images, np.zeros(16))
    runs = []
    for _ in range(2):
        seed_everything(3)                      # the runner seeds before building each component
        runs.append(create_encoder("vae", image_size=32, epochs=1, batch_size=8).fit(split, seed=3).embed(images))
    a, b = runs
    assert torch.allclose(a, b)


def test_registry_families_and_errors():
    reg = Registry("thing", "methods.heads")
    reg._loaded = True

    @reg.register("plain")
    def plain(x=1):
        return {"x": x}

    @reg.register("fam", family=True)
    def fam(member, y=2):
        return {"member": member, "y": y}

    assert reg.create("plain", x=None) == {"x": None}       # None is a value, passed through
    assert reg.create("fam/abc.def", y=3) == {"member": "abc.def", "y": 3}
    assert reg.names() == ["fam/<name>", "plain"]
    with pytest.raises(UnknownEntryError, match="unknown thing 'nope'.*plain"):
        reg.create("nope")
    with pytest.raises(UnknownEntryError):
        reg.create("fam")                                  # a family needs a member
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("plain")(lambda: None)


def test_every_listed_encoder_is_creatable():
    for name in list_encoders():
        assert name.split("/")[0] in {e.name for e in ENCODERS.entries()}
