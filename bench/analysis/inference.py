"""Inference for claims: one comparison's effect, variance, reference distribution, p-value and interval,
and one Holm correction over the run.

**The unit of replication is the seed.** A comparison is a set of pairs ``(a, b, seed)`` of cells equal
on the claim's ``match`` attributes. Its effect is the mean over pairs of ``metric(a) - metric(b)``; its
variance ``V = V_test + V_seed`` has two parts:

* ``V_test``, the test-set sampling variance of the mean contrast with the seeds held fixed: for image
  AUROC DeLong's covariance of the correlated AUROCs (Obuchowski's cluster version where the split has
  patients, with her exact small-sample factors, :func:`bench.analysis.stats.delong`); for every other
  metric the variance of the effect over case-bootstrap resamples (whole patients), the seeds held fixed
  (resampling S seeds with replacement would shrink the seed part by ``(S - 1) / S``), times I / (I - 1)
  for I patients (cases);
* ``V_seed = s^2 / S``, from the spread ``s`` of the S per-seed effects.

**Reference.** Student t. Its degrees of freedom combine ``df_test = min(I10, I01) - 1`` (I10, I01:
patients, or cases, with an anomalous and with a normal case; large for an unclustered test set, small
for a few patients) and ``S - 1`` for the seed part: Satterthwaite's approximation from
``SATTERTHWAITE_MIN_SEEDS`` (5) seeds on, Hsu's conservative ``min(df_test, S - 1)`` below (2-4 seeds of
a stochastic fit). Why: ``python -m bench.tools.calibration`` (4 datasets x 2 metrics per run, a
between-seed SD of 0.05 AUROC) measured Satterthwaite's family-wise rate of any verdict at a true
difference of 0 at 23 % with 2 seeds and 10 % with 3 (coverage 89 % and 93 %): with one or two degrees of
freedom the seed variance is often estimated far too small, and Satterthwaite then trusts it with many
degrees of freedom. Hsu's df is conservative whatever the variance ratio (the smaller component's df),
at a real cost in power with 2-3 seeds; at 5 seeds Satterthwaite met the targets. The interval shown
is the one the test inverts, ``effect ± t(df, 0.975) sqrt(V)``, and ``p`` is its two-sided p-value.

**One seed.** With one seed ``V_seed`` cannot be estimated. Where any cell of a comparison comes from a
stochastic fit (a trained or random-init encoder, an iterative head: the record's ``deterministic_fit``;
records written before it existed count as stochastic) the verdict is *inconclusive* with the reason
"one seed: training variance unknown"; only all-deterministic comparisons (frozen ImageNet features
with a closed-form head, where ``V_seed = 0`` holds by construction) are decided from one seed.

**Small samples.** Where a class has fewer than ``MIN_PER_CLASS`` patients/cases, or ``V`` is (nearly)
zero, the t reference is not trusted and an exact permutation test takes over (Monte Carlo with
``PERMUTATIONS`` draws where there are more than ``2**EXACT_UNITS`` patterns): within every patient
(case) the rank-transformed scores of A and B are swapped or not, the same swap for every pair of the
comparison (Venkatraman & Begg 1996, Biometrika 83, for paired ROC curves); rank-invariant image
metrics are recomputed on every pattern. With U patients its smallest two-sided p is 2 / 2**U (3 + 3
cases: 1/32, never 0). It covers the test-set sampling only, so where the t p exists (V > 0: it holds
the seed part) the larger of the two decides. Pixel metrics have no such fallback (not testable).

**Direction.** ``sign`` is +1 when the claim expects ``A - B > 0``; metrics declared ``lower_is_better``
(FPR95) flip it, so "A better than B" means a lower value for them.

**One error budget.** One two-sided test per comparison; Holm over the run's family, which is every
comparison that gets a p-value: the sanity rows (decided on the validation split) and every claim row
(decided on the test split) together. Holm p < alpha with the effect in the claimed direction is
*supported*, in the opposite direction *contradicted*; otherwise *inconclusive*.

Pure numpy/scipy: no torch.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats as sps

from bench.analysis import stats
from bench.analysis.pixsum import has_pixel_data, pixel_counts_of

#: bootstrap resamples for the variance of non-AUROC metrics (a variance, not a tail: 2000 is plenty)
DEFAULT_RESAMPLES = 2000
#: resamples per block (bounds memory: a block of weights is block x N)
BLOCK = 1000
#: thresholds of the pixel-count grid for resampled pixel metrics
PIXEL_THRESHOLDS = 256
#: fewer patients (cases) than this in a class: the permutation test takes over from the t reference
MIN_PER_CLASS = 10
#: a variance at or below this (relative to effect^2 + 1e-6) counts as zero
TINY_VARIANCE = 1e-12
#: exact permutation up to 2**EXACT_UNITS swap patterns, Monte Carlo with PERMUTATIONS draws beyond
EXACT_UNITS, PERMUTATIONS = 12, 5000
#: from this many seeds Satterthwaite's df; below, Hsu's conservative min(df_test, S - 1) (calibration)
SATTERTHWAITE_MIN_SEEDS = 5
#: "auto" (the rule above), or one of the two everywhere (for the calibration's comparisons)
REFERENCES = ("auto", "satterthwaite", "hsu")
ONE_SEED = "one seed: training variance unknown"
PIXEL_ARRAYS = ("test_maps", "test_masks")


def light_arrays(arrays) -> dict:
    """A cell's arrays without its maps and pixel summaries (the large ones, read again only when a pixel
    metric is resampled); ``available`` lists every stored key."""
    out = {k: arrays[k] for k in arrays if k not in PIXEL_ARRAYS and not k.startswith("test_pixsum_")}
    out["available"] = np.array(sorted(arrays))
    return out
SPLIT_NAMES = {"test": "test", "val": "validation"}


@dataclass
class Comparison:
    """One claim on one dataset, split value and metric: its pairs, then its statistics and verdict."""

    claim: Any
    dataset: str
    metric: str
    split: str = ""
    pairs: list = field(default_factory=list)          # [(cell a, cell b, seed)] usable
    n_a: int = 0
    n_b: int = 0
    n_matched: int = 0
    excluded: dict = field(default_factory=dict)       # category -> {(who, text): seeds}
    effect: float = float("nan")
    ci_low: float = float("nan")
    ci_high: float = float("nan")
    se: float = float("nan")
    df: float = float("nan")
    v_test: float = float("nan")
    v_seed: float = float("nan")
    p: float = float("nan")
    p_holm: float = float("nan")
    test: str = ""
    n_resamples: int = 0
    verdict: str = "not testable"
    reason: str = ""                                   # why not testable
    undecided: str = ""                                # why inconclusive without a test (one seed)
    note_extra: str = ""
    family: str = "claims"
    data_split: str = "test"                           # the split the test used: "test" or "val"

    @property
    def testable(self) -> bool:
        return bool(self.pairs) and not self.reason

    @property
    def in_family(self) -> bool:
        return self.testable and not self.undecided and math.isfinite(self.p)

    @property
    def sign(self) -> float:
        """+1 when a positive ``A - B`` is what the claim expects (lower-is-better metrics flip it)."""
        from bench.metrics.registry import lower_is_better

        return self.claim.sign * (-1.0 if lower_is_better(self.metric) else 1.0)

    @property
    def sign_effect(self) -> float:
        """The effect in the claimed direction (positive: as claimed)."""
        return self.sign * self.effect

    def exclude(self, category: str, who: str, text: str, seed) -> None:
        self.excluded.setdefault(category, {}).setdefault((who, text), set()).add(seed)

    def exclusion_text(self, limit: int = 3) -> str:
        parts = []
        for category, items in self.excluded.items():
            shown = [f"{who} (seed {', '.join(str(s) for s in sorted(seeds, key=str))}): {text}"
                     for (who, text), seeds in list(items.items())[:limit]]
            more = len(items) - limit
            parts.append(f"{category}: " + "; ".join(shown) + (f"; and {more} more" if more > 0 else ""))
        return " | ".join(parts)


def deterministic(cell) -> bool:
    """The record says its whole fit (encoder and head, or detector) is seed-independent; a record
    without the field (written before it existed) counts as stochastic: the conservative reading."""
    return cell.record.get("deterministic_fit") is True


def one_seed_problem(comp: Comparison) -> str:
    """``ONE_SEED`` where one seed and a stochastic cell leave the training variance unknown, else ''."""
    seeds = {s for _, _, s in comp.pairs}
    if len(seeds) == 1 and not all(deterministic(c) for a, b, _ in comp.pairs for c in (a, b)):
        return ONE_SEED
    return ""


# ---------------------------------------------------------------------------------------------
# The cases of one dataset and split, shared by every comparison on it
# ---------------------------------------------------------------------------------------------
class SplitSamples:
    """A dataset's test (or validation) cases: labels, patients, shared bootstrap weights and the
    per-cell resampled metrics (the same weights for every cell: that is what makes differences paired)."""

    def __init__(self, dataset: str, arrays_of, load_all, n_resamples: int, seed: int = 0, split: str = "test"):
        self.dataset, self.arrays_of, self.load_all = dataset, arrays_of, load_all
        self.n_resamples, self.seed, self.split = n_resamples, seed, split
        self.labels: np.ndarray | None = None
        self.groups: np.ndarray | None = None
        self._weights: list[np.ndarray] | None = None
        self._cache: dict[tuple[str, str], np.ndarray] = {}

    def scores(self, cell) -> np.ndarray:
        return np.asarray(self.arrays_of(cell.id)[f"{self.split}_scores"], dtype=float)

    def reference(self, cell) -> str | None:
        """Fix the cases from the first cell; a problem text for a cell whose cases differ."""
        arrays = self.arrays_of(cell.id)
        name = SPLIT_NAMES[self.split]
        if f"{self.split}_scores" not in arrays or f"{self.split}_labels" not in arrays:
            return f"cell {cell.id} has no stored {name} scores"
        labels = np.asarray(arrays[f"{self.split}_labels"]).astype(int)
        if len(np.asarray(arrays[f"{self.split}_scores"])) != len(labels):
            return f"cell {cell.id}: {name} scores and labels differ in length"
        if self.labels is None:
            if labels.size == 0 or labels.min() == labels.max():
                return f"the {name} split of {self.dataset} has {'no' if labels.size == 0 else 'one class of'} cases"
            self.labels = labels
            groups = arrays.get(f"{self.split}_groups")
            self.groups = (np.asarray(groups).astype(str) if groups is not None and len(groups) == len(labels)
                           else np.arange(len(labels)).astype(str))
        elif not np.array_equal(labels, self.labels):
            return f"cell {cell.id} was scored on other {name} cases than the other cells of {self.dataset}"
        return None

    @property
    def clustered(self) -> bool:
        return len(np.unique(self.groups)) < len(self.groups)

    def units_per_class(self) -> tuple[int, int]:
        """(I10, I01): patients (cases) with an anomalous case, with a normal case."""
        y = self.labels.astype(bool)
        return len(np.unique(self.groups[y])), len(np.unique(self.groups[~y]))

    def weights(self) -> list[np.ndarray]:
        if self._weights is None:
            blocks, left, block = [], self.n_resamples, 0
            while left > 0:
                size = min(BLOCK, left)
                blocks.append(stats.group_bootstrap_weights(
                    self.groups, size, stats.stable_seed("claims", self.seed, self.dataset, self.split, block)))
                left -= size
                block += 1
            self._weights = blocks
        return self._weights

    def point(self, cell, metric: str) -> float:
        """The metric of a cell on this split: the record's value on test, recomputed on validation."""
        if self.split == "test":
            return float(cell.record["metrics"][metric])
        return float(np.atleast_1d(_image_metric(metric)(self.scores(cell), self.labels, None))[0])

    def _pixel_counts(self, cell_id: str) -> stats.PixelCounts:
        """The one place pixel counts of a cell come from: its compact summary, else its stored full maps."""
        return pixel_counts_of(self.load_all(cell_id), n_thresholds=PIXEL_THRESHOLDS)

    def samples(self, cell, metric: str) -> np.ndarray:
        """The metric of ``cell`` on every bootstrap resample ``[B]``."""
        key = (cell.id, metric)
        if key not in self._cache:
            from bench.metrics import get_metric

            if get_metric(metric).level == "image":
                fn = _image_metric(metric)
                self._cache[key] = np.concatenate([np.atleast_1d(fn(self.scores(cell), self.labels, w))
                                                   for w in self.weights()])
            else:
                counts = self._pixel_counts(cell.id)
                parts: dict[str, list] = defaultdict(list)
                for w in self.weights():
                    for name, values in stats.pixel_metric_samples(counts, w).items():
                        parts[name].append(values)
                for name, values in parts.items():
                    self._cache[(cell.id, name)] = np.concatenate(values)
                if key not in self._cache:
                    raise KeyError(f"{metric} cannot be resampled from the stored maps")
        return self._cache[key]


