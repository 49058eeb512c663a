"""Reports: every table, figure and statistic of a run, regenerated from its results store.

``build_report(run_dir)`` reads a run directory through :class:`bench.store.ResultStore` and
writes ``reports/<run name>/`` (or ``out_dir``) with a ``README.md`` index. Nothing in the
output is edited by hand: a rebuild first deletes what the previous build wrote (listed in
``.manifest.json``) and writes everything again, so tables never drift from the store.

Part A (``full=False``): per dataset, an "all methods" table (methods x metrics) and, for latent
cells, an encoder x head table and heatmap per metric; ``summary.csv`` with one row per cell.
Part B (``full=True``, the default) adds: bootstrap CIs over test cases (:mod:`bench.stats`),
paired comparisons, ranks across datasets with a critical-difference diagram, the detection vs
localization view, CI plots, ROC/PR curves, score histograms, qualitative panels, t-SNE views
per encoder, and representation diagnostics (:mod:`bench.diagnostics`) related to AUROC.

Table conventions: mean ± std over seeds; **bold** = best, underlined = second (on the values
as displayed; ``image_fpr95`` is lower-is-better); "failed" = every seed of that cell failed;
"†" = some seeds failed and the value is over the rest; "–" = not applicable (e.g. pixel
metrics without masks); "(n=k)" marks a cell with a different number of seeds than the table.
"""

from __future__ import annotations

import json
import math
import traceback
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bench import stats
from bench.metrics import lower_is_better, metric_label, metric_names
from bench.store import METRICS, ResultStore

LATENT = "latent"  # record kind of encoder x head cells (the other kind is "detector")
IMAGE_METRICS = metric_names("image")
PIXEL_METRICS = metric_names("pixel")
#: How many methods the curve, histogram and qualitative figures show per dataset.
TOP_K = 4
MAX_PANEL_CASES = 8
MANIFEST = ".manifest.json"


def _finite(x) -> bool:
    return x is not None and isinstance(x, (int, float, np.number)) and math.isfinite(float(x))


def _natural(values: pd.Series) -> pd.Series:
    """Sort key: numbers as numbers (seed 10 after seed 2), anything else as text."""
    numeric = pd.to_numeric(values, errors="coerce")
    return numeric if numeric.notna().all() else values.astype(str)


def _seed_order(seed) -> tuple:
    return (0, float(seed), "") if _finite(seed) else (1, 0.0, str(seed))


def _same(a: float, b: float) -> bool:
    return (not _finite(a) and not _finite(b)) or (_finite(a) and _finite(b) and abs(a - b) < 1e-12)


def _slug(text: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(text))
    return keep.strip("_") or "unnamed"


# =============================================================================================
# Cells: one row per record
# =============================================================================================
def method_label(record: dict) -> str:
    """Table label of a cell: the record's ``method``, else "encoder × head", else the detector."""
    if record.get("method"):
        return str(record["method"])
    if record.get("kind") == LATENT and record.get("encoder") and record.get("head"):
        return f"{record['encoder']} × {record['head']}"
    return str(record.get("detector") or record.get("cell_id") or "unknown")


