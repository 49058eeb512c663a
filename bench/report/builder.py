"""The report builder: reads a run directory, owns the shared state, builds Part A (tables and
heatmaps) and calls the Part B mixins (:mod:`.comparisons`, :mod:`.views`) and the index (:mod:`.index`)."""

from __future__ import annotations

import json
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bench.metrics import get_metric, lower_is_better, metric_label, metric_names
from bench.report.frames import (
    LATENT,
    SCORED,
    _finite,
    _natural,
    _slug,
    cell_frame,
    entry_frame,
    seed_aggregate,
)
from bench.report.adequacy import AdequacyParts
from bench.report.answer import answer_text
from bench.report.index import IndexParts
from bench.report.comparisons import ComparisonParts
from bench.report.tables import Table, _cells_frame, aggregate_cell, write_table
from bench.report.selection import SelectionParts
from bench.report.sensitivity import SensitivityParts
from bench.report.verdicts import ClaimParts
from bench.report.views import ViewParts
from bench.report.runs import CombinedStore
from bench.run.store import ResultStore, atomic_write_text

#: How many methods the curve, histogram and qualitative figures show per dataset.
TOP_K = 4
MAX_PANEL_CASES = 8
MANIFEST = ".manifest.json"
ANSWER = "answer.txt"   # the terminal summary (bench.report.answer), printed by `bench run` and `bench report`


@dataclass
class IndexEntry:
    section: str
    title: str
    paths: list[Path]
    figure: bool = False
    headline: bool = False  # figures shown inline in the README, not only linked


