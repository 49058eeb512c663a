"""``patch_knn``: a coreset memory bank of patch vectors and nearest-neighbour distances (PatchCore).

Roth, Pemula, Zepeda, Schölkopf, Brox, Gehler, "Towards Total Recall in Industrial Anomaly
Detection", CVPR 2022 (arXiv 2106.08265); official code amazon-science/patchcore-inspection.

* Locally aware patch features, as the official code builds them (``pool_layers=True``): each
  stage (strides 8 and 16) is unfolded into its zero-padded 3x3 neighbourhoods (``C * 9`` values
  per patch), the coarser one bilinearly upsampled to the finer grid, each stage's vector
  adaptive-average-pooled to ``pretrain_embed_dim`` (1024), the stages stacked and pooled together
  to ``target_embed_dim`` (1024). Every stage so gets the same share of the vector, whatever its
  channel count. ``pool_layers=False`` is the paper's wording instead: a 3x3 mean per stage and
  the stages concatenated (the deeper, wider stage then dominates distances).
* Memory bank: greedy (k-center) coreset of ``coreset_ratio`` (10 %) of all training patches,
  chosen on a seeded Gaussian random projection to 128 dimensions and started, like the official
  approximate sampler, from the mean distance to 10 random points (no N x N matrix is built).
* Patch score: distance to the nearest bank element, *squared* L2 as the official code (FAISS
  ``IndexFlatL2`` returns squared distances); ``metric="euclidean"`` gives the paper's norm.
* Image score: the largest *raw* patch score (before upsampling and smoothing), optionally
  re-weighted by the paper's Eq. 7 (``reweight``; the official code does not use it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from methods.base import MethodError
from methods.heads._patch import PatchHead
from methods.registry import register_head

METRICS = ("squared", "euclidean")


def pooled_patch_features(feats: list[torch.Tensor], patch_size: int, pretrain_dim: int,
                          target_dim: int) -> torch.Tensor:
    """``[B, target_dim, h, w]`` PatchCore patch features on the first stage's grid (official recipe).

    Each ``[B, C, h_l, w_l]`` stage is unfolded into zero-padded ``patch_size`` neighbourhoods
    (channel-major ``C * k * k`` values per position), bilinearly resized to the first stage's grid,
    and each position's vector adaptive-average-pooled to ``pretrain_dim``; the stages' vectors are
    stacked and pooled together to ``target_dim`` (so each stage keeps ``target_dim / L`` values).
    """
    b = len(feats[0])
    grid = feats[0].shape[-2:]
    pooled = []
    for f in feats:
        u = F.unfold(f, patch_size, padding=patch_size // 2).view(b, -1, *f.shape[-2:])
        if u.shape[-2:] != grid:
            u = F.interpolate(u, size=grid, mode="bilinear", align_corners=False)
        u = u.flatten(2).transpose(1, 2).reshape(-1, 1, u.shape[1])                    # [B*P, 1, C*k*k]
        pooled.append(F.adaptive_avg_pool1d(u, pretrain_dim))
    stacked = torch.cat(pooled, dim=-1)                                                  # [B*P, 1, L*pretrain]
    out = F.adaptive_avg_pool1d(stacked, target_dim)[:, 0]                               # [B*P, target]
    return out.view(b, grid[0] * grid[1], target_dim).transpose(1, 2).reshape(b, target_dim, *grid)


def greedy_coreset(features: torch.Tensor, n_select: int, generator: torch.Generator, *,
                   projection_dim: int | None = 128, start_points: int = 10) -> torch.Tensor:
    """Indices of ``n_select`` rows chosen by iterative farthest-point (k-center greedy) selection.

    Distances are measured after a seeded Gaussian random projection to ``projection_dim``
    (Johnson-Lindenstrauss; None keeps the features). The initial "distance to the coreset" is the
    mean distance to ``start_points`` random rows, so the first pick is the point farthest from the bulk.
    """
    n, dim = features.shape
    if n_select >= n:
        return torch.arange(n, device=features.device)
    if projection_dim and dim > projection_dim:
        proj = torch.randn(dim, projection_dim, generator=generator).to(features) / projection_dim ** 0.5
        features = features @ proj
    starts = torch.randperm(n, generator=generator)[:min(start_points, n)].to(features.device)
    # Squared distances throughout (same argmax); |f - p|^2 = |f|^2 + |p|^2 - 2 f.p is one mat-vec.
    min_sq = torch.cdist(features, features[starts]).mean(dim=1).pow(2)
    norms = features.pow(2).sum(dim=1)
    selected = torch.empty(n_select, dtype=torch.long, device=features.device)
    for i in range(n_select):
        pick = torch.argmax(min_sq)
        selected[i] = pick
        sq = torch.addmv(norms, features, features[pick], alpha=-2.0).add_(norms[pick])
        torch.minimum(min_sq, sq, out=min_sq)
    return selected


def nearest(query: torch.Tensor, bank: torch.Tensor, k: int = 1, budget: int = 2 ** 24) -> tuple[torch.Tensor, torch.Tensor]:
    """k smallest Euclidean distances and their bank indices for every query row, ``[Q, k]`` each.

    ``torch.cdist`` runs on query chunks of at most ``budget`` distances so memory stays bounded.
    """
    step = max(1, budget // max(1, len(bank)))
    k = min(k, len(bank))
    dists, index = [], []
    for start in range(0, len(query), step):
        top = torch.cdist(query[start:start + step], bank).topk(k, dim=1, largest=False)
        dists.append(top.values)
        index.append(top.indices)
    return torch.cat(dists), torch.cat(index)


@register_head("patch_knn", tiny=dict(coreset_ratio=0.2))
class PatchKNNHead(PatchHead):
    """Coreset memory bank + nearest-neighbour patch distance (PatchCore).

    Args:
        coreset_ratio: fraction of training patches kept in the bank (0.1; 1 keeps all).
        projection_dim, coreset_start_points: random projection and start of the greedy coreset.
        num_neighbours: patch score = mean distance to this many nearest bank elements (1).
        metric: ``squared`` (official code) or ``euclidean`` L2 distance.
        pool_layers: the official per-stage pooling to a common size (see the module docstring);
            False: 3x3 mean per stage and concatenation.
        pretrain_embed_dim, target_embed_dim: the official ``pretrain_embed_dimension`` and
            ``target_embed_dimension`` (1024 each, the official defaults).
        reweight, reweight_neighbours: the paper's image-score re-weighting with ``b`` neighbours.
        strides, aggregate, align: PatchCore's (8, 16), 3 and bilinear by default.
    """

    deterministic_fit = True       # a full memory bank; a coreset (ratio < 1) is drawn with the seed

    def __init__(self, *, coreset_ratio: float = 0.1, projection_dim: int | None = 128,
                 coreset_start_points: int = 10, num_neighbours: int = 1, metric: str = "squared",
                 pool_layers: bool = True, pretrain_embed_dim: int = 1024, target_embed_dim: int = 1024,
                 reweight: bool = False, reweight_neighbours: int = 9,
                 strides=(8, 16), aggregate: int = 3, align: str = "bilinear", **kwargs):
        super().__init__(strides=strides, aggregate=aggregate, align=align, **kwargs)
        if not 0 < coreset_ratio <= 1:
            raise MethodError(f"patch_knn: coreset_ratio must be in (0, 1], got {coreset_ratio}")
        if metric not in METRICS:
            raise MethodError(f"patch_knn: metric='{metric}' is not one of {METRICS}")
        if pretrain_embed_dim < 1 or target_embed_dim < 1:
            raise MethodError(f"patch_knn: pretrain_embed_dim and target_embed_dim must be >= 1, "
                              f"got {pretrain_embed_dim}, {target_embed_dim}")
        self.coreset_ratio = coreset_ratio
        if coreset_ratio < 1:
            self.deterministic_fit = False
        self.projection_dim = projection_dim
        self.coreset_start_points = coreset_start_points
        self.num_neighbours = num_neighbours
        self.metric = metric
        self.pool_layers = pool_layers
        self.pretrain_embed_dim = pretrain_embed_dim
        self.target_embed_dim = target_embed_dim
        self.reweight = reweight
        self.reweight_neighbours = reweight_neighbours

    def combine(self, maps):
        if not self.pool_layers:
            return super().combine(maps)
        feats = sorted((maps[name] for name in self.stages_), key=lambda f: -f.shape[-2] * f.shape[-1])
        return pooled_patch_features(feats, self.aggregate, self.pretrain_embed_dim, self.target_embed_dim)

    def _fit(self, patches, *, seed, device, progress) -> None:
        bank = torch.cat([emb.flatten(0, 1) for emb in patches()])
        generator = torch.Generator().manual_seed(seed)
        keep = greedy_coreset(bank, max(1, int(len(bank) * self.coreset_ratio)), generator,
                              projection_dim=self.projection_dim, start_points=self.coreset_start_points)
        self.memory_bank_ = bank[keep].contiguous()

    def _score(self, emb: torch.Tensor) -> torch.Tensor:
        self.memory_bank_ = self.memory_bank_.to(emb.device)
        dist, _ = nearest(emb.flatten(0, 1), self.memory_bank_, self.num_neighbours)
        if self.metric == "squared":
            dist = dist.pow(2)
        return dist.mean(dim=1).view(len(emb), -1)

    def image_scores(self, emb, patch_scores, maps):
        """Largest raw patch score, re-weighted by Eq. 7 of the paper when ``reweight``."""
        best, where = patch_scores.max(dim=1)
        if not self.reweight:
            return best
        bank = self.memory_bank_
        worst_patch = emb[torch.arange(len(emb), device=emb.device), where]          # m_test,*
        _, matched = nearest(worst_patch, bank, 1)                                   # m^*
        _, support = nearest(bank[matched[:, 0]], bank, self.reweight_neighbours)     # N_b(m^*)
        dist = torch.linalg.vector_norm(worst_patch[:, None] - bank[support], dim=-1)
        return (1 - torch.softmax(dist, dim=1)[:, 0]) * best