def _image_metric(metric: str):
    fn = stats.image_metrics_weighted().get(metric)
    if fn is None:
        raise KeyError(f"{metric} has no case-weighted version for the bootstrap")
    return fn


# ---------------------------------------------------------------------------------------------
# Variance components and the reference
# ---------------------------------------------------------------------------------------------
def contrast_weights(comp: Comparison) -> tuple[list, np.ndarray]:
    """Distinct cells of the pairs and the contrast ``mean over pairs (a - b)`` on them."""
    cells = list({c.id: c for a, b, _ in comp.pairs for c in (a, b)}.values())
    index = {c.id: i for i, c in enumerate(cells)}
    contrast = np.zeros(len(cells))
    for a, b, _ in comp.pairs:
        contrast[index[a.id]] += 1.0 / len(comp.pairs)
        contrast[index[b.id]] -= 1.0 / len(comp.pairs)
    return cells, contrast


def test_variance(comp: Comparison, samples: SplitSamples) -> tuple[float, int]:
    """``V_test`` of the mean contrast (seeds fixed) and the number of bootstrap resamples used (0: DeLong)."""
    if comp.metric == "image_auroc":
        cells, contrast = contrast_weights(comp)
        _, cov = stats.delong(np.vstack([samples.scores(c) for c in cells]), samples.labels,
                              samples.groups if samples.clustered else None)
        return max(float(contrast @ cov @ contrast), 0.0), 0
    diffs = np.stack([samples.samples(a, comp.metric) - samples.samples(b, comp.metric)
                      for a, b, _ in comp.pairs], axis=1)                       # [B, P]
    effects = diffs.mean(axis=1)
    effects = effects[np.isfinite(effects)]
    if effects.size < 2:
        raise KeyError("no resample has both normal and anomalous cases")
    # the bootstrap's plug-in variance divides by I units where the unbiased one divides by I - 1 (the same
    # small-sample factor as Obuchowski's); it matters with a dozen patients (calibration: c12-det-s1)
    units = len(np.unique(samples.groups))
    return float(np.var(effects, ddof=1)) * units / (units - 1), int(effects.size)


