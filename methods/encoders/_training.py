"""The one training loop every self-trained encoder shares.

Why shared: SimCLR, MoCo, the VAE and the seed encoders differ only in their ``training_step``;
the loop (uint8 data moved to the device once, per-batch float conversion, seeded shuffling,
warm-up + cosine schedule, no weight decay on biases/norms, divergence check, tqdm progress) is
the same (the step loop itself is :func:`methods.training.train_loop`, shared with the detectors
and heads), and ``python -m bench perf`` compares exactly this loop against a bare PyTorch loop.
On CUDA the loop uses mixed precision and channels-last (``methods.precision``; grid key ``amp``);
on the CPU those are no-ops and the arithmetic is exactly the plain fp32 loop.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch import nn

from datasets.base import Split
from methods.base import Encoder, MethodError, seed_everything
from methods.encoders._augment import warmup_cosine
from methods.precision import autocast, grad_scaler, use_channels_last
from methods.training import train_loop


def param_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on weights only: biases and normalisation parameters get none (CRADL, SimCLR)."""
    decay, no_decay = [], []
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim <= 1 or name.endswith(".bias") else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class TrainableEncoder(Encoder):
    """An encoder trained by minimising ``training_step(x, generator)`` over the normal images."""

    def __init__(self, in_chans: int = 1, image_size: int = 64, *, epochs: int = 20, batch_size: int = 128,
                 lr: float = 1e-3, weight_decay: float = 1e-6, warmup_epochs: int = 1,
                 optimizer: str = "adam"):
        super().__init__(in_chans, image_size)
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.warmup_epochs = warmup_epochs
        self.optimizer = optimizer

    def training_step(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def make_optimizer(self) -> torch.optim.Optimizer:
        groups = param_groups(self, self.weight_decay)
        if self.optimizer == "adam":
            return torch.optim.Adam(groups, lr=self.lr)
        if self.optimizer == "adamw":
            return torch.optim.AdamW(groups, lr=self.lr)
        if self.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=self.lr, momentum=0.9)
        raise ValueError(f"unknown optimizer '{self.optimizer}' (adam, adamw, sgd)")

    def fit(self, train: Split, *, seed: int = 0, device: str = "cpu", progress: bool = False) -> "TrainableEncoder":
        images = train.normal().images if train.n_anomalous else train.images
        if len(images) < 2:
            raise MethodError(f"{type(self).__name__}: needs at least 2 normal training images, got {len(images)}")
        generator = seed_everything(seed)
        self.to(device).train()
        channels_last = use_channels_last(device, self)        # CUDA conv trunks only; never on the CPU
        if channels_last:
            self.to(memory_format=torch.channels_last)
        data = torch.from_numpy(np.ascontiguousarray(images))                # uint8, moved once
        if str(device).startswith("cuda"):
            data = data.pin_memory().to(device, non_blocking=True)
        else:
            data = data.to(device)
        scaler = grad_scaler(device)                              # fp16 autocast only
        n = len(data)
        batch = min(self.batch_size, n)
        steps_per_epoch = max(1, n // batch)                                # drop the ragged tail
        total, warmup = self.epochs * steps_per_epoch, self.warmup_epochs * steps_per_epoch
        opt = self.make_optimizer()
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, total, warmup))
        started = time.perf_counter()

        def loss_fn(index: torch.Tensor, step: int) -> torch.Tensor:
            x = data[index].float().div_(255.0)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(device):                                # bf16/fp16 on CUDA (grid key amp)
                loss = self.training_step(x, generator)
            return loss.float()

        self.history_: list[float] = train_loop(
            loss_fn, n=n, batch_size=batch, epochs=self.epochs, generator=generator, optimizers=[opt],
            name=type(self).__name__, device=device, scheduler=sched, hint=f"lower lr={self.lr}",
            after_step=lambda step: self.after_step(step, total), progress=progress, scaler=scaler,
            desc=f"train {getattr(self, 'registry_name', type(self).__name__)}").epochs
        self.fit_seconds_ = time.perf_counter() - started
        self.images_seen_ = self.epochs * steps_per_epoch * batch
        self.eval()
        return self

    def after_step(self, step: int, total: int) -> None:
        """Hook for momentum updates (MoCo) and similar per-step state."""


def cosine_momentum(step: int, total: int, start: float = 0.99, end: float = 1.0) -> float:
    """MoCo/BYOL-style momentum that rises from ``start`` to ``end`` along a cosine."""
    return end - (end - start) * (math.cos(math.pi * step / max(1, total)) + 1) / 2


class TrunkEncoder(TrainableEncoder):
    """A trainable encoder whose representation is its timm trunk ``self.backbone`` (SimCLR, MoCo):
    ``forward`` is the pooled trunk output, ``feature_maps`` the trunk's ``feature_info`` stages."""

    dense = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def feature_maps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The trunk's timm ``feature_info`` stages (``act1``, ``layer1..4`` for the ResNets)."""
        from methods.backbones import timm_feature_maps

        return timm_feature_maps(self.backbone, x)
