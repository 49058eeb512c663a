"""Normalizing-flow head: CRADL's INN (Lüth et al., 2023, arXiv:2301.02126) rebuilt with nflows.

CRADL stacks 8 FrEIA ``GLOWCouplingBlock`` (clamp 2, subnet Linear(c, 512)-ReLU-Linear(512, c))
each followed by a random permutation. A GLOW block transforms *both* halves, so here one block is
two nflows affine couplings with complementary masks plus a :class:`RandomPermutation`.

Differences from CRADL, on purpose:

* CRADL trains on ``0.5 * ||z||^2 / 2 - log|det J|`` (a z^2/4 base density) but scores with
  ``0.5 * ||z||^2 - log|det J|``; here training and scoring use the same standard-normal NLL.
* The last layer of every subnet starts at zero, so the untrained flow is the identity and the
  score starts as the standard-normal NLL of the standardised features (stable first steps).
* A non-finite or exploding loss raises :class:`MethodError` instead of leaving NaN weights.
"""

from __future__ import annotations

import torch
from nflows.distributions.normal import StandardNormal
from nflows.flows.base import Flow
from nflows.transforms.base import CompositeTransform
from nflows.transforms.coupling import AffineCouplingTransform
from nflows.transforms.permutations import RandomPermutation
from nflows.utils import torchutils
from torch import nn

from methods.base import DensityHead
from methods.registry import register_head
from methods.training import train_loop

# FrEIA's "ATAN" soft clamp: clamp * 0.636 * atan(s / clamp) stays within about (-clamp, clamp)
# (2/pi = 0.6366) and is the identity near zero.
ATAN_SLOPE = 0.636


