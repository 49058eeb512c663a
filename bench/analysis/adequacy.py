"""Did training do its job? A label-free adequacy guard for trained encoders and detectors.

Why: at CPU scale a "trained" encoder can be no more trained than its random initialisation
(SimCLR ending at 5.26 where chance is ln(2·128 − 1) = 5.54; MoCo's loss rising over its last
epochs), and comparing such an encoder with another says nothing about either method. The guard
judges each fit from what the fit itself recorded and from *normal validation images only* (no
test image, no label of an anomalous case), so it can gate claims without peeking:

* **Still falling** — the loss history (mean per epoch; long per-step histories are averaged into
  at most :data:`MAX_POINTS` bins) is fitted by a line over its last :data:`TAIL` of training; the
  drop that line makes over the tail, relative to the total drop of the run (largest value − last
  value), above :data:`STILL_FALLING` means training stopped while the loss was still going down.
  A linearly falling loss gives ≈ 0.10; an exponential approach that covered 86 % of its drop
  gives ≈ 0.03. A run of fewer than :data:`MIN_POINTS` points has no trend to judge and fails.
* **Barely below chance** (losses that declare one, e.g. InfoNCE) — ``chance`` is the loss of an
  encoder whose views all look alike (every candidate equally likely: ``ln(2B − 1)`` for NT-Xent
  with batch B, ``ln(Q + 1)`` for MoCo's queue of Q), ``floor`` the loss of a perfect one (positive
  at cosine 1, negatives at 0: ``ln(1 + (K − 1)·e^{−1/τ})`` for K candidates). The run must
  cover at least :data:`CHANCE_PROGRESS` of the way from chance to floor.
* **Collapse** — the effective rank (Roy & Vetterli 2007) of the validation normals' embeddings
  is below :data:`COLLAPSE_RANK`, or below :data:`COLLAPSE_FRACTION` of the same measure under
  the encoder's own untrained weights.
* **Collapsed dimensions** (encoders whose loss declares no chance level: BYOL, SimSiam, Barlow
  Twins, VICReg, LeJEPA, MAE, the VAE; DINO declares ``ln K``, its uniform collapse over K prototypes) — these losses can be low *because* the representation
  collapsed (SimSiam without its predictor reaches its minimum with a constant output, Chen & He
  2021 §4.1), so a falling loss says nothing by itself. Their verdict adds the per-dimension spread
  SimSiam uses to show collapse: the mean over dimensions of the standard deviation of the
  L2-normalised validation embeddings, times ``sqrt(D)`` (≈ 1 for an isotropic cloud, 0 when
  every image maps to one direction). Below :data:`COLLAPSE_STD`, or below
  :data:`COLLAPSE_FRACTION` of the same measure under the untrained weights, fails. Together with
  the effective rank (a scale-free measure that misses "all images in a tiny cone") and the
  normal-fit test below, this is what "trained" means for a loss without a chance level.
* **No better than untrained on validation normals** — the *normal-fit ratio*: mean squared
  distance (L2-normalised, as the alignment of Wang & Isola 2020) from each validation normal to
  its nearest training embedding, divided by the mean squared distance between training
  embeddings (the spread the uniformity measures). Lower = new normals land among the training
  normals relative to how spread out those are. A trained encoder whose ratio is not below that
  of its own untrained initialisation has learned nothing about normal anatomy that shows.

Thresholds are fixed constants chosen from the arithmetic above, never from results; a caller may
pass others. The output is plain data stored in each record (``adequacy``)::

    {"passed": bool, "judged": bool, "trained": bool, "reasons": [str, ...], "measures": {...}}

``judged`` is False where there is nothing to judge (a frozen encoder, no history recorded);
``passed`` is then True. This module is pure numpy (a report imports it without torch); the
encoder and detector objects are only read through their attributes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from bench.analysis.diagnostics import effective_rank, l2_normalize, nearest_neighbours

#: Fraction of training whose trend decides "still falling".
TAIL = 0.1
#: Fitted drop over the tail / total drop above which the loss is still falling.
STILL_FALLING = 0.05
#: Fewest history points with a trend to judge.
MIN_POINTS = 3
#: Long (per-step) histories are averaged into at most this many consecutive bins.
MAX_POINTS = 50
#: Share of the way from chance to the floor an InfoNCE-type loss must cover.
CHANCE_PROGRESS = 0.25
#: Effective rank below this is a collapsed representation (about one direction).
COLLAPSE_RANK = 2.0
#: ... as is an effective rank below this share of the untrained weights' one.
COLLAPSE_FRACTION = 0.25
#: Per-dimension spread (``sqrt(D)`` x mean std of L2-normalised embeddings) below this is collapse:
#: the validation normals lie within about 1 % of the isotropic spread around one direction.
COLLAPSE_STD = 0.01
#: Validation normals used for the representation checks (a seeded subsample beyond that).
MAX_EMBEDDINGS = 2000


def _as_history(history) -> np.ndarray:
    values = np.asarray(list(history) if history is not None else [], dtype=float).reshape(-1)
    return values[np.isfinite(values)]


def binned(history: np.ndarray, max_points: int = MAX_POINTS) -> np.ndarray:
    """Means of ``max_points`` consecutive bins of a long history (per-step losses are noisy)."""
    if len(history) <= max_points:
        return history
    return np.array([chunk.mean() for chunk in np.array_split(history, max_points)])


def loss_checks(history, *, chance: float | None = None, floor: float | None = None,
                name: str = "loss") -> tuple[list[str], dict]:
    """Reasons to fail and the measures of one loss history (see the module docstring)."""
    h = binned(_as_history(history))
    measures: dict = {f"{name}_points": int(len(h))}
    if len(h) == 0:
        return [f"{name}: no loss history recorded"], measures
    measures.update({f"{name}_first": float(h[0]), f"{name}_last": float(h[-1])})
    reasons = []
    if len(h) < MIN_POINTS:
        reasons.append(f"{name}: only {len(h)} epoch(s) recorded ({', '.join(f'{v:.4g}' for v in h)}): "
                       "too short to tell whether it converged")
    else:
        total = float(h.max() - h[-1])
        scale = max(abs(float(h.max())), abs(float(h[-1])), 1e-12)
        window = max(2, int(math.ceil(TAIL * (len(h) - 1))) + 1)
        tail = h[-window:]
        slope = float(np.polyfit(np.arange(window, dtype=float), tail, 1)[0])
        tail_drop = -slope * (window - 1)
        measures[f"{name}_total_drop"] = total
        measures[f"{name}_tail_drop"] = tail_drop
        if total <= 1e-6 * scale:
            reasons.append(f"{name}: never decreased (first {h[0]:.4g}, largest {h.max():.4g}, last {h[-1]:.4g})")
        else:
            fraction = tail_drop / total
            measures[f"{name}_tail_fraction"] = fraction
            if fraction > STILL_FALLING:
                reasons.append(f"{name}: still falling at the end: the last {window} of {len(h)} points drop by "
                               f"{tail_drop:.4g}, {100 * fraction:.0f} % of the total drop {total:.4g} "
                               f"(limit {100 * STILL_FALLING:.0f} %)")
    if chance is not None and math.isfinite(chance):
        last = float(h[-1])
        measures[f"{name}_chance"] = float(chance)
        if floor is not None and math.isfinite(floor) and floor < chance:
            measures[f"{name}_floor"] = float(floor)
            progress = (chance - last) / (chance - floor)
            measures[f"{name}_chance_progress"] = float(progress)
            if progress < CHANCE_PROGRESS:
                reasons.append(f"{name}: barely below chance: ends at {last:.4g}, chance {chance:.4g}, floor "
                               f"{floor:.4g}: {100 * progress:.0f} % of the way (needs {100 * CHANCE_PROGRESS:.0f} %)")
        elif last >= chance:
            reasons.append(f"{name}: ends at {last:.4g}, not below chance {chance:.4g}")
    return reasons, measures


def normal_fit_ratio(train: np.ndarray, val_normals: np.ndarray, max_points: int = MAX_EMBEDDINGS) -> float:
    """Mean squared distance from each validation normal to its nearest training embedding over the
    mean squared distance between training embeddings (L2-normalised rows; lower = tighter)."""
    train = np.asarray(train, dtype=np.float64)[:max_points]
    val = np.asarray(val_normals, dtype=np.float64)[:max_points]
    if len(train) < 2 or len(val) == 0:
        return float("nan")
    t, v = l2_normalize(train), l2_normalize(val)
    nearest = t[nearest_neighbours(v, t)]
    to_nearest = float(np.mean(np.sum((v - nearest) ** 2, axis=1)))
    # mean over pairs i != j of ||ti - tj||^2 = 2 (n / (n - 1)) (1 - ||mean t||^2) for unit rows
    n = len(t)
    spread = 2.0 * n / (n - 1) * (1.0 - float(np.sum(t.mean(axis=0) ** 2)))
    return to_nearest / spread if spread > 1e-12 else float("nan")


def dimension_spread(z: np.ndarray) -> float:
    """``sqrt(D)`` x the mean per-dimension std of the L2-normalised rows (1 isotropic, 0 collapsed)."""
    z = np.asarray(z, dtype=np.float64)
    return float(l2_normalize(z).std(axis=0).mean() * math.sqrt(z.shape[1]))


def spread_checks(val_normals: np.ndarray, untrained_val: np.ndarray | None = None) -> tuple[list[str], dict]:
    """The per-dimension collapse check of encoders without a chance level (module docstring)."""
    val = np.asarray(val_normals, dtype=np.float64)[:MAX_EMBEDDINGS]
    spread = dimension_spread(val)
    measures = {"dimension_spread": spread}
    reasons = []
    base = None
    if untrained_val is not None and len(untrained_val) >= 2 and np.isfinite(untrained_val).all():
        base = dimension_spread(np.asarray(untrained_val, dtype=np.float64)[:MAX_EMBEDDINGS])
        measures["untrained_dimension_spread"] = base
        if base < COLLAPSE_STD:
            base = None                 # degenerate untrained weights: no reference
    reasons += collapse_reason("per-dimension spread", spread, COLLAPSE_STD, base, ".4f",
                               "of the validation normals' L2-normalised embeddings (sqrt(D) x mean std; "
                               f"below {COLLAPSE_STD:g}, 1 = isotropic)")
    return reasons, measures


def collapse_reason(what: str, value: float, limit: float, base: float | None, fmt: str, detail: str) -> list[str]:
    """``[reason]`` when a collapse statistic is below its absolute ``limit`` or below ``COLLAPSE_FRACTION``
    of the untrained weights' value ``base`` (None: no usable reference), else ``[]``."""
    if value < limit:
        return [f"collapsed: {what} {value:{fmt}} {detail}"]
    if base is not None and value < COLLAPSE_FRACTION * base:
        return [f"collapsed: {what} {value:{fmt}}, below {100 * COLLAPSE_FRACTION:.0f} % of the untrained "
                f"weights' {base:{fmt}}"]
    return []


