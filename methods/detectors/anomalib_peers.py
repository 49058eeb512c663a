"""``anomalib/<model>``: anomalib's models as peers in the grid, on the suite's data and metrics.

Why: a number from this suite means more beside the same method run by the reference library on
the same splits. Each ``anomalib/<model>`` detector takes the suite's uint8 splits (grey repeated
to three channels, resized as the suite's encoders resize: bilinear, no antialiasing), trains
anomalib's own Lightning module with a bare Lightning ``Trainer`` (no ``Engine``: no anomalib
metric, split, post-processor or visualizer is used), and returns the raw anomaly maps and scores
of anomalib's torch model as a :class:`Prediction` that the suite's metrics score.

Same weights: every pretrained backbone anomalib asks timm for is resolved by
:func:`methods.backbones.create_backbone` (a local file, the offline EfficientNet-Lite0 package,
or the hub when it answers), so ``anomalib/padim`` and the suite's ``padim`` read identical
weights, and a model whose weights are not available offline is refused by the preflight
(``required_weights``; ``prerequisites`` for EfficientAD's teacher and penalty images) in one line.

Files: Lightning runs without logger, checkpoints or its progress bar, inside ``workdir`` (a
folder of the run's cache, given by the runner); the suite's own tqdm bar shows the epochs.
This module imports anomalib only when a peer is built; without the ``[peers]`` extra nothing
registers (``python -m bench list`` says how to get them).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import tempfile
import types
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from datasets.base import Split, to_float
from methods.backbones import check_input_norm
from methods.base import Detector, MethodError, seed_everything
from methods.detectors._maps import resize, upsample
from methods.inputs import check_images, chunks
from methods.registry import register_detector

#: one line for ``bench list`` when the extra is missing
INSTALL_HINT = 'anomalib peers (anomalib/<model>): not installed; pip install -e ".[peers]" adds them'


def available() -> bool:
    """Whether anomalib can be imported (found without importing it: ``bench list`` stays fast)."""
    try:
        return importlib.util.find_spec("anomalib") is not None
    except (ImportError, ValueError):          # a blocked or broken anomalib counts as absent
        return False


@dataclass(frozen=True)
class Peer:
    """How one anomalib model is built and fed. ``stages`` index timm's ``feature_info`` (as the
    suite's ``out_indices``); ``normalize`` feeds the weights' mean/std (False: images in [0, 1], as
    anomalib's DRAEM and EfficientAD expect)."""

    cls: str
    backbone: str | None = None
    stages: tuple[int, ...] | None = None
    normalize: bool = True
    trains: bool = True               # has an optimiser (False: a memory bank, one pass)
    epochs: int = 1
    batch_size: int = 32
    options: dict = field(default_factory=dict)
    tiny: dict = field(default_factory=dict)
    why: str = ""


PEERS: dict[str, Peer] = {
    "padim": Peer("Padim", "tf_efficientnet_lite0", (1, 2, 3), trains=False, options=dict(n_features=100),
                  tiny=dict(n_features=32), why="PaDiM (Defard et al. 2021)"),
    "patchcore": Peer("Patchcore", "tf_efficientnet_lite0", (2, 3), trains=False,
                      options=dict(coreset_sampling_ratio=0.1, num_neighbors=9),
                      tiny=dict(coreset_sampling_ratio=0.2), why="PatchCore (Roth et al. 2022)"),
    "cflow": Peer("Cflow", "tf_efficientnet_lite0", (2, 3, 4), epochs=5, batch_size=16,
                  options=dict(coupling_blocks=8, fiber_batch_size=64),
                  tiny=dict(epochs=1, coupling_blocks=2, fiber_batch_size=16, input_size=64), why="CFlow-AD (Gudovskiy et al. 2022)"),
    "fastflow": Peer("Fastflow", "resnet18", epochs=10, batch_size=16, options=dict(flow_steps=8),
                     tiny=dict(epochs=1, flow_steps=2, input_size=64, pretrained=False),
                     why="FastFlow (Yu et al. 2021); anomalib builds it on resnet18/wide_resnet50_2 only"),
    "stfpm": Peer("Stfpm", "tf_efficientnet_lite0", (1, 2, 3), epochs=10, batch_size=16,
                  tiny=dict(epochs=1, input_size=64), why="STFPM (Wang et al. 2021)"),
    "reverse_distillation": Peer("ReverseDistillation", "resnet18", (1, 2, 3), epochs=10, batch_size=16,
                                 tiny=dict(epochs=1, input_size=64, pretrained=False),
                                 why="Reverse Distillation (Deng & Li 2022); anomalib's decoder exists for ResNets only"),
    "draem": Peer("Draem", None, normalize=False, epochs=10, batch_size=8,
                  tiny=dict(epochs=1, input_size=32), why="DRAEM (Zavrtanik et al. 2021), Perlin-noise anomalies"),
    "efficient_ad": Peer("EfficientAd", None, normalize=False, epochs=5, batch_size=1,
                         options=dict(model_size="small"), tiny=dict(epochs=1, input_size=256),
                         why="EfficientAD (Batzner et al. 2024); needs its pre-trained PDN teacher and Imagenette"),
}


@contextlib.contextmanager
def _suite_weights(weights: str | None):
    """While anomalib builds a model, every pretrained timm backbone comes from the suite's resolver.

    anomalib calls ``timm.create_model(name, pretrained=True, ...)``, which would go to the hub; the
    suite's :func:`create_backbone` gives the same call the local file / offline package / hub, in
    that order, with its one-line error when none has them.
    """
    import timm

    from methods.backbones import create_backbone

    original, inside = timm.create_model, []

    def create(name, pretrained=False, **kwargs):
        if not pretrained or inside:
            return original(name, pretrained=pretrained, **kwargs)
        kwargs.pop("pretrained_cfg", None)
        inside.append(name)
        try:
            return create_backbone(name, pretrained=True, weights=weights, **kwargs)
        finally:
            inside.pop()

    timm.create_model = create
    try:
        yield
    finally:
        timm.create_model = original


@contextlib.contextmanager
def _quiet_lightning():
    """Lightning's banners ("GPU available", tips), its advisories (workers, no validation loader),
    timm's note on the classifier keys a feature extractor drops and anomalib's coreset bar are not
    the suite's output (the suite's own bar shows progress); errors still raise."""
    import functools

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")            # deprecation notes of anomalib's own imports
        import lightning.pytorch  # noqa: F401 - sets its loggers' levels on import, so import first
        from anomalib.models.components.sampling import k_center_greedy
        from anomalib.models.image.efficient_ad import lightning_model as efficient_ad

    names = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "anomalib", "timm")
    levels = {n: logging.getLogger(n).level for n in names}
    bar, module = k_center_greedy.tqdm, efficient_ad.tqdm
    for n in names:
        logging.getLogger(n).setLevel(logging.ERROR)
    k_center_greedy.tqdm = functools.partial(bar, disable=True)
    efficient_ad.tqdm = types.SimpleNamespace(tqdm=functools.partial(module.tqdm, disable=True))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        k_center_greedy.tqdm, efficient_ad.tqdm = bar, module
        for n, level in levels.items():
            logging.getLogger(n).setLevel(level)


