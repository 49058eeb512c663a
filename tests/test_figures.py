"""Every report figure at one and two journal columns: no overlapping text, nothing off the canvas,
every axis labelled, exact width at 300 dpi, vector PDF (issue 24 item 5).

The figures are drawn from a fixed set of inputs shaped like a real run's (long method names,
scores around 1e5, an all-equal heatmap, file names as case titles) and inspected through
matplotlib's text extents (:mod:`tests.figure_check`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bench.analysis import figures
from tests.figure_check import text_problems

LONG = ["imagenet/tf_efficientnet_lite0 × gaussian", "random/resnet18 × knn", "simclr × flow",
        "vae × gmm [reconstruction]"]


def figure_inputs(rng=None) -> dict:
    """Name -> (function name, args without the output stem): the fixed inputs of every figure."""
    rng = rng or np.random.default_rng(0)
    labels = np.r_[np.zeros(60, int), np.ones(40, int)]
    curves = {name: (rng.normal(2e5, 5e4, 100) + 1e5 * labels * (i + 1) / 4, labels) for i, name in enumerate(LONG)}
    means = pd.DataFrame(rng.uniform(0.5, 1.0, (4, 4)), index=["simclr", "moco", "imagenet/tf_efficientnet_lite0",
                                                               "random/resnet18"],
                         columns=["flow", "gaussian", "gmm", "knn"])
    constant = pd.DataFrame(1.0, index=["imagenet/tf_efficientnet_lite0"], columns=["gaussian", "knn"])
    images = rng.integers(0, 255, (6, 1, 32, 32)).astype(np.uint8)
    masks = np.zeros((6, 32, 32), np.uint8)
    masks[:4, 8:18, 10:20] = 1
    maps = {name: rng.gamma(2.0, 10 ** (i + 1), (6, 32, 32)).astype(np.float32) for i, name in enumerate(LONG[:3])}
    titles = [f"patient_{i:04d}_slice_{40 + i}.png\n{'anom.' if i < 4 else 'norm.'}" for i in range(6)]
    intervals = pd.DataFrame({"label": LONG + ["ae", "patchcore"], "estimate": np.linspace(0.95, 0.6, 6),
                              "low": np.linspace(0.9, 0.5, 6), "high": np.linspace(0.99, 0.7, 6),
                              "kind": ["latent"] * 4 + ["detector"] * 2})
    views = {name.split(" × ")[0]: (rng.normal(size=(100, 2)), labels) for name in LONG}
    ranks = pd.Series(np.linspace(1.5, 5.5, 6), index=LONG + ["ae", "patchcore"])
    diag = pd.DataFrame({"alignment": rng.random(12), "uniformity": -rng.random(12) * 3,
                         "effective_rank": rng.random(12) * 50, "linear_probe_auroc": rng.random(12),
                         "knn_probe_auroc": rng.random(12), "image_auroc": rng.random(12),
                         "hue": ["gaussian", "knn", "flow"] * 4})
    from bench.analysis.diagnostics import DIAGNOSTICS

    forest = pd.DataFrame({"label": [f"cradl_vs_vae · {d} · image_auroc" for d in ("synthetic", "pneumoniamnist")]
                           + ["contrastive_beats_generative [simclr] · breastmnist · pixel_aupro", "untrained · busi · x"],
                           "effect": [0.05, -0.02, 0.1, np.nan], "ci_low": [0.01, -0.05, 0.02, np.nan],
                           "ci_high": [0.09, 0.01, 0.18, np.nan],
                           "verdict": ["supported", "inconclusive", "supported", "not testable"],
                           "direction": ["greater"] * 4, "reason": ["", "", "", "no cells: encoder absent"]})
    return {
        "heatmap": ("heatmap", (means, means.map(lambda v: f"{v:.3f}"), "synthetic — image AUROC")),
        "heatmap_constant": ("heatmap", (constant, constant.map(lambda v: f"{v:.3f}"), "synthetic — image AUROC")),
        "interval_plot": ("interval_plot", (intervals, "synthetic", "image AUROC (95% CI)")),
        "roc_pr_curves": ("roc_pr_curves", (curves, "synthetic (top 4 by mean image AUROC, seed 0)")),
        "score_histograms": ("score_histograms", (curves, "synthetic (top 4 by mean image AUROC, seed 0)")),
        "qualitative_panel": ("qualitative_panel", (images, masks, maps, titles, "synthetic")),
        "latent_views": ("latent_views", (views, "synthetic: t-SNE of test embeddings")),
        "critical_difference_diagram": ("critical_difference_diagram", (ranks, 2.1, "image AUROC: mean rank over 3 datasets")),
        "diagnostic_scatter": ("diagnostic_scatter", (diag, {d: v[0] for d, v in DIAGNOSTICS.items()},
                                                       {d: (0.3, 0.04, 12) for d in DIAGNOSTICS},
                                                       "Encoder diagnostics vs image AUROC (12 latent cells)")),
        "forest_plot": ("forest_plot", (forest, "Claims: effect (A − B) with 95% CI")),
    }


def draw(fn_name: str, args: tuple, stem, capture: list):
    """Call the figure function, keeping the Figure it saves (for the text checks)."""
    from bench.analysis import overlays

    original = figures.save_figure

    def keep(fig, path):
        capture.append(fig)
        return original(fig, path)

    figures.save_figure = overlays.save_figure = keep
    try:
        return getattr(figures, fn_name)(*args, stem)
    finally:
        figures.save_figure = overlays.save_figure = original


@pytest.mark.parametrize("width", [figures.COLUMN_WIDTH_IN, figures.TEXT_WIDTH_IN], ids=["single", "double"])
@pytest.mark.parametrize("name", list(figure_inputs()))
def test_figure_text_never_overlaps_or_leaves_the_canvas(name, width, tmp_path):
    fn_name, args = figure_inputs()[name]
    capture: list = []
    with figures.figure_width(width):
        paths = draw(fn_name, args, tmp_path / name, capture)
    assert [p.suffix for p in paths] == [".png", ".pdf"]
    (fig,) = capture
    assert text_problems(fig) == []
    from PIL import Image

    with Image.open(paths[0]) as png:          # saved at exactly the column width, 300 dpi
        assert png.size[0] == round(width * figures.DPI)
        assert png.info["dpi"][0] == pytest.approx(figures.DPI, abs=0.5)
    assert paths[1].read_bytes()[:5] == b"%PDF-"


def test_the_checker_finds_overlaps_and_missing_labels():
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 2))
    ax = fig.add_subplot()
    ax.set_xticks([0.0, 0.001])
    ax.set_xticklabels(["200000", "400000"])      # two tick labels on top of each other
    ax.text(0.5, 1.5, "outside", transform=ax.transAxes)
    problems = text_problems(fig)
    assert any("overlaps" in p for p in problems)
    assert any("leaves the canvas" in p for p in problems)
    assert any("no label" in p for p in problems)


def test_constant_heatmap_colour_bar_shows_the_value_not_a_made_up_range(tmp_path):
    fn_name, args = figure_inputs()["heatmap_constant"]
    capture: list = []
    draw(fn_name, args, tmp_path / "h", capture)
    colour_bar = capture[0].axes[-1]
    ticks = [t.get_text() for t in colour_bar.yaxis.get_ticklabels() if t.get_text()]
    assert ticks == ["1.000"]


def test_wrap_label_breaks_only_between_words_and_never_inside_a_number():
    from bench.analysis.figure_style import wrap_label

    text = "imagenet/tf_efficientnet_lite0 × gaussian (3.10)"
    wrapped = wrap_label(text, 20, 4)
    assert "".join(wrapped.split()) == "".join(text.split())      # nothing lost, only line breaks added
    assert all(len(line) <= 20 for line in wrapped.splitlines())
    assert "(3.10)" in wrapped.splitlines()[-1]
    assert wrap_label("short", 20) == "short"
    assert wrap_label("a_b_c_d_e_f_g_h", 4, 2).endswith("…")


def test_pdf_embeds_a_complete_truetype_subset_without_layout_tables(tmp_path):
    """The PDF's fonts are Type 42 subsets a reader can draw (glyph outlines, metrics, cmap), minus the
    OpenType layout tables that ``lean_font_subsets`` drops to make saving fast; the subsetter's
    defaults are restored afterwards."""
    import io
    import re
    import zlib

    from fontTools import subset
    from fontTools.ttLib import TTFont

    import matplotlib as mpl

    from bench.analysis.figure_style import LAYOUT_TABLES, PAPER_STYLE, new_figure, save_figure

    defaults = list(subset.Options._drop_tables_default)
    with mpl.rc_context(PAPER_STYLE):
        fig = new_figure(1.5)
        ax = fig.add_subplot()
        ax.plot([0, 1], [0, 1], label="ROC (AUROC 0.91)")
        ax.set_xlabel("false-positive rate")
        ax.set_ylabel("true-positive rate")
        ax.legend()
        _, pdf = save_figure(fig, tmp_path / "fig")
    data = pdf.read_bytes()
    assert b"/FontFile2" in data and b"/FontType /Type3" not in data
    fonts = []
    for match in re.finditer(rb"/Length1 \d+.*?stream\r?\n(.*?)endstream", data, re.S):
        raw = match.group(1)
        try:
            fonts.append(TTFont(io.BytesIO(zlib.decompress(raw))))
        except zlib.error:
            fonts.append(TTFont(io.BytesIO(raw)))
    assert fonts, "no embedded TrueType font stream found"
    for font in fonts:
        assert {"glyf", "loca", "hmtx", "cmap", "head"} <= set(font.keys())
        assert not set(LAYOUT_TABLES) & set(font.keys())
    assert subset.Options._drop_tables_default == defaults
