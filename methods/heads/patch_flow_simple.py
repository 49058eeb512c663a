"""``patch_flow_simple``: one position-conditioned flow over the concatenated stages (CFlow-like).

A simplification of CFlow-AD (Gudovskiy, Ishizaka, Kozuka, WACV 2022, arXiv 2107.12571; the
faithful version is ``patch_flow``), kept because earlier grids used it under the name
``patch_flow``: a conditional normalizing flow models the patch features, the condition being a
2-D sinusoidal positional encoding of the patch, and the per-patch negative log-likelihood is the
anomaly map.

Here (nflows): ``n_blocks`` x [affine coupling on each half with GLOW's soft clamp (the same
couplings as the global ``flow`` head) whose subnets see ``[half, positional encoding]`` ->
random permutation], a standard-normal base, Adam at a constant ``lr`` with gradient clipping,
loss ``-log p / d``. Unlike CFlow: one flow on the concatenated stages (the shared
``PatchHead`` recipe, with its ``d_reduced`` random channel subset and its map blur) instead of
one flow per stage, two-sided couplings without CFlow's global affine and soft permutation, and
the map is ``-log p / d`` rather than CFlow's ``max - exp(log p)`` normalisation.
"""

from __future__ import annotations

import math

import torch
from nflows.distributions.normal import StandardNormal
from nflows.flows.base import Flow
from nflows.transforms.base import CompositeTransform
from nflows.transforms.permutations import RandomPermutation
from torch import nn

from methods.base import MethodError
from methods.heads._patch import PatchHead
from methods.heads._sampling import sample_patches
from methods.heads.flow import SoftClampAffineCoupling
from methods.registry import register_head
from methods.training import train_loop


def positional_encoding(height: int, width: int, dim: int) -> torch.Tensor:
    """``[h * w, dim]`` 2-D sinusoidal encoding: rows then columns, sines then cosines in blocks (CFlow interleaves)."""
    if dim % 4:
        raise MethodError(f"patch_flow_simple: pos_dim must be a multiple of 4, got {dim}")
    quarter = dim // 4
    freq = torch.exp(-math.log(10000.0) * torch.arange(quarter) / quarter)
    rows = torch.arange(height)[:, None] * freq
    cols = torch.arange(width)[:, None] * freq
    row_code = torch.cat([rows.sin(), rows.cos()], 1)[:, None].expand(height, width, 2 * quarter)
    col_code = torch.cat([cols.sin(), cols.cos()], 1)[None].expand(height, width, 2 * quarter)
    return torch.cat([row_code, col_code], -1).reshape(height * width, dim)


class ContextSubnet(nn.Module):
    """``[inputs, context]`` -> Linear-ReLU-Linear, last layer zero-initialised (identity flow at start)."""

    def __init__(self, in_features: int, out_features: int, context_features: int, hidden_features: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_features + context_features, hidden_features), nn.ReLU(),
                                 nn.Linear(hidden_features, out_features))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, inputs: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(torch.cat([inputs, context], dim=1))


def build_conditional_flow(features: int, context: int, n_blocks: int, hidden: int, clamp: float) -> Flow:
    first = torch.zeros(features)
    first[: features // 2] = 1
    masks = [first, 1 - first] if features > 1 else [1 - first]
    transforms: list[nn.Module] = []
    for _ in range(n_blocks):
        for mask in masks:
            transforms.append(SoftClampAffineCoupling(
                mask, lambda n_in, n_out: ContextSubnet(n_in, n_out, context, hidden), clamp))
        transforms.append(RandomPermutation(features))
    return Flow(CompositeTransform(transforms), StandardNormal([features]))


@register_head("patch_flow_simple", tiny=dict(epochs=2, patches_per_image=16, n_blocks=2, hidden_features=32))
class PatchFlowSimpleHead(PatchHead):
    """One conditional coupling flow on the concatenated patch vectors with a positional context.

    Args:
        n_blocks: coupling blocks (CFlow: 8); hidden_features: subnet width; clamp: soft clamp (CFlow 1.9).
        pos_dim: positional-encoding size (CFlow: 128); lr: Adam learning rate (CFlow: 2e-4).
        epochs, batch_size, patches_per_image: training budget (CPU-sized defaults).
        preprocess: ``standardize`` by default (flows train badly on raw feature scales).
    """

    def __init__(self, *, n_blocks: int = 4, hidden_features: int = 128, clamp: float = 1.9, pos_dim: int = 32,
                 lr: float = 1e-3, epochs: int = 10, batch_size: int = 512, patches_per_image: int | None = 64,
                 d_reduced: int | None = 64, preprocess: str = "standardize", **kwargs):
        super().__init__(d_reduced=d_reduced, preprocess=preprocess, **kwargs)
        for name, value in [("n_blocks", n_blocks), ("hidden_features", hidden_features),
                            ("epochs", epochs), ("batch_size", batch_size)]:
            if value < 1:
                raise MethodError(f"patch_flow_simple: {name} must be >= 1, got {value}")
        self.n_blocks = n_blocks
        self.hidden_features = hidden_features
        self.clamp = clamp
        self.pos_dim = pos_dim
        self.lr = lr
        self.epochs = epochs
        self.batch_size = batch_size
        self.patches_per_image = patches_per_image

    def _fit(self, patches, *, seed, device, progress) -> None:
        generator = torch.Generator().manual_seed(seed)
        first = next(iter(patches()))
        positions = first.shape[1]
        side = self._grid_side(positions)
        self.pos_ = positional_encoding(*side, self.pos_dim)
        vectors, where = sample_patches(patches(), self.patches_per_image, generator)
        self.flow_ = build_conditional_flow(vectors.shape[1], self.pos_dim, self.n_blocks, self.hidden_features,
                                            self.clamp).to(device)
        optimiser = torch.optim.Adam(self.flow_.parameters(), lr=self.lr)
        vectors, context = vectors.to(device), self.pos_.to(device)[where.to(device)]

        def loss_fn(index: torch.Tensor, step: int) -> torch.Tensor:
            return -self.flow_.log_prob(vectors[index], context=context[index]).mean() / vectors.shape[1]

        self.flow_.train()
        self.loss_history_ = train_loop(
            loss_fn, n=len(vectors), batch_size=self.batch_size, epochs=self.epochs, generator=generator,
            optimizers=[optimiser], name="patch_flow_simple", drop_last=False, device=device, clip_grad_norm=5.0,
            hint=f"lower lr (now {self.lr:g}) or standardise", progress=progress).epochs
        self.flow_.eval()

    def _grid_side(self, positions: int) -> tuple[int, int]:
        h = int(round(math.sqrt(positions)))
        if h * h != positions:
            raise MethodError(f"patch_flow_simple: needs a square patch grid, got {positions} positions")
        return h, h

    def _score(self, emb: torch.Tensor) -> torch.Tensor:
        b, p, d = emb.shape
        if p != len(self.pos_):
            raise MethodError(f"patch_flow_simple: fitted on {len(self.pos_)} patch positions, got {p}")
        context = self.pos_.to(emb.device).repeat(b, 1)
        with torch.no_grad():
            nll = -self.flow_.log_prob(emb.flatten(0, 1), context=context) / d
        return nll.view(b, p)