def cell_frame(records: list[dict]) -> pd.DataFrame:
    """All records as a tidy frame: scalars, ``label``, metrics, ``time.*``, ``config.*``, ``versions.*``."""
    settings = {r.get("setting") for r in records if r.get("setting")}
    rows = []
    for rec in records:
        row = {k: v for k, v in rec.items() if not isinstance(v, (dict, list)) and k != "traceback"}
        if isinstance(row.get("error"), str):
            row["error"] = row["error"].strip().splitlines()[0][:300] if row["error"].strip() else ""
        row["dataset"] = rec.get("dataset") or "unknown"
        label, row_name = method_label(rec), str(rec.get("encoder"))
        if rec.get("localization") not in (None, "gradient"):
            # same encoder x head, other maps: its own row in the encoder x head matrix
            row_name += f" [{rec['localization']}]"
        if len(settings) > 1 and rec.get("setting") and rec.get("setting") != "uad":
            label, row_name = f"{label} [{rec['setting']}]", f"{row_name} [{rec['setting']}]"
        row["label"] = label
        row["matrix_row"] = row_name if rec.get("kind") == LATENT else None
        metrics = rec.get("metrics") or {}
        for m in METRICS + ["pixel_threshold"]:
            row[m] = metrics.get(m)
        for prefix in ("timings", "config", "versions"):
            short = "time" if prefix == "timings" else prefix
            for k, v in (rec.get(prefix) or {}).items():
                row[f"{short}.{k}"] = v if not isinstance(v, (dict, list)) else json.dumps(v)
        rows.append(row)
    frame = pd.DataFrame(rows)
    for col in ("cell_id", "status", "kind", "encoder", "head", "detector", "setting", "seed", "localization",
                "encoder_cache", "error"):
        if col not in frame:
            frame[col] = None
    for m in METRICS + ["pixel_threshold"]:
        frame[m] = pd.to_numeric(frame[m], errors="coerce")
    first = ["cell_id", "status", "dataset", "kind", "label", "encoder", "head", "detector", "localization",
             "setting", "seed", *METRICS, "pixel_threshold"]
    rest = sorted(c for c in frame.columns if c not in first)
    return frame[first + rest].sort_values(["dataset", "label", "seed", "cell_id"], kind="mergesort",
                                           key=_natural).reset_index(drop=True)


