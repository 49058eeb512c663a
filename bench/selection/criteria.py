"""Per-cell label-free measures (from a record and its ``synth_*`` arrays) and the criterion registry.

Every measure and every criterion is oriented so that *higher is better*. Nothing here reads a test
label, a test score or a pool label: only validation normals' scores (``val_scores`` where
``val_labels == 0``), the ``synth_*`` arrays and the record's adequacy measures.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from bench.analysis.pixsum import SYNTH_PREFIX, counts_from_summary, has_summary
from bench.analysis.stats import pixel_metric_samples

#: Mass-Volume: the normal mass range integrated over (Goix 2016 uses [0.9, 0.999] in high dimension;
#: with ~100 validation normals the empirical quantile stops meaning anything above 0.99).
MV_ALPHA = (0.9, 0.99)
MV_STEPS = 46


def _auroc(negatives: np.ndarray, positives: np.ndarray) -> float:
    if len(negatives) == 0 or len(positives) == 0:
        return float("nan")
    y = np.r_[np.zeros(len(negatives)), np.ones(len(positives))]
    s = np.r_[negatives, positives].astype(np.float64)
    if not np.isfinite(s).all():
        return float("nan")
    return float(roc_auc_score(y, s))


def synth_pixel_counts(arrays: Mapping):
    """The synthetic maps' :class:`~bench.analysis.pixsum.PixelCounts`, or None without maps.

    Records written before the synthetic set used the test split's summary hold per-bin counts
    (``synth_pix_edges/pos/neg``); they are the same counts without lesion regions."""
    if has_summary(arrays, prefix=SYNTH_PREFIX):
        return counts_from_summary(arrays, prefix=SYNTH_PREFIX)
    if all(k in arrays for k in ("synth_pix_edges", "synth_pix_pos", "synth_pix_neg")):
        pos = np.asarray(arrays["synth_pix_pos"])
        legacy = {"thresholds": np.asarray(arrays["synth_pix_edges"], dtype=np.float64)[:-1], "pos": pos,
                  "neg": np.asarray(arrays["synth_pix_neg"]), "region_image": np.zeros(0, np.int32),
                  "region": np.zeros((0, pos.shape[1]), np.int32)}
        return counts_from_summary({SYNTH_PREFIX + k: v for k, v in legacy.items()}, prefix=SYNTH_PREFIX)
    return None


def mass_volume_area(val_normal_scores: np.ndarray, reference_scores: np.ndarray,
                     alphas: tuple[float, float] = MV_ALPHA, steps: int = MV_STEPS) -> float:
    """Area under the Mass-Volume curve (Goix, "How to Evaluate the Quality of Unsupervised Anomaly
    Detection Algorithms?", 2016): ``MV(a) = Vol({x: score(x) <= t_a})`` with ``t_a`` the
    ``a``-quantile of the validation normals' anomaly scores, integrated over ``a`` in ``alphas``.

    The volume is the mass of a *reference distribution* instead of Lebesgue measure: the fraction of
    reference samples (every pixel drawn from that pixel of a random validation normal, scored by the
    cell like any image) inside the normal region. Lebesgue volume in pixel space is estimated by
    uniform samples that every detector calls anomalous (the volume is 0 for all), and the cell's own
    feature space differs between cells; a common reference measure keeps cells comparable. Lower is better.
    """
    normal = np.asarray(val_normal_scores, dtype=np.float64)
    ref = np.asarray(reference_scores, dtype=np.float64)
    if len(normal) < 2 or len(ref) == 0 or not (np.isfinite(normal).all() and np.isfinite(ref).all()):
        return float("nan")
    grid = np.linspace(*alphas, steps)
    volume = np.array([np.mean(ref <= np.quantile(normal, a)) for a in grid])
    return float(np.trapezoid(volume, grid) / (alphas[1] - alphas[0]))


def cell_measures(record: Mapping, arrays: Mapping) -> dict[str, float]:
    """The label-free measures of one cell (higher is better); absent where the cell lacks the input."""
    out: dict[str, float] = {}
    val_scores = np.asarray(arrays.get("val_scores", []), dtype=np.float64)
    val_labels = np.asarray(arrays.get("val_labels", np.zeros(len(val_scores))))
    normal = val_scores[val_labels == 0] if len(val_labels) == len(val_scores) else np.zeros(0)
    if "synth_scores" in arrays:
        scores = np.asarray(arrays["synth_scores"], dtype=np.float64)
        generators = np.asarray(arrays["synth_generator"]).astype(str)
        counts = synth_pixel_counts(arrays)
        for g in sorted(set(generators)):
            pick = generators == g
            out[f"synth_auroc[{g}]"] = _auroc(normal, scores[pick])
            if counts is not None:    # the generator's cases only: weight 1 on them, 0 elsewhere
                ap = pixel_metric_samples(counts, pick[None, :].astype(np.float64))["pixel_ap"][0]
                out[f"synth_pixel_ap[{g}]"] = float(ap)
    if "synth_mv_scores" in arrays:
        out["mass_volume"] = -mass_volume_area(normal, arrays["synth_mv_scores"])
    if "synth_pool_scores" in arrays:
        out["pool_auc"] = _auroc(normal, np.asarray(arrays["synth_pool_scores"], dtype=np.float64))
    ratio = ((record.get("adequacy") or {}).get("measures") or {}).get("normal_fit_ratio")
    if isinstance(ratio, (int, float)) and math.isfinite(ratio):
        out["normal_fit"] = -float(ratio)
    return out


# ---------------------------------------------------------------------------------------------
# Criteria: configuration-level values from the measures (mean over seeds), higher is better
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Criterion:
    name: str
    compute: Callable[[pd.DataFrame], dict[str, pd.Series]]
    summary: str


CRITERIA: dict[str, Criterion] = {}


def register_criterion(name: str):
    """``@register_criterion("name")`` over ``fn(measures) -> {criterion name: Series}``: ``measures``
    has one row per configuration (index: label) and one column per cell measure (mean over seeds)."""

    def decorator(fn):
        doc = (fn.__doc__ or "").strip().splitlines()
        CRITERIA[name] = Criterion(name, fn, doc[0] if doc else "")
        return fn

    return decorator


def _columns(measures: pd.DataFrame, prefix: str) -> list[str]:
    return sorted(c for c in measures.columns if c.startswith(prefix + "["))


def _mean_rank(measures: pd.DataFrame, columns: list[str]) -> pd.Series:
    """Minus the mean rank (1 = best) over ``columns``; a configuration must have every column."""
    ranks = measures[columns].rank(ascending=False, method="average")
    return -ranks.mean(axis=1, skipna=False)


def _per_generator(measures: pd.DataFrame, prefix: str) -> dict[str, pd.Series]:
    """One criterion per generator: the ``prefix[generator]`` measure columns as they are."""
    return {c: measures[c] for c in _columns(measures, prefix)}


def _rank_over_generators(measures: pd.DataFrame, prefix: str) -> dict[str, pd.Series]:
    """``prefix_rank``: minus the mean rank over the generators' columns (none with fewer than two)."""
    cols = _columns(measures, prefix)
    return {f"{prefix}_rank": _mean_rank(measures, cols)} if len(cols) > 1 else {}


@register_criterion("synth_auroc")
def synth_auroc(measures):
    """Image AUROC, validation normals vs one generator's synthetic anomalies (one criterion per generator)."""
    return _per_generator(measures, "synth_auroc")


@register_criterion("synth_auroc_rank")
def synth_auroc_rank(measures):
    """Mean rank of the synthetic image AUROCs over the generators (minus it: higher is better)."""
    return _rank_over_generators(measures, "synth_auroc")


@register_criterion("synth_pixel_ap")
def synth_pixel_ap(measures):
    """Pixel AP on one generator's synthetic masks (one criterion per generator; cells with maps)."""
    return _per_generator(measures, "synth_pixel_ap")


@register_criterion("synth_pixel_ap_rank")
def synth_pixel_ap_rank(measures):
    """Mean rank of the synthetic pixel APs over the generators (minus it: higher is better)."""
    return _rank_over_generators(measures, "synth_pixel_ap")


@register_criterion("mass_volume")
def mass_volume(measures):
    """Minus the Mass-Volume area on validation normals against the per-pixel-marginal reference (Goix 2016)."""
    return {"mass_volume": measures["mass_volume"]} if "mass_volume" in measures else {}


@register_criterion("normal_fit")
def normal_fit(measures):
    """Minus the adequacy guard's normal-fit ratio of the encoder (validation normals vs training normals)."""
    return {"normal_fit": measures["normal_fit"]} if "normal_fit" in measures else {}


@register_criterion("pool_auc")
def pool_auc(measures):
    """AUROC of validation normals vs the unlabelled pool taken as pseudo-positives (where a pool exists)."""
    return {"pool_auc": measures["pool_auc"]} if "pool_auc" in measures else {}


def criterion_values(measures: pd.DataFrame) -> dict[str, pd.Series]:
    """Every registered criterion's values on ``measures`` (criteria without inputs are left out)."""
    out: dict[str, pd.Series] = {}
    for criterion in CRITERIA.values():
        for name, values in criterion.compute(measures).items():
            values = pd.to_numeric(values, errors="coerce")
            if values.notna().any():
                out[name] = values
    return out
