"""DDAD-ASR's detector: training glue, prediction and caching (see the package docstring).

The networks and the maths are in :mod:`.torch_model`; here: the two AE ensembles' training
(:func:`methods.detectors.ae.fit_autoencoder`), the ASR-Net's training on fresh synthetic anomalies
every epoch (:func:`methods.training.train_loop`), the per-score ASR-Nets the fit cache completes,
and prediction.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from datasets.base import Split
from methods.base import Detector, MethodError, PoolRequest, seed_everything
from methods.detectors._maps import reduce_maps, upsample
from methods.inputs import check_choice, check_images, chunks
from methods.detectors.ae import ConvAutoencoder, fit_autoencoder, to_signed
from methods.detectors.ddad_asr.torch_model import RefineNet, blend_squares, discrepancies, focal_loss, refine_input
from methods.registry import register_detector
from methods.training import train_loop

SCORES = ("asr_dual", "asr_intra", "intra", "inter", "rec")


@register_detector("ddad_asr", tiny=dict(input_size=32, epochs=2, batch_size=16, hidden_dim=64, asr_epochs=1,
                                              asr_channels=8))
class DDADASR(Detector):
    """DDAD-ASR (Cai et al., MedIA 2023): NDM/UDM AE ensembles + ASR-Net; one-class semi-supervised.

    ``fit(train, seed=..., device=..., unlabeled=pool)`` needs the unlabeled pool
    (:func:`methods.detectors._pool.unlabeled_pool`); its labels are never read.

    Args:
        input_size: side of the internal resolution (official 64; multiple of 16).
        ensemble_size: AEs per module (K=3).
        latent_dim, base_width, hidden_dim: AE sizes (16, 16, 2048).
        epochs, batch_size, lr, betas, weight_decay: AE training (250, 64, 5e-4, (0.5, 0.999), 0).
        score: ``asr_dual`` (default: ASR-Net on [inter, intra]), ``asr_intra`` (ASR-Net on intra),
            or the unrefined ``intra``, ``inter``, ``rec`` maps.
        asr_epochs, asr_batch_size, asr_lr, asr_weight_decay, asr_channels: ASR-Net training
            (100, 8, 1e-4, 1e-4, 128).
        focal_gamma, anomaly_probability: focal loss gamma (2) and synthetic-anomaly rate (0.5).
        anomaly_rate, pool_size: how the runner assembles ``unlabeled`` with ``unlabeled_pool``
            (official ``ar=0.6``; 0 is the pure-UAD ablation); the method itself never reads them.
    """

    name = "ddad_asr"
    fitted_attribute = "ndm_"

    needs_pool = True
    predict_params = ("score",)   # the six AEs do not depend on it; each ASR score adds one ASR-Net

    def __init__(self, in_chans: int = 1, image_size: int = 64, *, input_size: int = 64, ensemble_size: int = 3,
                 latent_dim: int = 16, base_width: int = 16, hidden_dim: int = 2048, epochs: int = 250,
                 batch_size: int = 64, lr: float = 5e-4, betas: tuple[float, float] = (0.5, 0.999),
                 weight_decay: float = 0.0, score: str = "asr_dual", asr_epochs: int = 100, asr_batch_size: int = 8,
                 asr_lr: float = 1e-4, asr_weight_decay: float = 1e-4, asr_channels: int = 128,
                 focal_gamma: float = 2.0, anomaly_probability: float = 0.5, anomaly_rate: float = 0.6,
                 pool_size: int | None = None):
        if ensemble_size < 2:
            raise MethodError(f"ddad_asr: ensemble_size must be >= 2 (the intra-discrepancy is a std), "
                              f"got {ensemble_size}")
        self.in_chans = in_chans
        self.image_size = image_size
        self.input_size = input_size
        self.ensemble_size = ensemble_size
        self.latent_dim = latent_dim
        self.base_width = base_width
        self.hidden_dim = hidden_dim
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.betas = tuple(betas)
        self.weight_decay = weight_decay
        self.score = check_choice(score, SCORES, "score", "ddad_asr")
        self.asr_epochs = asr_epochs
        self.asr_batch_size = asr_batch_size
        self.asr_lr = asr_lr
        self.asr_weight_decay = asr_weight_decay
        self.asr_channels = asr_channels
        self.focal_gamma = focal_gamma
        self.anomaly_probability = anomaly_probability
        self.anomaly_rate = anomaly_rate
        self.pool_size = pool_size

    @property
    def setting(self) -> str:
        """A pool of normals only (rate 0) is the paper's pure-UAD ablation."""
        return "uad" if self.anomaly_rate == 0 else "oc-ssl"

    def pool_request(self) -> PoolRequest:
        return PoolRequest(self.anomaly_rate, self.pool_size)

    # -- training ----------------------------------------------------------------------------
    def _ensemble(self, data: torch.Tensor, generator: torch.Generator, device: str, module: str) -> nn.ModuleList:
        models = nn.ModuleList()
        for k in range(self.ensemble_size):
            model = ConvAutoencoder(self.in_chans, self.input_size, self.latent_dim, self.base_width,
                                    self.hidden_dim).to(device)
            self.history_[f"{module}{k}"] = fit_autoencoder(
                model, data, epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, betas=self.betas,
                weight_decay=self.weight_decay, generator=generator, progress=self.progress,
                desc=f"ddad_asr {module} {k + 1}/{self.ensemble_size}", device=device)
            models.append(model.eval().requires_grad_(False))
        return models

    def fit(self, train: Split, *, seed: int = 0, device: str = "cpu", progress: bool = False,
            unlabeled: Split | None = None) -> "DDADASR":
        self.progress = progress
        if unlabeled is None:
            raise MethodError("ddad_asr is one-class semi-supervised: fit() needs unlabeled=<Split>; build one with "
                              "methods.detectors._pool.unlabeled_pool(dataset, anomaly_rate=...) (rate 0 = pure UAD)")
        images = check_images(train.images, self.in_chans, "ddad_asr (train)")
        extra = check_images(unlabeled.images, self.in_chans, f"ddad_asr ({unlabeled.name})")
        if len(images) < 2:
            raise MethodError(f"ddad_asr: needs at least 2 normal training images, got {len(images)}")
        if images.shape[2:] != extra.shape[2:]:
            raise MethodError(f"ddad_asr: unlabeled images are {extra.shape[2:]}, training images {images.shape[2:]}")
        if self.anomaly_rate == 0:
            shared = _shared_images(images, extra)
            if shared:
                raise MethodError(
                    f"ddad_asr: the pure-UAD ablation (anomaly_rate=0) needs unlabeled normals the NDM has not seen, "
                    f"but {shared} of the {len(extra)} unlabeled images are training images (the dataset's pool has "
                    "too few normals, so they were borrowed from the training split); a UDM trained on the NDM's own "
                    "images is not the paper's ablation. Use a dataset whose pool holds normals, or anomaly_rate > 0")
        started = time.perf_counter()
        generator = seed_everything(seed)
        self.history_: dict[str, list[float]] = {}
        normal = to_signed(images, self.input_size, device)
        self.ndm_ = self._ensemble(normal, generator, device, "NDM")
        mixed = torch.cat([normal, to_signed(extra, self.input_size, device)])
        self.udm_ = self._ensemble(mixed, generator, device, "UDM")
        del mixed
        self.refiners_: dict[str, RefineNet] = {}
        self.complete_fit(train, seed=seed, device=device, progress=progress)
        self.fit_seconds_ = time.perf_counter() - started
        return self

    def complete_fit(self, train: Split, *, seed: int = 0, device: str = "cpu", progress: bool = False,
                     **kwargs) -> bool:
        """Train the ASR-Net the current ``score`` needs, if the fitted AEs do not have it yet.

        Its seed is derived from ``seed`` and the score alone, so the result is the same whether
        the AEs were just trained or come from the runner's fit cache.
        """
        if not self.score.startswith("asr") or self.score in self.refiners_:
            return False
        self.progress = progress
        generator = seed_everything(seed * 1009 + SCORES.index(self.score) + 1)
        normal = to_signed(check_images(train.images, self.in_chans, "ddad_asr (train)"), self.input_size, device)
        self.refiners_[self.score] = self._fit_refine(normal, generator, device, self.score)
        return True

    def _fit_refine(self, normal: torch.Tensor, generator: torch.Generator, device: str, score: str) -> RefineNet:
        for module in (*self.ndm_, *self.udm_):
            module.to(device)
        net = RefineNet(2 if score == "asr_dual" else 1, self.asr_channels).to(device)
        opt = torch.optim.Adam(net.parameters(), lr=self.asr_lr, betas=(0.5, 0.999), weight_decay=self.asr_weight_decay)
        epoch_data: dict[str, torch.Tensor] = {}

        def synthesise(epoch: int) -> None:
            """Fresh synthetic anomalies every epoch; discrepancies from the frozen AEs in large batches."""
            order = torch.randperm(len(normal), generator=generator)
            synthetic, masks = [], []
            for s in chunks(len(normal), 256):
                index = order[s]
                x, mask = blend_squares(normal[index.to(normal.device)], normal, index, generator,
                                        self.anomaly_probability)
                synthetic.append(self._refine_input(x, score))
                masks.append(mask)
            epoch_data["x"], epoch_data["mask"] = torch.cat(synthetic), torch.cat(masks)

        def loss_fn(index: torch.Tensor, step: int) -> torch.Tensor:
            probs = torch.softmax(net(epoch_data["x"][index]), dim=1)
            return focal_loss(probs, epoch_data["mask"][index], self.focal_gamma)

        net.train()
        self.history_[f"ASR {score}"] = train_loop(
            loss_fn, n=len(normal), batch_size=self.asr_batch_size, epochs=self.asr_epochs, generator=generator,
            optimizers=[opt], name="ddad_asr ASR-Net", device=device, hint=f"lower asr_lr={self.asr_lr}",
            before_epoch=synthesise, progress=self.progress, mixed_precision=True).epochs
        return net.eval()

    # -- scoring -----------------------------------------------------------------------------
    def _discrepancies(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return discrepancies(self.ndm_, self.udm_, x)

    def _refine_input(self, x: torch.Tensor, score: str) -> torch.Tensor:
        return refine_input(self._discrepancies(x), score)

    @torch.no_grad()
    def _predict(self, images: np.ndarray, *, device: str) -> tuple[np.ndarray, np.ndarray]:
        refined = self.score.startswith("asr")
        if refined and self.score not in self.refiners_:
            raise MethodError(f"ddad_asr: score='{self.score}' needs an ASR-Net trained for it; fitted for "
                              f"{', '.join(self.refiners_) or 'no ASR-Net'}: call complete_fit() or fit() again")
        for module in (*self.ndm_, *self.udm_):
            module.eval().to(device)
        refine = self.refiners_.get(self.score)
        if refine is not None:
            refine.eval().to(device)
        scores, maps = [], []
        for s in chunks(len(images), self.batch_size):
            x = to_signed(images[s], self.input_size, device)
            if refined:
                amap = torch.softmax(refine(self._refine_input(x, self.score)), dim=1)[:, 1]
            else:
                amap = self._discrepancies(x)[self.score][:, 0]
            scores.append(reduce_maps(amap.cpu().numpy(), "mean"))    # spatial mean at the model resolution
            maps.append(upsample(amap, images.shape[-2:]).cpu().numpy())
        return np.concatenate(scores), np.concatenate(maps).astype(np.float32)


def _shared_images(a: np.ndarray, b: np.ndarray) -> int:
    """How many images of ``b`` are byte-identical to an image of ``a``."""
    seen = {image.tobytes() for image in np.ascontiguousarray(a)}
    return sum(image.tobytes() in seen for image in np.ascontiguousarray(b))
