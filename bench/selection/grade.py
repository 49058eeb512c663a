"""Grading label-free criteria with the labels the suite has: tau, regret, top 3, and two baselines.

A *configuration* is a cell label (what differs only in the seed is one row). Per dataset and target
(detection: image AUROC; localization: pixel AP) a criterion selects the configuration with the
highest mean criterion value over seeds; it is graded by

* Kendall's tau-b between its values and the configurations' mean true test metric;
* regret = best true metric (mean over seeds) - the selected configuration's;
* whether the selected configuration is among the true top 3, and by how much: its margin over the
  configuration ranked third among the others (positive: in the top 3);
* its gain over each baseline (selected - a uniform pick's expected metric; selected - the prior's pick),
  a criterion is worth using where that gain's interval excludes zero.

Each grade has a 95 % interval over test cases (by group) and seeds from the verdicts' inference
(:mod:`bench.selection.intervals`).

Baselines: ``random`` (uniform pick; expectations computed exactly: regret = mean over configurations of
best - theirs, tau = 0, top 3 = share of configurations in the top 3) and ``prior`` (the configuration
with the best mean rank of the true metric over the run's *other* datasets, leave-one-dataset-out).
Test labels and test scores are read only here, to grade; never by a criterion (:mod:`.criteria`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps
from sklearn.metrics import roc_auc_score

from bench.report.frames import method_label
from bench.selection.criteria import cell_measures, criterion_values
from bench.selection.intervals import paired_interval, tau_interval, truth_resamples

#: What each selection target is graded by.
TARGETS = {"detection": "image_auroc", "localization": "pixel_ap"}
SCORED = ("ok", "degenerate")
BASELINES = ("random", "prior")
COLUMNS = ["dataset", "target", "metric", "criterion", "selected", "value", "selected_metric", "best", "best_metric",
           "tau", "tau_low", "tau_high", "regret", "regret_low", "regret_high", "top3", "top3_margin",
           "top3_margin_low", "top3_margin_high", "vs_random", "vs_random_low", "vs_random_high",
           "vs_prior", "vs_prior_low", "vs_prior_high", "n_configs", "n_seeds", "note"]


def true_metric(record: Mapping, arrays: Mapping, metric: str) -> float:
    """The graded metric of one cell: image AUROC from its stored test scores and labels (so grades
    follow the arrays the intervals resample), other metrics from the record."""
    if metric == "image_auroc" and "test_scores" in arrays and "test_labels" in arrays:
        labels = np.asarray(arrays["test_labels"]).astype(int)
        scores = np.asarray(arrays["test_scores"], dtype=np.float64)
        if len(np.unique(labels)) == 2 and np.isfinite(scores).all():
            return float(roc_auc_score(labels, scores))
        return float("nan")
    value = (record.get("metrics") or {}).get(metric)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else float("nan")


def cell_table(records: Sequence[Mapping], arrays_of: Callable[[str], Mapping]) -> pd.DataFrame:
    """One row per scored cell: dataset, label, seed, the graded metrics and every label-free measure."""
    rows = []
    for rec in records:
        if rec.get("status") not in SCORED or not rec.get("cell_id"):
            continue
        arrays = arrays_of(rec["cell_id"])
        row = {"cell_id": rec["cell_id"], "dataset": rec.get("dataset"), "label": method_label(dict(rec)),
               "seed": rec.get("seed"), "has_synth": "synth_scores" in arrays,
               "selection_error": (rec.get("selection") or {}).get("error")}
        for metric in TARGETS.values():
            row[metric] = true_metric(rec, arrays, metric)
        row.update(cell_measures(rec, arrays))
        rows.append(row)
    return pd.DataFrame(rows)


def config_means(cells: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """Mean over seeds per configuration (index: label) of the metrics and measures of ``dataset``."""
    part = cells[cells["dataset"] == dataset]
    numeric = part.drop(columns=["cell_id", "dataset", "seed", "has_synth", "selection_error"]).set_index("label")
    return numeric.apply(pd.to_numeric, errors="coerce").groupby(level=0, sort=True).mean()


def kendall_tau(values: pd.Series, truth: pd.Series) -> float:
    both = pd.concat([values, truth], axis=1).dropna()
    if len(both) < 2 or both.iloc[:, 0].nunique() < 2 or both.iloc[:, 1].nunique() < 2:
        return float("nan")
    return float(sps.kendalltau(both.iloc[:, 0], both.iloc[:, 1]).statistic)


def top3(truth: pd.Series) -> set:
    """The configurations ranked 1-3 by the true metric (ties share the better rank)."""
    ranks = truth.dropna().rank(ascending=False, method="min")
    return set(ranks[ranks <= 3].index)


def pick(values: pd.Series) -> str | None:
    """The configuration with the highest value (ties: the first label in sorted order)."""
    values = values.dropna()
    if values.empty:
        return None
    best = values.max()
    return sorted(values[values == best].index)[0]


def random_expectation(truth: pd.Series) -> dict:
    """Exact expectations of a uniform random pick among the configurations with a true metric."""
    truth = truth.dropna()
    return {"regret": float((truth.max() - truth).mean()), "tau": 0.0,
            "top3": len(top3(truth)) / len(truth) if len(truth) else float("nan")}


def prior_values(means: Mapping[str, pd.DataFrame], dataset: str, metric: str) -> pd.Series:
    """Leave-one-dataset-out prior: minus the mean rank (1 = best) of each configuration of ``dataset``
    by ``metric`` over the *other* datasets where it was run."""
    ranks = [frame[metric].dropna().rank(ascending=False, method="average")
             for name, frame in means.items() if name != dataset and metric in frame]
    if not ranks or dataset not in means:
        return pd.Series(dtype=float)
    mean_rank = pd.concat(ranks, axis=1).mean(axis=1)
    return -mean_rank.reindex(means[dataset].index)


# ---------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------
def _pairs(cells: pd.DataFrame, records: Mapping[str, Mapping], dataset: str, best: str, chosen: Sequence[str]):
    part = cells[cells["dataset"] == dataset]
    by = {(r.label, r.seed): r.cell_id for r in part.itertuples()}
    out = []
    for label in chosen:
        for s in sorted({r.seed for r in part.itertuples() if r.label == label}, key=str):
            if (best, s) in by and (label, s) in by:
                out.append((records[by[(best, s)]], records[by[(label, s)]], s))
    return out


def top3_cutoff(truth: pd.Series, chosen: str) -> str | None:
    """The configuration ranked third among the others (ties: label order): ``chosen`` is in the top 3
    exactly when its metric is at least that one's; None with fewer than 3 others (always in the top 3)."""
    others = truth.drop(chosen).dropna()
    if len(others) < 3:
        return None
    order = sorted(others.index, key=lambda label: (-others[label], str(label)))
    return order[2]


