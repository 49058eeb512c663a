"""Selection outputs: ``selection.md/.csv/.tex``, the criterion-vs-truth scatter, the generator
examples figure, and the advice for a user's own unlabelled dataset (``bench select --dataset``)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from bench.selection.grade import BASELINES, TARGETS, config_means
from bench.selection.criteria import criterion_values

HEADER = ("Label-free selection, graded against the test labels: per dataset and target, the configuration each "
          "criterion selects without a test label, Kendall's tau between the criterion and the true test ranking "
          "(mean over seeds per configuration), the regret (best true metric − the selected one's), whether the "
          "selection is in the true top 3 (its margin over the configuration ranked third among the others), and "
          "its gain over the two baselines (its true metric − a uniform pick's expected one; − the prior's "
          "pick's), each with its 95 % interval over test cases (by group) and seeds from the verdicts' inference: "
          "a criterion earns its keep where its gain's interval lies above zero. "
          "`random`: exact expectation of a uniform pick; `prior`: best mean rank on the run's other datasets.")


def _f(value, fmt: str = ".3f") -> str:
    return format(value, fmt) if isinstance(value, (int, float, np.floating)) and math.isfinite(value) else "–"


def _regret(row, key: str = "regret", fmt: str = ".3f") -> str:
    text = _f(row.get(key), fmt)
    low = row.get(f"{key}_low")
    if isinstance(low, float) and math.isfinite(low):
        text += f" [{_f(low, fmt)}, {_f(row[f'{key}_high'], fmt)}]"
    return text


def _top3(row) -> str:
    """yes/no, and where it has one, the margin over the configuration ranked third among the others
    with its interval (above zero: in the top 3 beyond the test set's and the seeds' noise)."""
    value = row["top3"]
    if isinstance(value, (bool, np.bool_)):
        text = "yes" if value else "no"
        margin = row.get("top3_margin")
        if isinstance(margin, float) and math.isfinite(margin):
            text += f", {_regret(row, 'top3_margin', '+.3f')}"
        return text
    return _f(value, ".2f") if isinstance(value, float) else "–"


def render_markdown(table: pd.DataFrame, title: str = "Label-free selection") -> str:
    lines = [f"## {title}", "", HEADER, ""]
    if table.empty:
        return "\n".join(lines + ["No scored cells with a true metric: nothing to grade.", ""])
    for (dataset, target), part in table.groupby(["dataset", "target"], sort=True):
        metric = part["metric"].iloc[0]
        lines += [f"### {dataset} — {target} ({metric}; best: {part['best'].iloc[0]} = "
                  f"{_f(part['best_metric'].iloc[0])}; {int(part['n_configs'].iloc[0])} configurations, "
                  f"{int(part['n_seeds'].iloc[0])} seed(s))", "",
                  "| criterion | selected | its metric | tau [95% CI] | regret [95% CI] | top 3 (margin [95% CI]) | "
                  "vs random [95% CI] | "
                  "vs prior [95% CI] | note |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for _, r in part.iterrows():
            lines.append(f"| {r['criterion']} | {r['selected'] if isinstance(r['selected'], str) else '–'} | "
                         f"{_f(r['selected_metric'])} | {_regret(r, 'tau', '+.2f')} | {_regret(r)} | {_top3(r)} | "
                         f"{_regret(r, 'vs_random', '+.3f')} | {_regret(r, 'vs_prior', '+.3f')} | {r['note'] or ''} |")
        lines.append("")
    lines += ["### Over datasets", "", summary_markdown(table), ""]
    return "\n".join(lines)


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean tau, mean regret and top-3 rate per target and criterion over the datasets, lowest regret first."""
    if table.empty:
        return pd.DataFrame()
    t = table.assign(top3=pd.to_numeric(table["top3"], errors="coerce"),
                     beats_random=pd.to_numeric(table["vs_random_low"], errors="coerce") > 0,
                     beats_prior=pd.to_numeric(table["vs_prior_low"], errors="coerce") > 0,
                     tau_sure=pd.to_numeric(table["tau_low"], errors="coerce") > 0,
                     top3_sure=pd.to_numeric(table["top3_margin_low"], errors="coerce") > 0)
    out = (t.groupby(["target", "criterion"]).agg(datasets=("dataset", "nunique"), tau=("tau", "mean"),
                                                     tau_sure=("tau_sure", "sum"),
                                                     regret=("regret", "mean"), top3=("top3", "mean"),
                                                     top3_sure=("top3_sure", "sum"),
                                                     beats_random=("beats_random", "sum"),
                                                     beats_prior=("beats_prior", "sum"))
           .reset_index().sort_values(["target", "regret"], kind="mergesort"))
    return out


