"""Figures for the report, sized for one paper column (3.5 in wide, fonts >= 7 pt).

Why object-oriented matplotlib (``Figure`` instead of ``pyplot``): no global state, no GUI
backend, nothing to close, so building many figures in one process neither leaks memory nor
depends on the display. Every function takes plain arrays or frames, draws one figure and
returns the written paths (PNG at 200 dpi and PDF, both without timestamps so a rebuild of the
same store gives the same files).
"""

from __future__ import annotations

import functools
import io
import textwrap
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

COLUMN_WIDTH_IN = 3.5
TEXT_WIDTH_IN = 7.0  # two-column papers' full text width, for figures too wide for one column
DPI = 200
PAPER_STYLE = {
    "font.size": 7,
    "axes.titlesize": 8,
    "axes.labelsize": 7,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "figure.titlesize": 8,
    "axes.linewidth": 0.6,
    "lines.linewidth": 1.0,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "pdf.fonttype": 42,  # embed TrueType: editable text in the PDF
    "svg.hashsalt": "uad-bench",
}
NORMAL_COLOUR, ANOMALY_COLOUR = "#4477AA", "#EE6677"


def paper_style(fn: Callable) -> Callable:
    """Run a plotting function inside the paper rc-context (fonts are fixed when artists are made)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from bench.analysis.figure_cache import cached_render

        def draw():
            with mpl.rc_context(PAPER_STYLE):
                return fn(*args, **kwargs)

        # a report build reuses the files of a figure whose inputs did not change (figure_cache)
        return cached_render(fn, args, kwargs, draw, options=(PAPER_STYLE, DPI))

    return wrapper


def save_figure(fig: Figure, stem: Path) -> list[Path]:
    """Write ``stem.png`` (200 dpi) and ``stem.pdf``; return both paths.

    Each is rendered in memory and renamed into place (``atomic_write_bytes``), so a build killed
    mid-figure leaves the previous file or none, never a truncated PDF.
    """
    from bench.run.store import atomic_write_bytes

    stem = Path(stem)
    png, pdf = stem.with_suffix(".png"), stem.with_suffix(".pdf")
    for path, options in ((png, {"dpi": DPI, "metadata": {"Software": None}}),
                          (pdf, {"metadata": {"CreationDate": None, "ModDate": None}})):
        buf = io.BytesIO()
        fig.savefig(buf, format=path.suffix[1:], bbox_inches="tight", **options)
        atomic_write_bytes(path, buf.getvalue(), sync=False)
    return [png, pdf]


def save_png(fig: Figure, path: Path) -> Path:
    """Write one PNG (``DPI``), atomically; for figures that are not part of a paper (overlays)."""
    from bench.run.store import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    atomic_write_bytes(Path(path), buf.getvalue(), sync=False)
    return Path(path)


def finite_pairs(values: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Values and labels where the value is finite: non-finite input never reaches a plotting or
    curve routine (a NaN score makes scikit-learn raise, an inf one breaks histogram bins)."""
    values, labels = np.asarray(values, dtype=float), np.asarray(labels)
    keep = np.isfinite(values) if values.ndim == 1 else np.isfinite(values).all(axis=tuple(range(1, values.ndim)))
    return values[keep], labels[keep]


def _height(n_rows: int, per_row: float, base: float, cap: float = 9.0) -> float:
    return float(min(cap, base + per_row * n_rows))