def representation_checks(train: np.ndarray, val_normals: np.ndarray, *, untrained_train: np.ndarray | None = None,
                          untrained_val: np.ndarray | None = None,
                          dimension_collapse: bool = False) -> tuple[list[str], dict]:
    """Collapse and normal-fit checks on embeddings of normal images (training and validation);
    ``dimension_collapse`` adds :func:`spread_checks` (encoders without a chance level)."""
    reasons, measures = [], {}
    val = np.asarray(val_normals, dtype=np.float64)
    if val.ndim != 2 or len(val) < 2 or not np.isfinite(val).all():
        return [], {"representation": f"not judged: {len(val)} finite validation normals"}
    rank = effective_rank(val[:MAX_EMBEDDINGS])
    measures.update(effective_rank=rank, dim=int(val.shape[1]))
    ratio = normal_fit_ratio(train, val)
    measures["normal_fit_ratio"] = ratio
    base_rank = base_ratio = None
    if untrained_val is not None and len(untrained_val) >= 2 and np.isfinite(untrained_val).all():
        base_rank = effective_rank(np.asarray(untrained_val, dtype=np.float64)[:MAX_EMBEDDINGS])
        measures["untrained_effective_rank"] = base_rank
        if base_rank < COLLAPSE_RANK:   # the untrained weights map every image to (nearly) one point
            measures["untrained"] = "degenerate (no reference): effective rank below the collapse limit"
            base_rank = None
        elif untrained_train is not None:
            base_ratio = normal_fit_ratio(untrained_train, untrained_val)
            measures["untrained_normal_fit_ratio"] = base_ratio
    reasons += collapse_reason("effective rank", rank, COLLAPSE_RANK, base_rank, ".2f",
                               f"of the validation normals' embeddings (below {COLLAPSE_RANK:g})")
    if dimension_collapse:
        part_reasons, part = spread_checks(val, untrained_val)
        reasons += [r for r in part_reasons if not any(r2.startswith("collapsed") for r2 in reasons)]
        measures.update(part)
    if base_ratio is not None and math.isfinite(ratio) and math.isfinite(base_ratio) and ratio >= base_ratio:
        reasons.append(f"no better than untrained on validation normals: normal-fit ratio {ratio:.3f} vs "
                       f"{base_ratio:.3f} under the untrained weights (lower is better)")
    return reasons, measures