class ReportBuilder(ComparisonParts, ViewParts, IndexParts, ClaimParts, SelectionParts, SensitivityParts,
                    AdequacyParts):
    """Builds the report of one run directory; :func:`bench.report.build_report` is the entry point.

    ``strict=True`` re-raises the first error of any report part instead of listing it in the
    README; ``skip_bad=True`` reports without unreadable records and lists them.
    """

    TOP_K, MAX_PANEL_CASES, MANIFEST = TOP_K, MAX_PANEL_CASES, MANIFEST

    def __init__(self, run_dir: str | Path, out_dir: str | Path | None = None, *, full: bool = True,
                 n_resamples: int = 1000, seed: int = 0, tsne_points: int = 500, strict: bool = False,
                 skip_bad: bool = False, claim_files: tuple = (), alpha: float = 0.05, builtin_claims: bool = True,
                 figure_workers: int | None = None):
        run_dirs = [Path(d).resolve() for d in ([run_dir] if isinstance(run_dir, (str, Path)) else run_dir)]
        for folder in run_dirs:
            if not (folder / "records").is_dir():
                raise FileNotFoundError(f"{folder}: not a run directory (expected records/<cell_id>.json)")
        self.run_dir = run_dirs[0]
        self.run_name = " + ".join(d.name for d in run_dirs)
        self.out_dir = Path(out_dir) if out_dir is not None else Path("reports") / self.run_name
        self.full, self.n_resamples, self.seed, self.tsne_points = full, n_resamples, seed, tsne_points
        self.strict = strict
        self.figure_workers = figure_workers   # processes drawing figures (None: one per core; 0: inline)
        self.claim_files, self.alpha = tuple(claim_files), alpha     # claims (bench.report.verdicts)
        self.builtin_claims = builtin_claims
        # several runs: one store over all of them, cells matched by configuration (bench.report.runs)
        self.store = ResultStore(self.run_dir) if len(run_dirs) == 1 else CombinedStore(run_dirs)
        self.records = self.store.records(skip_bad=skip_bad)
        self.sources = list(getattr(self.store, "notes", []))
        self.skipped = list(self.store.skipped)
        if not self.records:
            raise ValueError(f"{self.run_dir / 'records'}: no records to report on")
        from bench.analysis.rows import mixed_rows
        from bench.report.sensitivity import registered_default

        self.set_aside = self.store.set_aside_counts()      # records kept aside, not reported
        self.mixed_rows = mixed_rows(self.records, registered_default)
        self.cells = cell_frame(self.records, registered_default)
        self.entries = entry_frame(self.cells)
        self.ok = self.entries[self.entries["status"].isin(SCORED)]
        self.agg = seed_aggregate(self.entries)
        self.datasets = sorted(self.cells["dataset"].astype(str).unique())
        self.index: list[IndexEntry] = []
        self.problems: list[str] = []
        self.remarks: list[str] = []
        self.boot: dict[str, dict] = {}
        self._arrays: dict[str, dict] = {}

    # -- helpers ------------------------------------------------------------------------------
    def arrays(self, cell_id: str) -> dict[str, np.ndarray]:
        if cell_id not in self._arrays:
            try:
                self._arrays[cell_id] = self.store.arrays(cell_id, lazy=True)   # maps read only if used
            except (OSError, ValueError) as exc:
                if self.strict:
                    raise
                self.problems.append(f"arrays of cell `{cell_id}` unreadable: {exc}")
                self._arrays[cell_id] = {}
        return self._arrays[cell_id]

    def attempt(self, what: str, fn: Callable, *args, **kwargs):
        """Run one report part; a failure is listed in the README (re-raised with ``strict``)."""
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - one broken figure must not hide the rest
            if self.strict:
                raise
            last = traceback.extract_tb(exc.__traceback__)[-1]
            self.problems.append(f"could not build {what}: {type(exc).__name__}: {exc} "
                                 f"({Path(last.filename).name}:{last.lineno})")
            return None

    def figures_failed(self, failures) -> None:
        """Figures a worker could not draw: listed in the README like any failed part, and left out
        of the index (re-raised with ``strict``)."""
        for failure in failures:
            if self.strict:
                raise failure.error
            self.problems.append(f"could not draw {failure.paths[0].stem} ({failure.name}): "
                                 f"{type(failure.error).__name__}: {failure.error}")
        lost = {p for failure in failures for p in failure.paths}
        for entry in self.index:
            entry.paths = [p for p in entry.paths if Path(p) not in lost]
        self.index = [e for e in self.index if e.paths]

    def add(self, section: str, title: str, paths, figure: bool = False, headline: bool = False) -> None:
        if paths:
            self.index.append(IndexEntry(section, title, list(paths), figure, headline))

    def table(self, section: str, table: Table) -> None:
        self.add(section, table.title, write_table(table, self.out_dir))

    def labels(self, dataset: str, kind: str | None = None, level: str | None = None) -> list[str]:
        """Table rows of a dataset, latent cells first (by encoder, head), then detectors; ``level``
        ("image" or "pixel") keeps the rows holding metrics of that level."""
        sub = self.agg.loc[dataset] if dataset in self.agg.index.get_level_values(0) else self.agg.iloc[:0]
        if kind:
            sub = sub[sub["kind"] == kind]
        if level:
            sub = sub[sub["levels"].str.split(",").apply(lambda levels: level in levels)]
        order = sub.assign(_k=(sub["kind"] != LATENT).astype(int), _e=sub["matrix_row"].astype(str),
                           _h=sub["head"].astype(str))
        return list(order.sort_values(["_k", "_e", "_h"], kind="mergesort").index)

    def metrics_of(self, dataset: str) -> list[str]:
        """Metrics with a value in this dataset, or that its records say are unavailable (and why)."""
        sub = self.ok[self.ok["dataset"] == dataset]
        agg = self.agg.loc[dataset] if dataset in self.agg.index.get_level_values(0) else self.agg.iloc[:0]
        return [m for m in metric_names() if sub[m].notna().any() or agg[f"{m}.unavailable"].notna().any()]

    def ranked_labels(self, dataset: str, metric: str, labels: Iterable[str] | None = None) -> list[str]:
        """Labels ordered best first by the seed-mean of ``metric`` (ties by label)."""
        labels = list(labels) if labels is not None else self.labels(dataset)
        values = [(self.agg.loc[(dataset, lab), f"{metric}.mean"], lab) for lab in labels]
        values = [(v, lab) for v, lab in values if _finite(v)]
        sign = 1 if lower_is_better(metric) else -1
        return [lab for v, lab in sorted(values, key=lambda t: (sign * t[0], t[1]))]

    def first_ok_cell(self, dataset: str, label: str, need: Iterable[str] = ()) -> pd.Series | None:
        """Lowest-seed scored cell of a table row whose arrays hold ``need``."""
        sub = self.ok[(self.ok["dataset"] == dataset) & (self.ok["label"] == label)]
        for _, row in sub.sort_values(["seed", "cell_id"], kind="mergesort",
                                      key=_natural).iterrows():
            arrays = self.arrays(row["cell_id"])
            if all(k in arrays for k in need):
                return row
        return None

    # -- Part A -------------------------------------------------------------------------------
    def write_summary(self) -> None:
        path = self.out_dir / "summary.csv"
        atomic_write_text(path, self.cells.to_csv(index=False), sync=False)
        self.add("Run", "All cells (one row per cell: flattened config, metrics, timings, status)", [path])

    def all_methods_table(self, dataset: str) -> None:
        metrics = self.metrics_of(dataset) or metric_names("image")
        labels = self.labels(dataset)
        cells = _cells_frame(labels, [metric_label(m) for m in metrics])
        for lab in labels:
            for m in metrics:
                cells.at[lab, metric_label(m)] = aggregate_cell(self.agg, dataset, lab, m)
        notes = []
        if any(self.agg.loc[(dataset, lab), "levels"] == "pixel" for lab in labels):
            notes.append("Rows named \"encoder [map]\" are maps that do not depend on the head: one row for every "
                         "head's cells; their image metrics are in the encoder × head rows.")
        self.table(dataset, Table(f"tables/{_slug(dataset)}/all_methods", f"{dataset}: all methods "
                                  "(mean ± std over seeds)", cells,
                                  {metric_label(m): lower_is_better(m) for m in metrics}, notes=notes))

    def matrix(self, dataset: str, metric: str) -> tuple[pd.DataFrame, pd.DataFrame] | None:
        """Encoder x head matrix of Cells and of 'has a failed seed' flags for latent rows of the
        metric's level (pixel rows are named by their map kind; head-independent maps have none)."""
        latent = self.labels(dataset, LATENT, get_metric(metric).level)
        rows = self.agg.loc[[(dataset, lab) for lab in latent]]
        rows = rows[rows["matrix_row"].notna() & rows["head"].notna()]
        if rows.empty:
            return None
        encoders = list(dict.fromkeys(rows["matrix_row"].astype(str)))
        heads = list(dict.fromkeys(sorted(rows["head"].astype(str))))
        cells = _cells_frame(encoders, heads)
        failed = pd.DataFrame(False, index=encoders, columns=heads)
        for (_, lab), row in rows.iterrows():
            enc, head = str(row["matrix_row"]), str(row["head"])
            cells.at[enc, head] = aggregate_cell(self.agg, dataset, lab, metric)
            failed.at[enc, head] = bool(row["n_failed"])
        return cells, failed

    def matrix_outputs(self, dataset: str, metric: str) -> None:
        built = self.matrix(dataset, metric)
        if built is None:
            return
        cells, failed = built
        if not any(_finite(c.value) for c in cells.to_numpy().ravel()):
            return
        lower = lower_is_better(metric)
        table = Table(f"tables/{_slug(dataset)}/matrix_{metric}",
                      f"{dataset}: encoder × head — {metric_label(metric)} (mean ± std over seeds)", cells,
                      {c: lower for c in cells.columns}, emphasis="table", index_name="encoder \\ head")
        self.table(dataset, table)
        if min(cells.shape) < 2:
            # one encoder or one head: the heatmap would repeat the table's row, and drawing it is
            # most of a small report's time (issue 24 item 10)
            return
        from bench.analysis import figures

        means = cells.map(lambda c: c.value).astype(float)
        annot = cells.map(lambda c: f"{c.value:.3f}{'§' if c.n_inadequate else ''}" if _finite(c.value) else "")
        self.add(dataset, f"{dataset}: encoder × head heatmap — {metric_label(metric)}",
                 figures.heatmap(means, annot, f"{dataset} — {metric_label(metric)}",
                                 self.out_dir / f"figures/{_slug(dataset)}/heatmap_{metric}", lower, failed),
                 figure=True, headline=metric == "image_auroc")

    def part_a(self) -> None:
        self.write_summary()
        for dataset in self.datasets:
            self.attempt(f"all-methods table for {dataset}", self.all_methods_table, dataset)
            for metric in self.metrics_of(dataset):
                self.attempt(f"encoder × head outputs for {dataset}/{metric}", self.matrix_outputs, dataset, metric)

    def build(self) -> Path:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.clean_previous()
        from bench.analysis.figure_cache import figure_cache
        from bench.analysis.figure_pool import figure_pool

        # unchanged figures are copied, not redrawn; the others are drawn by worker processes while
        # the tables are computed
        with figure_cache(self.out_dir / ".cache" / "figures"), figure_pool(self.figure_workers) as pool:
            self.part_a()
            if self.full:
                self.part_b()
                self.attempt("claims and verdicts", self.claims_part)
                self.attempt("training adequacy", self.adequacy_part)
                self.attempt("label-free selection", self.selection_part)
            if pool is not None:
                self.figures_failed(pool.finish())
        readme = self.write_readme()
        answer = self.out_dir / ANSWER
        atomic_write_text(answer, self.attempt("the answer on screen", answer_text, self) or "", sync=False)
        written = sorted({self._link(p) for e in self.index for p in e.paths} | {self._link(readme),
                                                                                self._link(answer)})
        atomic_write_text(self.out_dir / MANIFEST, json.dumps(written, indent=0), sync=False)
        return self.out_dir
