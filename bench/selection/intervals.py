"""Intervals of the selection grades, from the verdicts' inference (:mod:`bench.analysis.inference`).

* Differences of two configurations' true metric (regret, the gain over a baseline, the margin to the
  true top 3) are claims-style paired comparisons: :func:`paired_interval` builds one and hands it to
  ``test_comparison``, so their variance (test cases by group, plus seeds), reference t and one-seed rule
  are the verdicts' own.
* Kendall's tau is not a difference of two cells, so :func:`tau_interval` assembles the same two
  variance components itself: ``V_test`` from the same shared case-bootstrap resamples (seeds held fixed,
  times I / (I - 1)), ``V_seed`` by the jackknife over seeds (which for a mean is exactly the verdicts'
  ``s^2 / S``), and the same t reference (Hsu's df below 5 seeds of a stochastic fit, else Satterthwaite).

The only module of :mod:`bench.selection` that touches the claims API: re-point it here, nothing else.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

#: How far a rank correlation can go; the t interval is clipped to it.
TAU_RANGE = (-1.0, 1.0)


def _cell(rec: Mapping, metric: str, value: float):
    """The record as claims see it, its ``metric`` replaced by the graded value (the one resampled)."""
    from bench.analysis import claims as C

    rec = {**rec, "metrics": {**(rec.get("metrics") or {}), metric: value}}
    return C.CellInfo(rec, C.cell_attributes(rec))


def split_samples(dataset: str, arrays_of: Callable[[str], Mapping], cache: dict, n_resamples: int, seed: int):
    """The dataset's shared test-case resamples (one per dataset, kept in ``cache`` with light arrays)."""
    from bench.analysis.inference import SplitSamples, light_arrays

    def cached_arrays(cell_id: str) -> dict:
        key = ("arrays", cell_id)
        if key not in cache:
            cache[key] = light_arrays(arrays_of(cell_id))
        return cache[key]

    return cache.setdefault(("samples", dataset, n_resamples, seed),
                            SplitSamples(dataset, cached_arrays, arrays_of, n_resamples, seed))


def paired_interval(dataset: str, metric: str, pairs: Sequence[tuple[Mapping, Mapping, object]], arrays_of,
                    graded: Callable[[Mapping], float], *, n_resamples: int = 1000, seed: int = 0,
                    cache: dict | None = None) -> tuple[float, float, float, str]:
    """(effect, low, high, reason) of the mean paired difference a - b over ``pairs`` of records
    ``(a, b, seed)`` matched on dataset and seed, ``graded(record)`` being each cell's metric: the claims
    machinery's comparison on the same arrays. With one seed of a stochastic fit the interval is unknown
    (NaN, with the reason); identical cells on both sides give a zero-width interval."""
    from bench.analysis import claims as C
    from bench.analysis.inference import test_comparison

    cache = {} if cache is None else cache
    claim = C.Claim(id=f"selection:{dataset}:{metric}", source="label-free selection",
                    statement="one configuration minus another", metrics=(metric,), a={}, b={})
    comp = C.Comparison(claim, dataset, metric)
    comp.pairs = [(_cell(a, metric, graded(a)), _cell(b, metric, graded(b)), s) for a, b, s in pairs]
    diffs = [a.record["metrics"][metric] - b.record["metrics"][metric] for a, b, _ in comp.pairs]
    comp.effect = float(np.nanmean(diffs)) if diffs else float("nan")
    if all(a["cell_id"] == b["cell_id"] for a, b, _ in pairs):
        return comp.effect, 0.0, 0.0, ""                 # the same configuration: a difference of nothing
    test_comparison(comp, split_samples(dataset, arrays_of, cache, n_resamples, seed))
    return comp.effect, comp.ci_low, comp.ci_high, comp.reason or comp.undecided


def tau_b_rows(x: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Kendall's tau-b of ``x`` [C] with every row of ``ys`` [B, C] (ties handled as scipy's tau-b)."""
    i, j = np.triu_indices(len(x), k=1)
    sx = np.sign(x[i] - x[j])
    sy = np.sign(ys[:, i] - ys[:, j])
    denominator = np.sqrt((sx ** 2).sum() * (sy ** 2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, sy @ sx / denominator, np.nan)


def truth_resamples(dataset: str, metric: str, cells: Mapping[str, Sequence[Mapping]], arrays_of,
                    graded: Callable[[Mapping], float], *, n_resamples: int, seed: int, cache: dict
                    ) -> tuple[np.ndarray | None, object, str]:
    """Each configuration's true metric (mean over its seeds) on every shared test-case resample:
    ``([B, C] in the order of ``cells``, the SplitSamples, '')``, or ``(None, None, reason)``."""
    samples = split_samples(dataset, arrays_of, cache, n_resamples, seed)
    columns = []
    try:
        for records in cells.values():
            per_seed = []
            for rec in records:
                cell = _cell(rec, metric, graded(rec))
                problem = samples.reference(cell)
                if problem:
                    return None, None, problem
                per_seed.append(samples.samples(cell, metric))
            columns.append(np.nanmean(np.vstack(per_seed), axis=0))
    except (KeyError, ValueError) as exc:
        return None, None, str(exc.args[0])
    return np.column_stack(columns), samples, ""


def tau_interval(tau: float, values: pd.Series, resampled_truth: np.ndarray, samples, jackknife: Sequence[float],
                 stochastic: bool, level: float = 0.95) -> tuple[float, float, str]:
    """(low, high, reason) of the interval ``tau ± t(df) sqrt(V_test + V_seed)`` (clipped to [-1, 1]) of
    Kendall's tau between a criterion's ``values`` (one per configuration, in the order of
    ``resampled_truth``'s columns) and the true metric.

    ``jackknife`` holds the tau with each seed left out in turn (criterion and truth both recomputed
    without it; empty with one seed); ``stochastic``: some fit of the configurations depends on its seed."""
    from bench.analysis.inference import ONE_SEED, SATTERTHWAITE_MIN_SEEDS, satterthwaite, t_test

    n_seeds = max(len(jackknife), 1)
    if not math.isfinite(tau):
        return float("nan"), float("nan"), ""
    if stochastic and n_seeds < 2:
        return float("nan"), float("nan"), ONE_SEED
    keep = np.asarray(values.notna())
    taus = tau_b_rows(np.asarray(values, dtype=float)[keep], resampled_truth[:, keep])
    taus = taus[np.isfinite(taus)]
    if taus.size < 2:
        return float("nan"), float("nan"), "no resample ranks the configurations"
    units = len(np.unique(samples.groups))
    v_test = float(np.var(taus, ddof=1)) * units / (units - 1)
    jack = np.asarray([t for t in jackknife if math.isfinite(t)], dtype=float)
    v_seed = float((jack.size - 1) / jack.size * ((jack - jack.mean()) ** 2).sum()) if jack.size > 1 else 0.0
    i10, i01 = samples.units_per_class()
    df_test = max(min(i10, i01) - 1, 1)
    if stochastic and 1 < n_seeds < SATTERTHWAITE_MIN_SEEDS:
        df = float(min(df_test, n_seeds - 1))             # Hsu's conservative df, as the verdicts
    else:
        df = satterthwaite(v_test, df_test, v_seed, n_seeds)
    variance = v_test + v_seed
    if variance <= 0:
        return tau, tau, ""
    _, low, high = t_test(tau, variance, df, level)
    return max(low, TAU_RANGE[0]), min(high, TAU_RANGE[1]), ""
