"""MSACL / PMSACL: contrast normal images with pseudo-classes of synthesised lesions (best-effort).

Tian, Liu, Pang, Chen, Liu, Verjans, Singh, Carneiro, "Self-supervised Pseudo Multi-class
Pre-training for Unsupervised Anomaly Detection and Segmentation in Medical Images", Medical Image
Analysis 2023 (arXiv:2109.01303; earlier versions "Multi-class / Multi-centred Strong Augmentation
via Contrastive Learning", MSACL). "PMSACL consists of a novel optimisation method that contrasts
a normal image class from multiple pseudo classes of synthesised abnormal images, with each class
enforced to form a dense cluster in the feature space." [abstract]

**No official code exists** (tianyu0207/PMSACL holds only a README), so this is a best-effort
reimplementation from the abstracts, a third-party summary and the predecessor CCD code
(tianyu0207/CCD). Every choice the paper leaves open is stated here and in methods/README.md:

* Classes ``A0..A3``: a weakly augmented normal image with 0, 1, 2 or 3 synthesised lesions (the
  summary's |A| = 4). By default every image of a batch appears in all classes, as CCD expanded
  each image into all its variants: the same image with and without lesions are then negatives
  of each other, which is what makes the features lesion-sensitive. ``all_classes=False`` gives
  each image one class (balanced within the batch) at a quarter of the cost per image.
* Lesions (MedMix-like, :class:`LesionSynthesis`): a patch cut from another place of the same
  image, warped (fisheye or horizontal wave), intensity-transformed (gain, signed offset, noise)
  and pasted with an irregular soft-edged blob mask; radius 4-14 % of the side. All batched on
  the device with ``grid_sample``.
* Views: the lesioned image gets two independent weak augmentations (the positive pair).
* Centres ``c_n``: the mean L2-normalised feature of class ``n`` over the training set, computed
  with the *untrained* encoder before the first step and never updated (the summary: more stable,
  prevents collapse). Computed in training mode (batch statistics, as the training step sees
  features) with balanced class batches; BatchNorm running statistics are restored afterwards.
* Loss = ``contrastive + w_centre * centre + w_class * class``:

  - centre: ``mean ||h - c_y||^2`` on normalised features ``h`` (Euclidean compactness);
  - contrastive: NT-Xent on *centre-normalised* features ``u = normalize(h - mean_n c_n)``
    (directions seen from the centre of all class centres), all other views negatives, the
    logit of a pair divided by ``alpha * tau`` when both are of the same class and by ``tau``
    otherwise, so same-class samples repel less (the summary's class-dependent temperature);
  - class: cross-entropy of a linear head that predicts the lesion count from the feature.

  The summary's fourth term (relative patch-position prediction) is left out.
* Defaults where nothing is known: ResNet-18 (timm, random init, 1 channel), tau = 0.2 and SGD
  lr 0.01 / momentum 0.9 / weight decay 3e-4 with cosine decay (CCD's values), alpha = 2, 100
  epochs, batch 64. Density heads see the pooled ResNet output; ``feature_maps`` gives the
  layer2/layer3 maps for the patch-level PaDiM head (``msacl_patch``).
"""

from __future__ import annotations

import numpy as np
import timm
import torch
import torch.nn.functional as F
from torch import nn

from datasets.base import Split
from datasets.generators._lesion_synthesis import LesionSynthesis  # noqa: F401 - re-exported
from methods.base import MethodError
from methods.encoders._augment import ViewAugment
from methods.encoders._training import TrainableEncoder
from methods.registry import register_encoder

#: Offset of the seed that draws the lesions and views of the centre estimate: its own random stream,
#: so the training batches of a seed do not depend on how many images the centres used.
CENTRE_STREAM = 7919

#: The weak augmentation of every class (small shifts, rotations, zoom, brightness, faint noise).
WEAK_VIEW = {"translate": 0.05, "rotate": 0.1, "scale": (0.95, 1.05), "brightness": (0.9, 1.1), "noise": 0.02}