def summary_markdown(table: pd.DataFrame) -> str:
    s = summary(table)
    lines = ["| target | criterion | datasets | mean tau | tau > 0 (CI) | mean regret | top-3 rate | in top 3 (CI) | "
             "beats random (CI > 0) | beats prior (CI > 0) |", "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r.target} | {r.criterion} | {r.datasets} | {_f(r.tau, '+.2f')} | {_sure(r, 'tau_sure')} | "
              f"{_f(r.regret)} | {_f(r.top3, '.2f')} | {_sure(r, 'top3_sure')} | {_sure(r, 'beats_random')} | "
              f"{_sure(r, 'beats_prior', baseline='prior')} |"
              for r in s.itertuples()]
    return "\n".join(lines)


def _sure(r, column: str, baseline: str = "random") -> str:
    """'k of n' datasets where the grade's interval lies above zero ('–' for ``baseline``'s own row: the
    random pick has no interval, the prior is not compared with itself)."""
    return "–" if r.criterion == baseline else f"{int(getattr(r, column))} of {r.datasets}"


def render_latex(table: pd.DataFrame) -> str:
    from bench.report.tables import latex_escape

    rows = [r"\begin{tabular}{llllrrlrr}", r"\toprule",
            r"dataset & target & criterion & selected & $\tau$ & regret [95\% CI] & top 3 & vs random & vs prior \\",
            r"\midrule"]
    for _, r in table.iterrows():
        rows.append(" & ".join(latex_escape(str(x)) for x in (
            r["dataset"], r["target"], r["criterion"], r["selected"] if isinstance(r["selected"], str) else "–",
            _regret(r, "tau", "+.2f"), _regret(r), _top3(r), _regret(r, "vs_random", "+.3f"),
            _regret(r, "vs_prior", "+.3f"))) + r" \\")
    rows += [r"\bottomrule", r"\end{tabular}", ""]
    return "\n".join(rows)


def scatter_figure(table: pd.DataFrame, cells: pd.DataFrame, stem: Path) -> list[Path]:
    """Criterion value (x) vs true metric (y), one point per configuration; rows: criteria, columns:
    dataset x target; the selected configuration ringed; tau in each title."""
    from matplotlib.figure import Figure

    from bench.analysis.figures import PAPER_STYLE, save_figure
    import matplotlib as mpl

    panels = table[~table["criterion"].isin(BASELINES) & table["selected"].notna()]
    if panels.empty:
        return []
    columns = sorted({(d, t) for d, t in zip(panels["dataset"], panels["target"])})
    criteria = sorted(panels["criterion"].unique())
    means = {d: config_means(cells, d) for d, _ in columns}
    values = {d: criterion_values(means[d].drop(columns=list(TARGETS.values()))) for d in means}
    with mpl.rc_context(PAPER_STYLE):
        fig = Figure(figsize=(1.6 * len(columns) + 0.5, 1.35 * len(criteria) + 0.5))
        axes = fig.subplots(len(criteria), len(columns), squeeze=False)
        for i, crit in enumerate(criteria):
            for j, (dataset, target) in enumerate(columns):
                ax = axes[i, j]
                metric = TARGETS[target]
                x = values[dataset].get(crit)
                row = panels[(panels["dataset"] == dataset) & (panels["target"] == target) & (panels["criterion"] == crit)]
                if x is None or row.empty:
                    ax.set_axis_off()
                    continue
                both = pd.concat([x, means[dataset][metric]], axis=1).dropna()
                ax.scatter(both.iloc[:, 0], both.iloc[:, 1], s=6, color="#4477AA")
                chosen = row["selected"].iloc[0]
                if chosen in both.index:
                    ax.scatter([both.loc[chosen].iloc[0]], [both.loc[chosen].iloc[1]], s=30, facecolors="none",
                               edgecolors="#EE6677")
                ax.set_title(f"{dataset}: {metric} (y), τ={_f(row['tau'].iloc[0], '+.2f')}", fontsize=5)
                if j == 0:
                    ax.set_ylabel(crit, fontsize=5)
                ax.tick_params(labelsize=5)
        fig.tight_layout()
        return save_figure(fig, stem)


