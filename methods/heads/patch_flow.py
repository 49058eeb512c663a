"""``patch_flow``: CFlow-AD, one position-conditioned normalizing flow per feature-map stage.

Gudovskiy, Ishizaka, Kozuka, "CFLOW-AD: Real-Time Unsupervised Anomaly Detection with
Localization via Conditional Normalizing Flows", WACV 2022 (arXiv 2107.12571); official code
gudovskiy/cflow-ad. "We use a conditional normalizing flow ... [whose] condition is a 2D
positional encoding": every stage of a frozen encoder gets its own flow over its patch vectors
(all channels), conditioned on the sinusoidal code of the patch's position, so one network covers
all positions of a stage yet stays position-aware.

As the official code (``model.py``, ``train.py``, ``main.py``):

* decoder per stage = FrEIA ``SequenceINN`` of ``n_blocks`` (8) ``AllInOneBlock`` couplings (affine
  coupling with the subnet ``Linear(n, 2n) -> ReLU -> Linear(2n, out)`` on ``[half, condition]``,
  affine clamping 1.9, SOFTPLUS global affine, soft (random orthogonal) permutation);
* condition = 2-D sinusoidal positional encoding, ``pos_dim`` (128) channels: the first half
  encodes the column, the second the row, sines and cosines interleaved;
* loss per batch of ``batch_size`` (256) patch vectors: ``-logsigmoid(log p / C)`` with
  ``log p = -C/2 log(2 pi) - |z|^2 / 2 + log|det J|``;
* Adam ``lr`` (2e-4); per meta-epoch cosine decay to ``lr * 1e-3``; linear warm-up from ``lr / 10``
  over the first ``warmup_epochs`` (2) meta-epochs; ``meta_epochs`` (25) x ``sub_epochs`` (8) passes;
* map: per stage ``exp(log p / C - max)``, bilinearly upsampled (``align_corners=True``), summed over
  the stages; anomaly = high where that sum is low; image score = the map's maximum; no blur.

Deviations (methods/README.md): the max subtracted per stage is taken over the *training* patches
(the official code takes it over the test set: a test statistic, and per-batch predictions could
not use it); the returned map is ``-log`` of the summed map rather than ``max - sum`` -- a strictly
decreasing function of the same sum, so every ranking (AUROC, AP, AUPRO, the validation threshold
of Dice) is the official one, while the most anomalous pixels keep distinct values in float32
(``max - sum`` rounds them all to ``max``); one Adam per stage (the official single Adam over all
decoders updates each decoder only from its own loss as well); the patch vectors of all training
images are shuffled together (official: within each batch of 32 images); ``patches_per_image``
random positions per image and stage may bound the CPU budget (None = all, as the official code).
"""

from __future__ import annotations

import math

import FrEIA.framework as Ff
import FrEIA.modules as Fm
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from methods.base import MethodError, seed_everything
from methods.detectors._maps import upsample
from methods.heads._patch import PatchHead, select_stages
from methods.heads._sampling import sample_patches
from methods.preprocess import FeaturePreprocessor
from methods.registry import register_head
from methods.training import train_loop

#: log(sqrt(2 pi)): the standard normal's log-density is -LOG_SQRT_2PI - z^2 / 2 per dimension.
LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def cflow_positional_encoding(dim: int, height: int, width: int) -> torch.Tensor:
    """``[h * w, dim]`` CFlow's 2-D sinusoidal code, positions in row-major order.

    Channels ``[0, dim/2)`` encode the column and ``[dim/2, dim)`` the row; within each half even
    channels are ``sin(pos * f_k)`` and odd ones ``cos(pos * f_k)`` with ``f_k = 10000^(-2k / (dim/2))``.
    """
    if dim % 4 or dim < 4:
        raise MethodError(f"patch_flow: pos_dim must be a positive multiple of 4, got {dim}")
    half = dim // 2
    freq = torch.exp(torch.arange(0.0, half, 2) * -(math.log(1e4) / half))                  # [half / 2]
    cols = torch.arange(float(width))[:, None] * freq                                         # [W, half / 2]
    rows = torch.arange(float(height))[:, None] * freq                                        # [H, half / 2]
    code = torch.zeros(height, width, dim)
    code[:, :, 0:half:2] = cols.sin()[None]
    code[:, :, 1:half:2] = cols.cos()[None]
    code[:, :, half::2] = rows.sin()[:, None]
    code[:, :, half + 1::2] = rows.cos()[:, None]
    return code.reshape(height * width, dim)


