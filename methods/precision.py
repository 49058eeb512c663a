"""Mixed precision and memory format for training loops on CUDA; no-ops on the CPU.

Why the options travel with the device: every component shares ``fit(data, *, seed, device,
progress)``; how fast a loop runs on a GPU is a property of the run (grid key ``amp``, and
channels-last on CUDA), not of the method. The runner passes a :class:`Device` (a ``str``, so torch
takes it wherever it takes ``"cuda"``) that carries the run's choices, and the training loops ask
:func:`autocast`, :func:`grad_scaler` and :func:`use_channels_last` with that device. A plain
string means the defaults. On the CPU all three do nothing, so CPU results are bit-identical with
or without these options.

``amp`` (default on for CUDA): bf16 autocast where the GPU supports it, else fp16 autocast with a
``torch.amp.GradScaler`` (fp16 gradients underflow without loss scaling).
"""

from __future__ import annotations

from contextlib import nullcontext

import torch


class Device(str):
    """A device name (``"cpu"``, ``"cuda:0"``) with the run's precision choices attached.

    ``amp`` / ``channels_last``: ``None`` means the default (on for CUDA), ``False`` off.
    """

    amp: bool | None
    channels_last: bool | None

    def __new__(cls, name: str, *, amp: bool | None = None, channels_last: bool | None = None):
        obj = super().__new__(cls, name)
        obj.amp, obj.channels_last = amp, channels_last
        return obj

    def __reduce__(self):
        return (_device, (str(self), self.amp, self.channels_last))


def _device(name: str, amp: bool | None, channels_last: bool | None) -> Device:
    return Device(name, amp=amp, channels_last=channels_last)


def _option(device, name: str) -> bool | None:
    return getattr(device, name, None) if isinstance(device, Device) else None


def _is_cuda(device) -> bool:
    return str(device).startswith("cuda")


def amp_dtype(device) -> torch.dtype | None:
    """The autocast dtype for training on ``device``, or None (CPU, or ``amp = false``)."""
    if not _is_cuda(device) or _option(device, "amp") is False:
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device):
    """``torch.autocast`` for the forward pass and loss on CUDA; a null context elsewhere."""
    dtype = amp_dtype(device)
    return torch.autocast("cuda", dtype=dtype) if dtype is not None else nullcontext()


def grad_scaler(device) -> torch.amp.GradScaler | None:
    """A gradient scaler for fp16 autocast; None for bf16 (same exponent range as fp32) and CPU."""
    return torch.amp.GradScaler("cuda") if amp_dtype(device) == torch.float16 else None


def use_channels_last(device, module: torch.nn.Module | None = None) -> bool:
    """Channels-last pays on CUDA for convolutional trunks (tensor cores); never on the CPU."""
    if not _is_cuda(device) or _option(device, "channels_last") is False:
        return False
    return module is None or any(isinstance(m, torch.nn.Conv2d) for m in module.modules())


def backward_step(loss: torch.Tensor, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None) -> None:
    """``loss.backward(); opt.step()``, through the scaler when there is one."""
    if scaler is None:
        loss.backward()
        opt.step()
        return
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
