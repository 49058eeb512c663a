"""Are the claims' verdicts calibrated? Simulated runs pushed through the same ``evaluate_claims``.

``python -m bench.tools.calibration [--replicates R] [--designs u200-s2,c12-s3] [--seed 0] [--quick]``

Each replicate is one run: 4 datasets, methods A and B scored on the same test cases, S seeds each.
Scores are binormal (normals N(0, 1), anomalies N(mu, 1) in within-class SD units); A and B share
half of each case's noise (correlation 0.5) and, on clustered test sets, a patient effect (a quarter
of the variance: slices of a patient are alike); training noise is a per-seed shift of a method's
anomalous mean, drawn per dataset, method and seed, giving a between-seed SD of 0.05 AUROC. Test
sets: ``u200`` 200 unclustered cases (100 + 100); ``c12``, ``c50`` 12 or 50 patients of 4-16
slices, each slice anomalous with a per-patient probability in [0.2, 0.8]. ``det`` designs have no
training noise and records that declare ``deterministic_fit`` (frozen features, closed-form head).
The claim "A beats B" is tested on image AUROC (DeLong) and image AP (case bootstrap), so a run's
Holm family has 8 comparisons.

Printed per design and metric: under a true difference of 0 the per-comparison rate of a verdict
(supported or contradicted), the family-wise rate of any verdict in a run (both metrics, all
datasets), the coverage of the shown 95 % interval; under a true difference (A's anomalous mean
+0.4 SD: about +0.08 AUROC) the coverage and the power (supported). Monte-Carlo SEs in brackets;
``check`` says whether the targets hold: family-wise <= 5 % + 2 SE, coverage >= 93 % (both settings;
designs where every comparison is undecided by the one-seed rule have no interval to cover).

The tool calls only ``evaluate_claims(records, claims, arrays_of, alpha=, n_resamples=, seed=)`` and
reads ``verdict``, ``ci_low``, ``ci_high`` of its table, so it also runs against older versions of
``bench.analysis.claims`` (put this file into an old checkout and run it there).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

DATASETS = 4
RHO = 0.5                   # share of a case's noise common to A and B
PATIENT_SHARE = 0.25        # share of the within-class variance common to a patient's slices
MU_B, DELTA = 1.0, 0.4      # B's anomalous mean; A's is MU_B (null) or MU_B + DELTA (non-null)
SEED_SD_AUROC = 0.05
METRICS = ("image_auroc", "image_ap")
TESTSETS = {"u200": None, "c12": 12, "c50": 50}


@dataclass(frozen=True)
class Design:
    testset: str
    seeds: int
    deterministic: bool = False

    @property
    def name(self) -> str:
        return f"{self.testset}-{'det-' if self.deterministic else ''}s{self.seeds}"


def all_designs() -> list[Design]:
    return ([Design(t, s) for t in TESTSETS for s in (1, 2, 3, 5)]
            + [Design("u200", 1, deterministic=True), Design("c12", 1, deterministic=True)])


def seed_shift_sd() -> float:
    """SD of the per-seed shift of the anomalous mean that moves AUROC by ``SEED_SD_AUROC`` (delta method)."""
    return SEED_SD_AUROC / (sps.norm.pdf(MU_B / math.sqrt(2)) / math.sqrt(2))


def test_set(design: Design, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Labels and patient ids of one test set."""
    patients = TESTSETS[design.testset]
    if patients is None:
        return np.r_[np.zeros(100, int), np.ones(100, int)], np.arange(200)
    while True:
        sizes = rng.integers(4, 17, size=patients)
        groups = np.repeat(np.arange(patients), sizes)
        rate = rng.uniform(0.2, 0.8, size=patients)[groups]
        labels = (rng.random(groups.size) < rate).astype(int)
        if len(np.unique(groups[labels == 1])) >= 2 and len(np.unique(groups[labels == 0])) >= 2:
            return labels, groups


