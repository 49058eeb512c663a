"""Figures for the report, sized for a journal: one column (3.5 in) by default, the full text width
(7.2 in) under :func:`figure_width`; 300 dpi PNG and vector PDF, fonts 6-8 pt.

Every function takes plain arrays or frames, draws one figure and returns the written paths (PNG
and PDF, without timestamps, so a rebuild of the same store gives the same files). Shared style,
widths, saving and label wrapping: :mod:`bench.analysis.figure_style`; maps over images:
:mod:`bench.analysis.overlays`. ``tests/test_figures.py`` draws each at both widths and checks
through matplotlib's text extents that no two texts overlap, no text leaves the canvas and every
drawn axis has a label.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path

import matplotlib as mpl
import numpy as np
import pandas as pd

from bench.analysis.figure_cache import paper_style
from bench.analysis.figure_style import (  # noqa: F401 - re-exported: the figure API lives here
    ANOMALY_COLOUR,
    COLUMN_WIDTH_IN,
    DPI,
    NORMAL_COLOUR,
    PAPER_STYLE,
    TEXT_WIDTH_IN,
    chars_for,
    figure_width,
    new_figure,
    save_figure,
    save_png,
    width,
    wrap_label,
)


def finite_pairs(values: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Values and labels where the value is finite: non-finite input never reaches a plotting or
    curve routine (a NaN score makes scikit-learn raise, an inf one breaks histogram bins)."""
    values, labels = np.asarray(values, dtype=float), np.asarray(labels)
    keep = np.isfinite(values) if values.ndim == 1 else np.isfinite(values).all(axis=tuple(range(1, values.ndim)))
    return values[keep], labels[keep]


def _height(n_rows: int, per_row: float, base: float, cap: float = 9.0) -> float:
    return float(min(cap, base + per_row * n_rows))


def _title(ax, text: str, inches: float | None = None, fontsize: float = 7.0, max_lines: int = 2) -> None:
    """An axes title wrapped to the axes' width (``inches``; default: the figure width)."""
    ax.set_title(wrap_label(text, chars_for(inches or width(), fontsize), max_lines), fontsize=fontsize)


def _suptitle(fig, text: str) -> None:
    fig.suptitle(wrap_label(text, chars_for(width(), 8), 2))


def colour_range(values: np.ndarray) -> tuple[float, float, list[float] | None]:
    """``vmin``, ``vmax`` of a colour bar over the data's own range, and its ticks when the data hold one
    value (the bar then shows that value alone instead of a made-up 0.9-1.1 range)."""
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    if not finite.size:
        return 0.0, 1.0, None
    lo, hi = float(finite.min()), float(finite.max())
    if hi > lo:
        return lo, hi, None
    pad = max(abs(lo) * 1e-3, 1e-6)
    return lo - pad, hi + pad, [lo]


@paper_style
def heatmap(means: pd.DataFrame, annotations: pd.DataFrame, title: str, stem: Path,
            lower_is_better: bool = False, failed: pd.DataFrame | None = None) -> list[Path]:
    """Encoder (rows) x head (columns) heatmap annotated with the mean; failed cells say so. The colour
    bar spans the data's range (a single value gets a bar with that one tick)."""
    import seaborn as sns

    # more than five heads do not fit annotated in one column: use the full text width
    fig_width = width() if means.shape[1] <= 5 else max(width(), TEXT_WIDTH_IN)
    fig = new_figure(_height(len(means), 0.3, 1.3), fig_width)
    ax = fig.add_subplot()
    data = means.astype(float)
    vmin, vmax, ticks = colour_range(data.to_numpy())
    label_chars = chars_for(0.3 * fig_width, 6)
    rows = [wrap_label(str(r), label_chars, 2) for r in data.index]
    columns = [wrap_label(str(c), chars_for(0.6 * fig_width / max(data.shape[1], 1), 6), 2) for c in data.columns]
    sns.heatmap(pd.DataFrame(data.to_numpy(), index=rows, columns=columns), ax=ax,
                annot=annotations.to_numpy(dtype=object), fmt="", vmin=vmin, vmax=vmax,
                cmap="viridis_r" if lower_is_better else "viridis", linewidths=0.5, linecolor="white",
                cbar_kws={"label": wrap_label(title.split(" — ")[-1], 28, 2), "shrink": 0.9, "ticks": ticks},
                annot_kws={"fontsize": 6})
    colour_bar = ax.collections[0].colorbar
    if ticks is not None:
        colour_bar.set_ticklabels([f"{t:.3f}" for t in ticks])
    if failed is not None:
        for i, row in enumerate(means.index):
            for j, col in enumerate(means.columns):
                if bool(failed.loc[row, col]) and not np.isfinite(data.loc[row, col]):
                    ax.text(j + 0.5, i + 0.5, "failed", ha="center", va="center", fontsize=6, color="#B00020")
    ax.set_xlabel("head")
    ax.set_ylabel("encoder")
    _title(ax, title)
    ax.tick_params(axis="x", rotation=0)
    ax.tick_params(axis="y", rotation=0)
    return save_figure(fig, stem)