def seed_effects(comp: Comparison, samples: SplitSamples) -> tuple[float, list[float]]:
    """The effect (mean over pairs) and the per-seed effects."""
    per_seed: dict = defaultdict(list)
    diffs = []
    for a, b, s in comp.pairs:
        d = samples.point(a, comp.metric) - samples.point(b, comp.metric)
        per_seed[s].append(d)
        diffs.append(d)
    return float(np.mean(diffs)), [float(np.mean(v)) for v in per_seed.values()]


def satterthwaite(v_test: float, df_test: float, v_seed: float, n_seeds: int) -> float:
    """Welch-Satterthwaite degrees of freedom of ``V_test + V_seed``."""
    if v_seed <= 0 or n_seeds < 2:
        return float(df_test)
    if v_test <= 0:
        return float(n_seeds - 1)
    return float((v_test + v_seed) ** 2 / (v_test ** 2 / df_test + v_seed ** 2 / (n_seeds - 1)))


def t_test(effect: float, variance: float, df: float, level: float = 0.95) -> tuple[float, float, float]:
    """Two-sided p and the interval ``effect ± t(df) sqrt(V)`` it inverts."""
    se = math.sqrt(variance)
    half = float(sps.t.ppf(0.5 + level / 2, df)) * se
    p = float(2 * sps.t.sf(abs(effect) / se, df)) if se > 0 else (1.0 if effect == 0 else 0.0)
    return p, effect - half, effect + half


