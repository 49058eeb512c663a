"""Text layout checks of a drawn matplotlib figure, through the renderer's text extents.

``text_problems(fig)`` lists every pair of visible text boxes that overlap, every text that leaves
the canvas and every axis drawn without a label; the figure tests (and the before/after count of
issue 24 item 5) use it on each report figure.
"""

from __future__ import annotations

import itertools

from matplotlib.backends.backend_agg import FigureCanvasAgg

TOLERANCE_PX = 0.5


def _in_view(ax, text, axis: str) -> bool:
    x, y = text.get_position()
    lo, hi = sorted(ax.get_xbound() if axis == "x" else ax.get_ybound())
    value = x if axis == "x" else y
    span = (hi - lo) or 1.0
    return lo - 1e-6 * span <= value <= hi + 1e-6 * span


def drawn_texts(fig) -> list[tuple[str, object]]:
    """(description, Text) of every non-empty text the figure draws."""
    out, seen = [], set()

    def add(kind, text):
        if text is not None and id(text) not in seen and text.get_visible() and text.get_text().strip():
            seen.add(id(text))
            out.append((f"{kind} {text.get_text()!r}", text))

    for t in fig.texts:
        add("figure text", t)
    for name in ("_suptitle", "_supxlabel", "_supylabel"):
        add(name.strip("_"), getattr(fig, name, None))
    for legend in fig.legends:
        for t in legend.get_texts():
            add("legend", t)
        add("legend title", legend.get_title())
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        for t in (ax.title, ax._left_title, ax._right_title):
            add("title", t)
        for t in ax.texts:
            add("text", t)
        legend = ax.get_legend()
        if legend is not None:
            for t in legend.get_texts():
                add("legend", t)
            add("legend title", legend.get_title())
        if not ax.axison:
            continue
        for axis_name, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
            if not axis.get_visible():
                continue
            add(f"{axis_name} label", axis.label)
            add(f"{axis_name} offset", axis.get_offset_text())
            for t in axis.get_ticklabels():
                if _in_view(ax, t, axis_name):
                    add(f"{axis_name} tick", t)
    return out


def unlabelled_axes(fig) -> list[str]:
    """Axes drawn with tick labels but without an axis label."""
    problems = []
    for ax in fig.axes:
        if not (ax.get_visible() and ax.axison):
            continue
        for axis_name, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
            ticks = [t for t in axis.get_ticklabels()
                     if t.get_visible() and t.get_text().strip() and _in_view(ax, t, axis_name)]
            if axis.get_visible() and ticks and not axis.label.get_text().strip():
                problems.append(f"axes {ax.get_title()!r}: {axis_name} axis has tick labels but no label")
    return problems


def text_problems(fig) -> list[str]:
    """Overlapping text boxes, text outside the canvas, unlabelled axes (an empty list when clean)."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    width, height = canvas.get_width_height()
    boxes = [(name, t.get_window_extent(renderer)) for name, t in drawn_texts(fig)]
    problems = []
    for name, box in boxes:
        if (box.x0 < -TOLERANCE_PX or box.y0 < -TOLERANCE_PX or box.x1 > width + TOLERANCE_PX
                or box.y1 > height + TOLERANCE_PX):
            problems.append(f"{name} leaves the canvas")
    for (name_a, a), (name_b, b) in itertools.combinations(boxes, 2):
        overlap_x = min(a.x1, b.x1) - max(a.x0, b.x0)
        overlap_y = min(a.y1, b.y1) - max(a.y0, b.y0)
        if overlap_x > TOLERANCE_PX and overlap_y > TOLERANCE_PX:
            problems.append(f"{name_a} overlaps {name_b}")
    return problems + unlabelled_axes(fig)
