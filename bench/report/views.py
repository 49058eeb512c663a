"""Part B views: ROC/PR curves, score histograms, qualitative panels, t-SNE views and the
representation diagnostics (:mod:`bench.analysis.diagnostics`), plus the order Part B is built in."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from bench.analysis import stats
from bench.metrics import metric_label, metric_names
from bench.report.frames import LATENT, _finite, _natural, _seed_order, _slug
from bench.report.tables import Cell, Table, _cells_frame


class ViewParts:
    """Figure and diagnostics methods of :class:`bench.report.builder.ReportBuilder`."""

    # -- Part B: figures per dataset ----------------------------------------------------------
    def curve_figures(self, dataset: str) -> None:
        chosen = self.ranked_labels(dataset, "image_auroc")[:self.TOP_K]
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
        from bench.analysis import figures

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
            candidate = np.asarray(arrays["panel_maps"], dtype=np.float32)[:self.MAX_PANEL_CASES]
            if any(np.array_equal(candidate, shown) for shown in maps.values()):
                continue  # e.g. reconstruction maps do not depend on the head: show them once
            maps[lab] = candidate
            if len(maps) == self.TOP_K:
                break
        if panel is None:
            return
        from bench.analysis import figures

        n = min(len(panel["panel_images"]), self.MAX_PANEL_CASES)
        index = panel.get("panel_index", np.arange(n))[:n]
        titles = [f"case-{int(i)}" for i in index]
        ref = self.first_ok_cell(dataset, next(iter(maps)), ("test_labels",))
        if ref is not None:                  # columns named by file name or case id (test_ids, issue 24)
            ref_arrays = self.arrays(ref["cell_id"])
            test_labels = ref_arrays["test_labels"]
            ids = ref_arrays.get("test_ids")
            ids = ids if ids is not None and len(ids) == len(test_labels) else [f"case-{i}" for i in
                                                                                range(len(test_labels))]
            titles = [f"{ids[int(i)]}\n{'anom.' if test_labels[int(i)] else 'norm.'}" if int(i) < len(test_labels)
                      else f"case-{int(i)}" for i in index]
        masks = panel.get("panel_masks")
        masks = masks[:n] if masks is not None and np.size(masks) else None
        self.add(dataset, f"{dataset}: qualitative panel (cases chosen by the runner's rule; the "
                          f"{len(maps)} best methods by {metric_label(rank_metric)} with distinct maps)",
                 figures.qualitative_panel(panel["panel_images"][:n], masks, maps, titles, f"{dataset}",
                                           self.out_dir / f"figures/{_slug(dataset)}/qualitative"), figure=True)

    def unless_degenerate(self, what: str, fn, *args):
        """``fn(*args)``, or None with a remark when the embedding is degenerate (non-finite or
        constant): such input never reaches t-SNE or the probes, whose native code can crash on it."""
        from bench.analysis.diagnostics import DegenerateEmbedding

        try:
            return fn(*args)
        except DegenerateEmbedding as why:
            self.remarks.append(f"{what} skipped: {why}")
            return None

    def resolve_cache(self, path) -> Path | None:
        if not path or not isinstance(path, str):
            return None
        p = Path(path)
        for candidate in ([p] if p.is_absolute() else [self.run_dir / p, Path.cwd() / p]):
            if (candidate / "embeddings.npz").exists():
                return candidate
        return None

    def tsne_sources(self, dataset: str) -> list[tuple[str, int, Path]]:
        """(encoder, seed, embeddings folder) the dataset's t-SNE views are drawn from: per encoder,
        its first seed whose embeddings are on disk."""
        sub = self.ok[(self.ok["dataset"] == dataset) & (self.ok["kind"] == LATENT)]
        sources = []
        for encoder, group in sub.groupby("encoder", sort=True):
            for _, row in group.sort_values(["seed", "cell_id"], key=_natural).iterrows():
                path = self.resolve_cache(row["encoder_cache"])
                if path is not None:
                    sources.append((str(encoder), row["seed"], path))
                    break
        return sources

    def latent_image_entries(self) -> pd.DataFrame:
        """One entry per (embedding, head), whatever map kinds the cells made: what the diagnostics
        are computed on and plotted against."""
        return self.ok[(self.ok["kind"] == LATENT) & (self.ok["level"] == "image")]

    def diagnostics_sources(self) -> list[Path]:
        """Embeddings folders of the latent cells, once each (what the diagnostics are computed on)."""
        paths = map(self.resolve_cache, self.latent_image_entries()["encoder_cache"])
        return list(dict.fromkeys(p for p in paths if p is not None))

    def latent_view_figure(self, dataset: str, cache) -> None:
        views, seeds = {}, set()
        for encoder, seed, path in self.tsne_sources(dataset):
            view = self.unless_degenerate(f"{dataset} · {encoder}: t-SNE", cache.tsne, path)
            if view is not None:
                views[encoder] = view
                seeds.add(seed)
        if not views:
            return
        from bench.analysis import figures

        seed_text = ", ".join(str(s) for s in sorted(seeds, key=_seed_order))
        self.add(dataset, f"{dataset}: latent space per encoder (t-SNE of test embeddings, seed {seed_text})",
                 figures.latent_views(views, f"{dataset}: t-SNE of test embeddings",
                                      self.out_dir / f"figures/{_slug(dataset)}/latent_tsne"), figure=True)

    # -- Part B: representation diagnostics ---------------------------------------------------
    def collect_diagnostics(self, cache) -> tuple[dict[str, dict], pd.DataFrame]:
        """Diagnostics per encoder embedding (named "dataset · encoder · seed") and one row per
        latent cell pairing its encoder's diagnostics with its image AUROC."""
        from bench.analysis.diagnostics import DIAGNOSTICS

        per_cache: dict[Path, dict | None] = {}
        named, rows = {}, []
        for _, row in self.latent_image_entries().iterrows():
            path = self.resolve_cache(row["encoder_cache"])
            if path is None:
                continue
            if path not in per_cache:
                per_cache[path] = self.attempt(f"diagnostics of {path}", self.unless_degenerate,
                                               f"{row['dataset']} · {row['encoder']} · seed {row['seed']}: diagnostics",
                                               cache.diagnostics, path)
                if per_cache[path] is not None:
                    named[f"{row['dataset']} · {row['encoder']} · seed {row['seed']}"] = per_cache[path]
            values = per_cache[path]
            if values is not None:
                rows.append({**{k: values.get(k) for k in DIAGNOSTICS}, "dataset": row["dataset"],
                             "hue": str(row["head"]), "image_auroc": row["image_auroc"]})
        return dict(sorted(named.items())), pd.DataFrame(rows)

    def diagnostics_outputs(self, cache) -> None:
        from bench.analysis import figures
        from bench.analysis.diagnostics import DIAGNOSTICS

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
        if len(named) < 3:
            # Spearman's rho needs three encoder embeddings; below that the scatter shows no relation
            # and drawing it is a good part of a small report's time (issue 24 item 10)
            return
        self.add(section, "Each diagnostic vs image AUROC over all latent cells (* uses test labels)",
                 figures.diagnostic_scatter(frame, {d: v[0] for d, v in DIAGNOSTICS.items()}, pooled,
                                            f"Encoder diagnostics vs image AUROC ({len(frame)} latent cells)",
                                            self.out_dir / "figures/diagnostics_vs_auroc"),
                 figure=True, headline=True)

    def part_b(self) -> None:
        from bench.analysis.diagnostics import DiagnosticsCache

        cache = DiagnosticsCache(self.out_dir / ".cache" / "diagnostics", seed=self.seed, tsne_points=self.tsne_points)
        try:
            self.attempt("background diagnostics", lambda: cache.prefetch(
                [p for dataset in self.datasets for _, _, p in self.tsne_sources(dataset)], self.diagnostics_sources()))
            self.part_b_parts(cache)
        finally:
            cache.close()

    def part_b_parts(self, cache) -> None:
        for dataset in self.datasets:
            self.attempt(f"bootstrap for {dataset}", self.bootstrap_dataset, dataset)
            self.attempt(f"CI table for {dataset}", self.ci_table_and_plots, dataset)
            self.attempt(f"paired comparisons for {dataset}", self.paired_tables, dataset)
            self.attempt(f"detection vs localization for {dataset}", self.detection_vs_localization, dataset)
            self.attempt(f"ROC/PR and histograms for {dataset}", self.curve_figures, dataset)
            self.attempt(f"qualitative panel for {dataset}", self.qualitative_figure, dataset)
            self.attempt(f"latent views for {dataset}", self.latent_view_figure, dataset, cache)
        for metric in metric_names():
            self.attempt(f"ranks for {metric}", self.rank_outputs, metric)
            self.attempt(f"Wilcoxon table for {metric}", self.wilcoxon_table, metric)
        self.attempt("axis sensitivity (how much each swept setting moves the answer)", self.sensitivity_tables)
        self.attempt("representation diagnostics", self.diagnostics_outputs, cache)
