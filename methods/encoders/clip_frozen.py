"""Frozen CLIP image towers from open_clip (``open_clip/<model>``): foundation features beside ImageNet's.

Why: vision-language pre-training (CLIP, Radford et al. 2021; OpenCLIP, Cherti et al. 2023) gives
features that anomaly detectors such as WinCLIP build on; the suite asks how they do under the same
density heads as every other representation. Only the image tower (``model.visual``) is used.

Offline-honest, as :mod:`methods.backbones` is for timm: weights come from ``weights=PATH`` (an
open_clip checkpoint), ``$UAD_BENCH_WEIGHTS/<model>-<tag>.<ext>`` or ``<model>.<ext>``, or the hub
when it answers; otherwise building the encoder (which the preflight does) fails in one line naming
the file to provide. ``open_clip_torch`` is an optional dependency (``pip install
'uad-bench[foundation]'``), imported only here. Input: gray images repeated to RGB, resized
(bicubic) to the tower's own size and normalised with the checkpoint's ``preprocess_cfg`` mean/std,
as open_clip's ``preprocess`` does for a square image.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from methods.backbones import WEIGHTS_ENV, ImageNetInput, find_weights, hub_reachable, vit_stage_indices
from methods.base import Encoder, MethodError
from methods.registry import register_encoder

EXTENSIONS = (".safetensors", ".bin", ".pt", ".pth")


def import_open_clip(who: str):
    try:
        import open_clip
    except ImportError as exc:
        raise MethodError(f"{who}: needs the optional package open_clip_torch "
                          "(pip install 'uad-bench[foundation]' or pip install open_clip_torch)") from exc
    return open_clip


def local_checkpoint(model: str, tag: str | None, weights: str | None) -> Path | None:
    """The checkpoint file to load: ``weights`` if given (must exist), else one in ``$UAD_BENCH_WEIGHTS``."""
    return find_weights(f"open_clip/{model}", weights, ([f"{model}-{tag}"] if tag else []) + [model], EXTENSIONS)


def offline_message(model: str, tag: str | None) -> str:
    stem = f"{model}-{tag}" if tag else model
    return (f"open_clip/{model}: pretrained weights '{tag}' are not available offline; pass weights=/path/to/{stem}.bin "
            f"(an open_clip checkpoint, e.g. the hub's open_clip_pytorch_model.bin) or put {stem}.bin in ${WEIGHTS_ENV}/")


class OpenCLIPEncoder(Encoder):
    """The frozen image tower of an open_clip model; ``forward`` is its image embedding.

    Args:
        model_name: an open_clip model name (``open_clip.list_models()``), e.g. ``ViT-B-32``, ``ViT-B-16``.
        pretrained: the open_clip weights tag (e.g. ``openai``, ``laion2b_s34b_b79k``); None builds the
            tower with random weights (a control, and what offline tests use).
        weights: a local open_clip checkpoint file (takes precedence over the hub).
    """

    trainable = False
    dense = True
    #: fixed weights, no fitting: the same features every run (issue 23's declaration)
    deterministic_fit = True

    def __init__(self, model_name: str, in_chans: int = 1, image_size: int = 64, *, pretrained: str | None = "openai",
                 weights: str | None = None):
        super().__init__(in_chans, image_size)
        who = f"open_clip/{model_name}"
        open_clip = import_open_clip(who)
        if model_name not in open_clip.list_models():
            raise MethodError(f"{who}: unknown open_clip model (see open_clip.list_models())")
        self.model_name, self.pretrained, self.weights = model_name, pretrained, weights
        source = None
        if pretrained is not None or weights:
            local = local_checkpoint(model_name, pretrained, weights)
            if local is not None:
                source = str(local)
            elif hub_reachable():
                source = pretrained
            else:
                raise MethodError(offline_message(model_name, pretrained))
        model = open_clip.create_model(model_name, pretrained=source)
        self.visual = model.visual.eval().requires_grad_(False)
        cfg = getattr(self.visual, "preprocess_cfg", None) or {}
        self.normalize = ImageNetInput(tuple(cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)),
                                       tuple(cfg.get("std", open_clip.OPENAI_DATASET_STD)))
        size = self.visual.image_size
        self.input_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.out_dim = int(self.visual.output_dim)

    def train(self, mode: bool = True) -> "OpenCLIPEncoder":
        super().train(mode)
        self.visual.eval()
        return self

    def _inputs(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bicubic", align_corners=False)
        return self.normalize(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.visual(self._inputs(x))

    def feature_maps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Patch tokens of three blocks on the patch grid (``blocks.*``, ViT towers); a ResNet tower's stages."""
        blocks = getattr(getattr(self.visual, "transformer", None), "resblocks", None)
        indices = vit_stage_indices(len(blocks)) if blocks is not None else None
        out = self.visual.forward_intermediates(self._inputs(x), indices=indices, intermediates_only=True)
        maps = out["image_intermediates"]
        names = [f"blocks.{i}" for i in indices] if indices is not None else [f"stage{i}" for i in range(len(maps))]
        return dict(zip(names, maps))


@register_encoder("open_clip", family=True, member="open_clip model", example="ViT-S-32",
                  tiny=dict(pretrained=None), requires="open_clip")
def open_clip_encoder(model_name: str, **kwargs) -> OpenCLIPEncoder:
    """Frozen CLIP image tower from open_clip (optional package open_clip_torch; weights from the hub or a file)."""
    return OpenCLIPEncoder(model_name, **kwargs)