@paper_style
def interval_plot(frame: pd.DataFrame, title: str, xlabel: str, stem: Path,
                  lower_is_better: bool = False) -> list[Path]:
    """Point estimate with its bootstrap CI per method (columns ``label``, ``estimate``, ``low``,
    ``high``, ``kind``), best method on top."""
    frame = frame.sort_values("estimate", ascending=lower_is_better, kind="mergesort")
    fig = new_figure(_height(len(frame), 0.24, 1.0))
    ax = fig.add_subplot()
    y = np.arange(len(frame))[::-1]
    colours = ["#228833" if k == "detector" else "#4477AA" for k in frame["kind"]]
    err = np.vstack([frame["estimate"] - frame["low"], frame["high"] - frame["estimate"]])
    err = np.where(np.isfinite(err), np.maximum(err, 0.0), 0.0)
    for yi, x, e0, e1, c in zip(y, frame["estimate"], err[0], err[1], colours, strict=True):
        ax.errorbar(x, yi, xerr=[[e0], [e1]], fmt="o", ms=3, color=c, elinewidth=0.9, capsize=1.5)
    ax.set_yticks(y)
    ax.set_yticklabels([wrap_label(str(label), chars_for(0.45 * width(), 6), 2) for label in frame["label"]])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("method")
    _title(ax, title)
    ax.grid(axis="x", linewidth=0.3, alpha=0.6)
    return save_figure(fig, stem)


def _legend_below(fig, handles, labels, **kwargs) -> None:
    """A figure legend under the panels, one column per entry that fits the width."""
    labels = [wrap_label(str(label), chars_for(width() / 2 - 0.3, 6), 2) for label in labels]
    ncol = 2 if width() < 5 else 4
    fig.legend(handles, labels, loc="outside lower center", ncol=min(ncol, max(len(labels), 1)), frameon=False,
               **kwargs)