def assess(history=None, *, chance: float | None = None, floor: float | None = None, trained: bool = True,
           train_embeddings=None, val_normal_embeddings=None, untrained_train=None, untrained_val=None,
           histories: Mapping[str, Sequence[float]] | None = None, dimension_collapse: bool = False) -> dict:
    """The guard's verdict for one fit: ``{passed, judged, trained, reasons, measures}``.

    ``history`` is one loss history (``chance``/``floor`` apply to it); ``histories`` several named
    ones (a detector's networks), each judged for its trend. Embeddings are optional: without them
    only the losses are judged. ``dimension_collapse`` adds the per-dimension spread check
    (:func:`spread_checks`) to the representation checks.
    """
    if not trained:
        return {"passed": True, "judged": False, "trained": False, "reasons": [], "measures": {}}
    reasons, measures = [], {}
    named = dict(histories or {})
    if history is not None or not named:
        named = {"loss": history, **named}
    judged = False
    for name, values in named.items():
        part_reasons, part = loss_checks(values, chance=chance if name == "loss" else None,
                                         floor=floor if name == "loss" else None, name=name)
        judged = judged or bool(part.get(f"{name}_points"))
        reasons += part_reasons
        measures.update(part)
    if val_normal_embeddings is not None and train_embeddings is not None:
        part_reasons, part = representation_checks(train_embeddings, val_normal_embeddings,
                                                   untrained_train=untrained_train, untrained_val=untrained_val,
                                                   dimension_collapse=dimension_collapse)
        reasons += part_reasons
        measures.update(part)
    if not judged:
        return {"passed": True, "judged": False, "trained": True, "reasons": reasons, "measures": measures}
    return {"passed": not reasons, "judged": True, "trained": True, "reasons": reasons,
            "measures": {k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in measures.items()}}