def simulate_run(design: Design, null: bool, rng: np.random.Generator) -> tuple[list, dict]:
    """Records and arrays of one simulated run (4 datasets x 2 methods x S seeds)."""
    from bench.analysis import stats

    shift_sd = 0.0 if design.deterministic else seed_shift_sd()
    clustered = TESTSETS[design.testset] is not None
    records, arrays = [], {}
    for d in range(DATASETS):
        labels, groups = test_set(design, rng)
        n = labels.size
        patient = rng.normal(size=groups.max() + 1)[groups] if clustered else np.zeros(n)
        common = rng.normal(size=n)
        share = PATIENT_SHARE if clustered else 0.0
        for method, mu in (("A", MU_B if null else MU_B + DELTA), ("B", MU_B)):
            first = rng.normal(size=n)
            for seed in range(design.seeds):
                own = first if design.deterministic or seed == 0 else rng.normal(size=n)  # deterministic: same fit
                shift = rng.normal(scale=shift_sd)
                scores = (labels * (mu + shift) + math.sqrt(share) * patient
                          + math.sqrt((1 - share) * RHO) * common + math.sqrt((1 - share) * (1 - RHO)) * own)
                cell = f"d{d}__{method}__s{seed}"
                arrays[cell] = {"test_scores": scores, "test_labels": labels, "test_groups": groups.astype(str)}
                records.append({"cell_id": cell, "status": "ok", "dataset": f"d{d}", "kind": "latent",
                                "encoder": method, "head": "h", "detector": None, "localization": None,
                                "setting": "uad", "seed": seed, "config": {"encoder.name": method, "head.name": "h"},
                                "metrics": {"image_auroc": stats.weighted_auroc(scores, labels),
                                            "image_ap": stats.weighted_average_precision(scores, labels)},
                                "adequacy": {"passed": True}, "deterministic_fit": design.deterministic})
    return records, arrays


def true_effects(design: Design, null: bool) -> dict[str, float]:
    """Population A - B of each metric, averaged over the training noise (0 under the null)."""
    if null:
        return dict.fromkeys(METRICS, 0.0)
    s = 0.0 if design.deterministic else seed_shift_sd()
    nodes, weights = np.polynomial.hermite_e.hermegauss(40)
    weights = weights / weights.sum()
    t = np.linspace(-8, 12, 20001)
    prevalence = 0.5                       # unclustered: 100 + 100; clustered: E[rate] = 0.5

    def auroc(mu):
        return sps.norm.cdf(mu / math.sqrt(2 + s ** 2))

    def ap(mu):
        out = 0.0
        for x, w in zip(nodes, weights, strict=True):
            tpr, fpr = sps.norm.sf(t - (mu + s * x)), sps.norm.sf(t)
            precision = prevalence * tpr / np.maximum(prevalence * tpr + (1 - prevalence) * fpr, 1e-300)
            out += w * float(np.sum(-np.diff(tpr) * (precision[1:] + precision[:-1]) / 2))
        return out

    return {"image_auroc": auroc(MU_B + DELTA) - auroc(MU_B), "image_ap": ap(MU_B + DELTA) - ap(MU_B)}


def run_design(design: Design, replicates: int, seed: int, resamples: int, reference: str | None,
               settings: tuple[bool, ...] = (True, False)) -> dict:
    """``{null: (rows per metric [(verdict, covered)], any verdict per run, true effects)}`` for each setting."""
    from bench.analysis.claims import evaluate_claims, parse_claim

    claim = parse_claim({"id": "a-beats-b", "statement": "A beats B", "metrics": list(METRICS),
                         "a": {"encoder": "A"}, "b": {"encoder": "B"}, "match": ["seed", "head"]}, "calibration")
    kwargs = {"reference": reference} if reference else {}
    out = {}
    for null in settings:
        truth = true_effects(design, null)
        rows = {m: [] for m in METRICS}
        any_verdict = []
        for r in range(replicates):
            rng = np.random.default_rng([seed, r, int(null), design.seeds, len(design.testset),
                                         int(design.deterministic), TESTSETS[design.testset] or 0])
            records, arrays = simulate_run(design, null, rng)
            table = evaluate_claims(records, [claim], arrays.__getitem__, n_resamples=resamples, seed=r, **kwargs).table
            decided = table["verdict"].isin(["supported", "contradicted"])
            any_verdict.append(bool(decided.any()))
            for _, row in table.iterrows():
                lo, hi = float(row["ci_low"]), float(row["ci_high"])
                covered = (lo <= truth[row["metric"]] <= hi) if math.isfinite(lo) and math.isfinite(hi) else None
                rows[row["metric"]].append((row["verdict"], covered))
        out[null] = (rows, any_verdict, truth)
    return out


