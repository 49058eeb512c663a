"""``synthetic``: procedural brain-MRI-like axial phantoms, the suite's offline default dataset.

Why a generator and not a download: every test, tutorial and default grid must run on a machine
without internet, and a benchmark needs pixel masks to test localization. The phantoms imitate a
T1-weighted axial slice closely enough that the normal class is *not* trivial (head size, shape,
rotation, cortex thickness, ventricle size, tissue texture and intensities all vary between
subjects) and the anomalies are lesion-like (irregular blobs of varied size, hyper- *and*
hypo-intense, some of them subtle), in the spirit of the synthetic-anomaly generators that
anomalib uses for its offline tests.

Determinism: image ``i`` of stream ``s`` is drawn from ``SeedSequence(seed, spawn_key=(s, i, k))``
so it never depends on how many other images exist, and the anatomy (``k=0``) and the lesions
(``k=1``) use separate streams: an anomalous image is its normal twin plus lesions, identical to
it outside the lesion mask. The background is exactly 0 and every head pixel is at least 1, so
``x != 0`` is the foreground mask (CRADL's brain mask).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np

from datasets.base import AnomalyDataset, DatasetCard, DatasetError, Split
from datasets.registry import register_dataset

#: Bump when the generator's output changes, so embedding caches keyed on the config go stale.
GENERATOR_VERSION = "phantom-v1"

#: Stream codes: part of every image's seed, so each split is its own independent family.
STREAMS = {"train": 0, "val": 1, "test": 2, "pool": 3}

MIN_SIZE, MAX_SIZE = 32, 256
MIN_LESION_RADIUS_PX = 1.5

Range = tuple[float, float]


@dataclass(frozen=True)
class PhantomSpec:
    """The ranges the generator draws from. Lengths are in units of the image half-width
    (the image spans [-1, 1]); thicknesses are fractions of the head or brain radius;
    intensities are in [0, 1] before quantisation to ``uint8``."""

    head_semi_axis: Range = (0.62, 0.76)      # left-right semi-axis of the head ellipse
    head_aspect: Range = (1.08, 1.25)         # antero-posterior / left-right
    head_offset: float = 0.04                 # max shift of the head centre
    head_rotation: float = 0.15               # max in-plane rotation (radians)
    head_wobble: float = 0.02                 # std of the outline's low harmonics
    skull_thickness: Range = (0.05, 0.08)
    csf_thickness: Range = (0.025, 0.05)
    cortex_thickness: Range = (0.10, 0.18)
    ventricle_scale: Range = (0.6, 1.6)       # atrophy-like variation of ventricle size
    skull_intensity: Range = (0.80, 0.95)
    csf_intensity: Range = (0.10, 0.18)
    grey_intensity: Range = (0.38, 0.48)
    white_intensity: Range = (0.58, 0.68)
    ventricle_intensity: Range = (0.06, 0.14)
    midline_depth: Range = (0.06, 0.14)
    texture_amplitude: Range = (0.04, 0.12)   # deep grey-matter islands inside white matter
    bias_amplitude: Range = (0.0, 0.08)       # smooth multiplicative bias field
    gain: Range = (0.92, 1.08)                # global intensity scale per subject
    noise_sigma: Range = (0.01, 0.03)         # Rician noise inside the head
    lesion_count: tuple[int, int] = (1, 3)
    lesion_radius: Range = (0.05, 0.22)       # log-uniform; never below 1.5 px
    lesion_contrast: Range = (0.05, 0.40)     # log-uniform; the sign is random (hyper/hypo)
    lesion_elongation: Range = (1.0, 1.8)
    lesion_edge_softness: Range = (0.15, 0.6)  # fraction of the radius over which it fades in

    def as_config(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


# -- smooth random fields ----------------------------------------------------------------------
@lru_cache(maxsize=16)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [-1, 1] (row ``yy``, column ``xx``)."""
    c = ((np.arange(size, dtype=np.float32) + 0.5) / size) * 2 - 1
    yy, xx = np.meshgrid(c, c, indexing="ij")
    yy.setflags(write=False)
    xx.setflags(write=False)
    return yy, xx