@paper_style
def heatmap(means: pd.DataFrame, annotations: pd.DataFrame, title: str, stem: Path,
            lower_is_better: bool = False, failed: pd.DataFrame | None = None) -> list[Path]:
    """Encoder (rows) x head (columns) heatmap annotated with the mean; failed cells say so."""
    import seaborn as sns

    # more than five heads do not fit annotated in one column: use the full text width
    width = COLUMN_WIDTH_IN if means.shape[1] <= 5 else TEXT_WIDTH_IN
    fig = Figure(figsize=(width, _height(len(means), 0.28, 0.9)))
    ax = fig.add_subplot()
    data = means.astype(float)
    sns.heatmap(data, ax=ax, annot=annotations.to_numpy(dtype=object), fmt="",
                cmap="viridis_r" if lower_is_better else "viridis", linewidths=0.5, linecolor="white",
                cbar_kws={"label": title.split(" — ")[-1], "shrink": 0.8},
                annot_kws={"fontsize": 7})
    if failed is not None:
        for i, row in enumerate(data.index):
            for j, col in enumerate(data.columns):
                if bool(failed.loc[row, col]) and not np.isfinite(data.loc[row, col]):
                    ax.text(j + 0.5, i + 0.5, "failed", ha="center", va="center", fontsize=7, color="#B00020")
    ax.set_xlabel("head")
    ax.set_ylabel("encoder")
    ax.set_title(title)
    ax.tick_params(axis="x", rotation=30)
    ax.tick_params(axis="y", rotation=0)
    return save_figure(fig, stem)


@paper_style
def interval_plot(frame: pd.DataFrame, title: str, xlabel: str, stem: Path,
                  lower_is_better: bool = False) -> list[Path]:
    """Point estimate with its bootstrap CI per method (columns ``label``, ``estimate``, ``low``,
    ``high``, ``kind``), best method on top."""
    frame = frame.sort_values("estimate", ascending=lower_is_better, kind="mergesort")
    fig = Figure(figsize=(COLUMN_WIDTH_IN, _height(len(frame), 0.2, 0.8)))
    ax = fig.add_subplot()
    y = np.arange(len(frame))[::-1]
    colours = ["#228833" if k == "detector" else "#4477AA" for k in frame["kind"]]
    err = np.vstack([frame["estimate"] - frame["low"], frame["high"] - frame["estimate"]])
    err = np.where(np.isfinite(err), np.maximum(err, 0.0), 0.0)
    for yi, x, e0, e1, c in zip(y, frame["estimate"], err[0], err[1], colours, strict=True):
        ax.errorbar(x, yi, xerr=[[e0], [e1]], fmt="o", ms=3, color=c, elinewidth=0.9, capsize=1.5)
    ax.set_yticks(y)
    ax.set_yticklabels(frame["label"])
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.grid(axis="x", linewidth=0.3, alpha=0.6)
    return save_figure(fig, stem)


