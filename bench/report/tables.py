"""Tables: entries (:class:`Cell`), emphasis, and rendering to Markdown, LaTeX and CSV.

Conventions: mean ± std over seeds; **bold** = best, underlined = second (on the values as
displayed; lower-is-better metrics say so in the registry); "failed" = every seed of that cell
failed; "†" = some seeds failed and the value is over the rest; "‡" = some seeds were flagged
degenerate by the run (their metrics are included); "§" = the encoder/detector of some seeds failed
the label-free adequacy guard (``bench.analysis.adequacy``); "n/a (reason)" = the records say why the metric
does not exist (e.g. no validation split); "–" = not applicable; "(n=k)" marks a cell with a
different number of seeds than the table.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bench.report.frames import _finite
from bench.run.store import atomic_write_text


@dataclass
class Cell:
    """One table entry; formatting into Markdown/LaTeX happens at render time."""

    value: float = float("nan")
    std: float | None = None
    n: int = 0
    n_failed: int = 0
    low: float | None = None
    high: float | None = None
    text: str | None = None  # preformatted content (ranks, p-values)
    n_degenerate: int = 0  # seeds whose record status is "degenerate" (metrics present, marked ‡)
    unavailable: str | None = None  # why the metric does not exist (shown as "n/a (reason)")
    n_inadequate: int = 0  # seeds whose encoder/detector failed the adequacy guard (marked §)


@dataclass
class Table:
    """A table with its emphasis rule. ``emphasis``: "column" (best per column), "table" (best
    over all entries) or None; ``lower`` says, per column, whether lower values are better."""

    stem: str
    title: str
    cells: pd.DataFrame
    lower: dict
    emphasis: str | None = "column"
    notes: list[str] = field(default_factory=list)
    index_name: str = "method"
    decimals: int = 3
    show_n: bool = True


def aggregate_cell(agg: pd.DataFrame, dataset: str, label: str, metric: str) -> Cell:
    if (dataset, label) not in agg.index:
        return Cell()
    row = agg.loc[(dataset, label)]
    return Cell(value=row[f"{metric}.mean"], std=row[f"{metric}.std"], n=int(row[f"{metric}.n"]),
                n_failed=int(row["n_failed"]), n_degenerate=int(row.get("n_degenerate", 0) or 0),
                n_inadequate=int(row.get("n_inadequate", 0) or 0),
                unavailable=row.get(f"{metric}.unavailable") or None)


def emphasis_marks(table: Table) -> pd.DataFrame:
    """"best" / "second" / "" per entry, on values rounded as displayed; ties share a mark."""
    marks = pd.DataFrame("", index=table.cells.index, columns=table.cells.columns)
    if table.emphasis is None:
        return marks

    def rounded(cell: Cell) -> float:
        return round(float(cell.value), table.decimals) if _finite(cell.value) else float("nan")

    groups = ([[c] for c in table.cells.columns] if table.emphasis == "column" else [list(table.cells.columns)])
    for cols in groups:
        lower = bool(table.lower.get(cols[0], False))
        values = {(r, c): rounded(table.cells.at[r, c]) for r in table.cells.index for c in cols}
        distinct = sorted({v for v in values.values() if math.isfinite(v)}, reverse=not lower)
        if not distinct:
            continue
        for key, v in values.items():
            if v == distinct[0]:
                marks.at[key] = "best"
            elif len(distinct) > 1 and v == distinct[1]:
                marks.at[key] = "second"
    return marks


def _modal_n(table: Table) -> int | None:
    counts = Counter(c.n for c in table.cells.to_numpy().ravel() if isinstance(c, Cell) and c.n > 0
                     and _finite(c.value))
    return counts.most_common(1)[0][0] if counts else None


def format_cell(cell: Cell, style: str, decimals: int, mark: str = "", modal_n: int | None = None,
                show_n: bool = True) -> str:
    """Render one entry in ``style`` "md" or "tex" (see the module docstring for the markers)."""
    tex = style == "tex"
    if cell.text is not None:
        core = latex_escape(cell.text) if tex else cell.text
    elif not _finite(cell.value):
        if cell.n_failed and cell.n == 0:
            return r"\textit{failed}" if tex else "failed"
        if cell.unavailable:
            return latex_escape(f"n/a ({cell.unavailable})") if tex else f"n/a ({cell.unavailable})"
        return "--" if tex else "–"
    else:
        core = f"{cell.value:.{decimals}f}"
        if cell.std is not None and cell.n > 1 and _finite(cell.std):
            core += (r" $\pm$ " if tex else " ± ") + f"{cell.std:.{decimals}f}"
        if _finite(cell.low) and _finite(cell.high):
            core += f" [{cell.low:.{decimals}f}, {cell.high:.{decimals}f}]"
    if mark == "best":
        core = rf"\textbf{{{core}}}" if tex else f"**{core}**"
    elif mark == "second":
        core = rf"\underline{{{core}}}" if tex else f"<u>{core}</u>"
    if show_n and modal_n and cell.n and cell.n != modal_n and cell.text is None:
        core += f" (n={cell.n})"
    if cell.n_failed and _finite(cell.value) and cell.text is None:
        core += r"$^\dagger$" if tex else "†"
    if cell.n_degenerate and _finite(cell.value) and cell.text is None:
        core += r"$^\ddagger$" if tex else "‡"
    if cell.n_inadequate and _finite(cell.value) and cell.text is None:
        core += r"$^\S$" if tex else "§"
    return core


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}",
                  "×": r"$\times$", "±": r"$\pm$", "†": r"$^\dagger$", "ρ": r"$\rho$", "Δ": r"$\Delta$",
                  "–": "--", "‡": r"$^\ddagger$", "§": r"\S{}", "·": r"$\cdot$", "≤": r"$\leq$", "≥": r"$\geq$", "↓": r"$\downarrow$",
                  "χ": r"$\chi$", "²": r"$^2$", "α": r"$\alpha$", "‖": r"$\|$", "−": "-", "τ": r"$\tau$"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in str(text))


def _table_notes(table: Table, modal_n: int | None) -> list[str]:
    notes = list(table.notes)
    entries = [c for c in table.cells.to_numpy().ravel() if isinstance(c, Cell)]
    if any(c.n_failed and _finite(c.value) and c.text is None for c in entries):
        notes.append("† some seeds of this cell failed; the value is over the seeds that finished.")
    if any(c.n_failed and c.n == 0 and not _finite(c.value) for c in entries):
        notes.append("failed: every seed of this cell failed (see the failed cells in README.md).")
    if any(c.n_degenerate and _finite(c.value) and c.text is None for c in entries):
        notes.append("‡ degenerate: the run flagged some seeds of this cell as degenerate (reason in README.md); "
                     "their metrics are included.")
    if any(c.n_inadequate and _finite(c.value) and c.text is None for c in entries):
        notes.append("§ not adequately trained: the encoder or detector of some seeds failed the label-free adequacy "
                     "guard (loss still falling, barely below chance, collapsed, or no better than untrained on "
                     "validation normals; reasons in each record's `adequacy`); claims resting on them are not "
                     "testable at this scale.")
    if table.show_n and modal_n:
        notes.insert(0, f"n = {modal_n} seed(s) per entry unless marked (n=k).")
    return notes


def render_markdown(table: Table) -> str:
    marks, modal_n = emphasis_marks(table), _modal_n(table)
    header = [table.index_name] + [str(c) for c in table.cells.columns]
    lines = [f"#### {table.title}", "", "| " + " | ".join(h.replace("|", r"\|") for h in header) + " |",
             "|" + "|".join([":--"] + ["--:"] * len(table.cells.columns)) + "|"]
    for r in table.cells.index:
        entries = [format_cell(table.cells.at[r, c], "md", table.decimals, marks.at[r, c], modal_n,
                               table.show_n) for c in table.cells.columns]
        lines.append("| " + " | ".join([str(r).replace("|", r"\|")] + entries) + " |")
    notes = _table_notes(table, modal_n)
    if notes:
        lines += [""] + [f"{n}  " for n in notes]
    return "\n".join(lines) + "\n"


def render_latex(table: Table) -> str:
    """booktabs tabular; notes follow it as a footnote-size paragraph, which wraps at the text
    width (a spanning ``l`` row would not)."""
    marks, modal_n = emphasis_marks(table), _modal_n(table)
    lines = [f"% {latex_escape(table.title)}", "% generated by bench.report; do not edit",
             r"\begin{tabular}{l" + "c" * len(table.cells.columns) + "}", r"\toprule",
             " & ".join(latex_escape(h) for h in [table.index_name, *map(str, table.cells.columns)]) + r" \\",
             r"\midrule"]
    for r in table.cells.index:
        entries = [format_cell(table.cells.at[r, c], "tex", table.decimals, marks.at[r, c], modal_n,
                               table.show_n) for c in table.cells.columns]
        lines.append(" & ".join([latex_escape(str(r))] + entries) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    notes = _table_notes(table, modal_n)
    if notes:
        lines.append(r"\par\smallskip{\footnotesize " + r" \par ".join(latex_escape(n) for n in notes) + r"\par}")
    return "\n".join(lines) + "\n"


def tidy_table(table: Table) -> pd.DataFrame:
    """The data behind a table, one row per entry (what the CSV holds)."""
    marks, modal_n = emphasis_marks(table), _modal_n(table)
    rows = []
    for r in table.cells.index:
        for c in table.cells.columns:
            cell = table.cells.at[r, c]
            rows.append({table.index_name: r, "column": c, "value": cell.value, "std": cell.std, "n": cell.n,
                         "n_failed": cell.n_failed, "ci_low": cell.low, "ci_high": cell.high,
                         "emphasis": marks.at[r, c],
                         "display": format_cell(cell, "md", table.decimals, "", modal_n, table.show_n)})
    return pd.DataFrame(rows)


def write_table(table: Table, out_dir: Path) -> list[Path]:
    stem = out_dir / table.stem
    stem.parent.mkdir(parents=True, exist_ok=True)
    md, tex, csv = stem.with_suffix(".md"), stem.with_suffix(".tex"), stem.with_suffix(".csv")
    atomic_write_text(md, render_markdown(table), sync=False)
    atomic_write_text(tex, render_latex(table), sync=False)
    atomic_write_text(csv, tidy_table(table).to_csv(index=False), sync=False)
    return [md, tex, csv]


def _cells_frame(index: Iterable, columns: Iterable) -> pd.DataFrame:
    index, columns = list(index), list(columns)
    frame = pd.DataFrame(index=pd.Index(index, dtype=object), columns=pd.Index(columns, dtype=object),
                         dtype=object)
    for r in index:
        for c in columns:
            frame.at[r, c] = Cell()
    return frame