def _steady_malloc() -> None:
    """Fix glibc's mmap threshold at 128 KiB (Linux only; a no-op elsewhere).

    Why: anomalib's k-center greedy coreset allocates and frees an ``N x D`` tensor per selected
    point; glibc's adaptive threshold then serves them from the heap, which fragments: PatchCore on
    25,600 patches grew to 13 GB RSS, with the threshold fixed it stays at 1.1 GB. Process-wide,
    as ``MALLOC_MMAP_THRESHOLD_=131072`` would be.
    """
    import ctypes
    import sys

    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").mallopt(-3, 128 * 1024)        # M_MMAP_THRESHOLD
        except (OSError, AttributeError):
            pass


def _stage_names(backbone: str, stages: tuple[int, ...]) -> list[str]:
    """timm module names of ``feature_info`` stages (anomalib addresses layers by name)."""
    import timm

    info = timm.create_model(backbone, pretrained=False, features_only=True).feature_info
    names = [s["module"] for s in info.info]
    if max(stages) >= len(names):
        raise MethodError(f"{backbone} has {len(names)} feature stages ({names}); stages {stages} do not exist")
    return [names[i] for i in stages]


class AnomalibPeer(Detector):
    """One anomalib model trained and scored on the suite's splits (see the module docstring).

    Args:
        model: key of :data:`PEERS`.
        backbone, pretrained, weights: the timm backbone and where its ImageNet weights come from
            (as the suite's ``imagenet/<name>`` encoders).
        stages: ``feature_info`` indices of the layers anomalib taps (None: the peer's default).
        input_size: side the images are resized to (None keeps the dataset's).
        input_norm: ``weights`` (the backbone weights' mean/std, as the suite's encoders) or ``imagenet``.
        epochs, batch_size: Lightning's ``max_epochs`` and the loader's batch (memory banks: one pass).
        **options: constructor arguments of the anomalib model (``n_features``, ``coreset_sampling_ratio``...).
    """

    needs_workdir = True
    fitted_attribute = "model_"

    def __init__(self, model: str, in_chans: int = 1, image_size: int = 64, *, backbone: str | None = None,
                 pretrained: bool = True, weights: str | None = None, stages: tuple[int, ...] | None = None,
                 input_size: int | None = None, input_norm: str = "weights", epochs: int | None = None,
                 batch_size: int | None = None, dtd_dir: str | None = None, imagenet_dir: str | None = None,
                 teacher_weights: str | None = None, **options):
        spec = PEERS[model]
        self.model, self.spec, self.name = model, spec, f"anomalib/{model}"
        self.in_chans, self.image_size = in_chans, image_size
        self.backbone = backbone or spec.backbone
        self.pretrained, self.weights = pretrained, weights
        self.stages = tuple(stages) if stages is not None else spec.stages
        self.input_size = int(input_size or image_size)
        self.input_norm = input_norm
        self.epochs = int(epochs if epochs is not None else spec.epochs) if spec.trains else 1
        self.batch_size = int(batch_size if batch_size is not None else spec.batch_size)
        self.dtd_dir, self.imagenet_dir, self.teacher_weights = dtd_dir, imagenet_dir, teacher_weights
        self.options = {**spec.options, **options}
        check_input_norm(input_norm, self.name)
        unknown = sorted(set(self.options) - self._accepted())
        if unknown:
            raise MethodError(f"{self.name}: unknown parameter(s) {unknown}; anomalib's {spec.cls} takes "
                              f"{sorted(self._accepted())}")
        if model == "efficient_ad" and self.batch_size != 1:
            raise MethodError(f"{self.name}: EfficientAD trains with batch_size=1 (anomalib refuses others)")

    def _accepted(self) -> set[str]:
        """Constructor arguments of the anomalib class that ``options`` may set (the preflight
        reports a typo, not the fit)."""
        import inspect

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import anomalib.models as models
        params = inspect.signature(getattr(models, self.spec.cls).__init__).parameters
        fixed = {"self", "backbone", "layers", "pre_trained", "pre_processor", "post_processor", "evaluator",
                 "visualizer", "dtd_dir", "imagenet_dir"}
        return {p for p in params if p not in fixed}

    # -- what the preflight checks --------------------------------------------------------------
    def required_weights(self) -> list[tuple[str, bool, str | None]]:
        return [(self.backbone, self.pretrained, self.weights)] if self.backbone else []

    def prerequisites(self) -> list[str]:
        """Missing non-timm files, one line each (EfficientAD's teacher and penalty images)."""
        if self.model != "efficient_ad":
            return []
        teacher, imagenette = self._efficient_ad_files()
        missing = []
        if not teacher.is_file():
            missing.append(f"its pre-trained PDN teacher ({teacher}; anomalib's efficientad_pretrained_weights "
                           f"release, give teacher_weights=PATH)")
        if not imagenette.is_dir():
            missing.append(f"the Imagenette penalty images ({imagenette}; a folder of class sub-folders, "
                           "give imagenet_dir=PATH)")
        return [f"{self.name} needs " + " and ".join(missing) + "; neither is downloaded offline"] if missing else []

    def _efficient_ad_files(self) -> tuple[Path, Path]:
        from anomalib.utils.path import get_datasets_dir, get_pretrained_weights_dir

        size = str(self.options.get("model_size", "small"))
        teacher = Path(self.teacher_weights) if self.teacher_weights else (
            get_pretrained_weights_dir() / "efficientad_pretrained_weights" / f"pretrained_teacher_{size}.pth")
        imagenette = Path(self.imagenet_dir) if self.imagenet_dir else get_datasets_dir() / "imagenette"
        return teacher.expanduser(), imagenette.expanduser()

    # -- inputs -----------------------------------------------------------------------------------
    def _stats(self) -> tuple[tuple, tuple] | None:
        if not self.spec.normalize:
            return None
        from methods.backbones import input_stats

        return input_stats(self.backbone, self.input_norm, self.name)

    def _inputs(self, images: np.ndarray, device: str) -> torch.Tensor:
        """uint8 -> [0, 1], grey -> RGB, resized and normalised exactly as the suite's encoders."""
        from methods.backbones import ImageNetInput

        x = resize(to_float(images, device), self.input_size)
        mean, std = self.stats_ if self.stats_ is not None else ((0.0,) * 3, (1.0,) * 3)   # unnormalised models
        return ImageNetInput(mean, std).to(x.device)(x).contiguous()

    # -- building and training --------------------------------------------------------------------
    def _build(self, workdir: Path):
        """anomalib's Lightning module, its backbone weights from the suite's resolver."""
        import anomalib.models as models
        from anomalib.pre_processing import PreProcessor
        from torchvision.transforms.v2 import Resize

        kwargs = dict(self.options)
        if self.backbone:
            kwargs.update(backbone=self.backbone, pre_trained=self.pretrained)
            if self.model == "stfpm":
                kwargs.pop("pre_trained")         # STFPM's teacher is always pretrained, its student never
            if self.stages is not None:
                kwargs["layers"] = _stage_names(self.backbone, self.stages)
        if self.model == "draem":
            # an existing folder without images: anomalib's Perlin generator then makes noise textures
            # instead of downloading DTD (a declared difference from the paper's DTD anomalies)
            dtd = Path(self.dtd_dir) if self.dtd_dir else workdir / "no-dtd"
            dtd.mkdir(parents=True, exist_ok=True)
            kwargs["dtd_dir"] = str(dtd)
        if self.model == "efficient_ad":
            kwargs["imagenet_dir"] = str(self._efficient_ad_files()[1])
        # images arrive resized and normalised (``_inputs``); the pre-processor only tells anomalib the
        # input size (a resize to the size they already have is the identity)
        pre = PreProcessor(transform=Resize((self.input_size, self.input_size), antialias=False))
        with _suite_weights(self.weights):
            module = getattr(models, self.spec.cls)(pre_processor=pre, post_processor=False, evaluator=False,
                                                    visualizer=False, **kwargs)
        if self.model == "efficient_ad":
            teacher = self._efficient_ad_files()[0]
            module.prepare_pretrained_model = lambda: module.model.teacher.load_state_dict(
                torch.load(teacher, map_location=module.device, weights_only=True))
        return module

    def fit(self, train: Split, *, seed: int = 0, device: str = "cpu", progress: bool = False,
            workdir: str | None = None, unlabeled: Split | None = None) -> "AnomalibPeer":
        problems = self.prerequisites()
        if problems:
            raise MethodError(problems[0])
        images = check_images(train.images, self.in_chans, f"{self.name} (train)")
        normal = images[train.labels == 0] if train.n_anomalous else images
        self.stats_ = self._stats()
        _steady_malloc()
        with contextlib.ExitStack() as stack:
            if workdir is None:             # direct use (tests): a temporary folder, removed afterwards
                workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="anomalib-peer-"))
            work = Path(workdir)
            work.mkdir(parents=True, exist_ok=True)
            stack.enter_context(_quiet_lightning())
            seed_everything(seed)
            module = self._build(work)
            self.history_ = self._train(module, normal, seed=seed, device=device, progress=progress, workdir=work)
        self.model_ = module.model.cpu().eval()       # the torch model only: no trainer, picklable
        return self

    def _train(self, module, images: np.ndarray, *, seed: int, device: str, progress: bool,
               workdir: Path) -> list[float]:
        import lightning.pytorch as pl
        from anomalib.data import ImageBatch
        from tqdm.auto import tqdm

        x = self._inputs(images, "cpu")
        batch_size = min(self.batch_size, len(x))

        def collate(items):
            return ImageBatch(image=torch.stack(items))

        class Data(pl.LightningDataModule):
            """Only a train loader (anomalib's EfficientAD reads ``train_batch_size`` from it)."""

            train_batch_size = batch_size

            def train_dataloader(self):
                return torch.utils.data.DataLoader(list(x), batch_size=batch_size, shuffle=True,
                                                   collate_fn=collate, num_workers=0, drop_last=trains,
                                                   generator=torch.Generator().manual_seed(seed))

        trains, name = self.spec.trains, self.name

        class Bar(pl.Callback):
            """The suite's tqdm bar over epochs and the mean loss per epoch (the adequacy guard's history)."""

            def __init__(self):
                self.bar, self.losses, self.history = None, [], []

            def on_train_start(self, trainer, pl_module):
                self.bar = tqdm(total=trainer.max_epochs, desc=name,
                                leave=False, disable=not progress, unit="epoch")

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
                if trains and isinstance(loss, torch.Tensor):
                    self.losses.append(float(loss.detach()))

            def on_train_epoch_end(self, trainer, pl_module):
                if self.losses:
                    self.history.append(float(np.mean(self.losses)))
                    self.bar.set_postfix(loss=f"{self.history[-1]:.4f}")
                self.losses = []
                self.bar.update(1)

            def on_train_end(self, trainer, pl_module):
                self.bar.close()

        bar = Bar()
        args = {k: v for k, v in module.trainer_arguments.items()
                if k in ("gradient_clip_val", "gradient_clip_algorithm")}
        trainer = pl.Trainer(max_epochs=self.epochs, accelerator="gpu" if str(device).startswith("cuda") else "cpu",
                             devices=1, default_root_dir=str(workdir), logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                             limit_val_batches=0, callbacks=[bar], deterministic=False, **args)
        trainer.fit(module, datamodule=Data())
        if not trains and hasattr(module, "_is_fitted") and not bool(module._is_fitted):
            module.fit()                                  # a memory bank that Lightning's hooks left unfitted
        if trains and not bar.history:
            raise MethodError(f"{self.name}: Lightning ran no training step")
        return bar.history

    # -- scoring ----------------------------------------------------------------------------------
    @torch.no_grad()
    def _predict(self, images: np.ndarray, *, device: str) -> tuple[np.ndarray, np.ndarray]:
        model = self.model_.to(device).eval()
        scores, maps = [], []
        with _quiet_lightning():
            for s in chunks(len(images), self.batch_size if self.batch_size > 1 else 16):
                out = model(self._inputs(images[s], device))
                pixel = upsample(out.anomaly_map.float(), tuple(images.shape[-2:]))
                scores.append(out.pred_score.reshape(-1).double().cpu().numpy())
                maps.append(pixel.cpu().numpy())
        self.model_.cpu()
        return np.concatenate(scores), np.concatenate(maps)


def _register(key: str, peer: Peer) -> None:
    def factory(in_chans: int = 1, image_size: int = 64, **kwargs) -> AnomalibPeer:
        return AnomalibPeer(key, in_chans, image_size, **kwargs)

    factory.__doc__ = f"anomalib's {peer.why}, trained and scored on the suite's splits."
    register_detector(f"anomalib/{key}", tiny=dict(peer.tiny), peer="anomalib")(factory)


if available():
    for _key, _peer in PEERS.items():
        _register(_key, _peer)
