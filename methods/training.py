"""The one training loop every trained model in the suite shares.

Why one loop: the self-trained encoders, the autoencoders (``ae`` and DDAD-ASR's six), DDAD-ASR's
ASR-Net, ReContrast and the flow heads differ in their loss, their data and their optimisers, not
in the loop around them. :func:`train_loop` owns what they share: seeded shuffling (a
``torch.Generator`` passed in, so the caller decides what else draws from it and in which order),
zero-grad / backward / optional gradient clipping / step for one or more optimisers, an optional
LR scheduler stepped per step or per epoch, the divergence check (a non-finite or exploding loss
raises :class:`~methods.base.MethodError` naming the method, the epoch, the step and a hint), tqdm
progress and the loss history.

The caller passes ``loss_fn(index, step)``: ``index`` holds the (shuffled) sample indices of one
batch, already on ``device``, and ``step`` counts optimiser steps from 0 across epochs (ReContrast's
hard-mining schedule reads it). Everything the loop does not do (building batches from the indices,
augmentations, the model's train/eval mode) stays with the caller.

Schedules: where torch has the schedule, callers use it (``MultiStepLR`` in the flow head). The
encoders' warm-up + cosine (:func:`methods.encoders._augment.warmup_cosine` in a ``LambdaLR``) is
kept: lightly's ``CosineWarmupScheduler`` decays over ``max_steps - 1`` (reaching 0 one step
earlier) and timm's ``CosineLRScheduler`` warms up from ``warmup_lr_init`` reaching the base rate
one step later, so either would change the learning rate of every step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import nn

from methods.base import MethodError


@dataclass
class TrainingHistory:
    """What :func:`train_loop` observed: the mean loss per epoch and the loss of every step."""

    epochs: list[float] = field(default_factory=list)
    steps: list[float] = field(default_factory=list)


def shuffled_batches(n: int, batch_size: int, generator: torch.Generator, *, drop_last: bool = True,
                     device: str | torch.device | None = None) -> list[torch.Tensor]:
    """One epoch of seeded, shuffled index batches (one ``randperm`` drawn from ``generator``).

    ``drop_last`` drops the ragged tail when a full batch exists (the official loaders'
    ``drop_last=True``, and no BatchNorm batch of one); a set smaller than ``batch_size`` is one batch.
    """
    order = torch.randperm(n, generator=generator)
    if device is not None:
        order = order.to(device)
    batch = min(batch_size, n)
    stop = n - batch + 1 if drop_last else n
    return [order[start:start + batch] for start in range(0, stop, batch)]


def _epoch_mean(losses: list[float], sizes: list[int]) -> float:
    """Mean loss per sample; with equal batches simply the mean of the batch losses."""
    if len(set(sizes)) == 1:
        return sum(losses) / len(losses)
    return sum(loss * size for loss, size in zip(losses, sizes)) / sum(sizes)


def train_loop(loss_fn: Callable[[torch.Tensor, int], torch.Tensor], *, n: int, batch_size: int,
               epochs: int, generator: torch.Generator, optimizers: Sequence[torch.optim.Optimizer], name: str,
               drop_last: bool = True, device: str | torch.device | None = None, max_steps: int | None = None,
               scheduler: torch.optim.lr_scheduler.LRScheduler | None = None, scheduler_interval: str = "step",
               clip_grad_norm: float | None = None, max_loss: float | None = None,
               hint: str = "lower the learning rate", before_epoch: Callable[[int], None] | None = None,
               after_step: Callable[[int], None] | None = None, progress: bool = False,
               desc: str | None = None, scaler: torch.amp.GradScaler | None = None,
               mixed_precision: bool = False) -> TrainingHistory:
    """Minimise ``loss_fn`` over ``epochs`` shuffled passes of ``n`` samples; returns the loss history.

    Args:
        loss_fn: ``(index, step) -> scalar loss`` for one batch (see the module docstring).
        n, batch_size, drop_last, device: the batches (:func:`shuffled_batches`, one per epoch).
        epochs, max_steps: passes over the data; ``max_steps`` stops early after that many steps
            (iteration-based training), and the progress bar then counts steps instead of epochs.
        generator: draws the shuffling; the caller may draw from it too (augmentations, noise).
        optimizers: zeroed, then stepped in this order after ``backward``.
        scheduler, scheduler_interval: stepped after every optimiser ``"step"`` or every ``"epoch"``.
        clip_grad_norm: clip the gradient norm of all optimised parameters to this value.
        max_loss: a loss above it counts as divergence (as does a non-finite one).
        name, hint: how the divergence error names the method and what it suggests.
        before_epoch: called with the epoch index before its batches are drawn (fresh synthetic data).
        after_step: called with the step index after each optimiser step (momentum encoders).
        progress, desc: a tqdm bar (``desc`` defaults to ``name``).
        scaler: a ``torch.amp.GradScaler`` for fp16 autocast on CUDA (``methods.precision``); None
            (CPU, bf16) is the plain backward/step.
        mixed_precision: run ``loss_fn`` under the run's autocast on ``device`` (``methods.precision``:
            bf16/fp16 on CUDA unless the grid sets ``amp = false``; nothing on the CPU), with a
            gradient scaler for fp16. For loops whose loss is computed inside ``loss_fn`` (the
            detectors'); the encoders' loop places autocast itself.
    """
    if scheduler_interval not in ("step", "epoch"):
        raise ValueError(f"scheduler_interval must be 'step' or 'epoch', got '{scheduler_interval}'")
    from tqdm.auto import tqdm

    if mixed_precision and device is not None:
        from methods.precision import autocast, grad_scaler

        scaler = scaler or grad_scaler(device)
        plain_loss = loss_fn

        def loss_fn(index: torch.Tensor, step: int) -> torch.Tensor:  # noqa: F811 - the same loss under autocast
            with autocast(device):
                return plain_loss(index, step)

    params = [p for opt in optimizers for group in opt.param_groups for p in group["params"]]
    by_step = max_steps is not None
    bar = tqdm(total=max_steps if by_step else epochs, desc=desc or name, leave=False, disable=not progress,
               unit="it" if by_step else "epoch")
    history = TrainingHistory()
    step = 0
    try:
        for epoch in range(epochs):
            if by_step and step >= max_steps:
                break
            if before_epoch is not None:
                before_epoch(epoch)
            losses, sizes = [], []
            for batch_step, index in enumerate(shuffled_batches(n, batch_size, generator, drop_last=drop_last,
                                                                device=device)):
                if by_step and step >= max_steps:
                    break
                loss = loss_fn(index, step)
                value = loss.item()
                if not math.isfinite(value) or (max_loss is not None and value > max_loss):
                    raise MethodError(f"{name} diverged at epoch {epoch}, step {batch_step} "
                                      f"(loss={value:.4g}); {hint}")
                for opt in optimizers:
                    opt.zero_grad(set_to_none=True)
                if scaler is None:
                    loss.backward()
                else:
                    scaler.scale(loss).backward()
                    if clip_grad_norm is not None:
                        for opt in optimizers:
                            scaler.unscale_(opt)
                if clip_grad_norm is not None:
                    nn.utils.clip_grad_norm_(params, clip_grad_norm)
                for opt in optimizers:
                    opt.step() if scaler is None else scaler.step(opt)
                if scaler is not None:
                    scaler.update()
                if scheduler is not None and scheduler_interval == "step":
                    scheduler.step()
                if after_step is not None:
                    after_step(step)
                losses.append(value)
                sizes.append(len(index))
                history.steps.append(value)
                step += 1
                if by_step:
                    bar.update(1)
            if scheduler is not None and scheduler_interval == "epoch":
                scheduler.step()
            history.epochs.append(_epoch_mean(losses, sizes))
            if not by_step:
                bar.update(1)
            bar.set_postfix(loss=f"{history.epochs[-1]:.4f}")
    finally:
        bar.close()
    return history