class SoftClampAffineCoupling(AffineCouplingTransform):
    """Affine coupling with GLOW/FrEIA's log-scale ``clamp * 0.636 * atan(s / clamp)``.

    nflows 0.14 uses ``scale = sigmoid(s + 2) + 1e-3``, which can only shrink (scale < 1.001);
    a GLOW block can also expand, by up to ``exp(clamp)``.
    """

    def __init__(self, mask, transform_net_create_fn, clamp: float = 2.0):
        super().__init__(mask, transform_net_create_fn)
        self.clamp = clamp
        # Fast path: the transformed features are one contiguous block at the start or the end.
        transformed = torch.as_tensor(mask) > 0
        self._transform_first = bool(transformed[0])
        boundary = int(transformed.sum()) if self._transform_first else int((~transformed).sum())
        self._boundary = boundary if 0 < boundary < len(transformed) and bool(
            (transformed[:boundary] == transformed[0]).all()
            and (transformed[boundary:] != transformed[0]).all()) else None

    def _log_scale_and_shift(self, transform_params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shift = transform_params[:, :self.num_transform_features]
        raw = transform_params[:, self.num_transform_features:]
        return self.clamp * ATAN_SLOPE * torch.atan(raw / self.clamp), shift

    def _scale_and_shift(self, transform_params):
        log_scale, shift = self._log_scale_and_shift(transform_params)
        return torch.exp(log_scale), shift

    def forward(self, inputs, context=None):
        """nflows' ``CouplingTransform.forward`` with slices instead of index gathers/scatters
        (about 20% less CPU time per training step for two contiguous halves)."""
        identity, transform = self._split(inputs)
        if identity is None:
            return super().forward(inputs, context)
        outputs, logabsdet = self._coupling_transform_forward(transform, self.transform_net(identity, context))
        return self._join(identity, outputs), logabsdet

    def inverse(self, inputs, context=None):
        identity, transform = self._split(inputs)
        if identity is None:
            return super().inverse(inputs, context)
        outputs, logabsdet = self._coupling_transform_inverse(transform, self.transform_net(identity, context))
        return self._join(identity, outputs), logabsdet

    def _split(self, inputs: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``(identity, transform)`` halves, or ``(None, None)`` where the fast path does not apply."""
        if self._boundary is None or inputs.dim() != 2 or inputs.shape[1] != self.features:
            return None, None
        first, second = inputs[:, :self._boundary], inputs[:, self._boundary:]
        return (second, first) if self._transform_first else (first, second)

    def _join(self, identity: torch.Tensor, transformed: torch.Tensor) -> torch.Tensor:
        return torch.cat((transformed, identity) if self._transform_first else (identity, transformed), dim=1)

    def _coupling_transform_forward(self, inputs, transform_params):
        log_scale, shift = self._log_scale_and_shift(transform_params)
        return inputs * torch.exp(log_scale) + shift, torchutils.sum_except_batch(log_scale)

    def _coupling_transform_inverse(self, inputs, transform_params):
        log_scale, shift = self._log_scale_and_shift(transform_params)
        return (inputs - shift) * torch.exp(-log_scale), -torchutils.sum_except_batch(log_scale)


class CouplingSubnet(nn.Module):
    """Linear-ReLU-Linear, last layer zero-initialised; accepts nflows' ``(inputs, context)`` call."""

    def __init__(self, in_features: int, out_features: int, hidden_features: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_features, hidden_features), nn.ReLU(),
                                 nn.Linear(hidden_features, out_features))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, inputs: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(inputs)


def build_glow_flow(features: int, n_blocks: int, hidden_features: int, clamp: float) -> Flow:
    """``n_blocks`` x [coupling(first half) -> coupling(second half) -> RandomPermutation]."""
    first_half = torch.zeros(features)
    first_half[: features // 2] = 1  # nflows: mask > 0 is transformed; D = 1 leaves this empty
    masks = [first_half, 1 - first_half] if features > 1 else [1 - first_half]

    def subnet(n_in: int, n_out: int) -> nn.Module:
        return CouplingSubnet(n_in, n_out, hidden_features)

    transforms: list[nn.Module] = []
    for _ in range(n_blocks):
        transforms += [SoftClampAffineCoupling(mask, subnet, clamp) for mask in masks]
        transforms.append(RandomPermutation(features))
    return Flow(CompositeTransform(transforms), StandardNormal([features]))


@register_head("flow", tiny=dict(epochs=2))
class FlowHead(DensityHead):
    """GLOW-like normalizing flow; score = -log p(z) under a standard-normal base.

    Defaults follow CRADL's recipe: 8 blocks, hidden 512, clamp 2, Adam lr 2e-3 with weight decay
    1e-4, MultiStepLR [20, 40] x 0.1, 60 epochs, batch 512, dequantisation noise 1e-3, gradient
    norm clipped to 5. Training stops with :class:`MethodError` when the loss is non-finite or
    the mean NLL exceeds ``max_nll_per_dim`` nats per dimension (about 1.42 for the identity flow).
    ``loss_history_`` holds the mean training loss per epoch.
    """

    #: CRADL standardises before its INN, and standardize won the ablation for the flow (l2 lost 0.09)
    default_preprocess = "standardize"

    def __init__(self, n_blocks: int = 8, hidden_features: int = 512, clamp: float = 2.0,
                 lr: float = 2e-3, weight_decay: float = 1e-4, milestones: tuple[int, ...] = (20, 40),
                 gamma: float = 0.1, epochs: int = 60, batch_size: int = 512, noise_std: float = 1e-3,
                 grad_clip: float = 5.0, max_nll_per_dim: float = 100.0, preprocess: str | None = None):
        super().__init__(preprocess)
        for name, value in [("n_blocks", n_blocks), ("hidden_features", hidden_features),
                            ("epochs", epochs), ("batch_size", batch_size)]:
            if value < 1:
                raise ValueError(f"flow head: {name} must be >= 1, got {value}")
        if clamp <= 0 or lr <= 0:
            raise ValueError(f"flow head: clamp and lr must be > 0, got clamp={clamp}, lr={lr}")
        self.n_blocks = n_blocks
        self.hidden_features = hidden_features
        self.clamp = clamp
        self.lr = lr
        self.weight_decay = weight_decay
        self.milestones = tuple(milestones)
        self.gamma = gamma
        self.epochs = epochs
        self.batch_size = batch_size
        self.noise_std = noise_std
        self.grad_clip = grad_clip
        self.max_nll_per_dim = max_nll_per_dim
        self.flow_: Flow | None = None
        self.loss_history_: list[float] = []

    def _fit(self, z: torch.Tensor, *, seed: int, device: str = "cpu", progress: bool = False) -> None:
        # The base class has just seeded torch, so the init and the permutations are deterministic.
        n, d = z.shape
        flow = build_glow_flow(d, self.n_blocks, self.hidden_features, self.clamp).to(device)
        optimizer = torch.optim.Adam(flow.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(self.milestones), self.gamma)
        generator = torch.Generator().manual_seed(seed)
        data = z.to(device)

        def loss_fn(index: torch.Tensor, step: int) -> torch.Tensor:
            batch = data[index]
            noise = torch.randn(batch.shape, generator=generator).to(device)
            return -flow.log_prob(batch + self.noise_std * noise).mean()

        flow.train()
        self.loss_history_ = train_loop(
            loss_fn, n=n, batch_size=self.batch_size, epochs=self.epochs, generator=generator,
            optimizers=[optimizer], name="flow", drop_last=False, device=device, scheduler=schedule,
            scheduler_interval="epoch", clip_grad_norm=self.grad_clip, max_loss=self.max_nll_per_dim * d,
            hint=f"try a lower lr (now {self.lr:g}), a smaller clamp or fewer blocks", progress=progress,
            desc="flow head").epochs
        self.flow_ = flow.eval()

    def _score(self, z: torch.Tensor) -> torch.Tensor:
        flow = self.flow_
        if next(flow.parameters()).device != z.device:
            flow = flow.to(z.device)
        return -flow.log_prob(z.float()).to(z.dtype)