@paper_style
def roc_pr_curves(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], title: str, stem: Path) -> list[Path]:
    """ROC (left) and precision-recall (right) curves of the given (scores, labels) per method."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    fig = Figure(figsize=(COLUMN_WIDTH_IN, 2.2))
    ax_roc, ax_pr = fig.subplots(1, 2)
    for label, (scores, labels) in curves.items():
        scores, labels = finite_pairs(scores, labels)
        if len(np.unique(labels)) < 2:
            continue
        fpr, tpr, _ = roc_curve(labels, scores)
        precision, recall, _ = precision_recall_curve(labels, scores)
        ax_roc.plot(fpr, tpr, label=label)
        ax_pr.step(recall, precision, where="post")
    ax_roc.plot([0, 1], [0, 1], color="grey", linewidth=0.5, linestyle=":")
    ax_roc.set(xlabel="false-positive rate", ylabel="true-positive rate", title="ROC")
    ax_pr.set(xlabel="recall", ylabel="precision", title="precision-recall")
    for ax in (ax_roc, ax_pr):
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_aspect("equal")
    fig.legend(*ax_roc.get_legend_handles_labels(), loc="upper center", bbox_to_anchor=(0.5, 0.0),
               ncol=2, frameon=False)
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, stem)


@paper_style
def score_histograms(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], title: str, stem: Path) -> list[Path]:
    """Histograms of test scores, normal vs anomalous, one small panel per method."""
    n = len(curves)
    cols = 2 if n > 1 else 1
    rows = int(np.ceil(n / cols))
    fig = Figure(figsize=(COLUMN_WIDTH_IN, 0.3 + 1.2 * rows))
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax, (label, (scores, labels)) in zip(axes, curves.items(), strict=False):
        scores, labels = finite_pairs(scores, labels)
        labels = labels.astype(bool)
        bins = np.histogram_bin_edges(scores, bins=30) if scores.size else 1
        ax.hist(scores[~labels], bins=bins, density=True, alpha=0.6, color=NORMAL_COLOUR, label="normal")
        ax.hist(scores[labels], bins=bins, density=True, alpha=0.6, color=ANOMALY_COLOUR, label="anomalous")
        ax.set_title(label)
        ax.set_yticks([])
    for ax in axes[n:]:
        ax.set_axis_off()
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=2, frameon=False,
               bbox_to_anchor=(0.5, -0.04))
    fig.supxlabel("anomaly score (test)")
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return save_figure(fig, stem)


def _to_display(image: np.ndarray) -> tuple[np.ndarray, str | None]:
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[0] in (1, 3):
        image = np.moveaxis(image, 0, -1)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    return image, ("gray" if image.ndim == 2 else None)


@paper_style
def qualitative_panel(images: np.ndarray, masks: np.ndarray | None, maps: Mapping[str, np.ndarray],
                      case_titles: Sequence[str], title: str, stem: Path) -> list[Path]:
    """Rows: input, ground-truth mask (when there is one), each method's map; columns: test cases.

    Each method's maps share one colour scale over the shown cases (its 1st..99.5th percentile),
    so cases compare within a row.
    """
    n_cases = len(images)
    rows = [("input", None)] + ([("mask", None)] if masks is not None else []) + list(maps.items())
    cell = COLUMN_WIDTH_IN / (n_cases + 0.9)
    fig = Figure(figsize=(COLUMN_WIDTH_IN, cell * len(rows) + 0.4))
    axes = np.asarray(fig.subplots(len(rows), n_cases, squeeze=False))
    for r, (name, method_maps) in enumerate(rows):
        if method_maps is not None:
            values = np.asarray(method_maps, dtype=np.float32)
            finite = values[np.isfinite(values)]
            # robust range: one extreme pixel must not turn every other pixel black
            vmin, vmax = (np.percentile(finite, [1.0, 99.5]).tolist() if finite.size else (0.0, 1.0))
        for c in range(n_cases):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if name == "input":
                img, cmap = _to_display(images[c])
                ax.imshow(img, cmap=cmap)
                ax.set_title(case_titles[c], fontsize=7)
            elif name == "mask" and method_maps is None:
                img, _ = _to_display(masks[c])
                ax.imshow(img, cmap="gray", vmin=0, vmax=1)
            else:
                ax.imshow(values[c], cmap="inferno", vmin=vmin, vmax=vmax if vmax > vmin else vmin + 1)
            if c == 0:
                ax.set_ylabel(textwrap.fill(name, 16), rotation=0, ha="right", va="center", fontsize=7)
    fig.suptitle(title, y=1.0 + 0.45 / fig.get_figheight())  # above the two-line case titles
    fig.subplots_adjust(wspace=0.05, hspace=0.15)
    return save_figure(fig, stem)


@paper_style
def latent_views(views: Mapping[str, tuple[np.ndarray, np.ndarray]], title: str, stem: Path) -> list[Path]:
    """t-SNE of test embeddings per encoder, normal vs anomalous."""
    n = len(views)
    cols = min(3, n)
    rows = int(np.ceil(n / cols))
    size = COLUMN_WIDTH_IN / cols
    fig = Figure(figsize=(COLUMN_WIDTH_IN, size * rows + 0.5))
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax, (name, (coords, labels)) in zip(axes, views.items(), strict=False):
        coords, labels = finite_pairs(coords, labels)
        labels = labels.astype(bool)
        ax.scatter(*coords[~labels].T, s=2, color=NORMAL_COLOUR, label="normal", linewidths=0)
        ax.scatter(*coords[labels].T, s=2, color=ANOMALY_COLOUR, label="anomalous", linewidths=0)
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[n:]:
        ax.set_axis_off()
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=2, frameon=False,
               markerscale=3, bbox_to_anchor=(0.5, -0.02))
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return save_figure(fig, stem)


def _cliques(ranks: np.ndarray, cd: float) -> list[tuple[int, int]]:
    """Maximal runs of sorted methods whose mean ranks differ by less than ``cd``."""
    spans = []
    for i in range(len(ranks)):
        j = i
        while j + 1 < len(ranks) and ranks[j + 1] - ranks[i] < cd:
            j += 1
        if j > i and not any(a <= i and j <= b for a, b in spans):
            spans.append((i, j))
    return spans


@paper_style
def critical_difference_diagram(mean_ranks: pd.Series, cd: float, title: str, stem: Path) -> list[Path]:
    """Demšar's CD diagram: methods on a mean-rank axis (1 = best, left); a bar joins methods
    whose mean ranks differ by less than the Nemenyi critical difference."""
    mean_ranks = mean_ranks.sort_values(kind="mergesort")
    k = len(mean_ranks)
    half = int(np.ceil(k / 2))
    n_side = max(half, k - half)
    fig = Figure(figsize=(COLUMN_WIDTH_IN, 0.9 + 0.16 * n_side))
    ax = fig.add_subplot()
    ax.set_axis_off()
    lo, hi = 1, max(k, 2)
    ax.set_xlim(lo - 0.9 * (hi - lo) / 2 - 0.2, hi + 0.9 * (hi - lo) / 2 + 0.2)
    ax.set_ylim(-(n_side + 0.6), 2.2)
    ax.hlines(0, lo, hi, color="black", linewidth=0.8)
    for r in range(lo, hi + 1):
        ax.vlines(r, 0, 0.25, color="black", linewidth=0.6)
        ax.text(r, 0.4, str(r), ha="center", va="bottom", fontsize=7)
    if np.isfinite(cd):
        ax.hlines(1.5, lo, lo + cd, color="black", linewidth=1.2)
        ax.vlines([lo, lo + cd], 1.35, 1.65, color="black", linewidth=0.8)
        ax.text(lo + cd / 2, 1.75, f"CD = {cd:.2f}", ha="center", va="bottom", fontsize=7)
    values = mean_ranks.to_numpy()
    for i, (name, r) in enumerate(mean_ranks.items()):
        left = i < half
        level = -(i + 1.2) if left else -(k - i + 0.2)
        x_text = lo - 0.3 if left else hi + 0.3
        ax.plot([r, r, x_text], [0, level, level], color="black", linewidth=0.6)
        ax.text(x_text - 0.05 if left else x_text + 0.05, level, f"{name} ({r:.2f})",
                ha="right" if left else "left", va="center", fontsize=7)
    if np.isfinite(cd):
        for n, (a, b) in enumerate(_cliques(values, cd)):
            y = -0.45 - 0.2 * n
            ax.hlines(y, values[a] - 0.03, values[b] + 0.03, color="#B00020", linewidth=2.0)
    ax.set_title(title)
    return save_figure(fig, stem)


@paper_style
def diagnostic_scatter(frame: pd.DataFrame, diagnostics: Mapping[str, str],
                       correlations: Mapping[str, tuple[float, float, int]], title: str,
                       stem: Path, target: str = "image_auroc", target_label: str = "image AUROC") -> list[Path]:
    """One panel per diagnostic: diagnostic of the cell's encoder (x) vs the cell's ``target`` (y),
    coloured by head, with Spearman's rho in the panel title."""
    names = [d for d in diagnostics if d in frame and frame[d].notna().any()]
    cols = 2
    rows = max(1, int(np.ceil((len(names) + 1) / cols)))  # one slot is kept for the legend
    fig = Figure(figsize=(COLUMN_WIDTH_IN, 0.3 + 1.55 * rows))
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    heads = sorted(frame["hue"].dropna().unique())
    palette = mpl.colormaps["tab10"]
    for i, (ax, name) in enumerate(zip(axes, names, strict=False)):
        for h_i, head in enumerate(heads):
            sub = frame[frame["hue"] == head]
            ax.scatter(sub[name], sub[target], s=6, color=palette(h_i % 10), label=head, linewidths=0)
        rho, p, n = correlations.get(name, (float("nan"), float("nan"), 0))
        ax.set_title(f"ρ = {rho:.2f}, p = {p:.2g}" if np.isfinite(rho) else "ρ = n/a")
        ax.set_xlabel(diagnostics[name])
        ax.set_ylabel(target_label if i % cols == 0 else "")
    for ax in axes[len(names):]:
        ax.set_axis_off()
    if names:
        axes[len(names)].legend(*axes[0].get_legend_handles_labels(), loc="center", frameon=False,
                                title="head", markerscale=2)
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, stem)