def leave_one_seed_out(cells: pd.DataFrame, datasets: Sequence[str]) -> dict:
    """``{seed: the configuration means of every dataset without that seed}`` (the jackknife)."""
    seeds = sorted(cells["seed"].dropna().unique(), key=str)
    if len(seeds) < 2:
        return {}
    return {s: {d: config_means(cells[cells["seed"] != s], d) for d in datasets} for s in seeds}


def _candidates(means: Mapping[str, pd.DataFrame], dataset: str, metric: str) -> dict[str, pd.Series]:
    """Every criterion's values on ``dataset``, and the prior's."""
    frame = means[dataset]
    values = dict(criterion_values(frame.drop(columns=[m for m in TARGETS.values() if m in frame])))
    values["prior"] = prior_values(means, dataset, metric)
    return values


def selection_table(records: Sequence[Mapping], arrays_of, *, n_resamples: int = 1000, seed: int = 0,
                    intervals: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(grades, cells): one row per dataset x target x criterion (baselines included) and the cell table."""
    cells = cell_table(records, arrays_of)
    if cells.empty:
        return pd.DataFrame(columns=COLUMNS), cells
    by_id = {r["cell_id"]: r for r in records if r.get("cell_id")}
    datasets = sorted(cells["dataset"].dropna().unique(), key=str)
    means = {d: config_means(cells, d) for d in datasets}
    jackknife = leave_one_seed_out(cells, datasets) if intervals else {}
    cache: dict = {}
    rows = []
    for dataset in datasets:
        part = cells[cells["dataset"] == dataset]
        n_seeds = int(part["seed"].nunique())
        stochastic = not all(by_id[c].get("deterministic_fit") is True for c in part["cell_id"])
        for target, metric in TARGETS.items():
            truth = means[dataset][metric].dropna()
            if len(truth) < 2:
                continue
            best = pick(truth)
            tops = top3(truth)
            candidates = _candidates(means, dataset, metric)
            prior_pick = pick(candidates["prior"].reindex(truth.index))

            def graded(rec: Mapping, metric: str = metric) -> float:
                return true_metric(rec, arrays_of(rec["cell_id"]), metric)

            def interval(a: str, b: Sequence[str]) -> tuple[float, float, str]:
                """The interval of the paired difference a - b (b: one configuration, or all of them); criteria
                that select the same configuration share it."""
                key = ("interval", dataset, metric, a, tuple(b))
                if key not in cache:
                    _, low, high, why = paired_interval(dataset, metric, _pairs(cells, by_id, dataset, a, b), arrays_of,
                                                        graded, n_resamples=n_resamples, seed=seed, cache=cache)
                    cache[key] = (low, high, why)
                return cache[key]

            resampled, samples, tau_problem = None, None, ""
            if intervals:
                members = {label: [by_id[c] for c in part.loc[part["label"] == label, "cell_id"]]
                           for label in truth.index}
                resampled, samples, tau_problem = truth_resamples(dataset, metric, members, arrays_of, graded,
                                                                  n_resamples=n_resamples, seed=seed, cache=cache)
                # the jackknife over this dataset's own seeds (a seed it lacks would change nothing)
                dataset_seeds = set(part["seed"])
                left_out = [_candidates(m, dataset, metric) for s, m in jackknife.items() if s in dataset_seeds]
                left_out_truth = [m[dataset][metric] for s, m in jackknife.items() if s in dataset_seeds]

            for name, vals in candidates.items():
                vals = vals.reindex(truth.index)
                row = {"dataset": dataset, "target": target, "metric": metric, "criterion": name, "best": best,
                       "best_metric": float(truth[best]), "n_configs": int(len(truth)), "n_seeds": n_seeds,
                       "note": ""}
                chosen = pick(vals)
                if chosen is None:
                    row["note"] = ("one dataset in this run: no other dataset to learn a prior from"
                                   if name == "prior" else "no configuration has this criterion")
                    rows.append(row)
                    continue
                cutoff = top3_cutoff(truth, chosen)
                row.update(selected=chosen, value=float(vals[chosen]), selected_metric=float(truth[chosen]),
                           tau=kendall_tau(vals, truth), regret=float(truth[best] - truth[chosen]),
                           top3=chosen in tops,
                           top3_margin=float(truth[chosen] - truth[cutoff]) if cutoff is not None else float("nan"))
                if vals.notna().sum() < len(truth):
                    row["note"] = f"{int(vals.notna().sum())} of {len(truth)} configurations have this criterion"
                row["vs_random"] = float(truth[chosen] - truth.mean())
                if prior_pick is not None:
                    row["vs_prior"] = float(truth[chosen] - truth[prior_pick])
                if intervals:
                    low, high, why = interval(best, [chosen])
                    row.update(regret_low=low, regret_high=high)
                    row["vs_random_low"], row["vs_random_high"], _ = interval(chosen, list(truth.index))
                    if prior_pick is not None:
                        row["vs_prior_low"], row["vs_prior_high"], _ = interval(chosen, [prior_pick])
                    if cutoff is not None:
                        row["top3_margin_low"], row["top3_margin_high"], _ = interval(chosen, [cutoff])
                    why_tau = tau_problem
                    if resampled is not None:
                        jack = [kendall_tau(v.get(name, pd.Series(dtype=float)).reindex(truth.index), t)
                                for v, t in zip(left_out, left_out_truth, strict=True)]
                        row["tau_low"], row["tau_high"], why_tau = tau_interval(row["tau"], vals, resampled, samples,
                                                                                jack, stochastic)
                    why = why or why_tau
                    if why:
                        row["note"] = "; ".join(x for x in (row["note"], f"no interval: {why}") if x)
                rows.append(row)
            expected = random_expectation(truth)
            row = {"dataset": dataset, "target": target, "metric": metric, "criterion": "random",
                   "selected": "(uniform over configurations)", "best": best, "best_metric": float(truth[best]),
                   "selected_metric": float(truth.mean()), "tau": expected["tau"], "regret": expected["regret"],
                   "top3": expected["top3"], "n_configs": int(len(truth)), "n_seeds": n_seeds,
                   "note": "exact expectation of a uniform pick"}
            if intervals:
                low, high, why = interval(best, list(truth.index))
                row.update(regret_low=low, regret_high=high)
                if why:
                    row["note"] += f"; no interval: {why}"
            rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS), cells


def select_run(run_dir, *, n_resamples: int = 1000, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`selection_table` on a run directory's records."""
    from bench.run.store import ResultStore

    store = ResultStore(run_dir)
    return selection_table(store.records(skip_bad=True), store.arrays, n_resamples=n_resamples, seed=seed)
