"""Anomaly maps drawn over their image: one helper for the report's qualitative panel and for
``bench predict``'s per-image overlays, so both read the same way (grey image, ground-truth contour
where there is a mask, the map in a sequential colour map with transparency, one colour scale with
its bar)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from bench.analysis.figure_cache import paper_style
from bench.analysis.figure_style import chars_for, new_figure, save_figure, width, wrap_label

MAP_CMAP = "inferno"
MAP_ALPHA = 0.55
CONTOUR_COLOUR = "#00E5FF"     # cyan: visible over grey and over inferno's dark and bright ends


def display_image(image: np.ndarray) -> tuple[np.ndarray, str | None]:
    """``[C, H, W]`` / ``[H, W, C]`` / ``[H, W]`` -> what ``imshow`` takes, with a grey colour map for one channel."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[0] in (1, 3):
        image = np.moveaxis(image, 0, -1)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    return image, ("gray" if image.ndim == 2 else None)


def robust_range(values: np.ndarray) -> tuple[float, float]:
    """1st..99.5th percentile of the finite values (one extreme pixel must not turn the rest black),
    widened to the data's own span when that is degenerate (all equal: ``[v, v + 1]``)."""
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if not finite.size:
        return 0.0, 1.0
    vmin, vmax = np.percentile(finite, [1.0, 99.5]).tolist()
    if vmax <= vmin:
        vmin, vmax = float(finite.min()), float(finite.max())
    if vmax <= vmin:
        vmax = vmin + max(abs(vmin) * 1e-3, 1e-12)
    return vmin, vmax


def draw_overlay(ax, image: np.ndarray, amap: np.ndarray | None, vmin: float, vmax: float,
                 mask: np.ndarray | None = None):
    """Image in grey, ``amap`` over it (``vmin..vmax``), the mask's outline on top; returns the map's
    artist (for a colour bar) or None."""
    img, cmap = display_image(image)
    ax.imshow(img, cmap=cmap, interpolation="nearest")
    artist = None
    if amap is not None:
        amap = np.asarray(amap, dtype=np.float32)
        if amap.shape != img.shape[:2]:
            from PIL import Image

            amap = np.asarray(Image.fromarray(amap).resize(img.shape[:2][::-1], Image.BILINEAR))
        artist = ax.imshow(amap, cmap=MAP_CMAP, vmin=vmin, vmax=vmax, alpha=MAP_ALPHA, interpolation="bilinear")
    if mask is not None and np.any(mask):
        ax.contour(np.asarray(mask, dtype=float).squeeze(), levels=[0.5], colors=CONTOUR_COLOUR, linewidths=0.6)
    ax.set_xticks([])
    ax.set_yticks([])
    return artist


def map_overlays(images: np.ndarray, maps: np.ndarray, names: Sequence[str], scores: np.ndarray,
                 threshold: float | None, folder: Path) -> list[Path]:
    """One PNG per image (``folder/<stem>.png``): the map over the image on one colour scale shared by
    every image of the call, titled with the file name, score and decision."""
    import matplotlib as mpl
    from matplotlib.figure import Figure

    from bench.analysis.figure_style import PAPER_STYLE, save_png

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vmin, vmax = robust_range(maps)
    written = []
    with mpl.rc_context(PAPER_STYLE):
        for image, amap, name, score in zip(images, maps, names, scores, strict=True):
            fig = Figure(figsize=(2.4, 2.1))
            ax = fig.add_subplot()
            artist = draw_overlay(ax, image, amap, vmin, vmax)
            decision = "" if threshold is None else (" · anomalous" if score >= threshold else " · normal")
            ax.set_title(f"{name}\nscore {score:.4g}{decision}", fontsize=7)
            bar = fig.colorbar(artist, ax=ax, fraction=0.046, pad=0.03)
            bar.set_label("anomaly map", fontsize=7)
            bar.formatter.set_powerlimits((-3, 4))
            written.append(save_png(fig, folder / f"{Path(name).stem}.png"))
    return written


#: Width kept for the row labels (left) and each row's colour bar (right) of the qualitative panel.
ROW_LABEL_IN, COLOUR_BAR_IN = 0.95, 0.5


def _middle(name: str, limit: int) -> str:
    """``name`` shortened in the middle to ``limit`` characters: a file name's start and end (its
    patient and slice, its extension) say more than its middle."""
    if len(name) <= limit:
        return name
    keep = limit - 1
    return name[:keep // 2] + "…" + name[len(name) - (keep - keep // 2):]


def _panel_cases(n_available: int, inches: float) -> np.ndarray:
    """Which of the runner's cases (anomalous first, then normal) fit the width at >= 0.5 in each:
    evenly spread, so both ends (the smallest lesion, a normal case) stay."""
    fit = max(2, int((inches - ROW_LABEL_IN - COLOUR_BAR_IN) / 0.5))
    if n_available <= fit:
        return np.arange(n_available)
    return np.unique(np.round(np.linspace(0, n_available - 1, fit)).astype(int))


@paper_style
def qualitative_panel(images: np.ndarray, masks: np.ndarray | None, maps: Mapping[str, np.ndarray],
                       case_titles: Sequence[str], title: str, stem: Path) -> list[Path]:
    """Rows: the input (ground-truth outline where there is a mask), then each method's map over the
    image; columns: test cases titled by file name or case id.

    Each method's row shares one colour scale over the shown cases (its 1st..99.5th percentile) with
    its own colour bar, so cases compare within a row; rows differ in scale (one method's scores are
    not another's).
    """
    from matplotlib.ticker import MaxNLocator

    keep = _panel_cases(len(images), width())
    n = len(keep)
    cell = (width() - ROW_LABEL_IN - COLOUR_BAR_IN) / n
    rows = [("input", None)] + list(maps.items())
    fig = new_figure(cell * len(rows) + 0.75)
    axes = np.asarray(fig.subplots(len(rows), n, squeeze=False))
    label_chars = chars_for(ROW_LABEL_IN - 0.1, 6)
    for r, (name, method_maps) in enumerate(rows):
        values = None if method_maps is None else np.asarray(method_maps, dtype=np.float32)[keep]
        vmin, vmax = robust_range(values) if values is not None else (0.0, 1.0)
        artist = None
        for c, case in enumerate(keep):
            ax = axes[r, c]
            mask = masks[case] if masks is not None else None
            artist = draw_overlay(ax, images[case], None if values is None else values[c], vmin, vmax, mask) or artist
            if r == 0:
                head, _, rest = str(case_titles[case]).partition("\n")
                text = wrap_label(_middle(head, 2 * chars_for(cell, 5.5)), chars_for(cell, 5.5), 2)
                text += f"\n{rest}" if rest else ""
                ax.set_title(text, fontsize=5.5, pad=2)
            if c == 0:
                ax.set_ylabel(wrap_label(name, label_chars, 3), rotation=0, ha="right", va="center", fontsize=6)
        if artist is not None:
            bar = fig.colorbar(artist, ax=list(axes[r]), fraction=0.04, pad=0.01, aspect=8)
            bar.ax.tick_params(labelsize=5)
            bar.set_label("map", fontsize=5, labelpad=1)
            bar.locator = MaxNLocator(3)
            bar.update_ticks()
            bar.ax.yaxis.get_offset_text().set_fontsize(5)
    legend = "outline: ground-truth mask" if masks is not None and np.any(masks) else ""
    fig.suptitle(wrap_label(title, chars_for(width(), 8), 1), fontsize=8)
    if legend:
        fig.supxlabel(legend, fontsize=6)
    return save_figure(fig, stem)
