"""The report builds from a tiny fake run: files, index links, emphasis, failed cells, rebuilds."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from bench.analysis import stats
from bench.metrics import evaluate
from bench.report import Cell, Table, build_report, emphasis_marks, render_latex, render_markdown
from bench.run.store import ResultStore

ENCODERS = {"enc_good": 2.0, "enc_mid": 1.0, "enc_bad": 0.3}   # signal strength of each encoder
HEADS = {"gauss": 0.4, "knn": 0.0}                                # extra signal added by each head
DATASETS = {"synth_masks": True, "synth_plain": False}           # whether the dataset has masks
N_NORMAL, N_ANOMALOUS, SIDE = 30, 30, 16
PANEL = np.array([0, 1, N_NORMAL, N_NORMAL + 1])


def make_fake_run(root: Path, datasets: dict = DATASETS) -> Path:
    """2 datasets x 3 encoders x 2 heads x 2 seeds, one detector (2 seeds), one failed detector cell.

    Maps are stored as float32, as the runner does; metrics come from bench.metrics.
    """
    run_dir = root / "tiny_run"
    store = ResultStore(run_dir)
    labels = np.r_[np.zeros(N_NORMAL, int), np.ones(N_ANOMALOUS, int)]
    groups = np.arange(labels.size) // 2          # "patients" of two images, same label
    masks = np.zeros((labels.size, SIDE, SIDE), np.uint8)
    masks[labels == 1, 4:9, 5:10] = 1
    images = (np.random.default_rng(7).random((labels.size, 1, SIDE, SIDE)) * 255).astype(np.uint8)

    def write(dataset, seed, kind, signal, name, encoder=None, head=None, cache=None, localization="gradient"):
        # as in the runner, cells that differ only in their map kind share their scores
        rng = np.random.default_rng(stats.stable_seed(dataset, seed, name.split(" [")[0]))
        scores = rng.normal(size=labels.size) + signal * labels
        rng = np.random.default_rng(stats.stable_seed(dataset, seed, name))
        arrays = {"test_scores": scores, "test_labels": labels, "test_groups": groups,
                  "val_scores": rng.normal(size=20), "val_labels": np.r_[np.zeros(10, int), np.ones(10, int)]}
        if datasets[dataset]:
            maps = 3.0 * (rng.normal(size=masks.shape) + signal * masks)
            val_maps = 3.0 * (rng.normal(size=masks.shape) + signal * masks)
            metrics = evaluate(scores, labels, maps, masks, val_maps=val_maps, val_masks=masks)
            stored = maps.astype(np.float32)
            arrays.update(test_maps=stored, test_masks=masks, panel_index=PANEL,
                          panel_images=images[PANEL], panel_masks=masks[PANEL], panel_maps=stored[PANEL])
        else:
            metrics = evaluate(scores, labels)
            arrays.update(panel_index=PANEL, panel_images=images[PANEL])
        cell_id = f"{dataset}-{name.replace(' × ', '-').replace(' ', '')}-s{seed}"
        record = {"cell_id": cell_id, "run": "tiny_run", "status": "ok", "error": None, "dataset": dataset,
                  "kind": kind, "method": name, "encoder": encoder, "head": head,
                  "localization": localization if kind == "latent" else None,
                  "detector": None if kind == "latent" else name, "setting": "uad", "seed": seed,
                  "metrics": metrics, "config": {"dataset.image_size": SIDE, "encoder.epochs": 1},
                  "map_head_dependent": localization != "reconstruction" if kind == "latent" else None,
                  "timings": {"total_s": 0.5}, "encoder_cache": cache, "versions": {"torch": "x"}}
        store.write(record, arrays)

    for dataset in datasets:
        for seed in (0, 1):
            for encoder, quality in ENCODERS.items():
                cache = root / "cache" / f"{dataset}-{encoder}-{seed}"
                cache.mkdir(parents=True)
                rng = np.random.default_rng(stats.stable_seed("emb", dataset, encoder, seed))
                shift = np.zeros(8)
                shift[:2] = quality
                np.savez(cache / "embeddings.npz", train=rng.normal(size=(40, 8)).astype(np.float32),
                         val=rng.normal(size=(20, 8)).astype(np.float32),
                         test=(rng.normal(size=(labels.size, 8)) + labels[:, None] * shift).astype(np.float32),
                         val_labels=np.r_[np.zeros(10, int), np.ones(10, int)], test_labels=labels)
                for head, bonus in HEADS.items():
                    write(dataset, seed, "latent", quality + bonus, f"{encoder} × {head}", encoder, head, str(cache))
                if datasets[dataset] and encoder == "enc_mid":  # a second map kind, as the runner does for VAEs
                    for head, bonus in HEADS.items():
                        write(dataset, seed, "latent", quality + bonus, f"{encoder} × {head} [reconstruction]",
                              encoder, head, str(cache), localization="reconstruction")
            write(dataset, seed, "detector", 0.8, "ae_baseline")
    if "synth_masks" in datasets:
        store.write({"cell_id": "synth_masks-flaky-s0", "run": "tiny_run", "status": "failed",
                     "error": "RuntimeError: loss diverged\nmore", "traceback": "Traceback ...",
                     "dataset": "synth_masks", "kind": "detector", "method": "flaky", "detector": "flaky",
                     "setting": "uad", "seed": 0, "metrics": {}, "config": {}, "timings": {}, "encoder_cache": None})
    return run_dir


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory) -> Path:
    return make_fake_run(tmp_path_factory.mktemp("fake"))


@pytest.fixture(scope="module")
def full_report(fake_run, tmp_path_factory) -> Path:
    """One full build shared by the tests that only read it (the build is the slow part)."""
    return build_report(fake_run, tmp_path_factory.mktemp("out") / "report", n_resamples=200)


def _links(readme: Path) -> list[str]:
    return re.findall(r"\]\(([^)]+)\)", readme.read_text())


def _markdown_rows(path: Path) -> dict[str, list[str]]:
    rows = {}
    for line in path.read_text().splitlines():
        if line.startswith("| ") and not line.startswith("| method"):
            parts = [p.strip() for p in line.strip("|").split(" | ")]
            rows[parts[0]] = parts[1:]
    return rows


def _header(path: Path) -> list[str]:
    line = next(line for line in path.read_text().splitlines() if line.startswith("| "))
    return [p.strip() for p in line.strip("|").split(" | ")]


def test_part_a_tables_heatmaps_and_index(full_report):
    out = full_report
    readme = out / "README.md"
    links = _links(readme)
    assert links and all((out / link).is_file() for link in links), "every README link must resolve"
    for dataset in DATASETS:
        for suffix in (".md", ".tex", ".csv"):
            assert (out / "tables" / dataset / f"all_methods{suffix}").is_file()
            assert (out / "tables" / dataset / f"matrix_image_auroc{suffix}").is_file()
        for suffix in (".png", ".pdf"):
            assert (out / "figures" / dataset / f"heatmap_image_auroc{suffix}").is_file()
    # pixel metrics only where the dataset has masks (null metrics are left out)
    assert (out / "figures/synth_masks/heatmap_pixel_aupro.png").is_file()
    assert not (out / "figures/synth_plain/heatmap_pixel_aupro.png").exists()
    assert "pixel" not in " ".join(_header(out / "tables/synth_plain/all_methods.md"))

    summary = __import__("pandas").read_csv(out / "summary.csv")
    assert len(summary) == 2 * 3 * 2 * 2 + 2 * 2 + 2 * 2 + 1
    matrix = _markdown_rows(out / "tables/synth_masks/matrix_pixel_aupro.md")
    # reconstruction maps do not depend on the head: not a row of the encoder x head matrix
    assert {"enc_good", "enc_mid", "enc_bad"} == set(matrix) - {"encoder \\ head"}
    image_matrix = _markdown_rows(out / "tables/synth_masks/matrix_image_auroc.md")
    assert {"enc_good", "enc_mid", "enc_bad"} == set(image_matrix) - {"encoder \\ head"}
    assert {"config.encoder.epochs", "time.total_s", "image_auroc", "status", "label"} <= set(summary.columns)
    assert (summary["status"] == "failed").sum() == 1

    rows = _markdown_rows(out / "tables/synth_masks/all_methods.md")
    header = _header(out / "tables/synth_masks/all_methods.md")
    # each encoder x head once; the head-independent reconstruction map once, with pixel metrics only
    assert not [name for name in rows if name.endswith("[reconstruction]") and "×" in name]
    recon = rows["enc_mid [reconstruction]"]
    assert recon[header.index("image AUROC") - 1] == "–" and recon[header.index("pixel AUPRO@0.3") - 1] != "–"
    auroc = header.index("image AUROC") - 1
    bold = [name for name, cells in rows.items() if cells[auroc].startswith("**")]
    assert bold == ["enc_good × gauss"], "bold must mark the true best"
    second = [name for name, cells in rows.items() if cells[auroc].startswith("<u>")]
    assert second == ["enc_good × knn"]
    assert all(c == "failed" for c in rows["flaky"]), "a cell whose seeds all failed shows as failed"
    assert "failed" in readme.read_text() and "loss diverged" in readme.read_text()
    # FPR95 is lower-is-better: its bold entry must be the minimum mean
    fpr_col = header.index("image FPR@95TPR") - 1
    means = {n: float(c[fpr_col].strip("*<u>/").split(" ")[0]) for n, c in rows.items()
             if c[fpr_col] not in ("failed", "–")}
    bold_fpr = [n for n, c in rows.items() if c[fpr_col].startswith("**")]
    assert bold_fpr and all(means[n] == min(means.values()) for n in bold_fpr)

    tex = (out / "tables/synth_masks/matrix_image_auroc.tex").read_text()
    assert r"\toprule" in tex and r"\bottomrule" in tex and r"\textbf{" in tex
    assert "enc\\_good" in tex and "enc_good" not in tex.replace("enc\\_good", "")
    matrix_md = out / "tables/synth_masks/matrix_image_auroc.md"
    assert _markdown_rows(matrix_md)["enc_good"][_header(matrix_md).index("gauss") - 1].startswith("**")


def test_part_b_statistics_figures_and_diagnostics(full_report):
    out = full_report
    readme = (out / "README.md").read_text()
    assert "could not build" not in readme, readme
    links = _links(out / "README.md")
    assert all((out / link).is_file() for link in links), "every README link must resolve"
    expected = [
        "tables/synth_masks/ci.md", "tables/synth_masks/paired_image_auroc.md", "tables/synth_masks/paired_all.csv",
        "tables/synth_masks/detection_vs_localization.tex", "tables/ranks_image_auroc.md",
        "tables/wilcoxon_image_auroc.csv", "tables/diagnostics.md", "tables/diagnostics_vs_auroc.md",
        "figures/cd_image_auroc.pdf", "figures/synth_masks/ci_image_auroc.png", "figures/synth_masks/roc_pr.png",
        "figures/synth_masks/score_histograms.pdf", "figures/synth_masks/qualitative.png",
        "figures/synth_plain/latent_tsne.png", "figures/diagnostics_vs_auroc.png",
    ]
    for rel in expected:
        assert (out / rel).is_file(), rel
        assert rel in links, f"{rel} is not linked from the README index"
    assert not (out / "tables/synth_plain/detection_vs_localization.md").exists(), "no pixel metrics there"

    # CI of the best method brackets its seed mean and excludes chance
    ci_rows = _markdown_rows(out / "tables/synth_masks/ci.md")
    best = ci_rows["enc_good × gauss"][0]
    mean, low, high = map(float, re.findall(r"\d\.\d{3}", best)[:3])
    assert low <= mean <= high and low > 0.6
    # the rank table puts the strongest method first with mean rank 1
    ranks = (out / "tables/ranks_image_auroc.md").read_text().splitlines()
    first_row = next(line for line in ranks if line.startswith("| enc_good × gauss"))
    assert first_row.rstrip(" |").endswith("1.00**")
    assert "30 patients/groups resampled" in (out / "tables/synth_masks/ci.md").read_text()
    # the paired test finds the strongest method better than the weakest
    paired = _markdown_rows(out / "tables/synth_masks/paired_image_auroc.md")
    assert float(paired["enc_bad × gauss"][1]) < 0.05
    diag = (out / "tables/diagnostics.md").read_text()
    assert "TEST labels" in diag
    assert "n=24" in (out / "tables/diagnostics_vs_auroc.md").read_text(), "one point per embedding x head"
    assert "Remarks" not in readme, "bootstrap metrics must agree with the stored ones"


def test_rebuild_removes_what_the_last_build_wrote(full_report, tmp_path):
    """Rebuilding (here Part A of a smaller run) into an old report leaves no stale file behind."""
    out = tmp_path / "copy"
    shutil.copytree(full_report, out)
    (out / "my_notes.txt").write_text("keep me")
    small = make_fake_run(tmp_path / "small", {"synth_plain": False})
    assert build_report(small, out, full=False) == out
    assert (out / "my_notes.txt").read_text() == "keep me", "files the report did not write stay"
    assert not (out / "tables/synth_masks").exists(), "a dataset no longer in the run leaves nothing"
    assert not (out / "tables/synth_plain/ci.md").exists()
    assert not (out / "figures/cd_image_auroc.pdf").exists()
    assert (out / "tables/synth_plain/all_methods.md").is_file()
    assert (out / "figures/synth_plain/heatmap_image_auroc.pdf").is_file()
    assert all((out / link).is_file() for link in _links(out / "README.md"))
    assert "How the statistics are made" not in (out / "README.md").read_text()


def test_default_output_folder_is_reports_run_name(tmp_path, monkeypatch):
    run = make_fake_run(tmp_path / "small", {"synth_plain": False})
    monkeypatch.chdir(tmp_path)
    out = build_report(run, full=False)
    assert out == Path("reports") / "tiny_run" and (tmp_path / "reports/tiny_run/README.md").is_file()


def test_not_a_run_directory_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        build_report(tmp_path / "nowhere")


def test_partly_failed_cell_gets_a_dagger_and_modal_n():
    cells = __import__("pandas").DataFrame(
        {"AUROC": [Cell(0.9, 0.01, 2, 1), Cell(0.8, 0.02, 3, 0), Cell(0.7, 0.03, 3, 0)]},
        index=["a", "b", "c"], dtype=object)
    table = Table("t", "demo", cells, {"AUROC": False})
    md = render_markdown(table)
    assert "**0.900 ± 0.010** (n=2)†" in md and "<u>0.800 ± 0.020</u>" in md
    assert "n = 3 seed(s)" in md and "† some seeds" in md
    assert r"$^\dagger$" in render_latex(table)


def test_emphasis_respects_lower_is_better_and_ties():
    pd = __import__("pandas")
    cells = pd.DataFrame({"fpr": [Cell(0.2), Cell(0.1), Cell(0.1), Cell(0.3)],
                          "auc": [Cell(0.7), Cell(0.9), Cell(float("nan")), Cell(0.8)]},
                         index=list("abcd"), dtype=object)
    marks = emphasis_marks(Table("t", "demo", cells, {"fpr": True, "auc": False}))
    assert list(marks["fpr"]) == ["second", "best", "best", ""]
    assert list(marks["auc"]) == ["", "best", "", "second"]


def test_a_run_of_only_failed_cells_still_reports(tmp_path):
    store = ResultStore(tmp_path / "broken_run")
    store.write({"cell_id": "c1", "status": "failed", "error": "ValueError: bad config", "seed": 0})
    out = build_report(tmp_path / "broken_run", tmp_path / "report", n_resamples=50)
    readme = (out / "README.md").read_text()
    assert "could not build" not in readme and "bad config" in readme
    assert "failed" in (out / "tables/unknown/all_methods.md").read_text()


def _small_run(tmp_path: Path) -> Path:
    return make_fake_run(tmp_path / "small", {"synth_plain": False})


def test_unreadable_record_is_named_and_skip_bad_lists_it(tmp_path):
    from bench.cli import main
    from bench.run.store import BadRecordError

    run = _small_run(tmp_path)
    (run / "records" / "truncated.json").write_text('{"cell_id": "truncated", "status": "o')
    with pytest.raises(BadRecordError, match="truncated.json"):
        build_report(run, tmp_path / "r1", full=False)
    assert main(["report", str(run), "--out", str(tmp_path / "r2"), "--fast"]) == 2
    assert main(["report", str(run), "--out", str(tmp_path / "r3"), "--fast", "--skip-bad"]) == 0
    readme = (tmp_path / "r3" / "README.md").read_text()
    assert "Records skipped" in readme and "truncated.json" in readme


def test_strict_reraises_what_the_readme_would_list(tmp_path, monkeypatch):
    from bench.report.builder import ReportBuilder

    run = _small_run(tmp_path)

    def broken(self, dataset):
        raise RuntimeError("table exploded")

    monkeypatch.setattr(ReportBuilder, "all_methods_table", broken)
    out = build_report(run, tmp_path / "lenient", full=False)
    assert "could not build all-methods table" in (out / "README.md").read_text()
    with pytest.raises(RuntimeError, match="table exploded"):
        build_report(run, tmp_path / "strict", full=False, strict=True)


def test_degenerate_cells_are_marked_and_unavailable_metrics_say_why(tmp_path):
    run = make_fake_run(tmp_path / "m", {"synth_masks": True})
    store = ResultStore(run)
    for record in store.records():
        if record.get("method") == "enc_bad × knn" and record["seed"] == 0:
            record.update(status="degenerate", error="embeddings collapsed to 2 distinct values")
        if record.get("kind") == "latent":
            record["metrics"].pop("pixel_dice", None)
            record["metrics_unavailable"] = {"pixel_dice": "no validation split"}
        store.write(record)
    out = build_report(run, tmp_path / "report", full=False)
    rows = _markdown_rows(out / "tables/synth_masks/all_methods.md")
    header = _header(out / "tables/synth_masks/all_methods.md")
    assert rows["enc_bad × knn"][header.index("image AUROC") - 1].endswith("‡")
    assert rows["enc_good × gauss"][header.index("pixel Dice (val. threshold)") - 1] == "n/a (no validation split)"
    assert rows["ae_baseline"][header.index("pixel Dice (val. threshold)") - 1] != "n/a (no validation split)"
    text = (out / "tables/synth_masks/all_methods.md").read_text()
    assert "‡ degenerate" in text
    readme = (out / "README.md").read_text()
    assert "Degenerate cells" in readme and "collapsed to 2 distinct values" in readme


def test_constant_embeddings_never_reach_tsne(tmp_path):
    from bench.analysis.diagnostics import DegenerateEmbedding, embedding_diagnostics, tsne_view

    constant = np.ones((40, 8), np.float32)
    with pytest.raises(DegenerateEmbedding, match="constant"):
        tsne_view(constant, np.r_[np.zeros(20), np.ones(20)])
    with pytest.raises(DegenerateEmbedding, match="non-finite"):
        tsne_view(np.full((40, 8), np.nan), np.r_[np.zeros(20), np.ones(20)])
    with pytest.raises(DegenerateEmbedding, match="constant"):
        embedding_diagnostics({"train": constant, "test": constant, "test_labels": np.r_[np.zeros(20), np.ones(20)]})
    # in a report the degenerate embedding becomes a remark; the rest of the report is built
    run = make_fake_run(tmp_path / "d", {"synth_plain": False})
    cache = next((tmp_path / "d" / "cache").iterdir())
    np.savez(cache / "embeddings.npz", train=np.zeros((40, 8), np.float32), val=np.zeros((20, 8), np.float32),
             test=np.zeros((60, 8), np.float32), val_labels=np.r_[np.zeros(10), np.ones(10)].astype(int),
             test_labels=np.r_[np.zeros(30), np.ones(30)].astype(int))
    out = build_report(run, tmp_path / "report", n_resamples=20, strict=True)
    readme = (out / "README.md").read_text()
    assert "skipped: test embeddings are constant" in readme or "skipped: training embeddings are constant" in readme


def test_rebuilt_wilcoxon_tables_come_from_the_content_cache_and_match(fake_run, full_report, tmp_path,
                                                                      monkeypatch):
    """A rebuild reads each Wilcoxon table's tests from ``.cache/wilcoxon`` (keyed by the pairs) and
    writes the same table; without the cache entries the tests run again and agree."""
    from bench.analysis import stats

    out = tmp_path / "copy"
    shutil.copytree(full_report, out)
    assert sorted((out / ".cache" / "wilcoxon").glob("*.json")), "the first build stored its Wilcoxon results"
    before = (out / "tables/wilcoxon_image_auroc.csv").read_text()
    real = stats.wilcoxon_signed_rank
    calls = []
    monkeypatch.setattr(stats, "wilcoxon_signed_rank", lambda *a: calls.append(a) or (0.0, 1.0, 0))
    build_report(fake_run, out, n_resamples=200)
    assert not calls, "an unchanged table is not tested again"
    assert (out / "tables/wilcoxon_image_auroc.csv").read_text() == before
    shutil.rmtree(out / ".cache" / "wilcoxon")
    monkeypatch.setattr(stats, "wilcoxon_signed_rank", lambda *a: calls.append(a) or real(*a))
    build_report(fake_run, out, n_resamples=200)
    assert calls and (out / "tables/wilcoxon_image_auroc.csv").read_text() == before