@lru_cache(maxsize=64)
def _smoothing_basis(size: int, cells: int) -> np.ndarray:
    """``[size, cells]`` Gaussian bumps on knots spanning slightly more than the image.

    A smooth field is ``B @ G @ B.T`` for a ``cells x cells`` standard normal ``G``: two small
    matrix products instead of a large filter, and the same draw gives the same field at
    every resolution. Rows have unit norm so every pixel of the field is ~N(0, 1).
    """
    pos = ((np.arange(size) + 0.5) / size) * 2 - 1
    knots = np.linspace(-1.2, 1.2, cells)
    width = knots[1] - knots[0]
    basis = np.exp(-0.5 * ((pos[:, None] - knots[None, :]) / width) ** 2)
    basis /= np.linalg.norm(basis, axis=1, keepdims=True)
    basis = basis.astype(np.float32)
    basis.setflags(write=False)
    return basis


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    basis = _smoothing_basis(size, cells)
    coarse = rng.standard_normal((cells, cells), dtype=np.float32)
    # einsum, not ``@``: tiny BLAS calls thrash when several processes share two cores.
    return np.einsum("il,jl->ij", np.einsum("ik,kl->il", basis, coarse), basis)


def _ramp(distance: np.ndarray, width: float) -> np.ndarray:
    """Anti-aliased step: 1 inside (distance > 0), 0 outside, linear over ``width``."""
    return np.clip(0.5 + distance / width, 0.0, 1.0)


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