def cflow_subnet(n_in: int, n_out: int) -> nn.Module:
    """The official coupling subnet: ``Linear(n_in, 2 n_in) -> ReLU -> Linear(2 n_in, n_out)``."""
    return nn.Sequential(nn.Linear(n_in, 2 * n_in), nn.ReLU(), nn.Linear(2 * n_in, n_out))


def cflow_decoder(features: int, condition: int, n_blocks: int, clamp: float) -> Ff.SequenceINN:
    """CFlow's conditional flow on ``features``-d vectors (FrEIA; the soft permutation draws from numpy)."""
    flow = Ff.SequenceINN(features)
    for _ in range(n_blocks):
        flow.append(Fm.AllInOneBlock, cond=0, cond_shape=(condition,), subnet_constructor=cflow_subnet,
                    affine_clamping=clamp, global_affine_type="SOFTPLUS", permute_soft=True)
    return flow


def log_likelihood_per_dim(flow: Ff.SequenceINN, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """``log p(x | context) / C`` under a standard-normal base, one value per row of ``x [N, C]``."""
    z, log_jac = flow(x, c=[context])
    channels = x.shape[1]
    return (-channels * LOG_SQRT_2PI - 0.5 * z.pow(2).sum(1) + log_jac) / channels


def cflow_lr_factor(step: int, *, steps_per_epoch: int, meta_epochs: int, warmup_epochs: int,
                    decay: float = 1e-3, warmup_from: float = 0.1) -> float:
    """Multiplier of the base lr at optimiser ``step`` (CFlow's ``adjust_`` / ``warmup_learning_rate``).

    Meta-epoch ``e`` runs at ``decay + (1 - decay) (1 + cos(pi e / meta_epochs)) / 2``; during the
    first ``warmup_epochs`` the rate rises linearly, step by step, from ``warmup_from`` to the value
    of meta-epoch ``warmup_epochs``.
    """
    def cosine(epoch: float) -> float:
        return decay + (1 - decay) * (1 + math.cos(math.pi * epoch / meta_epochs)) / 2

    epoch = step // steps_per_epoch
    if epoch < warmup_epochs:
        progress = step / (warmup_epochs * steps_per_epoch)
        return warmup_from + progress * (cosine(warmup_epochs) - warmup_from)
    return cosine(epoch)


def cflow_anomaly_map(log_p: list[torch.Tensor], maxima: list[float], size: tuple[int, int]) -> torch.Tensor:
    """``[B, H, W]`` map from per-stage ``[B, h_l, w_l]`` per-dimension log-likelihoods.

    CFlow: ``S = sum_l upsample(exp(log_p_l - max_l))`` (bilinear, corners aligned) and anomaly =
    ``max(S) - S``. Returned here: ``-log S``, strictly decreasing in ``S`` like ``max - S`` (same
    ranking of every pixel and image), computed in float64 so tiny sums stay distinct.
    """
    total = sum(upsample(torch.exp(lp.double() - m)[:, None], size, align_corners=True).double()
                for lp, m in zip(log_p, maxima))
    return -torch.log(total.clamp_min(torch.finfo(torch.float64).tiny))


@register_head("patch_flow", tiny=dict(meta_epochs=2, sub_epochs=1, warmup_epochs=1, patches_per_image=16,
                                         n_blocks=2, pos_dim=16, batch_size=64))
class CFlowHead(PatchHead):
    """CFlow-AD: a conditional flow per stage, positional condition, likelihood maps summed over stages.

    Args:
        stages, strides: the stages modelled (default: strides 8-32, CFlow's layer2-layer4 of a ResNet).
        n_blocks: ``AllInOneBlock`` couplings per stage (8); clamp: affine clamping (1.9);
        pos_dim: positional-code channels (128); lr: Adam learning rate (2e-4);
        meta_epochs, sub_epochs, warmup_epochs: the official schedule (25, 8, 2);
        batch_size: patch vectors per optimiser step (the official ``N = 256``);
        patches_per_image: random positions per image and stage used for training (None: all);
        preprocess: per-stage feature preprocessing (``none``: CFlow models raw features);
        sigma: map blur (0: none, as CFlow); score: image score from the map (``max``).
    """

    def __init__(self, *, stages=None, strides=(8, 32), n_blocks: int = 8, clamp: float = 1.9,
                 pos_dim: int = 128, lr: float = 2e-4, meta_epochs: int = 25, sub_epochs: int = 8,
                 warmup_epochs: int = 2, batch_size: int = 256, patches_per_image: int | None = None,
                 preprocess: str = "none", variance: float = 0.99, sigma: float | None = 0.0, score: str = "max",
                 top_k: float = 0.01):
        super().__init__(stages=stages, strides=strides, preprocess=preprocess, variance=variance, sigma=sigma,
                         score=score, top_k=top_k)
        for name, value in [("n_blocks", n_blocks), ("meta_epochs", meta_epochs), ("sub_epochs", sub_epochs),
                            ("batch_size", batch_size)]:
            if value < 1:
                raise MethodError(f"patch_flow: {name} must be >= 1, got {value}")
        if warmup_epochs < 0 or lr <= 0 or clamp <= 0:
            raise MethodError(f"patch_flow: need warmup_epochs >= 0, lr > 0 and clamp > 0, "
                              f"got {warmup_epochs}, {lr}, {clamp}")
        if patches_per_image is not None and patches_per_image < 1:
            raise MethodError(f"patch_flow: patches_per_image must be >= 1 or None, got {patches_per_image}")
        cflow_positional_encoding(pos_dim, 1, 1)                    # checks pos_dim now, not at fit
        self.n_blocks = n_blocks
        self.clamp = clamp
        self.pos_dim = pos_dim
        self.lr = lr
        self.meta_epochs = meta_epochs
        self.sub_epochs = sub_epochs
        self.warmup_epochs = warmup_epochs
        self.batch_size = batch_size
        self.patches_per_image = patches_per_image

    # -- fitting ----------------------------------------------------------------------------------
    @staticmethod
    def _vectors(feature_map: torch.Tensor) -> torch.Tensor:
        return feature_map.flatten(2).transpose(1, 2)                 # [B, C, h, w] -> [B, h*w, C]

    def fit(self, batches, *, image_size: int, seed: int = 0, device: str = "cpu",
            progress: bool = False) -> "CFlowHead":
        """One flow per stage on the (sampled) patch vectors of the normal training images."""
        generator = seed_everything(seed)
        first = next(iter(batches()), None)
        if not first:
            raise MethodError("patch_flow: got no training feature maps")
        self.stages_ = select_stages(first, image_size, self.stages, self.strides, "patch_flow")
        self.grids_ = {name: tuple(first[name].shape[-2:]) for name in self.stages_}
        # one preprocessor, flow and maximum per stage, in the order of ``stages_`` (names hold dots)
        self.preprocessors_ = nn.ModuleList([FeaturePreprocessor(self.preprocess, self.variance)
                                             for _ in self.stages_])
        sampled: list[list] = [[] for _ in self.stages_]
        for maps in batches():                                        # one pass: samples and statistics
            for i, name in enumerate(self.stages_):
                emb = self._checked(self._vectors(maps[name]).float(), "patch_flow")
                if self.preprocessors_[i].needs_statistics:
                    self.preprocessors_[i].update(emb)
                sampled[i].append(sample_patches([emb], self.patches_per_image, generator))
        self.flows_ = nn.ModuleList()
        self.maxima_, self.loss_history_ = [], {}
        for i, name in enumerate(self.stages_):
            prep = self.preprocessors_[i].finish().to(device)
            vectors = prep(torch.cat([v for v, _ in sampled[i]]).to(device))
            where = torch.cat([p for _, p in sampled[i]]).to(device)
            context = cflow_positional_encoding(self.pos_dim, *self.grids_[name]).to(device)[where]
            flow = cflow_decoder(vectors.shape[1], self.pos_dim, self.n_blocks, self.clamp).to(device)
            self.flows_.append(flow)
            self.loss_history_[name] = self._train(flow, vectors, context, generator, name, device, progress)
            with torch.no_grad():
                self.maxima_.append(max(log_likelihood_per_dim(flow, vectors[s], context[s]).max().item()
                                        for s in _chunks(len(vectors), 4096)))
        self.fitted_ = True
        return self

    def _train(self, flow, vectors, context, generator, name, device, progress) -> list[float]:
        optimiser = torch.optim.Adam(flow.parameters(), lr=self.lr)
        steps_per_pass = len(vectors) // min(self.batch_size, len(vectors))      # train_loop's drop_last batches
        factor = lambda step: cflow_lr_factor(  # noqa: E731
            step, steps_per_epoch=steps_per_pass * self.sub_epochs, meta_epochs=self.meta_epochs,
            warmup_epochs=self.warmup_epochs)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, factor)

        def loss_fn(index: torch.Tensor, step: int) -> torch.Tensor:
            return -F.logsigmoid(log_likelihood_per_dim(flow, vectors[index], context[index])).mean()

        flow.train()
        history = train_loop(loss_fn, n=len(vectors), batch_size=self.batch_size,
                             epochs=self.meta_epochs * self.sub_epochs, generator=generator, optimizers=[optimiser],
                             scheduler=scheduler, name=f"patch_flow ({name})", drop_last=True, device=device,
                             hint=f"lower lr (now {self.lr:g})", progress=progress).epochs
        flow.eval()
        return history

    # -- scoring ----------------------------------------------------------------------------------
    @torch.no_grad()
    def stage_log_likelihoods(self, maps: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """Per stage ``[B, h, w]`` per-dimension log-likelihood of every patch vector."""
        if not getattr(self, "fitted_", False):
            raise MethodError("patch_flow is used before fit()")
        out = []
        for i, name in enumerate(self.stages_):
            feature_map = maps[name]
            if tuple(feature_map.shape[-2:]) != self.grids_[name]:
                raise MethodError(f"patch_flow: stage '{name}' was {self.grids_[name]} in training, got "
                                  f"{tuple(feature_map.shape[-2:])} (a different image size?)")
            b = len(feature_map)
            emb = self.preprocessors_[i](self._vectors(feature_map).float()).flatten(0, 1)
            code = cflow_positional_encoding(self.pos_dim, *self.grids_[name]).to(emb.device).repeat(b, 1)
            flow = self.flows_[i].eval()
            log_p = torch.cat([log_likelihood_per_dim(flow, emb[s], code[s]) for s in _chunks(len(emb), 8192)])
            if not torch.isfinite(log_p).all():
                raise MethodError("patch_flow: non-finite log-likelihoods")
            out.append(log_p.view(b, *self.grids_[name]))
        return out

    @torch.no_grad()
    def predict(self, maps: dict[str, torch.Tensor], image_size: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(scores [B], maps [B, H, W])``: CFlow's summed likelihood map, as ``-log`` (see the module)."""
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        log_p = self.stage_log_likelihoods(maps)
        anomaly = self.smooth(cflow_anomaly_map(log_p, self.maxima_, size).float())
        return self.image_scores(None, None, anomaly), anomaly

    def patch_scores(self, maps):  # pragma: no cover - the per-stage head has no single patch grid
        raise MethodError("patch_flow scores each stage on its own grid; use predict() or stage_log_likelihoods()")

    # -- pickling (FrEIA's AllInOneBlock keeps a lambda, so flows travel as state dicts) ----------
    def __getstate__(self):
        state = self.__dict__.copy()
        modules = state["_modules"] = dict(state["_modules"])
        flows = modules.pop("flows_", None)
        if flows is not None:
            state["_flow_states"] = [(flow.shapes[0][0], flow.state_dict()) for flow in flows]
        return state

    def __setstate__(self, state):
        flow_states = state.pop("_flow_states", None)
        super().__setstate__(state)
        if flow_states is not None:
            flows, numpy_state = nn.ModuleList(), np.random.get_state()
            with torch.random.fork_rng(devices=[]):                  # rebuilding must not move the seeds
                for features, weights in flow_states:
                    flows.append(cflow_decoder(features, self.pos_dim, self.n_blocks, self.clamp))
                    flows[-1].load_state_dict(weights)
            np.random.set_state(numpy_state)
            self._modules["flows_"] = flows


def _chunks(n: int, size: int):
    return [slice(start, min(start + size, n)) for start in range(0, n, size)]
