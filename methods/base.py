"""The contracts every method implements.

* :class:`Encoder` maps images to a representation ``[N, D]`` and may be trained on normals.
* :class:`DensityHead` scores a representation (``-log p`` or a distance; higher = more anomalous)
  and is differentiable in torch, so CRADL-style gradient maps work for every pairing.
* :class:`Detector` is what the runner calls; :class:`methods.detectors.latent.LatentDetector`
  turns any encoder x head pair into one, and end-to-end methods implement it directly.

One ``fit`` signature for all three: ``fit(data, *, seed, device, progress)`` (a detector that
declares ``needs_pool`` also takes ``unlabeled=``). Optional capabilities are *declared* as class
attributes (``Encoder.reconstructs``, ``Detector.needs_pool``, ``Detector.setting``), never probed.
Hyper-parameters go to ``__init__`` and fitted state ends in ``_`` (scikit-learn's convention),
``fit`` returns ``self``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from datasets.base import Split, to_float
from methods.errors import MethodError
from methods.preprocess import FeaturePreprocessor


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a torch generator for explicit use."""
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


class Encoder(nn.Module):
    """Images ``[N, C, H, W]`` float in [0, 1] -> representation ``[N, out_dim]``.

    Subclasses set ``out_dim`` and implement ``forward``; trainable ones override ``fit``.
    Declared capabilities: ``trainable`` (its weights change in ``fit``, so the cache stores them)
    and ``reconstructs`` (it implements ``reconstruct(x)``, so reconstruction maps apply), and
    ``dense`` (it implements ``feature_maps(x)``, so patch heads apply).
    """

    trainable: bool = True
    reconstructs: bool = False
    #: implements ``feature_maps(x) -> dict[str, Tensor[N, C, h, w]]`` (named stages, finest first)
    dense: bool = False
    #: The fit gives the same encoder whatever the seed (frozen pretrained weights): claims may then
    #: decide a comparison from one seed (bench.analysis.inference). False for trained or random-init ones.
    deterministic_fit: bool = False
    #: Mean training loss per epoch, filled by ``fit`` (empty for frozen encoders).
    history_: tuple[float, ...] | list[float] = ()

    def __init__(self, in_chans: int = 1, image_size: int = 64):
        super().__init__()
        self.in_chans = in_chans
        self.image_size = image_size
        self.out_dim: int = 0

    def fit(self, train: Split, *, seed: int = 0, device: str = "cpu", progress: bool = False) -> "Encoder":
        """Train on the (normal) training split; frozen encoders keep this no-op."""
        return self

    def required_weights(self) -> list[tuple[str, bool, str | None]]:
        """``(timm name, pretrained, weights file)`` of pre-trained weights it loads, for the preflight
        (none for encoders trained from scratch)."""
        return []

    def chance_loss(self, batch_size: int) -> float | None:
        """The training loss of an encoder that has learned nothing, where the loss has one in closed
        form (InfoNCE: ``ln`` of the number of candidates); None otherwise (a VAE's ELBO). Read by the
        label-free adequacy guard (``bench.analysis.adequacy``) with the batch size training used."""
        return None

    def loss_floor(self, batch_size: int) -> float | None:
        """The loss of a perfect encoder where it has a closed form (see :meth:`chance_loss`), else None."""
        return None

    @torch.no_grad()
    def embed(self, images: np.ndarray | Split, batch_size: int = 256, device: str = "cpu") -> torch.Tensor:
        """Batched, gradient-free ``forward`` over uint8 images; returns a CPU float tensor."""
        if isinstance(images, Split):
            images = images.images
        was_training = self.training
        self.eval().to(device)
        out = [self(to_float(images[i:i + batch_size], device)).float().cpu()
               for i in range(0, len(images), batch_size)]
        self.train(was_training)
        return torch.cat(out) if out else torch.empty(0, self.out_dim)