@paper_style
def roc_pr_curves(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], title: str, stem: Path) -> list[Path]:
    """ROC (left) and precision-recall (right) curves of the given (scores, labels) per method."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    fig = new_figure(0.55 * width() + 0.25 * int(np.ceil(len(curves) / (2 if width() < 5 else 4))) + 0.5)
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
        ax.set_xticks([0, 0.5, 1])
        ax.set_yticks([0, 0.5, 1])
    _legend_below(fig, *ax_roc.get_legend_handles_labels())
    _suptitle(fig, title)
    return save_figure(fig, stem)


@paper_style
def score_histograms(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], title: str, stem: Path) -> list[Path]:
    """Histograms of test scores, normal vs anomalous, one small panel per method (at most 4 ticks
    per axis, scientific notation for large or small scores)."""
    from matplotlib.ticker import MaxNLocator

    n = len(curves)
    cols = 1 if n == 1 else 2 if width() < 5 or n == 2 else min(4, n)
    rows = int(np.ceil(n / cols))
    fig = new_figure(0.6 + 1.45 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax, (label, (scores, labels)) in zip(axes, curves.items(), strict=False):
        scores, labels = finite_pairs(scores, labels)
        labels = labels.astype(bool)
        bins = np.histogram_bin_edges(scores, bins=30) if scores.size else 1
        ax.hist(scores[~labels], bins=bins, density=True, alpha=0.6, color=NORMAL_COLOUR, label="normal")
        ax.hist(scores[labels], bins=bins, density=True, alpha=0.6, color=ANOMALY_COLOUR, label="anomalous")
        _title(ax, label, width() / cols - 0.1, 6)
        ax.xaxis.set_major_locator(MaxNLocator(3))
        ax.yaxis.set_major_locator(MaxNLocator(3))
        ax.set_xlabel("anomaly score")
        ax.set_ylabel("density")
        ax.set_yticks([])          # densities of different score scales: the shapes compare, not the values
    for ax in axes[n:]:
        ax.set_axis_off()
    _legend_below(fig, *axes[0].get_legend_handles_labels())
    _suptitle(fig, title)
    return save_figure(fig, stem)


from bench.analysis.overlays import qualitative_panel  # noqa: E402,F401 - maps over images live there


@paper_style
def latent_views(views: Mapping[str, tuple[np.ndarray, np.ndarray]], title: str, stem: Path) -> list[Path]:
    """t-SNE of test embeddings per encoder, normal vs anomalous."""
    n = len(views)
    cols = min(3 if width() < 5 else 5, n)
    rows = int(np.ceil(n / cols))
    size = width() / cols
    fig = new_figure(size * rows + 0.35 * rows + 0.6)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for i, (ax, (name, (coords, labels))) in enumerate(zip(axes, views.items(), strict=False)):
        coords, labels = finite_pairs(coords, labels)
        labels = labels.astype(bool)
        ax.scatter(*coords[~labels].T, s=2, color=NORMAL_COLOUR, label="normal", linewidths=0)
        ax.scatter(*coords[labels].T, s=2, color=ANOMALY_COLOUR, label="anomalous", linewidths=0)
        _title(ax, name, size - 0.1, 6)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel("t-SNE 1", fontsize=6, labelpad=1)
        ax.set_ylabel("t-SNE 2" if i % cols == 0 else "", fontsize=6, labelpad=1)
    for ax in axes[n:]:
        ax.set_axis_off()
    _legend_below(fig, *axes[0].get_legend_handles_labels(), markerscale=3)
    _suptitle(fig, title)
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
    whose mean ranks differ by less than the Nemenyi critical difference. The rank axis takes the
    middle 40 % of the width, the method names (wrapped to fit) the outer 30 % on each side."""
    mean_ranks = mean_ranks.sort_values(kind="mergesort")
    k = len(mean_ranks)
    half = int(np.ceil(k / 2))
    names = [wrap_label(f"{name} ({r:.2f})", chars_for(0.27 * width(), 6), 3) for name, r in mean_ranks.items()]
    step = 0.35 + 0.7 * (1 + max(n.count("\n") for n in names))    # vertical room per method name (0.16 in a unit)
    n_side = max(half, k - half)
    cliques = _cliques(mean_ranks.to_numpy(), cd) if np.isfinite(cd) else []
    top = 2.4
    bottom = -(0.6 + 0.2 * len(cliques) + step * n_side)
    fig = new_figure(0.45 + 0.16 * (top - bottom))
    ax = fig.add_subplot()
    ax.set_axis_off()
    lo, hi = 1, max(k, 2)
    margin = (hi - lo) * 0.6 / (2 * 0.4)
    ax.set_xlim(lo - margin, hi + margin)
    ax.set_ylim(bottom, top)
    ax.hlines(0, lo, hi, color="black", linewidth=0.8)
    for r in range(lo, hi + 1):
        ax.vlines(r, 0, 0.25, color="black", linewidth=0.6)
        ax.text(r, 0.4, str(r), ha="center", va="bottom", fontsize=6)
    if np.isfinite(cd):
        ax.hlines(1.5, lo, lo + cd, color="black", linewidth=1.2)
        ax.vlines([lo, lo + cd], 1.35, 1.65, color="black", linewidth=0.8)
        ax.text(lo + cd / 2, 1.75, f"CD = {cd:.2f}", ha="center", va="bottom", fontsize=6)
    values = mean_ranks.to_numpy()
    first = -(0.6 + 0.2 * len(cliques)) - step / 2
    for i, (name, r) in enumerate(zip(names, values, strict=True)):
        left = i < half
        level = first - step * (i if left else k - 1 - i)
        x_text = lo - 0.08 * margin if left else hi + 0.08 * margin
        ax.plot([r, r, x_text], [0, level, level], color="black", linewidth=0.6)
        ax.text(x_text - 0.03 * margin if left else x_text + 0.03 * margin, level, name,
                ha="right" if left else "left", va="center", fontsize=6)
    for n, (a, b) in enumerate(cliques):
        y = -0.45 - 0.2 * n
        ax.hlines(y, values[a] - 0.03, values[b] + 0.03, color="#B00020", linewidth=2.0)
    _title(ax, title)
    return save_figure(fig, stem)