def _rate(flags) -> tuple[float, float, int]:
    flags = np.asarray([f for f in flags if f is not None], dtype=float)
    if flags.size == 0:
        return float("nan"), float("nan"), 0
    p = float(flags.mean())
    return p, math.sqrt(max(p * (1 - p), 1e-12) / flags.size), int(flags.size)


def _pct(rate: tuple[float, float, int]) -> str:
    p, se, n = rate
    return "n/a" if n == 0 else f"{100 * p:5.1f} ({100 * se:.1f})"


def summarise(design: Design, result: dict) -> list[list[str]]:
    null_rows, null_any, _ = result[True]
    alt_rows, _, truth = result[False]
    fwer = _rate(null_any)
    lines = []
    for metric in METRICS:
        false = _rate([v in ("supported", "contradicted") for v, _ in null_rows[metric]])
        cov0 = _rate([c for _, c in null_rows[metric]])
        cov1 = _rate([c for _, c in alt_rows[metric]])
        power = _rate([v == "supported" for v, _ in alt_rows[metric]])
        wrong = _rate([v == "contradicted" for v, _ in alt_rows[metric]])
        ok = (fwer[0] <= 0.05 + 2 * fwer[1]
              and all(c[2] == 0 or c[0] >= 0.93 for c in (cov0, cov1)))
        lines.append([design.name, metric, _pct(false), _pct(fwer), _pct(cov0), _pct(cov1),
                      f"{truth[metric]:+.3f}", _pct(power), _pct(wrong), "ok" if ok else "MISS"])
    return lines


HEADER = ["design", "metric", "null: verdict %", "null: family-wise %", "null: coverage %", "alt: coverage %",
          "alt: true effect", "alt: power %", "alt: contradicted %", "check"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tools.calibration", description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicates", type=int, default=400, help="simulated runs per design and setting")
    parser.add_argument("--designs", default=None, help="comma-separated design names (default: all), e.g. u200-s2")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resamples", type=int, default=200, help="case-bootstrap resamples per comparison")
    parser.add_argument("--reference", default=None,
                        help="evaluate_claims' reference: auto (default), satterthwaite, hsu")
    parser.add_argument("--quick", action="store_true", help="100 replicates of u200-s2, c12-s3 and u200-det-s1")
    args = parser.parse_args(argv)
    designs = {d.name: d for d in all_designs()}
    names = args.designs.split(",") if args.designs else list(designs)
    replicates = args.replicates
    if args.quick:
        names, replicates = (args.designs.split(",") if args.designs else ["u200-s2", "c12-s3", "u200-det-s1"]), 100
    unknown = [n for n in names if n not in designs]
    if unknown:
        print(f"unknown design(s) {unknown}; known: {', '.join(designs)}", file=sys.stderr)
        return 2
    print(f"{replicates} replicates per design and setting; alpha 0.05; {DATASETS} datasets x {len(METRICS)} metrics "
          f"per run; seed shift SD {seed_shift_sd():.3f} (between-seed SD {SEED_SD_AUROC} AUROC); bootstrap "
          f"{args.resamples} resamples. Rates in % (Monte-Carlo SE).")
    table = [HEADER]
    t0 = time.perf_counter()
    widths = [22, 12, 14, 19, 16, 15, 16, 13, 19, 5]
    print("  ".join(c.ljust(w) for c, w in zip(HEADER, widths, strict=True)))
    for name in names:
        lines = summarise(designs[name], run_design(designs[name], replicates, args.seed, args.resamples,
                                                    args.reference))
        for r in lines:
            print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)), flush=True)
        table += lines
    print("\n| " + " | ".join(HEADER) + " |\n|" + "---|" * len(HEADER))
    for r in table[1:]:
        print("| " + " | ".join(r) + " |")
    print(f"\n{time.perf_counter() - t0:.0f} s")
    return 0 if all(r[-1] == "ok" for r in table[1:]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