# -- one subject -------------------------------------------------------------------------------
class PhantomGenerator:
    """Draws phantom subjects of one size; ``subject(stream, index, anomalous)`` is pure.

    Args:
        image_size: side length in pixels (32 to 256).
        seed: non-negative int; with the stream and index it fixes every image.
        spec: the ranges the anatomy and the lesions are drawn from.
    """

    def __init__(self, image_size: int = 64, seed: int = 0, spec: PhantomSpec | None = None):
        if not isinstance(image_size, (int, np.integer)) or not MIN_SIZE <= image_size <= MAX_SIZE:
            raise DatasetError(f"synthetic: image_size must be an int in [{MIN_SIZE}, {MAX_SIZE}], "
                               f"got {image_size!r}")
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise DatasetError(f"synthetic: seed must be a non-negative int, got {seed!r}")
        self.image_size = int(image_size)
        self.seed = int(seed)
        self.spec = spec or PhantomSpec()

    def _rng(self, stream: str, index: int, part: int) -> np.random.Generator:
        if stream not in STREAMS:
            raise DatasetError(f"synthetic: unknown stream {stream!r}; expected one of {sorted(STREAMS)}")
        return np.random.default_rng(np.random.SeedSequence(self.seed,
                                                            spawn_key=(STREAMS[stream], int(index), part)))

    def subject(self, stream: str, index: int, anomalous: bool) -> tuple[np.ndarray, np.ndarray]:
        """One slice: ``uint8 [H, W]`` image and ``uint8 [H, W]`` lesion mask (zeros if normal)."""
        image, mask, _ = self.subject_with_foreground(stream, index, anomalous)
        return image, mask

    def subject_with_foreground(self, stream: str, index: int,
                                anomalous: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`subject` plus the intracranial foreground ``uint8 [H, W]`` (inside the skull ring)."""
        rng = self._rng(stream, index, 0)
        s, size = self.spec, self.image_size
        yy, xx = _grid(size)
        pixel = 2.0 / size

        # Head outline: rotated, shifted ellipse whose radius wobbles with low harmonics.
        cx, cy = rng.uniform(-s.head_offset, s.head_offset, 2)
        theta = rng.uniform(-s.head_rotation, s.head_rotation)
        semi_x = rng.uniform(*s.head_semi_axis)
        semi_y = min(semi_x * rng.uniform(*s.head_aspect), 0.9 - max(abs(cx), abs(cy)))
        cos_t, sin_t = np.cos(theta), np.sin(theta)
        u = (xx - cx) * cos_t + (yy - cy) * sin_t          # left-right axis of the head
        v = -(xx - cx) * sin_t + (yy - cy) * cos_t         # antero-posterior axis
        un, vn = u / semi_x, v / semi_y
        angle = np.arctan2(vn, un)
        harmonics = np.arange(2, 5)
        wobble_amp = rng.normal(0.0, s.head_wobble, len(harmonics)) / np.sqrt(harmonics - 1)
        wobble_phase = rng.uniform(0, 2 * np.pi, len(harmonics))
        wobble = 1 + np.einsum("k,khw->hw", wobble_amp.astype(np.float32),
                               np.cos(harmonics[:, None, None] * angle + wobble_phase[:, None, None]))
        rho = np.hypot(un, vn) / wobble                     # 1 on the outer head boundary
        head = rho <= 1.0
        width = pixel / semi_x                              # one pixel in rho units

        skull_t = rng.uniform(*s.skull_thickness)
        csf_t = rng.uniform(*s.csf_thickness)
        brain_edge = 1.0 - skull_t - csf_t
        in_head = _ramp(1.0 - rho, width)
        in_skull = _ramp(1.0 - skull_t - rho, width)
        in_brain = _ramp(brain_edge - rho, width)
        brain = rho <= brain_edge

        # Tissue: a cortical grey rim of gyral (noisy) thickness around white matter, with
        # smooth-noise islands of grey matter inside (thresholded two-class texture).
        grey, white = rng.uniform(*s.grey_intensity), rng.uniform(*s.white_intensity)
        depth = 1.0 - rho / brain_edge                      # 0 at the brain edge, 1 at the centre
        gyri = _smooth_noise(rng, size, 22)
        texture = _smooth_noise(rng, size, 7)
        fine = _smooth_noise(rng, size, 24)
        cortex = rng.uniform(*s.cortex_thickness) * (1 + 0.6 * gyri)
        white_field = depth - cortex + rng.uniform(*s.texture_amplitude) * (texture - 0.5)
        white_fraction = 1.0 / (1.0 + np.exp(-white_field / 0.02))
        tissue = grey + (white - grey) * white_fraction + 0.015 * fine

        # Ventricles: two curved lobes either side of the midline, closest at their middle and
        # diverging towards both ends (a butterfly); size varies like atrophy does.
        vscale = rng.uniform(*s.ventricle_scale)
        vent_dx, vent_dy = rng.uniform(0.07, 0.11), rng.uniform(-0.08, 0.04)
        vent_w, vent_h = 0.06 * vscale, rng.uniform(0.22, 0.30) * np.sqrt(vscale)
        vent_tilt, vent_bend = rng.uniform(-0.25, 0.25), rng.uniform(1.0, 2.5)
        asym = rng.uniform(0.85, 1.15)
        ventricles = np.zeros_like(u)
        for side, size_factor in ((-1.0, 1.0), (1.0, asym)):
            du, dv = un - side * (vent_dx + vent_w * size_factor), vn - vent_dy
            tilt = side * vent_tilt
            along = -du * np.sin(tilt) + dv * np.cos(tilt)
            across = du * np.cos(tilt) + dv * np.sin(tilt) - side * vent_bend * along ** 2
            radius = np.hypot(across / (vent_w * size_factor), along / (vent_h * size_factor))
            ventricles = np.maximum(ventricles, _ramp(1.0 - radius, width / (vent_w * size_factor)))
        vent_intensity = rng.uniform(*s.ventricle_intensity)
        tissue = tissue * (1 - ventricles) + vent_intensity * ventricles

        # Faint interhemispheric fissure, anterior and posterior of the ventricles.
        midline = np.exp(-0.5 * (u / (0.6 * pixel)) ** 2) * _ramp(np.abs(vn) - 0.35, 0.1)
        tissue = tissue - rng.uniform(*s.midline_depth) * midline

        # Lesions change the tissue only (drawn from their own stream, see module docstring).
        mask = np.zeros(u.shape, dtype=bool)
        if anomalous:
            change, mask = self._lesions(self._rng(stream, index, 1), un, vn, brain,
                                         brain_edge, semi_x, semi_y)
            tissue = tissue + change

        skull_i, csf_i = rng.uniform(*s.skull_intensity), rng.uniform(*s.csf_intensity)
        image = skull_i * (in_head - in_skull) + csf_i * (in_skull - in_brain) + tissue * in_brain
        bias = 1 + rng.uniform(*s.bias_amplitude) * _smooth_noise(rng, size, 4)
        image = image * bias * rng.uniform(*s.gain)

        sigma = rng.uniform(*s.noise_sigma)
        real = image + sigma * rng.standard_normal(image.shape, dtype=np.float32)
        imag = sigma * rng.standard_normal(image.shape, dtype=np.float32)
        image = np.hypot(real, imag)                        # Rician magnitude noise
        quantised = np.clip(np.rint(image * 255.0), 1, 255).astype(np.uint8)
        quantised[~head] = 0
        intracranial = rho <= 1.0 - skull_t
        return quantised, mask.astype(np.uint8), intracranial.astype(np.uint8)

    def _lesions(self, rng: np.random.Generator, un: np.ndarray, vn: np.ndarray, brain: np.ndarray,
                 brain_edge: float, semi_x: float, semi_y: float) -> tuple[np.ndarray, np.ndarray]:
        """Additive intensity change and mask of 1-3 irregular blobs inside the brain."""
        s, size = self.spec, self.image_size
        change = np.zeros(un.shape, dtype=np.float32)
        mask = np.zeros(un.shape, dtype=bool)
        count = int(rng.integers(s.lesion_count[0], s.lesion_count[1] + 1))
        min_radius = max(s.lesion_radius[0], MIN_LESION_RADIUS_PX * 2.0 / size)
        placed, attempts = 0, 0
        while placed < count or (not mask.any() and attempts < 20):
            attempts += 1
            # Centre uniformly inside 75% of the brain ellipse (head-normalised coordinates);
            # after ``count`` lesions, extra draws happen only if all of them missed the brain.
            phi, frac = rng.uniform(0, 2 * np.pi), 0.75 * np.sqrt(rng.uniform())
            cu, cv = frac * brain_edge * np.cos(phi), frac * brain_edge * np.sin(phi)
            radius = max(_log_uniform(rng, s.lesion_radius[0], s.lesion_radius[1]), min_radius)
            elong = rng.uniform(*s.lesion_elongation)
            turn = rng.uniform(0, np.pi)
            du, dv = (un - cu) * semi_x, (vn - cv) * semi_y
            a = (du * np.cos(turn) + dv * np.sin(turn)) / np.sqrt(elong)
            b = (-du * np.sin(turn) + dv * np.cos(turn)) * np.sqrt(elong)
            angle = np.arctan2(b, a)
            harmonics = np.arange(2, 6)
            amp = rng.normal(0.0, 0.12, len(harmonics)) / np.sqrt(harmonics - 1)
            phase = rng.uniform(0, 2 * np.pi, len(harmonics))
            outline = 1 + np.einsum("k,khw->hw", amp.astype(np.float32),
                                    np.cos(harmonics[:, None, None] * angle + phase[:, None, None]))
            ragged = 0.15 * _smooth_noise(rng, size, 12)
            inside = 1.0 - np.hypot(a, b) / (radius * np.clip(outline, 0.5, None)) + ragged
            profile = np.clip(inside / rng.uniform(*s.lesion_edge_softness), 0.0, 1.0) ** 0.7
            contrast = rng.choice((-1.0, 1.0)) * _log_uniform(rng, *s.lesion_contrast)
            heterogeneity = 1 + 0.3 * _smooth_noise(rng, size, 10)
            blob = (inside > 0) & brain
            if placed < count or blob.any():
                lesion = contrast * profile * heterogeneity * blob
                # Overlapping lesions do not add up: keep the stronger change per pixel.
                change = np.where(np.abs(lesion) > np.abs(change), lesion, change)
                mask |= blob
                placed += 1
        return change, mask

    def split(self, stream: str, n: int, n_anomalous: int) -> Split:
        """``n`` subjects of ``stream``; which ones are anomalous is a seeded draw per stream."""
        if stream not in STREAMS:
            raise DatasetError(f"synthetic: unknown stream {stream!r}; expected one of {sorted(STREAMS)}")
        n, n_anomalous = int(n), int(n_anomalous)
        labels = np.zeros(n, dtype=np.int64)
        if n_anomalous:
            order = np.random.default_rng(np.random.SeedSequence(
                self.seed, spawn_key=(STREAMS[stream], 2**32))).permutation(n)
            labels[np.sort(order[:n_anomalous])] = 1
        images = np.zeros((n, 1, self.image_size, self.image_size), dtype=np.uint8)
        masks = np.zeros_like(images)
        foreground = np.zeros_like(images)
        for i in range(n):
            images[i, 0], masks[i, 0], foreground[i, 0] = self.subject_with_foreground(stream, i, bool(labels[i]))
        groups = np.array([f"syn-s{self.seed}-{stream}-{i:06d}" for i in range(n)])
        return Split(images, labels, masks, groups, name=stream, foreground=foreground,
                     ids=np.array([f"case-{i}" for i in range(n)]))


# -- registry entry ----------------------------------------------------------------------------
CARD = DatasetCard(
    name="synthetic",
    modality="synthetic brain MRI (T1-like 2D axial phantom), 1 channel, uint8",
    description=("Procedural axial head slices: a wobbly rotated ellipse with a bright skull ring, a "
                 "dark CSF gap, grey/white matter from thresholded smooth noise with a gyral "
                 "cortical rim, butterfly ventricles, a faint midline fissure, a smooth bias field "
                 "and Rician noise. Head size, shape, cortex, ventricles, texture and intensities "
                 "vary per subject. Background is exactly 0 and the head is >= 1."),
    normal="a phantom slice without lesions",
    anomaly=("1-3 lesion-like irregular smoothed blobs inside the brain, radius 1.5 px to 11% of the "
             "image, hyper- or hypo-intense with log-uniform contrast 0.05-0.40 (some subtle); the "
             "mask marks the lesion pixels"),
    license="MIT (generated by this suite)",
    citation="uad-bench synthetic phantoms (" + GENERATOR_VERSION + ")",
    source="generated on the fly; no download",
    layout="none (root is ignored)",
    splits=("train: n_train normals; val/test: n_val/n_test subjects with anomaly_fraction anomalous, "
            "masks for all (zeros for normals); pool: n_pool subjects, half anomalous, for one-class "
            "semi-supervised methods. Each split is its own seeded stream; one subject per image, "
            "group ids 'syn-s<seed>-<split>-<index>'."),
    notes=("Image i of a split depends only on (seed, split, i); an anomalous image equals its normal "
           "twin outside the lesion mask. Every split carries a foreground mask: the intracranial "
           "region inside the skull ring (CSF and brain), where all lesions lie. Generator parameters are in "
           "AnomalyDataset.config."),
)


def _count(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise DatasetError(f"synthetic: {name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _n_anomalous(n: int, fraction: float) -> int:
    """``round(n * fraction)`` kept in [1, n-1] so both classes are present."""
    return int(min(max(round(n * fraction), 1), n - 1)) if n >= 2 else 0


def planned_sizes(*, image_size, n_train, n_val, n_test, n_pool, anomaly_fraction, **_):
    """The split sizes ``synthetic`` generates for these arguments (planning without generating)."""
    from datasets.stand_in import PlannedSizes

    n_pool = int(n_pool)
    return PlannedSizes(int(n_train), (int(n_val), _n_anomalous(int(n_val), anomaly_fraction)),
                        (int(n_test), _n_anomalous(int(n_test), anomaly_fraction)), 1, int(image_size), True,
                        (n_pool, n_pool // 2), "exact (generated data)")


@register_dataset("synthetic", card=CARD, generated=True, plan_sizes=planned_sizes)
def synthetic(root=None, image_size: int = 64, n_train: int = 800, n_val: int = 120,
              n_test: int = 240, n_pool: int = 200, anomaly_fraction: float = 0.5,
              seed: int = 0, lesion_contrast: Range | None = None,
              lesion_radius: Range | None = None) -> AnomalyDataset:
    """Procedural brain-MRI-like phantoms with lesion masks (offline; ``root`` is ignored).

    ``lesion_contrast`` and ``lesion_radius`` override the difficulty ranges of
    :class:`PhantomSpec` (e.g. ``[0.2, 0.5]`` and ``[0.1, 0.25]`` for conspicuous lesions that
    briefly trained CPU encoders can separate; the defaults include subtle ones).
    """
    del root  # accepted so every dataset is built the same way; nothing is read from disk
    overrides = {}
    for name, value in (("lesion_contrast", lesion_contrast), ("lesion_radius", lesion_radius)):
        if value is not None:
            if len(value) != 2 or not 0 < float(value[0]) <= float(value[1]):
                raise DatasetError(f"synthetic: {name} must be a range [low, high] with 0 < low <= high, "
                                   f"got {value!r}")
            overrides[name] = (float(value[0]), float(value[1]))
    generator = PhantomGenerator(image_size, seed, PhantomSpec(**overrides))
    n_train = _count("n_train", n_train, 1)
    n_val, n_test = _count("n_val", n_val, 2), _count("n_test", n_test, 2)
    n_pool = _count("n_pool", n_pool, 0)
    if not isinstance(anomaly_fraction, (int, float)) or not 0.0 < anomaly_fraction < 1.0:
        raise DatasetError(f"synthetic: anomaly_fraction must be in (0, 1), got {anomaly_fraction!r}")
    config = {"image_size": generator.image_size, "n_train": n_train, "n_val": n_val,
              "n_test": n_test, "n_pool": n_pool, "anomaly_fraction": float(anomaly_fraction),
              "seed": generator.seed, "generator": GENERATOR_VERSION, **generator.spec.as_config()}
    return AnomalyDataset(
        name="synthetic",
        train=generator.split("train", n_train, 0),
        val=generator.split("val", n_val, _n_anomalous(n_val, anomaly_fraction)),
        test=generator.split("test", n_test, _n_anomalous(n_test, anomaly_fraction)),
        pool=generator.split("pool", n_pool, n_pool // 2) if n_pool else None,
        card=CARD,
        config=config,
    )