@register_encoder("msacl", tiny=dict(epochs=1, batch_size=8, warmup_epochs=0))
class MSACLEncoder(TrainableEncoder):
    """(P)MSACL pre-training (Tian et al. 2021/2023), best-effort: no official code exists.

    Args:
        backbone: timm ResNet name (random init, ``in_chans`` channels).
        stem: ``"imagenet"`` (7x7 stride-2 conv + max-pool, total stride 32: layer4 is 2x2 at 64 px, so
            every gradient map is one central blob) or ``"cifar"`` (3x3 stride-1 conv, no max-pool, as
            CIFAR ResNets: total stride 8, layer4 8x8 at 64 px). Default ``"imagenet"`` (unchanged).
        n_classes: pseudo-classes A0..A{n-1} = 0..n-1 synthesised lesions (4).
        tau, alpha: contrastive temperature and its same-class multiplier (0.2, 2).
        centre_weight, class_weight: weights of the centre and augmentation-class losses (1, 1).
        centre_samples: training images used to estimate the fixed centres (None: all).
        all_classes: every image in every class per batch (``batch_size`` counts images, so a step
            sees ``2 * n_classes * batch_size`` views), or one balanced class per image.
        lesions: overrides of :class:`LesionSynthesis`; weak_view: overrides of the weak augmentation.
        epochs, batch_size, lr, weight_decay, warmup_epochs, optimizer: training loop (100, 64,
            0.01, 3e-4, 0, ``sgd``).
    """

    def __init__(self, in_chans: int = 1, image_size: int = 64, *, backbone: str = "resnet18", n_classes: int = 4,
                 tau: float = 0.2, alpha: float = 2.0, centre_weight: float = 1.0, class_weight: float = 1.0,
                 centre_samples: int | None = 1024, all_classes: bool = True, lesions: dict | None = None,
                 weak_view: dict | None = None,
                 epochs: int = 100, batch_size: int = 64, lr: float = 0.01, weight_decay: float = 3e-4,
                 warmup_epochs: int = 0, optimizer: str = "sgd", stem: str = "imagenet"):
        super().__init__(in_chans, image_size, epochs=epochs, batch_size=batch_size, lr=lr,
                         weight_decay=weight_decay, warmup_epochs=warmup_epochs, optimizer=optimizer)
        if n_classes < 2:
            raise ValueError(f"msacl: n_classes must be >= 2 (normal + at least one lesion class), got {n_classes}")
        if tau <= 0 or alpha <= 0:
            raise ValueError(f"msacl: tau and alpha must be > 0, got tau={tau}, alpha={alpha}")
        self.backbone = timm.create_model(backbone, pretrained=False, in_chans=in_chans, num_classes=0)
        missing = [name for name in ("conv1", "bn1", "act1", "maxpool", "layer1", "layer2", "layer3", "layer4")
                   if not hasattr(self.backbone, name)]
        if missing:
            raise ValueError(f"msacl: backbone '{backbone}' is not a timm ResNet (missing {', '.join(missing)})")
        if stem == "cifar":
            self.backbone.conv1 = nn.Conv2d(in_chans, self.backbone.conv1.out_channels, 3, 1, 1, bias=False)
            self.backbone.maxpool = nn.Identity()
        elif stem != "imagenet":
            raise ValueError(f"msacl: stem must be 'imagenet' or 'cifar', got {stem!r}")
        self.stem = stem
        self.out_dim = int(self.backbone.num_features)
        self.n_classes = n_classes
        self.tau = tau
        self.alpha = alpha
        self.centre_weight = centre_weight
        self.class_weight = class_weight
        self.centre_samples = centre_samples
        self.all_classes = all_classes
        self.lesions = LesionSynthesis(**{"max_lesions": n_classes - 1, **(lesions or {})})
        self.weak = ViewAugment(**{**WEAK_VIEW, **(weak_view or {})})
        self.classifier = nn.Linear(self.out_dim, n_classes)
        # NaN until fixed; a fixed shape so cached state dicts load into a fresh encoder.
        self.register_buffer("centres_", torch.full((n_classes, self.out_dim), float("nan")))

    def chance_loss(self, batch_size: int) -> float | None:
        """None, declared: the centre-normalised features and class-dependent temperatures give a
        constant encoder a loss other than ``ln(2n - 1)``, and the centre term has no fixed chance level;
        the adequacy guard judges MSACL by its loss trend and its representation only."""
        return None

    # -- the network ---------------------------------------------------------------------------
    def _trunk(self, x: torch.Tensor, upto: int = 4) -> list[torch.Tensor]:
        """Stage outputs ``layer1..layer{upto}`` of the ResNet for [0, 1] images."""
        b = self.backbone
        h = b.maxpool(b.act1(b.bn1(b.conv1((x - 0.5) / 0.5))))
        outs = []
        for i in range(1, upto + 1):
            h = getattr(b, f"layer{i}")(h)
            outs.append(h)
        return outs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled layer4 features ``[N, out_dim]`` (what the density heads see)."""
        return self.backbone.global_pool(self._trunk(x)[-1]).flatten(1)

    dense = True

    def feature_maps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The ResNet stages ``layer1..layer4`` (strides 4 to 32) for patch-level heads."""
        return {f"layer{i + 1}": h for i, h in enumerate(self._trunk(x))}

    # -- the pseudo-classes --------------------------------------------------------------------
    def balanced_classes(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """One class per image, every class as often as possible, in a seeded random order."""
        return torch.arange(n)[torch.randperm(n, generator=generator)] % self.n_classes

    def make_class(self, x: torch.Tensor, classes: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Images of the given pseudo-classes (class n = n lesions), before the weak views."""
        return self.lesions(x, classes, generator)[0]

    @property
    def centres_ready(self) -> bool:
        return bool(torch.isfinite(self.centres_).all())

    @torch.no_grad()
    def init_centres(self, images: np.ndarray | torch.Tensor, generator: torch.Generator,
                     device: str = "cpu") -> torch.Tensor:
        """Fix ``centres_`` = mean normalised feature per class under the current (untrained) weights."""
        data = torch.as_tensor(np.ascontiguousarray(images) if isinstance(images, np.ndarray) else images)
        if self.centre_samples is not None and len(data) > self.centre_samples:
            data = data[torch.randperm(len(data), generator=generator)[:self.centre_samples].sort().values]
        saved = {k: v.clone() for k, v in self.backbone.named_buffers()}
        self.to(device).train()
        sums = torch.zeros(self.n_classes, self.out_dim, device=device)
        counts = torch.zeros(self.n_classes, device=device)
        chunk = max(1, self.batch_size)
        for start in range(0, len(data), chunk):
            x = data[start:start + chunk].to(device).float().div_(255.0)
            classes = torch.arange(self.n_classes).repeat_interleave(len(x))
            batch = self.make_class(x.repeat(self.n_classes, 1, 1, 1), classes, generator)
            h = F.normalize(self(self.weak(batch, generator)), dim=1)
            sums.index_add_(0, classes.to(device), h)
            counts += len(x)
        for name, buffer in self.backbone.named_buffers():
            buffer.copy_(saved[name])
        self.centres_ = (sums / counts[:, None]).detach()
        return self.centres_

    def fit(self, train: Split, *, seed: int = 0, device: str = "cpu", progress: bool = False) -> "MSACLEncoder":
        images = train.normal().images if train.n_anomalous else train.images
        if len(images) < 2:
            raise MethodError(f"msacl: needs at least 2 normal training images, got {len(images)}")
        if not self.centres_ready:
            self.init_centres(images, torch.Generator().manual_seed(seed + CENTRE_STREAM), device)
        return super().fit(train, seed=seed, device=device, progress=progress)

    # -- the loss ------------------------------------------------------------------------------
    def losses(self, x: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """The three loss terms for a batch of [0, 1] normal images."""
        if not self.centres_ready:
            raise MethodError("msacl: class centres are not initialised; call fit() (or init_centres) first")
        if self.all_classes:
            classes = torch.arange(self.n_classes).repeat_interleave(len(x)).to(x.device)
            x = x.repeat(self.n_classes, 1, 1, 1)
        else:
            classes = self.balanced_classes(len(x), generator).to(x.device)
        n = len(x)
        lesioned = self.make_class(x, classes, generator)
        views = torch.cat([self.weak(lesioned, generator), self.weak(lesioned, generator)])
        labels = classes.repeat(2)
        feats = self(views)
        h = F.normalize(feats, dim=1)
        centres = self.centres_.to(h)
        centre = (h - centres[labels]).pow(2).sum(1).mean()
        u = F.normalize(h - centres.mean(0), dim=1)
        same = labels[:, None] == labels[None, :]
        logits = (u @ u.T) / torch.where(same, self.alpha * self.tau, self.tau)
        logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=x.device), float("-inf"))
        positives = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(x.device)
        contrastive = F.cross_entropy(logits, positives)
        aug = F.cross_entropy(self.classifier(feats), labels)
        return {"contrastive": contrastive, "centre": centre, "class": aug}

    def training_step(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        parts = self.losses(x, generator)
        return parts["contrastive"] + self.centre_weight * parts["centre"] + self.class_weight * parts["class"]