def write_selection(table: pd.DataFrame, cells: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """``selection.md/.csv/.tex`` and ``figures/selection_scatter.png/.pdf`` in ``out_dir``."""
    from bench.run.store import atomic_write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "selection.md", out / "selection.csv", out / "selection.tex"]
    atomic_write_text(paths[0], render_markdown(table) + "\n", sync=False)
    atomic_write_text(paths[1], table.to_csv(index=False), sync=False)
    atomic_write_text(paths[2], render_latex(table), sync=False)
    (out / "figures").mkdir(exist_ok=True)
    return paths + scatter_figure(table, cells, out / "figures" / "selection_scatter")


def generator_examples(val, stem: Path, generators=None, seed: int = 0, per_generator: int = 1) -> list[Path]:
    """One row per generator: source validation normal, synthetic image, mask (the first case of each)."""
    import matplotlib as mpl
    from matplotlib.figure import Figure

    from bench.analysis.figures import PAPER_STYLE, save_figure
    from datasets.generators import list_generators
    from datasets.generators._synthset import build_set

    names = list(generators or list_generators())
    made = build_set(val, names, per_generator, seed)
    with mpl.rc_context(PAPER_STYLE):
        fig = Figure(figsize=(3.0, 1.0 * len(names) + 0.3))
        axes = fig.subplots(len(names), 3, squeeze=False)
        for i, name in enumerate(names):
            hit = np.flatnonzero(made.generator == name)
            for j, title in enumerate(("validation normal", "synthetic", "mask")):
                ax = axes[i, j]
                ax.set_xticks([])
                ax.set_yticks([])
                if i == 0:
                    ax.set_title(title)
                if j == 0:
                    ax.set_ylabel(name)
                if not len(hit):
                    continue
                k = hit[0]
                image = {0: val.images[made.source[k]], 1: made.images[k]}.get(j)
                if image is not None:
                    shown = image[0] if image.shape[0] == 1 else np.moveaxis(image, 0, -1)
                    ax.imshow(shown, cmap="gray", vmin=0, vmax=255)
                else:
                    ax.imshow(made.masks[k], cmap="gray", vmin=0, vmax=1)
        fig.tight_layout()
        return save_figure(fig, stem)


def advice(table: pd.DataFrame, cells: pd.DataFrame, dataset: str) -> str:
    """For an unlabelled ``dataset``: the configuration each criterion recommends, and which criterion
    the run's labelled datasets favour (lowest mean regret) with its typical regret there."""
    if dataset not in set(cells["dataset"]):
        known = ", ".join(sorted(cells["dataset"].dropna().unique(), key=str))
        raise ValueError(f"dataset '{dataset}' has no scored cells in this run (datasets: {known})")
    means = config_means(cells, dataset)
    values = criterion_values(means.drop(columns=list(TARGETS.values())))
    lines = [f"Recommended configuration on {dataset} per label-free criterion (no label read):"]
    for name, vals in sorted(values.items()):
        vals = vals.dropna()
        if len(vals):
            best = sorted(vals[vals == vals.max()].index)[0]
            lines.append(f"  {name:<32} {best}  (value {vals.max():.4g})")
    evidence = table[(table["dataset"] != dataset) & table["regret"].notna()]
    if evidence.empty:
        lines.append("No labelled dataset besides it in this run: no evidence for which criterion to trust.")
        return "\n".join(lines)
    for target in TARGETS:
        part = evidence[evidence["target"] == target]
        if part.empty:
            continue
        per = part.groupby("criterion")["regret"].agg(["mean", "median", "count"]).sort_values("mean")
        usable = per[per.index.isin(list(values) + list(BASELINES))]
        if usable.empty:
            continue
        name, r = usable.index[0], usable.iloc[0]
        lines.append(f"Labelled evidence ({target}, {int(r['count'])} dataset(s) of this run): '{name}' has the lowest "
                     f"mean regret ({r['mean']:.3f}; median {r['median']:.3f}); random: "
                     f"{per['mean'].get('random', float('nan')):.3f}, prior: {per['mean'].get('prior', float('nan')):.3f}.")
    return "\n".join(lines)
