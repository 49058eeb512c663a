"""The answer on screen: the few lines a run ends with, before the report path (issue 24 item 3).

Why: the numbers a user ran the grid for were two links away from the terminal. Per dataset: the
top cells by image AUROC and by pixel AP (where maps were scored), each with its mean over seeds
and a 95 % t-interval over seeds (or "1 seed"); the claims' verdicts that could be tested, one
line each; cells that failed the label-free adequacy guard (§) or were degenerate. The same text
is written to ``answer.txt`` in the report, so ``bench report`` prints it too.
"""

from __future__ import annotations

import math

import pandas as pd

from bench.metrics import metric_label
from bench.report.frames import _finite

#: Rows shown per ranking.
TOP = 5
RANKINGS = ("image_auroc", "pixel_ap")


def seed_interval(mean: float, std: float, n: int) -> str:
    """``mean ± half-width`` of the 95 % t-interval of a mean over ``n`` seeds, or ``mean (1 seed)``."""
    if not _finite(mean):
        return "–"
    if n < 2 or not _finite(std):
        return f"{mean:.3f} (1 seed)"
    from scipy.stats import t

    half = float(t.ppf(0.975, n - 1)) * std / math.sqrt(n)
    return f"{mean:.3f} ± {half:.3f} ({n} seeds)"


def ranking_lines(agg: pd.DataFrame, dataset: str, labels: list[str], metric: str) -> list[str]:
    rows = []
    for label in labels[:TOP]:
        row = agg.loc[(dataset, label)]
        marks = ("§" if row["n_inadequate"] else "") + (" degenerate" if row["n_degenerate"] else "")
        rows.append((label + (f" {marks.strip()}" if marks else ""),
                     seed_interval(row[f"{metric}.mean"], row[f"{metric}.std"], int(row[f"{metric}.n"]))))
    if not rows:
        return []
    width = max(len(name) for name, _ in rows)
    more = f" (top {TOP} of {len(labels)})" if len(labels) > TOP else ""
    return [f"  {metric_label(metric)}{more}:"] + [f"    {i}. {name.ljust(width)}  {value}"
                                                   for i, (name, value) in enumerate(rows, 1)]


def verdict_lines(table: pd.DataFrame | None) -> list[str]:
    """One line per testable comparison; untestable ones are counted, not listed."""
    if table is None or table.empty:
        return []
    from bench.report.verdicts import MARK, _name, effect_text

    testable = table[table["verdict"] != "not testable"]
    if testable.empty:
        return [f"verdicts: none of the {len(table)} claim comparisons is testable on this run (claims.md says why)"]
    lines = [f"verdicts ({len(testable)} testable of {len(table)} comparisons):"]
    for _, row in testable.iterrows():
        lines.append(f"  {MARK[row['verdict']]}: {_name(row)} · {row['dataset']} · {row['metric']} "
                     f"effect {effect_text(row)}")
    return lines


def answer_text(builder) -> str:
    """The terminal summary of a built report (:class:`bench.report.builder.ReportBuilder`)."""
    lines = []
    for dataset in builder.datasets:
        blocks = []
        for metric in RANKINGS:
            if metric in builder.metrics_of(dataset):
                blocks += ranking_lines(builder.agg, dataset, builder.ranked_labels(dataset, metric), metric)
        if blocks:
            lines += [f"{dataset}:"] + blocks
    lines += verdict_lines(getattr(builder, "claims_table", None))
    cells = builder.cells
    flagged = []
    inadequate = cells[cells.get("inadequate", pd.Series(False, index=cells.index)).fillna(False).astype(bool)]
    for _, row in inadequate.iterrows():
        flagged.append(f"  § {row['cell_id']}: {row.get('inadequate_reason') or 'adequacy guard failed'}")
    for _, row in cells[cells["status"] == "degenerate"].iterrows():
        flagged.append(f"  degenerate {row['cell_id']}: {row.get('error') or ''}")
    if flagged:
        lines += ["flagged cells (§ = encoder failed the label-free adequacy guard):"] + flagged
    return "\n".join(lines)
