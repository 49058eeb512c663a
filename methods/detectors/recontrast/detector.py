"""ReContrast's detector: training glue, prediction and post-processing (see the package docstring).

The networks, the loss and the anomaly map are in :mod:`.torch_model`; here: the optimisers, the
hard-mining schedule and the iteration-based training (:func:`methods.training.train_loop`), input
resizing, Gaussian smoothing of the maps and the image score.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from datasets.base import Split, to_float
from methods.backbones import create_backbone
from methods.base import Detector, MethodError, seed_everything
from methods.detectors._maps import SCORE_REDUCTIONS, gaussian_smooth, reduce_maps, resize
from methods.inputs import check_choice, check_images, chunks
from methods.detectors.recontrast.torch_model import ReContrastNet, anomaly_map, contrastive_loss
from methods.registry import register_detector
from methods.training import train_loop


@register_detector("recontrast", tiny=dict(backbone="resnet18", pretrained=False, iterations=2, batch_size=8))
class ReContrast(Detector):
    """ReContrast (Guo et al., NeurIPS 2023): contrastive feature reconstruction with a tuned encoder.

    Args:
        backbone, pretrained, weights: timm model (``features_only``) and ImageNet weights; the paper
            uses ``wide_resnet50_2.tv_in1k`` (torchvision V1 weights, pass ``weights=``/
            ``$UAD_BENCH_WEIGHTS`` offline); ``resnet18`` and ``tf_efficientnet_lite0`` work too.
        out_indices: three encoder levels (strides 4/8/16).
        input_size: side the images are resized to (a multiple of 32; None = ``image_size`` rounded
            up to one; the paper uses 256).
        iterations, epochs: training length in iterations (1,000) or, if ``epochs`` is set, epochs.
        batch_size, lr, encoder_lr, weight_decay, betas: AdamW settings (32, 2e-3, 1e-5, 1e-5).
        alpha_start, alpha_end, alpha_warmup: hard-mining schedule (-3 -> 1 over 10% of iterations).
        encoder_bn_train: encoder BatchNorm in train mode while training (True; OCT2017 used False).
        decoder_blocks: blocks per decoder stage, deep to shallow (None: as the official decoder).
        sigma, score: map smoothing (4) and image score ``max`` | ``mean``.
    """

    name = "recontrast"
    fitted_attribute = "model_"

    setting = "uad"

    def __init__(self, in_chans: int = 1, image_size: int = 64, *, backbone: str = "wide_resnet50_2.tv_in1k",
                 pretrained: bool = True, weights: str | None = None, out_indices: tuple[int, ...] = (1, 2, 3),
                 input_size: int | None = None, iterations: int = 1000, epochs: int | None = None,
                 batch_size: int = 32, lr: float = 2e-3, encoder_lr: float = 1e-5, weight_decay: float = 1e-5,
                 betas: tuple[float, float] = (0.9, 0.999), alpha_start: float = -3.0, alpha_end: float = 1.0,
                 alpha_warmup: float = 0.1, encoder_bn_train: bool = True,
                 decoder_blocks: tuple[int, int, int] | None = None, sigma: float = 4.0, score: str = "max"):
        size = input_size or max(32, 32 * math.ceil(image_size / 32))
        if size % 32:
            raise MethodError(f"recontrast: input_size must be a multiple of 32 (encoder stride 16 + OCBE), got {size}")
        self.in_chans = in_chans
        self.image_size = image_size
        self.backbone = backbone
        self.pretrained = pretrained
        self.weights = weights
        self.out_indices = tuple(out_indices)
        self.input_size = size
        self.iterations = iterations
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.encoder_lr = encoder_lr
        self.weight_decay = weight_decay
        self.betas = tuple(betas)
        self.alpha_start = alpha_start
        self.alpha_end = alpha_end
        self.alpha_warmup = alpha_warmup
        self.encoder_bn_train = encoder_bn_train
        self.decoder_blocks = decoder_blocks
        self.sigma = sigma
        self.score = check_choice(score, SCORE_REDUCTIONS, "score", "recontrast")

    def _input(self, images: np.ndarray, device: str) -> torch.Tensor:
        return resize(to_float(images, device), self.input_size)

    def required_weights(self) -> list[tuple[str, bool, str | None]]:
        return [(self.backbone, self.pretrained, self.weights)]

    def fit(self, train: Split, *, seed: int = 0, device: str = "cpu", progress: bool = False) -> "ReContrast":
        self.progress = progress
        images = check_images(train.images, self.in_chans, "recontrast (train)")
        if self.in_chans not in (1, 3):
            raise MethodError(f"recontrast: ImageNet backbones take 1 or 3 channels, got in_chans={self.in_chans}")
        if len(images) < 2:
            raise MethodError(f"recontrast: needs at least 2 training images, got {len(images)}")
        started = time.perf_counter()
        generator = seed_everything(seed)
        encoder = create_backbone(self.backbone, pretrained=self.pretrained, weights=self.weights,
                                  features_only=True, out_indices=self.out_indices)
        self.model_ = ReContrastNet(encoder, decoder_blocks=self.decoder_blocks,
                                    encoder_bn_train=self.encoder_bn_train).to(device)
        model = self.model_
        opt_decoder = torch.optim.AdamW([*model.bottleneck.parameters(), *model.decoder.parameters()], lr=self.lr,
                                        betas=self.betas, weight_decay=self.weight_decay)
        opt_encoder = torch.optim.AdamW(model.encoder.parameters(), lr=self.encoder_lr, betas=self.betas,
                                        weight_decay=self.weight_decay)
        data = torch.from_numpy(np.ascontiguousarray(images)).to(device)           # uint8, moved once
        steps_per_epoch = max(1, len(data) // min(self.batch_size, len(data)))
        total = self.epochs * steps_per_epoch if self.epochs else self.iterations
        warmup = max(1.0, self.alpha_warmup * total)

        def loss_fn(index: torch.Tensor, it: int) -> torch.Tensor:
            alpha = min(self.alpha_start + (self.alpha_end - self.alpha_start) * it / warmup, self.alpha_end)
            targets, recons = model(resize(data[index].float().div_(255.0), self.input_size))
            return contrastive_loss(targets, recons, alpha)

        model.train()
        self.history_: list[float] = train_loop(
            loss_fn, n=len(data), batch_size=self.batch_size, epochs=math.ceil(total / steps_per_epoch),
            max_steps=total, generator=generator, optimizers=[opt_decoder, opt_encoder], name="recontrast",
            device=device, hint=f"lower lr={self.lr}", progress=self.progress, mixed_precision=True).steps
        model.eval()
        self.fit_seconds_ = time.perf_counter() - started
        return self

    @torch.no_grad()
    def _predict(self, images: np.ndarray, *, device: str) -> tuple[np.ndarray, np.ndarray]:
        model = self.model_.eval().to(device)
        size = images.shape[-2:]
        maps = []
        for s in chunks(len(images), self.batch_size):
            maps.append(anomaly_map(*model(self._input(images[s], device)), size).cpu().numpy())
        maps = gaussian_smooth(np.concatenate(maps), self.sigma)
        return reduce_maps(maps, self.score), maps
