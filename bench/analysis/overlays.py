"""Anomaly maps drawn over their image: one helper for the report's qualitative panel and for
``bench predict``'s per-image overlays, so both read the same way (grey image, ground-truth contour
where there is a mask, the map in a sequential colour map with transparency, one colour scale with
its bar)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

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

    from bench.analysis.figures import PAPER_STYLE, save_png

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
