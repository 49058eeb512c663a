"""What every figure shares: the paper style, the column widths, saving, label wrapping.

Why object-oriented matplotlib (``Figure`` instead of ``pyplot``): no global state, no GUI
backend, nothing to close, so building many figures in one process neither leaks memory nor
depends on the display. Figures use matplotlib's constrained layout and are saved at exactly
their size (no ``bbox_inches="tight"``): a figure made for one column is 3.5 in wide in the PNG
(300 dpi) and in the PDF, as a journal asks, and text that would not fit is wrapped or shortened
by the figure, not cropped or pushed outside by the saver.
"""

from __future__ import annotations

import functools
import io
import re
import textwrap
from collections.abc import Callable
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import matplotlib as mpl
from matplotlib.figure import Figure

COLUMN_WIDTH_IN = 3.5   # one column of a two-column journal
TEXT_WIDTH_IN = 7.2     # the full text width (double column)
DPI = 300
PAPER_STYLE = {
    "font.size": 7,
    "axes.titlesize": 7,
    "axes.labelsize": 7,
    "xtick.labelsize": 6,
    "ytick.labelsize": 6,
    "legend.fontsize": 6,
    "figure.titlesize": 8,
    "axes.linewidth": 0.6,
    "lines.linewidth": 1.0,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "axes.formatter.limits": (-3, 4),     # scientific notation outside 1e-3..1e4: ticks never run together
    "axes.formatter.use_mathtext": True,
    "figure.constrained_layout.h_pad": 0.02,
    "figure.constrained_layout.w_pad": 0.02,
    "pdf.fonttype": 42,  # embed TrueType: editable text in the PDF (Type 3 fonts are refused by some journals)
    "svg.hashsalt": "uad-bench",
}
NORMAL_COLOUR, ANOMALY_COLOUR = "#4477AA", "#EE6677"

_WIDTH: ContextVar[float] = ContextVar("figure_width", default=COLUMN_WIDTH_IN)


@contextmanager
def figure_width(inches: float):
    """Draw the figures of the block for this width (``COLUMN_WIDTH_IN`` or ``TEXT_WIDTH_IN``)."""
    token = _WIDTH.set(float(inches))
    try:
        yield
    finally:
        _WIDTH.reset(token)


def width() -> float:
    """The width the current figure is drawn for (one column unless :func:`figure_width` says otherwise)."""
    return _WIDTH.get()


def new_figure(height: float, fig_width: float | None = None) -> Figure:
    return Figure(figsize=(fig_width or width(), height), layout="constrained")


def draw_styled(fn: Callable, drawing: dict, args: tuple, kwargs: dict) -> list[Path]:
    """``fn(*args, **kwargs)`` in the paper rc-context (fonts are fixed when artists are made) at the
    width in ``drawing``: here or in a figure worker (:mod:`bench.analysis.figure_pool`), which must
    draw exactly what this process would. Figure functions get it through
    :func:`bench.analysis.figure_cache.paper_style`."""
    with figure_width(drawing["width"]), mpl.rc_context(PAPER_STYLE):
        return fn(*args, **kwargs)


@functools.lru_cache(maxsize=1)
def _style_digest() -> str:
    import hashlib

    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


def save_figure(fig: Figure, stem: Path) -> list[Path]:
    """Write ``stem.png`` (``DPI``) and ``stem.pdf`` at the figure's own size; return both paths.

    Each is rendered in memory and renamed into place (``atomic_write_bytes``), so a build killed
    mid-figure leaves the previous file or none, never a truncated PDF; no timestamps, so a rebuild
    of the same store gives the same files.
    """
    from bench.run.store import atomic_write_bytes

    stem = Path(stem)
    png, pdf = stem.with_suffix(".png"), stem.with_suffix(".pdf")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    atomic_write_bytes(png, buf.getvalue(), sync=False)
    # the PNG's draw placed every axes: the PDF keeps that layout instead of solving it again (the
    # constrained layout works in inches and points, the same at any dpi)
    fig.set_layout_engine("none")
    buf = io.BytesIO()
    with lean_font_subsets():
        fig.savefig(buf, format="pdf", metadata={"CreationDate": None, "ModDate": None})
    atomic_write_bytes(pdf, buf.getvalue(), sync=False)
    return [png, pdf]


#: OpenType tables a PDF never reads: matplotlib lays out the text itself and the PDF draws glyphs by
#: index, so substitution, positioning and math layout tables are dead weight in the embedded font.
LAYOUT_TABLES = ["GSUB", "GPOS", "GDEF", "MATH", "BASE"]


@contextmanager
def lean_font_subsets():
    """Within the block, fontTools' subsetter (which matplotlib calls to embed TrueType fonts) drops
    :data:`LAYOUT_TABLES`. Why: subsetting DejaVu Sans's layout tables was most of a PDF's save time
    (0.12 s of every font embedded, 0.03 s without them; issue 24 item 10)."""
    from fontTools import subset

    before = getattr(subset.Options, "_drop_tables_default", None)
    if not isinstance(before, list):
        yield
        return
    subset.Options._drop_tables_default = before + [t for t in LAYOUT_TABLES if t not in before]
    try:
        yield
    finally:
        subset.Options._drop_tables_default = before


def save_png(fig: Figure, path: Path) -> Path:
    """Write one PNG (``DPI``), atomically; for images that are not paper figures (predict's overlays)."""
    from bench.run.store import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    atomic_write_bytes(Path(path), buf.getvalue(), sync=False)
    return Path(path)


def chars_for(inches: float, fontsize: float = 7.0) -> int:
    """About how many characters of DejaVu Sans at ``fontsize`` pt fit in ``inches``."""
    return max(4, int(inches * 72 / (0.6 * fontsize)))


_BREAKS = re.compile(r"(?<=[ /_\-×])|(?<=\.)(?!\d)")     # never inside a number such as 3.10


def wrap_label(text: str, max_chars: int, max_lines: int = 3) -> str:
    """Wrap ``text`` into lines of at most ``max_chars``, breaking only after a space, ``/``, ``_``,
    ``-``, ``.`` (not inside a number) or ``×``, never inside a word; what does not fit in ``max_lines``
    ends in "…"."""
    text = " ".join(str(text).split())
    if len(text) <= max_chars:
        return text
    lines, line = [], ""
    for piece in _BREAKS.split(text):
        if line and len(line) + len(piece.rstrip()) > max_chars:
            lines.append(line.rstrip())
            line = ""
        line += piece
        while len(line.rstrip()) > max_chars:       # one unbreakable piece longer than a line
            lines.append(line[:max_chars - 1] + "…")
            line = ""
    if line.strip():
        lines.append(line.rstrip())
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = textwrap.shorten(lines[-1], max_chars - 1, placeholder="") + "…"
    return "\n".join(lines)