def _declared(obj, name: str, *args) -> float | None:
    fn = getattr(obj, name, None)
    if fn is None:
        return None
    value = fn(*args) if callable(fn) else fn
    return float(value) if value is not None else None


def assess_encoder(encoder, history, val_normal_embeddings=None, *, train_embeddings=None, untrained_train=None,
                   untrained_val=None, n_train: int | None = None) -> dict:
    """The guard for an encoder fit (call it where the encoder was trained or loaded).

    ``encoder`` is read for ``trainable``, ``batch_size`` and the declared ``chance_loss(batch)`` /
    ``loss_floor(batch)`` (methods.encoders); the batch is the one training used,
    ``min(batch_size, n_train)``. ``history`` is its ``history_`` (mean loss per epoch).
    Embeddings are numpy arrays of normal images: ``train_embeddings``, ``val_normal_embeddings``
    and, optionally, the same images under the untrained initial weights. An encoder that declares
    no chance level is also checked for collapsed dimensions (:func:`spread_checks`): for its loss,
    "trained" means no collapse, a loss no longer falling and a better normal fit than untrained.
    """
    if not getattr(encoder, "trainable", False):
        return assess(trained=False)
    batch = getattr(encoder, "batch_size", None)
    if batch is not None and n_train is not None:
        batch = min(int(batch), int(n_train))
    chance = _declared(encoder, "chance_loss", batch) if batch else None
    floor = _declared(encoder, "loss_floor", batch) if batch else None
    verdict = assess(history, chance=chance, floor=floor, train_embeddings=train_embeddings,
                     val_normal_embeddings=val_normal_embeddings, untrained_train=untrained_train,
                     untrained_val=untrained_val, dimension_collapse=chance is None)
    verdict["measures"]["criteria"] = ("chance level, trend, collapse, normal fit" if chance is not None else
                                       "no chance level: trend, collapse (effective rank, per-dimension spread), "
                                       "normal fit")
    return verdict