class DensityHead(nn.Module):
    """Density model on a representation; ``forward(z)`` is the anomaly score, differentiable.

    Features pass through a :class:`methods.preprocess.FeaturePreprocessor` fitted on the
    training features first: ``preprocess`` is a hyper-parameter of every head and an axis of the
    study (``none``, ``standardize`` as CRADL, ``l2``, ``pca_whiten``), because standardising
    frozen ImageNet features inflates near-constant dimensions. ``None`` means the head's
    ``default_preprocess``: ``none`` for every head, the representation as the encoder gives it.
    Why neutral: which transform helps depends on the head and the dataset (methods/README.md), so
    it is measured as an axis, not tuned into a default; a head that needs a transform to be
    numerically sound does it inside its density and says so (the flow z-scores itself, the GMM
    regularises relative to the feature scale). The base class also guards against what real embeddings do: non-finite features or
    scores raise :class:`MethodError`. Subclasses implement ``_fit(z)`` and ``_score(z)`` on
    preprocessed features.
    """

    default_preprocess: str = "none"
    #: The fit is closed-form and uses no random numbers (seed-independent); see ``Encoder.deterministic_fit``.
    deterministic_fit: bool = False
    #: a patch head (``methods/heads/_patch.py``) fits feature maps, not vectors; declared, never probed
    dense: bool = False

    def __init__(self, preprocess: str | None = None, variance: float = 0.99):
        super().__init__()
        self.preprocess = self.default_preprocess if preprocess is None else preprocess
        self.preprocessor = FeaturePreprocessor(self.preprocess, variance)
        self.fitted_ = False

    def fit(self, z: torch.Tensor, *, seed: int = 0, device: str = "cpu", progress: bool = False) -> "DensityHead":
        """Fit on training features; trainable heads (the flow) train on ``device``."""
        z = torch.as_tensor(z).detach().float().cpu()
        if z.ndim != 2 or len(z) == 0:
            raise MethodError(f"{type(self).__name__}: expected training features [N, D] with N > 0, "
                              f"got shape {tuple(z.shape)}")
        if not torch.isfinite(z).all():
            bad = (~torch.isfinite(z)).any(1).sum().item()
            raise MethodError(f"{type(self).__name__}: {bad} training embeddings contain NaN/inf; "
                              "the encoder produced non-finite features")
        if len(z) < 2 and self.preprocessor.needs_statistics:
            self.preprocessor = type(self.preprocessor)("none")      # one sample has no spread to scale by
        self.preprocessor.fit(z)
        seed_everything(seed)
        self._fit(self.preprocessor(z), seed=seed, device=device, progress=progress)
        self.fitted_ = True
        return self

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if not self.fitted_:
            raise MethodError(f"{type(self).__name__} is used before fit()")
        score = self._score(self.preprocessor(z))
        if not torch.isfinite(score).all():
            raise MethodError(f"{type(self).__name__}: non-finite anomaly scores "
                              f"({(~torch.isfinite(score)).sum().item()} of {len(score)})")
        return score

    @torch.no_grad()
    def score(self, z: torch.Tensor, batch_size: int = 4096, device: str = "cpu") -> np.ndarray:
        """Gradient-free scores as a numpy array, computed on ``device``."""
        self.to(device)
        z = torch.as_tensor(z)
        if len(z) == 0:                       # an empty split (e.g. no validation set) scores nothing
            return np.zeros(0, dtype=np.float32)
        return torch.cat([self(z[i:i + batch_size].to(device)).cpu()
                          for i in range(0, len(z), batch_size)]).numpy()

    def _fit(self, z: torch.Tensor, *, seed: int, device: str, progress: bool) -> None:  # pragma: no cover
        raise NotImplementedError

    def _score(self, z: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass
class Prediction:
    """Image scores ``[N]`` (higher = more anomalous) and pixel maps ``[N, H, W]`` or ``None``."""

    scores: np.ndarray
    maps: np.ndarray | None = None


@dataclass(frozen=True)
class PoolRequest:
    """What a one-class semi-supervised detector asks the runner to assemble as its unlabeled pool."""

    anomaly_rate: float
    size: int | None = None


class Detector:
    """What the runner calls; end-to-end methods subclass this.

    Declared, not probed:

    * ``setting``: ``"uad"`` (normal training images only) or ``"oc-ssl"`` (also an unlabeled pool);
    * ``needs_pool``: ``fit`` takes ``unlabeled=<Split>``, assembled as ``pool_request()`` says;
    * ``predict_params``: constructor arguments that change only ``predict``, never what ``fit``
      learns. The runner's fit cache shares one fitted detector between cells that differ only in
      these; :meth:`complete_fit` trains whatever a cached fit lacks for the current options;
    * ``needs_workdir``: ``fit`` takes ``workdir=`` (a folder in the run's cache), for third-party
      trainers that write files (the anomalib peers' Lightning), so nothing lands in the cwd.
    """

    setting: str = "uad"
    #: The fit gives the same detector whatever the seed; False unless a detector knows better.
    deterministic_fit: bool = False
    needs_pool: bool = False
    needs_workdir: bool = False
    predict_params: tuple[str, ...] = ()

    def pool_request(self) -> PoolRequest | None:
        return None

    def required_weights(self) -> list[tuple[str, bool, str | None]]:
        """``(timm name, pretrained, weights file)`` of every backbone ``fit`` will build, so the
        preflight can check they are available before any training."""
        return []

    def prerequisites(self) -> list[str]:
        """Other files ``fit`` needs that are missing (one line each, naming what and how to provide
        it), for the preflight; empty when all are there (EfficientAD's teacher and penalty images)."""
        return []

    def fit(self, train: Split, *, seed: int = 0, device: str = "cpu", progress: bool = False,
            **kwargs) -> "Detector":  # pragma: no cover - abstract
        raise NotImplementedError

    def complete_fit(self, train: Split, *, seed: int = 0, device: str = "cpu", progress: bool = False,
                     **kwargs) -> bool:
        """Fit what a (cached) fitted detector still lacks for its current options; True if it changed."""
        return False

    #: the label in error messages (a detector built by the registry answers to its registry name)
    name: str = "detector"
    #: an attribute that exists once ``fit`` ran; ``predict`` refuses to run before
    fitted_attribute: str = "fitted_"
    in_chans: int = 1

    def predict(self, images: np.ndarray, *, device: str = "cpu", with_maps: bool = True) -> Prediction:
        """Scores ``[N]`` and maps ``[N, H, W]`` of uint8 ``images``; the checks every detector shares.

        ``with_maps=False`` lets a caller skip maps it will not score (the runner, where a split has
        no masks); detectors whose maps come with the scores compute them anyway and drop them.
        """
        from methods.inputs import check_finite, check_images

        if not hasattr(self, self.fitted_attribute):
            raise MethodError(f"{self.name}: predict() called before fit()")
        images = check_images(images, self.in_chans, self.name)
        scores, maps = self._predict(images, device=device)
        check_finite(scores, "scores", self.name)
        if maps is not None:
            check_finite(maps, "maps", self.name)
        return Prediction(scores, maps if with_maps else None)

    def _predict(self, images: np.ndarray, *, device: str) -> tuple[np.ndarray, np.ndarray | None]:
        """Scores and maps of checked images (the method's own batch loop)."""  # pragma: no cover
        raise NotImplementedError
