"""Figures drawn by worker processes (bench.analysis.figure_pool) are the figures this process draws,
a figure that fails in a worker is reported with its files, and the figure cache stores and reuses
what the workers drew."""

from __future__ import annotations

import multiprocessing

import pandas as pd
import pytest

from bench.analysis import figure_pool as fp
from bench.analysis import figures
from bench.analysis.figure_cache import figure_cache
from bench.analysis.figure_style import TEXT_WIDTH_IN, figure_width
from tests.test_figures import figure_inputs

pytestmark = pytest.mark.skipif("forkserver" not in multiprocessing.get_all_start_methods(),
                                reason="no fork server on this platform: figures are always drawn inline")


def _ready_pool(pool) -> None:
    """Wait for the workers (figures asked for before they are up are drawn in this process)."""
    assert pool.ready.wait(120) and pool._executor is not None, "the figure workers did not start"


def _draw_all(folder, workers: int) -> dict[str, bytes]:
    """Every figure of the fixed inputs at two-column width; file name -> bytes."""
    with figure_width(TEXT_WIDTH_IN), fp.figure_pool(workers) as pool:
        if pool is not None:
            _ready_pool(pool)
        paths = [p for name, (fn_name, args) in figure_inputs().items()
                 for p in getattr(figures, fn_name)(*args, folder / name)]
        if pool is not None:
            assert not pool.finish()
    return {p.name: p.read_bytes() for p in paths}


def test_workers_draw_the_same_files_as_this_process(tmp_path):
    inline = _draw_all(tmp_path / "inline", 0)
    pooled = _draw_all(tmp_path / "pooled", 2)
    assert sorted(pooled) == sorted(inline) and len(inline) == 2 * len(figure_inputs())
    different = [name for name in inline if pooled[name] != inline[name]]
    assert not different, f"drawn differently by a worker (width, style or fonts not carried): {different}"


def test_a_figure_failing_in_a_worker_is_reported_with_its_files(tmp_path):
    fn_name, args = figure_inputs()["roc_pr_curves"]
    with fp.figure_pool(2) as pool:
        _ready_pool(pool)
        broken = figures.interval_plot(pd.DataFrame({"label": ["a"]}), "t", "x", tmp_path / "broken")
        fine = getattr(figures, fn_name)(*args, tmp_path / "fine")
        failures = pool.finish()
    assert [f.paths for f in failures] == [broken]
    assert isinstance(failures[0].error, KeyError) and failures[0].name.endswith("interval_plot")
    assert all(p.is_file() for p in fine) and not any(p.exists() for p in broken)


def test_without_a_worker_the_figure_is_drawn_here(tmp_path, monkeypatch):
    """A pool whose workers cannot start (a sandbox without fork server) still yields every figure,
    drawn in this process with its errors raised as without a pool."""
    def no_workers(*args, **kwargs):
        raise OSError("no fork server here")

    monkeypatch.setattr(fp, "ProcessPoolExecutor", no_workers)
    fn_name, args = figure_inputs()["roc_pr_curves"]
    with fp.figure_pool(2) as pool:
        assert pool.ready.wait(60) and pool._executor is None
        paths = getattr(figures, fn_name)(*args, tmp_path / "curves")
        assert all(p.is_file() and p.stat().st_size for p in paths) and not pool.jobs
        with pytest.raises(KeyError):
            figures.interval_plot(pd.DataFrame({"label": ["a"]}), "t", "x", tmp_path / "broken")
        assert not pool.finish()


def test_workers_run_only_where_they_would_not_run_the_main_script_again(monkeypatch):
    import sys
    import types

    script = types.ModuleType("__main__")
    script.__file__, script.__spec__ = "/home/me/study.py", None
    monkeypatch.setitem(sys.modules, "__main__", script)
    assert fp._main_runs_again_in_workers() and fp.default_workers() == 0
    script.__spec__ = types.SimpleNamespace(name="bench.__main__")      # python -m bench
    assert not fp._main_runs_again_in_workers()
    del script.__file__
    script.__spec__ = None                                                # an interactive session
    assert not fp._main_runs_again_in_workers()


def test_the_cache_stores_what_workers_drew_and_a_rebuild_draws_none(tmp_path, monkeypatch):
    from bench.analysis import figure_style

    fn_name, args = figure_inputs()["score_histograms"]
    with figure_cache(tmp_path / "cache"), fp.figure_pool(2) as pool:
        _ready_pool(pool)
        first = getattr(figures, fn_name)(*args, tmp_path / "a" / "hist")
        assert len(pool.jobs) == 1 and not pool.finish()
    assert len(list((tmp_path / "cache").glob("*.p*"))) == 2

    def must_not_draw(*args, **kwargs):
        raise AssertionError("a cached figure was drawn again")

    monkeypatch.setattr(figure_style, "draw_styled", must_not_draw)
    with figure_cache(tmp_path / "cache"), fp.figure_pool(2) as pool:
        _ready_pool(pool)
        again = getattr(figures, fn_name)(*args, tmp_path / "b" / "hist")
        assert not pool.jobs and not pool.finish()
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in first]


def test_a_report_lists_a_failed_figure_as_a_problem_and_drops_its_files(tmp_path):
    from bench.report.builder import IndexEntry, ReportBuilder

    builder = ReportBuilder.__new__(ReportBuilder)
    builder.strict, builder.problems = False, []
    lost = [tmp_path / "roc.png", tmp_path / "roc.pdf"]
    builder.index = [IndexEntry("d", "curves", list(lost), figure=True),
                     IndexEntry("d", "table", [tmp_path / "t.csv"])]
    builder.figures_failed([fp.FigureFailure("bench.analysis.figures.roc_pr_curves", lost, ValueError("bad"))])
    assert [e.title for e in builder.index] == ["table"]
    assert builder.problems == ["could not draw roc (bench.analysis.figures.roc_pr_curves): ValueError: bad"]
    builder.strict = True
    with pytest.raises(ValueError):
        builder.figures_failed([fp.FigureFailure("f", lost, ValueError("bad"))])


def test_a_warm_pool_is_taken_by_the_report_of_its_size_and_shut_otherwise(tmp_path):
    """``bench run`` starts the workers before its cells; the report's pool is that one (already up),
    a report asking for another number of workers gets its own and the warm one is shut down."""
    fp.warm_figure_workers(2)
    warm = fp._WARM[0]
    fp.warm_figure_workers(2)                      # a second call starts nothing more
    assert fp._WARM == [warm]
    _ready_pool(warm)
    fn_name, args = figure_inputs()["roc_pr_curves"]
    with fp.figure_pool(2) as pool:
        assert pool is warm and not fp._WARM
        getattr(figures, fn_name)(*args, tmp_path / "curves")
        assert len(pool.jobs) == 1, "the figure went to a warm worker"
        assert not pool.finish()
    assert warm._executor is None                   # shut with the block, as a pool of its own

    fp.warm_figure_workers(2)
    other = fp._WARM[0]
    with fp.figure_pool(1) as pool:
        assert pool is not other and other._closed and not fp._WARM
    fp.warm_figure_workers(2)
    fp._close_warm()                                # what exit does with a pool nobody took
    assert not fp._WARM