def seed_aggregate(cells: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, label): kind, encoder, head, counts and ``<metric>.mean/.std/.n``."""
    rows = []
    for (dataset, label), group in cells.groupby(["dataset", "label"], sort=True):
        ok = group[group["status"] == "ok"]
        first = group.iloc[0]
        row = {"dataset": dataset, "label": label, "kind": first["kind"], "encoder": first["encoder"],
               "head": first["head"], "matrix_row": first["matrix_row"], "n_ok": len(ok),
               "n_failed": int((group["status"] != "ok").sum())}
        for m in METRICS:
            mean, std, n = stats.mean_std(ok[m].to_numpy(dtype=float))
            row.update({f"{m}.mean": mean, f"{m}.std": std, f"{m}.n": n})
        rows.append(row)
    return pd.DataFrame(rows).set_index(["dataset", "label"])


# =============================================================================================
# Tables
# =============================================================================================
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
                n_failed=int(row["n_failed"]))


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
    return core


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}",
                  "×": r"$\times$", "±": r"$\pm$", "†": r"$^\dagger$", "ρ": r"$\rho$", "Δ": r"$\Delta$",
                  "–": "--", "·": r"$\cdot$", "≤": r"$\leq$", "≥": r"$\geq$", "↓": r"$\downarrow$",
                  "χ": r"$\chi$", "²": r"$^2$", "α": r"$\alpha$", "‖": r"$\|$", "−": "-"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in str(text))


def _table_notes(table: Table, modal_n: int | None) -> list[str]:
    notes = list(table.notes)
    entries = [c for c in table.cells.to_numpy().ravel() if isinstance(c, Cell)]
    if any(c.n_failed and _finite(c.value) and c.text is None for c in entries):
        notes.append("† some seeds of this cell failed; the value is over the seeds that finished.")
    if any(c.n_failed and c.n == 0 and not _finite(c.value) for c in entries):
        notes.append("failed: every seed of this cell failed (see the failed cells in README.md).")
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
    md.write_text(render_markdown(table))
    tex.write_text(render_latex(table))
    tidy_table(table).to_csv(csv, index=False)
    return [md, tex, csv]


def _cells_frame(index: Iterable, columns: Iterable) -> pd.DataFrame:
    index, columns = list(index), list(columns)
    frame = pd.DataFrame(index=pd.Index(index, dtype=object), columns=pd.Index(columns, dtype=object),
                         dtype=object)
    for r in index:
        for c in columns:
            frame.at[r, c] = Cell()
    return frame


# =============================================================================================
# The builder
# =============================================================================================
@dataclass
class IndexEntry:
    section: str
    title: str
    paths: list[Path]
    figure: bool = False
    headline: bool = False  # figures shown inline in the README, not only linked


class ReportBuilder:
    """Builds the report of one run directory; :func:`build_report` is the entry point."""

    def __init__(self, run_dir: str | Path, out_dir: str | Path | None = None, *, full: bool = True,
                 n_resamples: int = 1000, seed: int = 0, tsne_points: int = 500):
        self.run_dir = Path(run_dir).resolve()
        if not (self.run_dir / "records").is_dir():
            raise FileNotFoundError(f"{self.run_dir}: not a run directory (expected records/<cell_id>.json)")
        self.run_name = self.run_dir.name
        self.out_dir = Path(out_dir) if out_dir is not None else Path("reports") / self.run_name
        self.full, self.n_resamples, self.seed, self.tsne_points = full, n_resamples, seed, tsne_points
        self.store = ResultStore(self.run_dir)
        self.records = self.store.records()
        if not self.records:
            raise ValueError(f"{self.run_dir / 'records'}: no records to report on")
        self.cells = cell_frame(self.records)
        self.ok = self.cells[self.cells["status"] == "ok"]
        self.agg = seed_aggregate(self.cells)
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
                self._arrays[cell_id] = self.store.arrays(cell_id)
            except (OSError, ValueError) as exc:
                self.problems.append(f"arrays of cell `{cell_id}` unreadable: {exc}")
                self._arrays[cell_id] = {}
        return self._arrays[cell_id]

    def attempt(self, what: str, fn: Callable, *args, **kwargs):
        """Run one report part; a failure is listed in the README instead of stopping the report."""
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - one broken figure must not hide the rest
            last = traceback.extract_tb(exc.__traceback__)[-1]
            self.problems.append(f"could not build {what}: {type(exc).__name__}: {exc} "
                                 f"({Path(last.filename).name}:{last.lineno})")
            return None

    def add(self, section: str, title: str, paths, figure: bool = False, headline: bool = False) -> None:
        if paths:
            self.index.append(IndexEntry(section, title, list(paths), figure, headline))

    def table(self, section: str, table: Table) -> None:
        self.add(section, table.title, write_table(table, self.out_dir))

    def labels(self, dataset: str, kind: str | None = None) -> list[str]:
        """Labels of a dataset, latent cells first (by encoder, head), then detectors."""
        sub = self.agg.loc[dataset] if dataset in self.agg.index.get_level_values(0) else self.agg.iloc[:0]
        if kind:
            sub = sub[sub["kind"] == kind]
        order = sub.assign(_k=(sub["kind"] != LATENT).astype(int), _e=sub["matrix_row"].astype(str),
                           _h=sub["head"].astype(str))
        return list(order.sort_values(["_k", "_e", "_h"], kind="mergesort").index)

    def metrics_of(self, dataset: str) -> list[str]:
        sub = self.ok[self.ok["dataset"] == dataset]
        return [m for m in METRICS if sub[m].notna().any()]

    def ranked_labels(self, dataset: str, metric: str, labels: Iterable[str] | None = None) -> list[str]:
        """Labels ordered best first by the seed-mean of ``metric`` (ties by label)."""
        labels = list(labels) if labels is not None else self.labels(dataset)
        values = [(self.agg.loc[(dataset, lab), f"{metric}.mean"], lab) for lab in labels]
        values = [(v, lab) for v, lab in values if _finite(v)]
        sign = 1 if lower_is_better(metric) else -1
        return [lab for v, lab in sorted(values, key=lambda t: (sign * t[0], t[1]))]

    def first_ok_cell(self, dataset: str, label: str, need: Iterable[str] = ()) -> pd.Series | None:
        """Lowest-seed ok cell of a method whose arrays hold ``need``."""
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
        path.parent.mkdir(parents=True, exist_ok=True)
        self.cells.to_csv(path, index=False)
        self.add("Run", "All cells (one row per cell: flattened config, metrics, timings, status)", [path])

    def all_methods_table(self, dataset: str) -> None:
        metrics = self.metrics_of(dataset) or IMAGE_METRICS
        labels = self.labels(dataset)
        cells = _cells_frame(labels, [metric_label(m) for m in metrics])
        for lab in labels:
            for m in metrics:
                cells.at[lab, metric_label(m)] = aggregate_cell(self.agg, dataset, lab, m)
        self.table(dataset, Table(f"tables/{_slug(dataset)}/all_methods", f"{dataset}: all methods "
                                  "(mean ± std over seeds)", cells,
                                  {metric_label(m): lower_is_better(m) for m in metrics}))

    def matrix(self, dataset: str, metric: str) -> tuple[pd.DataFrame, pd.DataFrame] | None:
        """Encoder x head matrix of Cells and of 'has a failed seed' flags for latent cells."""
        latent = [lab for lab in self.labels(dataset, LATENT)]
        if not latent:
            return None
        rows = self.agg.loc[[(dataset, lab) for lab in latent]]
        encoders = list(dict.fromkeys(rows["matrix_row"].astype(str)))
        heads = list(dict.fromkeys(sorted(rows["head"].astype(str))))
        cells = _cells_frame(encoders, heads)
        failed = pd.DataFrame(False, index=encoders, columns=heads)
        for (_, lab), row in rows.iterrows():
            enc, head = str(row["matrix_row"]), str(row["head"])
            cells.at[enc, head] = aggregate_cell(self.agg, dataset, lab, metric)
            failed.at[enc, head] = bool(row["n_failed"])
        # A row that differs only in its map kind repeats the image metrics of its base row: drop it.
        base_of = dict(zip(rows["matrix_row"].astype(str), rows["encoder"].astype(str), strict=True))
        for enc in encoders:
            base = base_of[enc]
            if enc != base and base in cells.index and all(
                    _same(cells.at[enc, h].value, cells.at[base, h].value) for h in heads):
                cells, failed = cells.drop(index=enc), failed.drop(index=enc)
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
        from bench import figures

        means = cells.map(lambda c: c.value).astype(float)
        annot = cells.map(lambda c: f"{c.value:.3f}" if _finite(c.value) else "")
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
            samples, full = self.cell_samples(row, arrays, labels, weights)
            for key in ("test_maps", "test_masks"):  # the largest arrays; nothing later needs them
                arrays.pop(key, None)
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

    @staticmethod
    def cell_samples(row: pd.Series, arrays: dict, labels: np.ndarray,
                     weights: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """Every metric of one cell on every resample, and on the full test set (for the check)."""
        samples = stats.image_metric_samples(arrays["test_scores"], labels, weights)
        full = {m: float(fn(arrays["test_scores"], labels)) for m, fn in stats.image_metrics_weighted().items()}
        if "test_maps" in arrays and "test_masks" in arrays and np.any(arrays["test_masks"]):
            threshold = row.get("pixel_threshold")
            counts = stats.pixel_counts(arrays["test_maps"], arrays["test_masks"],
                                        dice_threshold=threshold if _finite(threshold) else None)
            samples.update(stats.pixel_metric_samples(counts, weights))
            full.update({m: float(v[0]) for m, v in stats.pixel_metric_samples(counts).items()})
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
        from bench import figures

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
            for i, a in enumerate(labels):
                for b in labels[i + 1:]:
                    obs = self.agg.loc[(dataset, a), f"{m}.mean"] - self.agg.loc[(dataset, b), f"{m}.mean"]
                    res = stats.paired_bootstrap(samples[a][m], samples[b][m], obs)
                    all_rows.append({"dataset": dataset, "metric": m, "a": a, "b": b, "difference": res.difference,
                                     "ci_low": res.low, "ci_high": res.high, "p_value": res.p_value,
                                     "n_resamples": res.n_resamples})
            best, others = labels[0], labels[1:]
            results = [stats.paired_bootstrap(samples[best][m], samples[o][m],
                                              self.agg.loc[(dataset, best), f"{m}.mean"]
                                              - self.agg.loc[(dataset, o), f"{m}.mean"]) for o in others]
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
            pd.DataFrame(all_rows).to_csv(path, index=False)
            self.add(dataset, f"{dataset}: paired bootstrap, every pair of methods and metric (CSV)", [path])

    def detection_vs_localization(self, dataset: str) -> None:
        metrics = self.metrics_of(dataset)
        pixel = [m for m in PIXEL_METRICS if m in metrics]
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
            from bench import figures

            self.add("Across datasets", f"Critical-difference diagram — {metric_label(metric)}",
                     figures.critical_difference_diagram(
                         summary.mean_ranks, summary.critical_difference,
                         f"{metric_label(metric)}: mean rank over {summary.n_datasets} datasets",
                         self.out_dir / f"figures/cd_{metric}"), figure=True, headline=metric == "image_auroc")

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
        results = [stats.wilcoxon_signed_rank(pivot[best].to_numpy(), pivot[o].to_numpy()) for o in others]
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

    # -- Part B: figures per dataset ----------------------------------------------------------
    def curve_figures(self, dataset: str) -> None:
        chosen = self.ranked_labels(dataset, "image_auroc")[:TOP_K]
        curves, seeds = {}, set()
        for lab in chosen:
            row = self.first_ok_cell(dataset, lab, ("test_scores", "test_labels"))
            if row is not None:
                arrays = self.arrays(row["cell_id"])
                if len(np.unique(arrays["test_labels"])) == 2:
                    curves[lab] = (arrays["test_scores"], arrays["test_labels"])
                    seeds.add(row["seed"])
        if not curves:
            return
        from bench import figures

        seed_text = ", ".join(str(s) for s in sorted(seeds, key=_seed_order))
        rule = f"top {len(curves)} by mean image AUROC, seed {seed_text}"
        self.add(dataset, f"{dataset}: ROC and PR curves ({rule})",
                 figures.roc_pr_curves(curves, f"{dataset} ({rule})",
                                       self.out_dir / f"figures/{_slug(dataset)}/roc_pr"), figure=True)
        self.add(dataset, f"{dataset}: score histograms, normal vs anomalous ({rule})",
                 figures.score_histograms(curves, f"{dataset} ({rule})",
                                          self.out_dir / f"figures/{_slug(dataset)}/score_histograms"), figure=True)

    def qualitative_figure(self, dataset: str) -> None:
        metrics = self.metrics_of(dataset)
        rank_metric = next((m for m in ("pixel_aupro", "pixel_auroc", "image_auroc") if m in metrics), None)
        if rank_metric is None:
            return
        panel, maps = None, {}
        for lab in self.ranked_labels(dataset, rank_metric):
            row = self.first_ok_cell(dataset, lab, ("panel_images", "panel_maps"))
            if row is None:
                continue
            arrays = self.arrays(row["cell_id"])
            if panel is None:
                panel = arrays
            elif not np.array_equal(arrays.get("panel_index", []), panel.get("panel_index", [])):
                continue
            candidate = np.asarray(arrays["panel_maps"], dtype=np.float32)[:MAX_PANEL_CASES]
            if any(np.array_equal(candidate, shown) for shown in maps.values()):
                continue  # e.g. reconstruction maps do not depend on the head: show them once
            maps[lab] = candidate
            if len(maps) == TOP_K:
                break
        if panel is None:
            return
        from bench import figures

        n = min(len(panel["panel_images"]), MAX_PANEL_CASES)
        index = panel.get("panel_index", np.arange(n))[:n]
        titles = [f"#{int(i)}" for i in index]
        ref = self.first_ok_cell(dataset, next(iter(maps)), ("test_labels",))
        if ref is not None:
            test_labels = self.arrays(ref["cell_id"])["test_labels"]
            titles = [f"#{int(i)}\n{'anom.' if test_labels[int(i)] else 'norm.'}" if int(i) < len(test_labels)
                      else f"#{int(i)}" for i in index]
        masks = panel.get("panel_masks")
        masks = masks[:n] if masks is not None and np.size(masks) else None
        self.add(dataset, f"{dataset}: qualitative panel (cases chosen by the runner's rule; the "
                          f"{len(maps)} best methods by {metric_label(rank_metric)} with distinct maps)",
                 figures.qualitative_panel(panel["panel_images"][:n], masks, maps, titles, f"{dataset}",
                                           self.out_dir / f"figures/{_slug(dataset)}/qualitative"), figure=True)

    def resolve_cache(self, path) -> Path | None:
        if not path or not isinstance(path, str):
            return None
        p = Path(path)
        for candidate in ([p] if p.is_absolute() else [self.run_dir / p, Path.cwd() / p]):
            if (candidate / "embeddings.npz").exists():
                return candidate
        return None

    def latent_view_figure(self, dataset: str, cache) -> None:
        sub = self.ok[(self.ok["dataset"] == dataset) & (self.ok["kind"] == LATENT)]
        views, seeds = {}, set()
        for encoder, group in sub.groupby("encoder", sort=True):
            for _, row in group.sort_values(["seed", "cell_id"], key=_natural).iterrows():
                path = self.resolve_cache(row["encoder_cache"])
                if path is not None:
                    views[str(encoder)] = cache.tsne(path)
                    seeds.add(row["seed"])
                    break
        if not views:
            return
        from bench import figures

        seed_text = ", ".join(str(s) for s in sorted(seeds, key=_seed_order))
        self.add(dataset, f"{dataset}: latent space per encoder (t-SNE of test embeddings, seed {seed_text})",
                 figures.latent_views(views, f"{dataset}: t-SNE of test embeddings",
                                      self.out_dir / f"figures/{_slug(dataset)}/latent_tsne"), figure=True)

    # -- Part B: representation diagnostics ---------------------------------------------------
    def collect_diagnostics(self, cache) -> tuple[dict[str, dict], pd.DataFrame]:
        """Diagnostics per encoder embedding (named "dataset · encoder · seed") and one row per
        latent cell pairing its encoder's diagnostics with its image AUROC."""
        from bench.diagnostics import DIAGNOSTICS

        per_cache: dict[Path, dict | None] = {}
        named, rows = {}, []
        latent = self.ok[self.ok["kind"] == LATENT]
        # cells that differ only in their map kind share scores: one point per (embedding, head)
        latent = latent[latent["localization"].isin(["gradient"]) | latent["localization"].isna()]
        for _, row in latent.iterrows():
            path = self.resolve_cache(row["encoder_cache"])
            if path is None:
                continue
            if path not in per_cache:
                per_cache[path] = self.attempt(f"diagnostics of {path}", cache.diagnostics, path)
                if per_cache[path] is not None:
                    named[f"{row['dataset']} · {row['encoder']} · seed {row['seed']}"] = per_cache[path]
            values = per_cache[path]
            if values is not None:
                rows.append({**{k: values.get(k) for k in DIAGNOSTICS}, "dataset": row["dataset"],
                             "hue": str(row["head"]), "image_auroc": row["image_auroc"]})
        return dict(sorted(named.items())), pd.DataFrame(rows)

    def diagnostics_outputs(self, cache) -> None:
        from bench import figures
        from bench.diagnostics import DIAGNOSTICS

        named, frame = self.collect_diagnostics(cache)
        if frame.empty:
            return
        section = "Representation diagnostics"
        columns = {name: label for name, (label, _) in DIAGNOSTICS.items()} | {"dim": "dim"}
        cells = _cells_frame(named, columns.values())
        for name, values in named.items():
            for key, label in columns.items():
                v = values.get(key)
                text = ("–" if not _finite(v) else f"{int(v)}" if key == "dim" else
                        f"{v:.1f}" if key == "effective_rank" else f"{v:.3f}")
                cells.at[name, label] = Cell(value=float(v) if _finite(v) else float("nan"), text=text)
        test_label_note = ("* cross-validated AUROC of a probe on TEST embeddings with TEST labels: analysis "
                           "only, never used for selection.")
        self.table(section, Table(
            "tables/diagnostics", "Representation diagnostics per encoder embedding", cells, {}, emphasis=None,
            index_name="dataset · encoder · seed", show_n=False,
            notes=["alignment ↓: squared distance of each normal validation embedding to its nearest training "
                   "embedding (L2-normalised); uniformity ↓: log mean exp(−2‖zi − zj‖²) on training embeddings; "
                   "effective rank: Roy & Vetterli 2007 on centred training embeddings.", test_label_note]))

        corr_cols = ["all cells"] + self.datasets
        corr = _cells_frame([label for label, _ in DIAGNOSTICS.values()], corr_cols)
        pooled = {}
        for name, (label, _) in DIAGNOSTICS.items():
            for col in corr_cols:
                sub = frame if col == "all cells" else frame[frame["dataset"] == col]
                rho, p, n = stats.spearman(sub[name], sub["image_auroc"])
                if col == "all cells":
                    pooled[name] = (rho, p, n)
                corr.at[label, col] = Cell(value=rho, text=(f"{rho:+.2f} (p={p:.2g}, n={n})" if math.isfinite(rho)
                                                            else f"n/a (n={n})"))
        self.table(section, Table(
            "tables/diagnostics_vs_auroc", "Spearman ρ between each diagnostic and image AUROC", corr, {},
            emphasis=None, index_name="diagnostic", show_n=False,
            notes=["One point per latent cell (its encoder's diagnostic, its image AUROC). Pooling datasets mixes "
                   "dataset difficulty into ρ; the per-dataset columns do not.", test_label_note]))
        self.add(section, "Each diagnostic vs image AUROC over all latent cells (* uses test labels)",
                 figures.diagnostic_scatter(frame, {d: v[0] for d, v in DIAGNOSTICS.items()}, pooled,
                                            f"Encoder diagnostics vs image AUROC ({len(frame)} latent cells)",
                                            self.out_dir / "figures/diagnostics_vs_auroc"),
                 figure=True, headline=True)

    def part_b(self) -> None:
        from bench.diagnostics import DiagnosticsCache

        cache = DiagnosticsCache(self.out_dir / ".cache" / "diagnostics", seed=self.seed, tsne_points=self.tsne_points)
        for dataset in self.datasets:
            self.attempt(f"bootstrap for {dataset}", self.bootstrap_dataset, dataset)
            self.attempt(f"CI table for {dataset}", self.ci_table_and_plots, dataset)
            self.attempt(f"paired comparisons for {dataset}", self.paired_tables, dataset)
            self.attempt(f"detection vs localization for {dataset}", self.detection_vs_localization, dataset)
            self.attempt(f"ROC/PR and histograms for {dataset}", self.curve_figures, dataset)
            self.attempt(f"qualitative panel for {dataset}", self.qualitative_figure, dataset)
            self.attempt(f"latent views for {dataset}", self.latent_view_figure, dataset, cache)
        for metric in METRICS:
            self.attempt(f"ranks for {metric}", self.rank_outputs, metric)
            self.attempt(f"Wilcoxon table for {metric}", self.wilcoxon_table, metric)
        self.attempt("representation diagnostics", self.diagnostics_outputs, cache)

    # -- README and bookkeeping ---------------------------------------------------------------
    def clean_previous(self) -> None:
        """Delete what the previous build listed in its manifest (never anything else)."""
        manifest = self.out_dir / MANIFEST
        if not manifest.exists():
            return
        try:
            listed = json.loads(manifest.read_text())
        except json.JSONDecodeError:
            return
        root = self.out_dir.resolve()
        for rel in listed:
            path = (self.out_dir / rel).resolve()
            if root in path.parents and path.is_file():
                path.unlink()
        for rel in sorted({str(Path(r).parent) for r in listed}, key=len, reverse=True):
            folder = (self.out_dir / rel).resolve()
            while folder != root and root in folder.parents and folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
                folder = folder.parent

    def _link(self, path: Path) -> str:
        return path.relative_to(self.out_dir).as_posix()

    def write_readme(self) -> Path:
        n_ok = int((self.cells["status"] == "ok").sum())
        failed = self.cells[self.cells["status"] != "ok"]
        lines = [f"# Report: {self.run_name}", "",
                 f"Generated by `bench.report` from the results store `{self.run_dir}`; regenerate with "
                 f"`python -m bench report {self.run_dir}`. Do not edit: every file here is rewritten.", "",
                 f"{len(self.cells)} cells: {n_ok} ok, {len(failed)} failed; datasets: {', '.join(self.datasets)}.",
                 "", "Conventions: mean ± std over seeds; **bold** best, <u>underlined</u> second "
                 "(FPR@95TPR: lower is better); `failed` = every seed failed; † = some seeds failed; "
                 "– = not applicable.", ""]
        if not failed.empty:
            lines += ["## Failed cells", "", "| cell | dataset | method | seed | error |", "|:--|:--|:--|--:|:--|"]
            for _, row in failed.iterrows():
                err = str(row.get("error") or "").replace("|", r"\|")
                lines.append(f"| `{row['cell_id']}` | {row['dataset']} | {row['label']} | {row['seed']} | {err} |")
            lines.append("")
        sections = list(dict.fromkeys(["Run", *self.datasets, "Across datasets", "Representation diagnostics"]))
        for section in sections:
            entries = [e for e in self.index if e.section == section]
            if not entries:
                continue
            lines += [f"## {section}", ""]
            tables = [e for e in entries if not e.figure]
            figs = [e for e in entries if e.figure]
            for heading, group in (("Tables", tables), ("Figures", figs)):
                if group:
                    lines += [f"{heading}:", ""]
                    lines += [f"- {e.title}: " + " · ".join(f"[{p.suffix[1:]}]({self._link(p)})" for p in e.paths)
                              for e in group]
                    lines.append("")
            for e in figs:
                if e.headline:
                    png = next((p for p in e.paths if p.suffix == ".png"), e.paths[0])
                    lines += [f"![{e.title}]({self._link(png)})", ""]
        if self.full:
            lines += ["## How the statistics are made", "",
                      "- CIs: percentile bootstrap over test cases; where the dataset has patient/volume ids "
                      "(`test_groups`) whole groups are resampled. All methods of a dataset share the same "
                      f"{self.n_resamples} resamples (seeded), so differences are paired.",
                      "- Pixel metrics in the bootstrap bin map values on a grid of quantile thresholds "
                      "(no pixel is subsampled); Dice at the validation threshold is exact.",
                      "- Ranks: Friedman test and Nemenyi critical difference (Demšar 2006).",
                      "- Curves, histograms and panels show the top methods by a stated metric, lowest seed; "
                      "qualitative cases are the runner's rule-chosen panel cases, identical for every method.",
                      "- Diagnostics marked as using test labels are analysis only.", ""]
        if self.remarks:
            lines += ["## Remarks", ""] + [f"- {r}" for r in dict.fromkeys(self.remarks)] + [""]
        if self.problems:
            lines += ["## Parts that could not be built", ""] + [f"- {p}" for p in self.problems] + [""]
        readme = self.out_dir / "README.md"
        readme.write_text("\n".join(lines))
        return readme

    def build(self) -> Path:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.clean_previous()
        self.part_a()
        if self.full:
            self.part_b()
        readme = self.write_readme()
        written = sorted({self._link(p) for e in self.index for p in e.paths} | {self._link(readme)})
        (self.out_dir / MANIFEST).write_text(json.dumps(written, indent=0))
        return self.out_dir


def build_report(run_dir: str | Path, out_dir: str | Path | None = None, *, full: bool = True,
                 n_resamples: int = 1000, seed: int = 0, tsne_points: int = 500) -> Path:
    """Write every table and figure of ``run_dir`` to ``out_dir`` (default ``reports/<run name>``).

    ``full=False`` builds Part A only (tables, heatmaps, summary.csv). Returns the report folder;
    its ``README.md`` indexes everything written.
    """
    return ReportBuilder(run_dir, out_dir, full=full, n_resamples=n_resamples, seed=seed,
                         tsne_points=tsne_points).build()
