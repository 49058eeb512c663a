"""Foundation features, offline-honest (issue 26): DINOv2 / CLIP towers through ``imagenet/<timm name>``
and ``open_clip/<model>`` load from a local file, follow their weights' own input normalisation, and
offline each is refused in one line naming the file to provide (the preflight's line).

open_clip_torch is optional: its tests skip, with the reason, where it is not installed.
"""

from __future__ import annotations

import sys

import pytest
import torch

from methods.base import MethodError
from methods.registry import create_encoder

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("UAD_BENCH_WEIGHTS", raising=False)


@pytest.mark.parametrize("name", ["imagenet/vit_small_patch14_dinov2.lvd142m", "imagenet/vit_base_patch16_clip_224.openai"])
def test_timm_foundation_weights_refused_offline_in_one_line(name, offline):
    with pytest.raises(MethodError) as err:
        create_encoder(name, in_chans=1, image_size=64)
    message = str(err.value)
    arch = name.split("/")[1].split(".")[0]
    assert "\n" not in message and f"{arch}.pth" in message and "UAD_BENCH_WEIGHTS" in message


def test_timm_vit_from_a_local_file_runs_at_the_dataset_size(tmp_path, offline):
    """A fixed-size ViT (DINOv2 and CLIP towers are such) loads a local file and runs on 64 px inputs
    through timm's dynamic position embeddings; mean/std are the weights' own (0.5 for augreg)."""
    import timm

    name = "vit_tiny_patch16_224.augreg_in21k"
    state = timm.create_model(name, pretrained=False).state_dict()
    torch.save(state, tmp_path / "w.pth")
    encoder = create_encoder(f"imagenet/{name}", in_chans=1, image_size=64, weights=str(tmp_path / "w.pth"))
    assert torch.equal(encoder.backbone.state_dict()["blocks.0.attn.qkv.weight"], state["blocks.0.attn.qkv.weight"])
    assert encoder.normalize.mean.flatten().tolist() == pytest.approx([0.5, 0.5, 0.5])
    assert encoder.deterministic_fit is True          # the imagenet factory declares it; random/* stays stochastic
    x = torch.rand(2, 1, 64, 64, requires_grad=True)
    assert encoder(x).shape == (2, encoder.out_dim)
    maps = encoder.feature_maps(x)
    assert [m.shape[-1] for m in maps.values()] == [4, 4, 4] and len(maps) == 3


def test_open_clip_missing_package_is_one_clear_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "open_clip", None)          # as if open_clip_torch were not installed
    with pytest.raises(MethodError, match=r"open_clip/ViT-B-32: needs the optional package open_clip_torch"):
        create_encoder("open_clip/ViT-B-32", in_chans=1, image_size=64)


def test_open_clip_offline_refusal_local_file_and_normalisation(tmp_path, offline, monkeypatch):
    open_clip = pytest.importorskip("open_clip", reason="open_clip_torch (optional extra 'foundation') is not installed")
    with pytest.raises(MethodError) as err:
        create_encoder("open_clip/ViT-S-32", in_chans=1, image_size=64, pretrained="openai")
    assert "\n" not in str(err.value) and "ViT-S-32-openai.bin" in str(err.value)
    state = open_clip.create_model("ViT-S-32", pretrained=None).state_dict()
    torch.save(state, tmp_path / "ViT-S-32-mine.bin")
    monkeypatch.setenv("UAD_BENCH_WEIGHTS", str(tmp_path))
    encoder = create_encoder("open_clip/ViT-S-32", in_chans=1, image_size=64, pretrained="mine")
    assert torch.equal(encoder.visual.state_dict()["conv1.weight"], state["visual.conv1.weight"])
    assert encoder.normalize.mean.flatten().tolist() == pytest.approx(list(open_clip.OPENAI_DATASET_MEAN))
    assert encoder.deterministic_fit is True          # the imagenet factory declares it; random/* stays stochastic
    x = torch.rand(2, 1, 64, 64, requires_grad=True)
    encoder(x).sum().backward()
    assert x.grad.abs().sum() > 0
    assert all(m.shape[-1] == 7 for m in encoder.feature_maps(x.detach()).values())