#: Colour of each verdict in the forest plot.
VERDICT_COLOURS = {"supported": "#228833", "contradicted": "#EE6677", "inconclusive": "#4477AA",
                   "not testable": "#BBBBBB"}


@paper_style
def forest_plot(frame: pd.DataFrame, title: str, stem: Path) -> list[Path]:
    """Effect and 95 % interval per claim, dataset and metric (columns ``label``, ``effect``, ``ci_low``,
    ``ci_high``, ``verdict``, ``direction``), coloured by verdict; a comparison that is not testable
    is a grey row marked "not testable"; the dotted line is no effect."""
    fig = Figure(figsize=(TEXT_WIDTH_IN, _height(len(frame), 0.22, 1.0, cap=14.0)))
    ax = fig.add_subplot()
    y = np.arange(len(frame))[::-1]
    finite = frame["effect"].astype(float).to_numpy()
    span = np.nanmax(np.abs(np.r_[finite, frame["ci_low"], frame["ci_high"]].astype(float))) if np.isfinite(
        finite).any() else 1.0
    for yi, (_, row) in zip(y, frame.iterrows(), strict=True):
        colour = VERDICT_COLOURS.get(row["verdict"], "#000000")
        if not np.isfinite(row["effect"]) or row["verdict"] == "not testable":
            why = str(row.get("reason") or "").split(":")[0]
            ax.text(0, yi, textwrap.shorten(f"not testable ({why})" if why else "not testable", 60),
                    color="#888888", ha="center", va="center", fontsize=6)
            continue
        low = row["ci_low"] if np.isfinite(row["ci_low"]) else row["effect"]
        high = row["ci_high"] if np.isfinite(row["ci_high"]) else row["effect"]
        ax.errorbar(row["effect"], yi, xerr=[[max(row["effect"] - low, 0)], [max(high - row["effect"], 0)]],
                    fmt="D" if row.get("direction") == "less" else "o", ms=3, color=colour, elinewidth=0.9,
                    capsize=1.5)
    ax.axvline(0.0, color="grey", linewidth=0.6, linestyle=":")
    ax.set_yticks(y)
    ax.set_yticklabels([textwrap.shorten(str(label), 90) for label in frame["label"]])
    ax.set_ylim(-0.7, len(frame) - 0.3)
    ax.set_xlim(-1.1 * max(span, 1e-3), 1.1 * max(span, 1e-3))
    ax.set_xlabel("effect: metric(A) − metric(B)  (claimed: > 0, ◆ claimed < 0)")
    ax.set_title(title)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", linestyle="", color=c, label=v) for v, c in VERDICT_COLOURS.items()]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.08 - 0.4 / max(len(frame), 1)),
              ncol=4, frameon=False)
    ax.grid(axis="x", linewidth=0.3, alpha=0.6)
    return save_figure(fig, stem)
