"""Reports: every table, figure and statistic of a run, regenerated from its results store.

``build_report(run_dir)`` reads a run directory through :class:`bench.run.store.ResultStore` and
writes ``reports/<run name>/`` (or ``out_dir``) with a ``README.md`` index. Nothing in the
output is edited by hand: a rebuild first deletes what the previous build wrote (listed in
``.manifest.json``) and writes everything again, so tables never drift from the store.

Part A (``full=False``): per dataset, an "all methods" table (methods x metrics) and, for latent
cells, an encoder x head table and heatmap per metric; ``summary.csv`` with one row per cell.
Part B (``full=True``, the default) adds: bootstrap CIs over test cases (:mod:`bench.analysis.stats`),
paired comparisons, ranks across datasets with a critical-difference diagram, the detection vs
localization view, CI plots, ROC/PR curves, score histograms, qualitative panels, t-SNE views
per encoder, and representation diagnostics (:mod:`bench.analysis.diagnostics`) related to AUROC.

One job per module: :mod:`.frames` (records -> cells, table entries, seed aggregates),
:mod:`.tables` (entries, emphasis, Markdown/LaTeX/CSV), :mod:`.builder` (state and Part A),
:mod:`.comparisons` and :mod:`.views` (Part B), :mod:`.index` (README and manifest). Table
conventions are in :mod:`.tables`.
"""

from __future__ import annotations

from pathlib import Path

from bench.report.builder import ReportBuilder
from bench.report.frames import cell_frame, entry_frame, method_label, seed_aggregate
from bench.report.tables import (
    Cell,
    Table,
    emphasis_marks,
    format_cell,
    latex_escape,
    render_latex,
    render_markdown,
    tidy_table,
    write_table,
)

__all__ = [
    "Cell", "ReportBuilder", "Table", "build_report", "cell_frame", "emphasis_marks", "entry_frame",
    "format_cell", "latex_escape", "method_label", "render_latex", "render_markdown", "seed_aggregate",
    "tidy_table", "write_table",
]


def build_report(run_dir: str | Path, out_dir: str | Path | None = None, *, full: bool = True,
                 n_resamples: int = 1000, seed: int = 0, tsne_points: int = 500, strict: bool = False,
                 skip_bad: bool = False, claim_files: tuple = (), alpha: float = 0.05,
                 builtin_claims: bool = True, figure_workers: int | None = None) -> Path:
    """Write every table and figure of ``run_dir`` to ``out_dir`` (default ``reports/<run name>``).

    ``run_dir`` may be a list of run directories: one report over all of them (:mod:`bench.report.runs`).

    ``full=False`` builds Part A only (tables, heatmaps, summary.csv); the full build also evaluates the
    claims (built-in, the run's grid's ``[claims]``, ``claim_files``) and opens the index with their verdicts. ``strict=True`` re-raises
    the first error of any part instead of listing it under "Parts that could not be built".
    Figures are drawn by ``figure_workers`` processes (default: one per core; 0: in this process).
    An unreadable record raises :class:`bench.run.store.BadRecordError` naming it, unless
    ``skip_bad=True``, which reports without it and lists it in the README. Returns the report
    folder; its ``README.md`` indexes everything written.
    """
    return ReportBuilder(run_dir, out_dir, full=full, n_resamples=n_resamples, seed=seed,
                         tsne_points=tsne_points, strict=strict, skip_bad=skip_bad, claim_files=claim_files,
                         alpha=alpha, builtin_claims=builtin_claims,
                         figure_workers=figure_workers).build()