def detector_histories(detector) -> dict[str, list[float]]:
    """Every loss history a fitted detector holds: ``history_`` (a list, or a dict of named lists)
    and the history of an encoder it trained (``encoder.history_``, e.g. ``msacl_patch``)."""
    out: dict[str, list[float]] = {}
    own = getattr(detector, "history_", None)
    if isinstance(own, Mapping):
        out.update({str(k): list(v) for k, v in own.items()})
    elif own is not None and len(own):
        out["loss"] = list(own)
    encoder = getattr(detector, "encoder", None)
    if getattr(detector, "fit_encoder", False) and getattr(encoder, "trainable", False):
        out["encoder"] = list(getattr(encoder, "history_", []) or [])
    return out


def assess_detector(detector) -> dict:
    """The guard for an end-to-end detector: the trend of each of its recorded losses (detectors
    declare no chance level). A detector that trains nothing (PaDiM, PatchCore) is not judged."""
    histories = detector_histories(detector)
    if not histories:
        return assess(trained=False)
    return assess(histories=histories)


# ---------------------------------------------------------------------------------------------
# The hook in the cell path (bench.run.work): embeddings of normal images before and after the fit
# ---------------------------------------------------------------------------------------------
#: Normal images per split embedded for the representation checks.
REFERENCE_IMAGES = 512


def _normal_index(split) -> np.ndarray:
    return np.flatnonzero(np.asarray(split.labels) == 0)[:REFERENCE_IMAGES]


def untrained_reference(encoder, dataset, batch_size: int = 256, device: str = "cpu") -> dict | None:
    """Embeddings of (up to :data:`REFERENCE_IMAGES`) normal training and validation images under
    the encoder's *untrained* weights; call it right before ``encoder.fit``. Gradient-free and in
    eval mode, so the fit that follows is unchanged. None for frozen encoders or < 2 validation normals."""
    if not getattr(encoder, "trainable", False):
        return None
    train, val = _normal_index(dataset.train), _normal_index(dataset.val)
    if len(val) < 2 or len(train) < 2:
        return None
    return {"train": encoder.embed(dataset.train.images[train], batch_size, device).numpy(),
            "val": encoder.embed(dataset.val.images[val], batch_size, device).numpy()}


def encoder_adequacy(encoder, history, embeddings: Mapping[str, np.ndarray], dataset,
                     reference: Mapping[str, np.ndarray] | None = None) -> dict:
    """:func:`assess_encoder` from the unit's embeddings (``{"train", "val"}`` of the whole splits,
    as the encoder cache holds them) and the optional :func:`untrained_reference`."""
    train_idx, val_idx = _normal_index(dataset.train), _normal_index(dataset.val)
    val = np.asarray(embeddings["val"])[val_idx] if "val" in embeddings and len(val_idx) >= 2 else None
    reference = reference or {}
    return assess_encoder(encoder, history, val, train_embeddings=np.asarray(embeddings["train"])[train_idx],
                          untrained_train=reference.get("train"), untrained_val=reference.get("val"),
                          n_train=int(dataset.train.n_normal) if dataset.train.n_anomalous else len(dataset.train))
