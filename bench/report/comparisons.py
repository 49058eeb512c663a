"""Part B statistics: bootstrap CIs over test cases, paired comparisons, detection vs localization,
ranks across datasets and Wilcoxon tests (numbers from :mod:`bench.analysis.stats`)."""

from __future__ import annotations

import io
import math
import zipfile

import numpy as np
import pandas as pd

from bench.analysis import pixsum, stats
from bench.metrics import image as metrics_image
from bench.metrics import weighted as metrics_weighted
from bench.analysis.pixsum import pixel_counts_of
from bench.metrics import lower_is_better, metric_label, metric_names
from bench.report.frames import _finite, _slug
from bench.report.tables import Cell, Table, _cells_frame, aggregate_cell
from bench.run.store import atomic_write_bytes, atomic_write_text


class ComparisonParts:
    """Statistics methods of :class:`bench.report.builder.ReportBuilder`."""

    # -- Part B: bootstrap --------------------------------------------------------------------
    def bootstrap_dataset(self, dataset: str) -> None:
        """Seed-mean metric on shared group-bootstrap resamples, per method: ``{label: {metric: [B]}}``.

        A (method, metric) whose stored value this implementation cannot reproduce from the stored
        arrays gets no CI (and a remark) rather than an interval around another number.
        """
        sub = self.ok[self.ok["dataset"] == dataset]
        reference = next((self.arrays(cid) for cid in sub["cell_id"]
                          if {"test_scores", "test_labels"} <= set(self.arrays(cid))), None)
        if reference is None:
            return
        labels = np.asarray(reference["test_labels"]).astype(int)
        groups = np.asarray(reference["test_groups"]) if "test_groups" in reference else np.arange(len(labels))
        weights = stats.group_bootstrap_weights(groups, self.n_resamples, stats.stable_seed(self.seed, dataset))
        per_label: dict[str, dict[str, list[np.ndarray]]] = {}
        unreproduced: set[tuple[str, str]] = set()
        for _, row in sub.iterrows():
            arrays = self.arrays(row["cell_id"])
            if "test_scores" not in arrays or "test_labels" not in arrays:
                continue
            if not np.array_equal(np.asarray(arrays["test_labels"]).astype(int), labels):
                self.remarks.append(f"{dataset}: cell `{row['cell_id']}` has a different test set than the "
                                    "other cells; it is left out of the bootstrap.")
                continue
            samples, full = self.cached_cell_samples(row, arrays, labels, weights)
            if row.get("level") == "pixel":
                for key in [k for k in arrays if k in ("test_maps", "test_masks") or k.startswith("test_pixsum_")]:
                    del arrays[key]        # the largest arrays; nothing later needs them (del: not read to drop)
            unreproduced |= {(row["label"], m) for m in self.check_consistency(dataset, row, full)}
            bucket = per_label.setdefault(row["label"], {})
            for m, s in samples.items():
                bucket.setdefault(m, []).append(s)
        with np.errstate(invalid="ignore"):
            seed_means = {lab: {m: np.nanmean(np.vstack(v), axis=0) for m, v in ms.items()
                                if (lab, m) not in unreproduced}
                          for lab, ms in per_label.items()}
        self.boot[dataset] = {"samples": seed_means, "groups": len(np.unique(groups)), "cases": len(labels),
                              "grouped": "test_groups" in reference}

    def cached_cell_samples(self, row: pd.Series, arrays: dict, labels: np.ndarray,
                            weights: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """:meth:`cell_samples`, stored under ``<report>/.cache/bootstrap`` by the content of its inputs
        (the cell's arrays, the resample weights, the threshold, the code that computes them), so a
        rebuild recomputes only the cells whose results changed (issue 27 item 4)."""
        from bench.analysis.figure_cache import content_key

        key = content_key([m.__file__ for m in (stats, pixsum, metrics_weighted, metrics_image)],
                          [row.get("level", "image"), row.get("pixel_threshold"), row.get("image_threshold"),
                           metric_names(), weights, labels, self.sample_inputs(row, arrays)])
        path = self.out_dir / ".cache" / "bootstrap" / f"{key}.npz"
        if path.is_file():
            try:
                with np.load(path, allow_pickle=False) as data:
                    return ({k[2:]: data[k] for k in data.files if k.startswith("s:")},
                            {k[2:]: float(data[k]) for k in data.files if k.startswith("f:")})
            except (OSError, ValueError, EOFError, zipfile.BadZipFile):
                pass                                  # a damaged entry is recomputed and replaced
        samples, full = self.cell_samples(row, arrays, labels, weights)
        buf = io.BytesIO()
        np.savez(buf, **{f"s:{k}": v for k, v in samples.items()}, **{f"f:{k}": v for k, v in full.items()})
        atomic_write_bytes(path, buf.getvalue(), sync=False)
        return samples, full

    @staticmethod
    def sample_inputs(row: pd.Series, arrays) -> dict[str, np.ndarray]:
        """The arrays :meth:`cell_samples` reads: the scores, or the pixel summary (the full maps only for
        records without one). Why not always the maps: reading them decompressed megabytes per cell."""
        if row.get("level", "image") == "image":
            names = ["test_scores"]
        elif pixsum.has_summary(arrays):
            names = [pixsum.PREFIX + k for k in pixsum.KEYS]
        else:
            names = list(pixsum.MAP_KEYS)
        return {k: arrays[k] for k in names if k in arrays}

    @staticmethod
    def cell_samples(row: pd.Series, arrays: dict, labels: np.ndarray,
                     weights: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """The metrics of one table entry (its level's) on every resample, and on the full test set
        (for the consistency check)."""
        if row.get("level", "image") == "image":
            threshold = row.get("image_threshold")
            threshold = threshold if _finite(threshold) else None
            samples = stats.image_metric_samples(arrays["test_scores"], labels, weights, threshold)
            full = {m: float(fn(arrays["test_scores"], labels))
                    for m, fn in stats.image_metrics_weighted(threshold).items()}
            return samples, full
        samples, full = {}, {}
        threshold = row.get("pixel_threshold")
        counts = pixel_counts_of(arrays, dice_threshold=threshold if _finite(threshold) else None)  # summary or maps
        if counts is not None and np.any(counts.pos_total):
            samples = stats.pixel_metric_samples(counts, weights)
            full = {m: float(v[0]) for m, v in stats.pixel_metric_samples(counts).items()}
        return samples, full

    def check_consistency(self, dataset: str, row: pd.Series, recomputed: dict[str, float],
                          tolerance: float = 0.02) -> list[str]:
        """Metrics whose value recomputed from the stored arrays differs from the stored one."""
        bad = []
        for m, value in recomputed.items():
            stored = row.get(m)
            if _finite(stored) and math.isfinite(value) and abs(stored - value) > tolerance:
                bad.append(m)
                self.remarks.append(f"{dataset}/{row['label']} seed {row['seed']}: {m} is {stored:.4f} in the "
                                    f"record but {value:.4f} from the stored arrays; its CI is left out.")
        return bad

    def ci_table_and_plots(self, dataset: str) -> None:
        boot = self.boot.get(dataset)
        if not boot:
            return
        metrics = [m for m in self.metrics_of(dataset) if any(m in s for s in boot["samples"].values())]
        labels = self.labels(dataset)
        cells = _cells_frame(labels, [metric_label(m) for m in metrics])
        plots: dict[str, list[dict]] = {m: [] for m in metrics}
        for lab in labels:
            kind = self.agg.loc[(dataset, lab), "kind"]
            for m in metrics:
                cell = aggregate_cell(self.agg, dataset, lab, m)
                cell.std = None
                samples = boot["samples"].get(lab, {}).get(m)
                if samples is not None and _finite(cell.value):
                    cell.low, cell.high = stats.percentile_interval(samples)
                    plots[m].append({"label": lab, "estimate": cell.value, "low": cell.low, "high": cell.high,
                                     "kind": kind})
                cells.at[lab, metric_label(m)] = cell
        grouping = (f"{boot['groups']} patients/groups resampled" if boot["grouped"]
                    else f"{boot['cases']} cases resampled")
        note = (f"95% percentile bootstrap CI over test cases ({self.n_resamples} resamples, {grouping}); "
                "each resample scores every method and seed, the CI is of the seed mean.")
        self.table(dataset, Table(f"tables/{_slug(dataset)}/ci", f"{dataset}: mean over seeds [95% CI]", cells,
                                  {metric_label(m): lower_is_better(m) for m in metrics}, notes=[note]))
        from bench.analysis import figures

        localization = next((m for m in ("pixel_aupro", "pixel_auroc") if m in metrics), None)
        for m in [m for m in ("image_auroc", "image_ap", localization) if m in metrics]:
            if plots[m]:
                self.add(dataset, f"{dataset}: {metric_label(m)} with 95% CI",
                         figures.interval_plot(pd.DataFrame(plots[m]), f"{dataset}", f"{metric_label(m)} (95% CI)",
                                               self.out_dir / f"figures/{_slug(dataset)}/ci_{m}",
                                               lower_is_better(m)), figure=True)

    def paired_tables(self, dataset: str) -> None:
        boot = self.boot.get(dataset)
        if not boot:
            return
        all_rows = []
        samples = boot["samples"]
        for m in self.metrics_of(dataset):
            labels = [lab for lab in self.ranked_labels(dataset, m) if m in samples.get(lab, {})]
            if len(labels) < 2:
                continue
            means = np.array([self.agg.loc[(dataset, lab), f"{m}.mean"] for lab in labels], dtype=float)
            stacked = np.vstack([np.asarray(samples[lab][m], dtype=float) for lab in labels])   # [L, B]
            first, second = np.triu_indices(len(labels), k=1)
            pairs = stats.paired_bootstrap_rows(stacked[first], stacked[second], means[first] - means[second])
            for i, j, res in zip(first, second, pairs, strict=True):
                all_rows.append({"dataset": dataset, "metric": m, "a": labels[i], "b": labels[j],
                                 "difference": res.difference, "ci_low": res.low, "ci_high": res.high,
                                 "p_value": res.p_value, "n_resamples": res.n_resamples})
            best, others = labels[0], labels[1:]
            results = pairs[:len(others)]            # the pairs (best, other) come first, in the same order
            holm = stats.holm_adjust([r.p_value for r in results])
            cells = _cells_frame(others, ["Δ (best − method) [95% CI]", "p", "p (Holm)"])
            for o, r, ph in zip(others, results, holm, strict=True):
                cells.at[o, "Δ (best − method) [95% CI]"] = Cell(
                    value=r.difference, text=f"{r.difference:+.3f} [{r.low:+.3f}, {r.high:+.3f}]")
                cells.at[o, "p"] = Cell(value=r.p_value, text=f"{r.p_value:.3g}")
                cells.at[o, "p (Holm)"] = Cell(value=ph, text=f"{ph:.3g}")
            self.table(dataset, Table(
                f"tables/{_slug(dataset)}/paired_{m}", f"{dataset}: paired bootstrap, best ({best}) vs each method — "
                f"{metric_label(m)}", cells, {}, emphasis=None, show_n=False,
                notes=["Both methods are scored on the same resamples of test cases; p is two-sided; "
                       "Holm's correction over the methods of this table."]))
        if all_rows:
            path = self.out_dir / f"tables/{_slug(dataset)}/paired_all.csv"
            atomic_write_text(path, pd.DataFrame(all_rows).to_csv(index=False), sync=False)
            self.add(dataset, f"{dataset}: paired bootstrap, every pair of methods and metric (CSV)", [path])

    def detection_vs_localization(self, dataset: str) -> None:
        metrics = self.metrics_of(dataset)
        pixel = [m for m in metric_names("pixel") if m in metrics]
        image = [m for m in ("image_auroc", "image_ap") if m in metrics]
        if not pixel or not image:
            return
        loc_metric = "pixel_aupro" if "pixel_aupro" in pixel else pixel[0]
        labels = [lab for lab in self.labels(dataset) if _finite(self.agg.loc[(dataset, lab), f"{loc_metric}.mean"])]
        columns = [f"det: {metric_label(m)}" for m in image] + [f"loc: {metric_label(m)}" for m in pixel]
        columns += ["rank det.", "rank loc."]
        cells = _cells_frame(labels, columns)
        for lab in labels:
            for m in image:
                cells.at[lab, f"det: {metric_label(m)}"] = aggregate_cell(self.agg, dataset, lab, m)
            for m in pixel:
                cells.at[lab, f"loc: {metric_label(m)}"] = aggregate_cell(self.agg, dataset, lab, m)
        for col, m in (("rank det.", "image_auroc"), ("rank loc.", loc_metric)):
            values = pd.Series({lab: self.agg.loc[(dataset, lab), f"{m}.mean"] for lab in labels}, dtype=float)
            ranks = values.rank(ascending=lower_is_better(m), method="min")
            for lab in labels:
                if _finite(ranks[lab]):
                    cells.at[lab, col] = Cell(value=float(ranks[lab]), text=f"{int(ranks[lab])}")
        lower = {c: c.startswith("rank") for c in columns}
        lower.update({f"det: {metric_label(m)}": lower_is_better(m) for m in image})
        self.table(dataset, Table(f"tables/{_slug(dataset)}/detection_vs_localization",
                                  f"{dataset}: detection vs localization (mean ± std over seeds)", cells, lower,
                                  notes=[f"rank det. by {metric_label('image_auroc')}, rank loc. by "
                                         f"{metric_label(loc_metric)} (1 = best)."]))

    # -- Part B: across datasets --------------------------------------------------------------
    def rank_outputs(self, metric: str) -> None:
        datasets = [d for d in self.datasets if metric in self.metrics_of(d)]
        if len(datasets) < 2:
            return
        values = pd.DataFrame({d: {lab: self.agg.loc[(d, lab), f"{metric}.mean"] for lab in self.labels(d)}
                               for d in datasets}).T.astype(float)
        present = values.columns[values.notna().all(axis=0)]
        dropped = sorted(set(values.columns) - set(present))
        values = values[present]
        if values.shape[1] < 2:
            return
        summary = stats.rank_summary(values, lower_is_better(metric))
        order = list(summary.mean_ranks.index)
        cells = _cells_frame(order, list(summary.ranks.index) + ["mean rank"])
        for lab in order:
            for d in summary.ranks.index:
                r = summary.ranks.at[d, lab]
                cells.at[lab, d] = Cell(value=float(r), text=f"{r:g} ({values.at[d, lab]:.3f})")
            cells.at[lab, "mean rank"] = Cell(value=float(summary.mean_ranks[lab]),
                                              text=f"{summary.mean_ranks[lab]:.2f}")
        notes = [f"Rank of the seed-mean {metric_label(metric)} within each dataset (1 = best; value in "
                 "parentheses); methods missing on a dataset are left out."]
        if math.isfinite(summary.friedman_statistic):
            notes.append(f"Friedman χ² = {summary.friedman_statistic:.2f}, p = {summary.friedman_p:.3g} over "
                         f"{summary.n_datasets} datasets; Nemenyi CD (α = 0.05) = {summary.critical_difference:.2f}.")
        else:
            notes.append(f"Friedman test needs ≥ 3 methods and ≥ 2 datasets (here {values.shape[1]} methods, "
                         f"{summary.n_datasets} datasets).")
        if dropped:
            notes.append("Left out (not finished on every dataset): " + ", ".join(dropped) + ".")
        self.table("Across datasets", Table(f"tables/ranks_{metric}", f"Ranks across datasets — {metric_label(metric)}",
                                            cells, {c: True for c in cells.columns}, notes=notes, show_n=False))
        if summary.n_datasets >= 2:
            from bench.analysis import figures

            self.add("Across datasets", f"Critical-difference diagram — {metric_label(metric)}",
                     figures.critical_difference_diagram(
                         summary.mean_ranks, summary.critical_difference,
                         f"{metric_label(metric)}: mean rank over {summary.n_datasets} datasets",
                         self.out_dir / f"figures/cd_{metric}"), figure=True, headline=metric == "image_auroc")

    def cached_wilcoxon(self, pivot: pd.DataFrame, best: str, others: list[str]) -> list[tuple[float, float, int]]:
        """``wilcoxon_signed_rank(best, other)`` for each of ``others``, stored under
        ``<report>/.cache/wilcoxon`` by the content of the pairs (and the code that tests them). Why:
        with zero differences scipy's exact test enumerates sign flips, 0.2-0.7 s per method, which was
        most of a 1000-record report's rebuild (issue 27 item 4); the flips are now one array operation
        (``stats._signed_rank_sign_flips``), and a rebuild still reads the answers instead."""
        import json

        from bench.analysis.figure_cache import content_key

        key = content_key([stats.__file__],
                          [best, list(map(str, others)), pivot[[best, *others]].to_numpy(dtype=float)])
        path = self.out_dir / ".cache" / "wilcoxon" / f"{key}.json"
        if path.is_file():
            try:
                return [(float(a), float(b), int(n)) for a, b, n in json.loads(path.read_text())]
            except (OSError, ValueError, TypeError):
                pass                                  # a damaged entry is recomputed and replaced
        results = [stats.wilcoxon_signed_rank(pivot[best].to_numpy(), pivot[o].to_numpy()) for o in others]
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(results), sync=False)
        return results

    def wilcoxon_table(self, metric: str) -> None:
        ok = self.ok[self.ok[metric].notna()]
        if ok["dataset"].nunique() < 2:
            return
        pivot = ok.pivot_table(index=["dataset", "seed"], columns="label", values=metric, aggfunc="mean")
        if pivot.shape[1] < 2:
            return
        mean_of_means = ok.groupby(["dataset", "label"])[metric].mean().groupby("label").mean()
        best = mean_of_means.sort_values(ascending=lower_is_better(metric), kind="mergesort").index[0]
        others = [lab for lab in pivot.columns if lab != best]
        results = self.cached_wilcoxon(pivot, best, others)
        holm = stats.holm_adjust([r[1] for r in results])
        cells = _cells_frame(others, ["pairs", "median Δ (best − method)", "p", "p (Holm)"])
        for o, (_, p, n), ph in zip(others, results, holm, strict=True):
            diff = (pivot[best] - pivot[o]).dropna()
            cells.at[o, "pairs"] = Cell(value=n, text=str(n))
            cells.at[o, "median Δ (best − method)"] = Cell(value=float(diff.median()) if n else float("nan"),
                                                           text=f"{diff.median():+.3f}" if n else "–")
            cells.at[o, "p"] = Cell(value=p, text=f"{p:.3g}" if math.isfinite(p) else "n/a")
            cells.at[o, "p (Holm)"] = Cell(value=ph, text=f"{ph:.3g}" if math.isfinite(ph) else "n/a")
        self.table("Across datasets", Table(
            f"tables/wilcoxon_{metric}", f"Wilcoxon signed-rank across datasets × seeds: {best} vs each method — "
            f"{metric_label(metric)}", cells, {}, emphasis=None, show_n=False,
            notes=[f"{best} has the best mean {metric_label(metric)} over datasets. Pairs are cells of the same "
                   "dataset and seed; two-sided; Holm's correction over the methods of this table. "
                   "With few pairs the test cannot reach small p-values."]))