# ---------------------------------------------------------------------------------------------
# The permutation test for few cases or no variance
# ---------------------------------------------------------------------------------------------
def swap_patterns(n_units: int, seed: int) -> tuple[np.ndarray, bool]:
    """Swap patterns ``[P, U]`` (all ``2**U`` when few enough, else random) and whether they are exact."""
    if n_units <= EXACT_UNITS:
        return np.array(list(itertools.product((False, True), repeat=n_units)), dtype=bool), True
    rng = np.random.default_rng(seed)
    return rng.random((PERMUTATIONS, n_units)) < 0.5, False


def _auroc_rows(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """AUROC of every row of ``scores [P, N]`` (Mann-Whitney with midranks)."""
    y = labels.astype(bool)
    m, n = int(y.sum()), int((~y).sum())
    ranks = sps.rankdata(scores, axis=1)
    return (ranks[:, y].sum(axis=1) - m * (m + 1) / 2) / (m * n)


def _metric_rows(metric: str, scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """A rank-invariant image metric on every row of ``scores [P, N]``."""
    if metric == "image_auroc":
        return _auroc_rows(scores, labels)
    fn = _image_metric(metric)
    return np.array([float(np.atleast_1d(fn(row, labels, None))[0]) for row in scores])


def permutation_p(comp: Comparison, samples: SplitSamples) -> tuple[float, str]:
    """Two-sided p of "A and B are exchangeable within each patient (case)", and a description."""
    _, inverse = np.unique(samples.groups, return_inverse=True)
    patterns, exact = swap_patterns(int(inverse.max()) + 1,
                                    stats.stable_seed("perm", comp.claim.id, comp.dataset, comp.metric, comp.split))
    patterns = np.vstack([np.zeros((1, patterns.shape[1]), bool), patterns])  # row 0: the data as observed
    per_case = patterns[:, inverse]                                           # [1 + P, N]
    total = np.zeros(len(patterns))
    for a, b, _ in comp.pairs:
        ra, rb = sps.rankdata(samples.scores(a)), sps.rankdata(samples.scores(b))
        total += (_metric_rows(comp.metric, np.where(per_case, rb, ra), samples.labels)
                  - _metric_rows(comp.metric, np.where(per_case, ra, rb), samples.labels))
    total /= len(comp.pairs)
    observed, null = abs(total[0]), np.abs(total[1:])
    extreme = int(np.sum(null >= observed - 1e-12))
    if exact:                                  # the identity is one of the patterns: p >= 1 / 2**U
        return extreme / len(null), f"exact permutation ({len(null)} swap patterns)"
    return (extreme + 1) / (len(null) + 1), f"permutation ({len(null)} random swap patterns)"


# ---------------------------------------------------------------------------------------------
# One comparison
# ---------------------------------------------------------------------------------------------
def test_comparison(comp: Comparison, samples: SplitSamples, reference: str = "auto") -> None:
    """Effect, variance components, df, the interval and the two-sided p of ``comp``; a comparison that
    cannot be tested gets its reason, one that cannot be decided from one seed its ``undecided`` text."""
    comp.data_split = samples.split
    for a, b, _ in comp.pairs:
        for cell in (a, b):
            problem = samples.reference(cell)
            if problem:
                comp.reason = problem
                return
            if comp.metric.startswith("pixel"):
                if samples.split != "test":
                    comp.reason = f"{comp.metric}: no {SPLIT_NAMES[samples.split]} maps are stored"
                    return
                stored = set(samples.arrays_of(cell.id).get("available", []))
                if not has_pixel_data(stored):
                    comp.reason = (f"neither a per-case pixel summary nor per-case maps were stored with {cell.id} (a "
                                   "record written before summaries existed, with maps over the store's pixel limit), "
                                   "so the pixel metric cannot be resampled; re-run the cell")
                    return
    try:
        comp.effect, per_seed = seed_effects(comp, samples)
    except KeyError as exc:
        comp.reason = str(exc.args[0])
        return
    comp.undecided = one_seed_problem(comp)
    if comp.undecided:
        comp.test = "none: " + ONE_SEED
        return
    try:
        comp.v_test, comp.n_resamples = test_variance(comp, samples)
    except (KeyError, ValueError) as exc:       # a foreground metric without foreground, one class in a resample
        comp.reason = str(exc.args[0])
        return
    n_seeds = len(per_seed)
    comp.v_seed = float(np.var(per_seed, ddof=1)) / n_seeds if n_seeds > 1 else 0.0
    i10, i01 = samples.units_per_class()
    df_test = max(min(i10, i01) - 1, 1)
    variance = comp.v_test + comp.v_seed
    stochastic = not all(deterministic(c) for a, b, _ in comp.pairs for c in (a, b))
    if reference not in REFERENCES:
        raise ValueError(f"reference must be one of {REFERENCES}, got {reference!r}")
    hsu = reference == "hsu" or (reference == "auto" and n_seeds < SATTERTHWAITE_MIN_SEEDS)
    if stochastic and 1 < n_seeds and hsu:
        comp.df = float(min(df_test, n_seeds - 1))           # Hsu's conservative df: the smaller component's
    else:
        comp.df = satterthwaite(comp.v_test, df_test, comp.v_seed, n_seeds)
    tiny = variance <= TINY_VARIANCE * (comp.effect ** 2 + 1e-6)
    base = "DeLong" + (" (clustered, Obuchowski)" if samples.clustered else "") if comp.metric == "image_auroc" \
        else f"bootstrap variance ({comp.n_resamples} resamples)"
    if not tiny:
        comp.se = math.sqrt(variance)
        comp.p, comp.ci_low, comp.ci_high = t_test(comp.effect, variance, comp.df)
        comp.test = f"{base} + seed variance, t(df = {comp.df:.1f})"
    if tiny or min(i10, i01) < MIN_PER_CLASS:
        from bench.metrics import get_metric

        if get_metric(comp.metric).level != "image":
            if tiny:
                comp.reason = "zero variance and no permutation test for pixel metrics"
            return
        p_perm, how = permutation_p(comp, samples)
        why = "zero variance" if tiny else f"{min(i10, i01)} {'patients' if samples.clustered else 'cases'} in a class"
        comp.p = max(p_perm, comp.p) if not tiny else p_perm
        comp.test = f"{how} ({why})" + ("" if tiny else f"; t(df = {comp.df:.1f}) p also taken, the larger decides")


# ---------------------------------------------------------------------------------------------
# One Holm over the run
# ---------------------------------------------------------------------------------------------
def decide(comparisons: Sequence[Comparison], alpha: float) -> None:
    """Holm over every comparison with a p-value, then the verdicts (see the module docstring)."""
    live = [c for c in comparisons if c.in_family]
    if live:
        for c, ph in zip(live, stats.holm_adjust([c.p for c in live]), strict=True):
            c.p_holm = float(ph)
            c.verdict = ("supported" if c.sign_effect > 0 else "contradicted") if ph < alpha else "inconclusive"
    for c in comparisons:
        if c.in_family:
            continue
        if c.testable and c.undecided:
            c.verdict = "inconclusive"
        else:
            c.verdict = "not testable"
            c.reason = c.reason or "no usable pairs"


def bounded_holm_open(comparisons: Sequence[Comparison], family_size: int, alpha: float) -> set[int]:
    """Indices of ``comparisons`` that are supported under Holm in a family of ``family_size`` whatever
    the other p-values are (they are taken as 1): what opens a sanity gate before the claims are tested."""
    live = [i for i, c in enumerate(comparisons) if c.in_family]
    if not live:
        return set()
    p = [comparisons[i].p for i in live] + [1.0] * max(family_size - len(live), 0)
    adjusted = stats.holm_adjust(p)
    return {i for i, ph in zip(live, adjusted, strict=False) if ph < alpha and comparisons[i].sign_effect > 0}