@paper_style
def diagnostic_scatter(frame: pd.DataFrame, diagnostics: Mapping[str, str],
                       correlations: Mapping[str, tuple[float, float, int]], title: str,
                       stem: Path, target: str = "image_auroc", target_label: str = "image AUROC") -> list[Path]:
    """One panel per diagnostic: diagnostic of the cell's encoder (x) vs the cell's ``target`` (y),
    coloured by head, with Spearman's rho in the panel title."""
    from matplotlib.ticker import MaxNLocator

    names = [d for d in diagnostics if d in frame and frame[d].notna().any()]
    cols = 2 if width() < 5 else 3
    rows = max(1, int(np.ceil((len(names) + 1) / cols)))  # one slot is kept for the legend
    fig = new_figure(0.4 + 1.6 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    heads = sorted(frame["hue"].dropna().unique())
    palette = mpl.colormaps["tab10"]
    for ax, name in zip(axes, names, strict=False):
        for h_i, head in enumerate(heads):
            sub = frame[frame["hue"] == head]
            ax.scatter(sub[name], sub[target], s=6, color=palette(h_i % 10), label=head, linewidths=0)
        rho, p, n = correlations.get(name, (float("nan"), float("nan"), 0))
        ax.set_title(f"ρ = {rho:.2f}, p = {p:.2g}" if np.isfinite(rho) else "ρ = n/a", fontsize=6)
        ax.set_xlabel(diagnostics[name])
        ax.set_ylabel(target_label)
        ax.xaxis.set_major_locator(MaxNLocator(3))
        ax.yaxis.set_major_locator(MaxNLocator(3))
    for ax in axes[len(names):]:
        ax.set_axis_off()
    if names:
        axes[len(names)].legend(*axes[0].get_legend_handles_labels(), loc="center", frameon=False,
                                title="head", markerscale=2)
    _suptitle(fig, title)
    return save_figure(fig, stem)


#: Colour of each verdict in the forest plot.
VERDICT_COLOURS = {"supported": "#228833", "contradicted": "#EE6677", "inconclusive": "#4477AA",
                   "not testable": "#BBBBBB"}


@paper_style
def forest_plot(frame: pd.DataFrame, title: str, stem: Path) -> list[Path]:
    """Effect and 95 % interval per claim, dataset and metric (columns ``label``, ``effect``, ``ci_low``,
    ``ci_high``, ``verdict``, ``direction``), coloured by verdict; a comparison that is not testable
    is a grey row marked "not testable"; the dotted line is no effect."""
    label_chars = chars_for(0.42 * width(), 6)
    labels = [wrap_label(str(label), label_chars, 2) for label in frame["label"]]
    per_row = 0.16 + 0.1 * max((lab.count("\n") for lab in labels), default=0)
    fig = new_figure(_height(len(frame), per_row, 1.2, cap=14.0))
    ax = fig.add_subplot()
    y = np.arange(len(frame))[::-1]
    finite = frame["effect"].astype(float).to_numpy()
    span = np.nanmax(np.abs(np.r_[finite, frame["ci_low"], frame["ci_high"]].astype(float))) if np.isfinite(
        finite).any() else 1.0
    for yi, (_, row) in zip(y, frame.iterrows(), strict=True):
        colour = VERDICT_COLOURS.get(row["verdict"], "#000000")
        if not np.isfinite(row["effect"]) or row["verdict"] == "not testable":
            why = str(row.get("reason") or "").split(":")[0]
            ax.text(0, yi, textwrap.shorten(f"not testable ({why})" if why else "not testable",
                                            chars_for(0.5 * width(), 6)),
                    color="#888888", ha="center", va="center", fontsize=6)
            continue
        low = row["ci_low"] if np.isfinite(row["ci_low"]) else row["effect"]
        high = row["ci_high"] if np.isfinite(row["ci_high"]) else row["effect"]
        ax.errorbar(row["effect"], yi, xerr=[[max(row["effect"] - low, 0)], [max(high - row["effect"], 0)]],
                    fmt="D" if row.get("direction") == "less" else "o", ms=3, color=colour, elinewidth=0.9,
                    capsize=1.5)
    ax.axvline(0.0, color="grey", linewidth=0.6, linestyle=":")
    ax.set_yticks(y)
    ax.set_yticklabels(labels)
    ax.set_ylim(-0.7, len(frame) - 0.3)
    ax.set_xlim(-1.1 * max(span, 1e-3), 1.1 * max(span, 1e-3))
    ax.set_xlabel(wrap_label("effect: metric(A) − metric(B) (claimed: > 0, ◆ claimed < 0)", chars_for(0.5 * width()), 2))
    ax.set_ylabel("claim · dataset · metric")
    _title(ax, title)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", linestyle="", color=c, label=v) for v, c in VERDICT_COLOURS.items()]
    fig.legend(handles=handles, loc="outside lower center", ncol=4 if width() > 5 else 2, frameon=False)
    ax.grid(axis="x", linewidth=0.3, alpha=0.6)
    return save_figure(fig, stem)
