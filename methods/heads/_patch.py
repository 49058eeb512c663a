"""The patch density head: a density model over the patch vectors of an encoder's feature maps.

Why a base class: PaDiM (Defard et al. 2021), PatchCore (Roth et al. 2022) and CFlow-AD (Gudovskiy
et al. 2022) share everything but the density model. Each takes named feature-map stages of a
frozen encoder, brings them to one grid, keeps (a seeded random subset of) the channels, models
the distribution of the resulting patch vectors on normal images, and scores each patch; the
patch scores are upsampled to the image and smoothed (``scipy.ndimage.gaussian_filter``, sigma 4 px
at 224 px, scaled here to the image side) and the image score is their maximum. Here that recipe
is written once, so any density model (one subclass with ``_fit`` and ``_score``) crosses with any
encoder that declares ``dense = True``; a head whose stages are combined differently (PatchCore's
per-layer pooling) overrides ``combine``, one that scores each stage apart (CFlow-AD) ``predict``.

Memory is bounded: ``fit`` receives a *function returning an iterator* of feature-map batches,
so heads stream over the training images (as many passes as they need) and never hold an
``[N, P, d, d]`` tensor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from methods.base import MethodError, seed_everything
from methods.detectors._maps import gaussian_smooth, relative_sigma, upsample
from methods.preprocess import FeaturePreprocessor, check_preprocess

FeatureBatches = Callable[[], Iterable[dict[str, torch.Tensor]]]
SCORES = ("max", "mean", "topk")
ALIGN = ("nearest", "bilinear")


def select_stages(maps: dict[str, torch.Tensor], image_size: int, stages: Sequence[str | int] | None,
                  strides: tuple[int, int], who: str) -> list[str]:
    """Stage names to use: explicit names/indices, or every stage whose stride is in ``strides``.

    The stride of a stage is ``image_size / its side``; PaDiM uses strides 4-16, PatchCore 8-16.
    When no stage falls in the range (tiny images), the finest stage coarser than the input is used.
    """
    names = list(maps)
    if stages is not None:
        chosen = []
        for stage in stages:
            if isinstance(stage, (int, np.integer)):
                if not -len(names) <= stage < len(names):
                    raise MethodError(f"{who}: stage index {stage} out of range for stages {names}")
                chosen.append(names[stage])
            elif stage in maps:
                chosen.append(stage)
            else:
                raise MethodError(f"{who}: unknown stage '{stage}'; the encoder has {names}")
        return chosen
    stride = {name: image_size / maps[name].shape[-1] for name in names}
    chosen = [n for n in names if strides[0] <= stride[n] <= strides[1]]
    if not chosen:
        coarser = [n for n in names if stride[n] > 1] or names
        chosen = [min(coarser, key=lambda n: stride[n])]
    return chosen


class PatchHead(nn.Module):
    """Density model over patch vectors; ``predict(maps, size)`` -> image scores and pixel maps.

    Args:
        stages: stage names or indices of the encoder's ``feature_maps`` (None: by ``strides``).
        strides: the stride range used when ``stages`` is None ((4, 16) as PaDiM).
        d_reduced: seeded random subset of the concatenated channels (PaDiM's 100; None keeps all).
        aggregate: local average pooling of each stage over ``aggregate x aggregate`` neighbours
            before concatenation (PatchCore's 3; 1 = none).
        count_include_pad: whether the zero padding at the map's border counts in that average
            (torch's ``AvgPool2d`` default, which anomalib's PatchCore uses; it pulls border patches
            towards zero); False (default) averages the neighbours inside the map only.
        align: how coarser stages reach the finest chosen grid: ``nearest`` (PaDiM) or ``bilinear``.
        preprocess: per-channel ``none`` | ``standardize`` | ``l2`` | ``pca_whiten`` of the patch vectors.
        sigma: Gaussian smoothing of the upsampled map with scipy's filter (reflect border, truncate
            4). None (default): the references' 4 px at 224 px scaled to the map side
            (``4 * side / 224``, per axis); a number: that many pixels at every size; 0: none.
        score: image score from the smoothed map: ``max``, ``mean`` or ``topk`` (mean of the
            ``top_k`` fraction of highest pixels).
    """

    dense = True
    #: seed-independent fit (see ``DensityHead.deterministic_fit``); a ``d_reduced`` channel subset is
    #: drawn with the seed, so it makes any patch head stochastic (set per instance below)
    deterministic_fit: bool = False

    def __init__(self, *, stages: Sequence[str | int] | None = None, strides: Sequence[int] = (4, 16),
                 d_reduced: int | None = None, aggregate: int = 1, count_include_pad: bool = False,
                 align: str = "nearest", preprocess: str = "none", variance: float = 0.99, sigma: float | None = None, score: str = "max",
                 top_k: float = 0.01):
        super().__init__()
        if d_reduced is not None:
            self.deterministic_fit = False
        who = type(self).__name__
        if align not in ALIGN:
            raise MethodError(f"{who}: align='{align}' is not one of {ALIGN}")
        if score not in SCORES:
            raise MethodError(f"{who}: score='{score}' is not one of {SCORES}")
        if aggregate < 1 or aggregate % 2 == 0:
            raise MethodError(f"{who}: aggregate must be an odd int >= 1, got {aggregate}")
        if d_reduced is not None and d_reduced < 1:
            raise MethodError(f"{who}: d_reduced must be >= 1 or None, got {d_reduced}")
        if not 0 < top_k <= 1:
            raise MethodError(f"{who}: top_k must be in (0, 1], got {top_k}")
        if sigma is not None and sigma < 0:
            raise MethodError(f"{who}: sigma must be >= 0 or None (scaled to the image), got {sigma}")
        self.stages = None if stages is None else list(stages)
        self.strides = tuple(strides)
        self.d_reduced = d_reduced
        self.aggregate = aggregate
        self.count_include_pad = bool(count_include_pad)
        self.align = align
        self.preprocess = check_preprocess(preprocess, who)
        self.variance = variance
        self.sigma = sigma
        self.score = score
        self.top_k = top_k

    # -- patch vectors ----------------------------------------------------------------------------
    def combine(self, maps: dict[str, torch.Tensor]) -> torch.Tensor:
        """``[B, D, h, w]``: the chosen stages (``aggregate``-pooled) on the finest grid, concatenated."""
        feats = [maps[name] for name in self.stages_]
        if self.aggregate > 1:
            feats = [F.avg_pool2d(f, self.aggregate, stride=1, padding=self.aggregate // 2,
                                  count_include_pad=self.count_include_pad)
                     for f in feats]
        size = max((f.shape[-2:] for f in feats), key=lambda s: s[0] * s[1])
        kwargs = {"mode": "nearest"} if self.align == "nearest" else {"mode": "bilinear", "align_corners": False}
        return torch.cat([f if f.shape[-2:] == size else F.interpolate(f, size=size, **kwargs) for f in feats], 1)

    def embed(self, maps: dict[str, torch.Tensor]) -> torch.Tensor:
        """``[B, P, d]`` patch vectors: ``combine``, the channel subset, then the preprocessing."""
        feats = self.combine(maps)
        if self.channels_ is not None:
            feats = feats[:, self.channels_.to(feats.device)]
        return self.preprocessor(feats.flatten(2).transpose(1, 2))

    # -- fitting ----------------------------------------------------------------------------------
    def fit(self, batches: FeatureBatches, *, image_size: int, seed: int = 0, device: str = "cpu",
            progress: bool = False) -> "PatchHead":
        """Fit on the feature maps of normal training images (``batches()`` iterates them)."""
        who = type(self).__name__
        generator = seed_everything(seed)
        first = next(iter(batches()), None)
        if not first:
            raise MethodError(f"{who}: got no training feature maps")
        self.stages_ = select_stages(first, image_size, self.stages, self.strides, who)
        self.channels_ = None
        total = self.combine(first).shape[1]
        if self.d_reduced is not None and self.d_reduced < total:
            self.channels_ = torch.randperm(total, generator=generator)[:self.d_reduced].sort().values
        self.preprocessor = FeaturePreprocessor("none")
        patches = lambda: (self._checked(self.embed(maps), who) for maps in batches())  # noqa: E731
        if self.preprocess != "none":
            fitted = FeaturePreprocessor(self.preprocess, self.variance)
            if fitted.needs_statistics:
                for emb in patches():
                    fitted.update(emb)
            self.preprocessor = fitted.finish().to(device)
        self.grid_ = None
        self._fit(patches, seed=seed, device=device, progress=progress)
        self.fitted_ = True
        return self

    @staticmethod
    def _checked(emb: torch.Tensor, who: str) -> torch.Tensor:
        if not torch.isfinite(emb).all():
            raise MethodError(f"{who}: non-finite patch features; the encoder produced NaN/inf")
        return emb

    def _fit(self, patches: Callable[[], Iterable[torch.Tensor]], *, seed: int, device: str,
             progress: bool) -> None:  # pragma: no cover - abstract
        """Fit the density on ``[B, P, d]`` batches (``patches()`` starts a new pass)."""
        raise NotImplementedError

    def _score(self, emb: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """``[B, P]`` patch anomaly scores (higher = more anomalous) for ``[B, P, d]`` vectors."""
        raise NotImplementedError

    # -- scoring ----------------------------------------------------------------------------------
    @torch.no_grad()
    def patch_scores(self, maps: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(emb [B, P, d], scores [B, h, w])`` on the patch grid."""
        if not getattr(self, "fitted_", False):
            raise MethodError(f"{type(self).__name__} is used before fit()")
        emb = self.embed(maps)
        size = max((maps[n].shape[-2:] for n in self.stages_), key=lambda s: s[0] * s[1])
        scores = self._score(emb)
        if not torch.isfinite(scores).all():
            raise MethodError(f"{type(self).__name__}: non-finite patch scores")
        return emb, scores.view(len(emb), *size)

    def image_scores(self, emb: torch.Tensor, patch_scores: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
        """Image score from the smoothed map (``score``); PatchCore overrides it (raw patch maximum)."""
        flat = maps.flatten(1)
        if self.score == "max":
            return flat.max(1).values
        if self.score == "mean":
            return flat.mean(1)
        k = max(1, int(round(self.top_k * flat.shape[1])))
        return flat.topk(k, dim=1).values.mean(1)

    def smooth(self, maps: torch.Tensor) -> torch.Tensor:
        """``[B, H, W]`` maps blurred as ``scipy.ndimage.gaussian_filter`` (see ``sigma``)."""
        sigma = relative_sigma(tuple(maps.shape[-2:])) if self.sigma is None else self.sigma
        if not self.sigma and self.sigma is not None:
            return maps
        return torch.from_numpy(gaussian_smooth(maps.float().cpu().numpy(), sigma)).to(maps.device)

    @torch.no_grad()
    def predict(self, maps: dict[str, torch.Tensor], image_size: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(scores [B], maps [B, H, W])``: patch scores upsampled (bilinear) and Gaussian-smoothed."""
        emb, patch = self.patch_scores(maps)
        up = self.smooth(upsample(patch, image_size))
        return self.image_scores(emb, patch.flatten(1), up), up
