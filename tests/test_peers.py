"""The anomalib peers (issue 18) and the ``datasets`` shadow check.

Without the ``[peers]`` extra (CI): no ``anomalib/*`` detector is registered and ``bench list``
prints the one-line hint; both are checked here in a subprocess that blocks anomalib, so they run
whether or not it is installed. With anomalib, a tiny ``anomalib/padim`` cell runs through the
runner and is scored by the suite's metrics, a failing peer is a ``failed`` cell while the grid goes
on, nothing lands in the cwd, and the preflight refuses what offline cannot provide in one line.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]

BLOCK_ANOMALIB = "import sys; sys.modules['anomalib'] = None\n"     # import anomalib -> ImportError


def _python(code: str, *, cwd: Path, pythonpath: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = pythonpath if pythonpath is not None else str(PROJECT)
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_without_anomalib_no_peers_and_list_says_how_to_get_them(tmp_path):
    code = BLOCK_ANOMALIB + (
        "from methods.registry import list_detectors\n"
        "assert not [n for n in list_detectors() if n.startswith('anomalib/')], list_detectors()\n"
        "from bench.cli import main\n"
        "raise SystemExit(main(['list', 'detectors']))\n")
    out = _python(code, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    hints = [line for line in out.stdout.splitlines() if "anomalib" in line]
    assert len(hints) == 1 and 'pip install -e ".[peers]"' in hints[0], out.stdout
    assert "padim" in out.stdout.split()


def test_a_shadowing_datasets_package_stops_bench_with_one_line(tmp_path):
    fake = tmp_path / "elsewhere" / "datasets"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('"""Not this project\'s datasets (as Hugging Face\'s)."""\n')
    out = _python("from bench.cli import main\nraise SystemExit(main(['list', 'grids']))\n", cwd=tmp_path,
                  pythonpath=os.pathsep.join([str(fake.parent), str(PROJECT)]))
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert str(fake) in lines[0] and "shadows" in lines[0] and "virtual environment" in lines[0]
    assert "Traceback" not in out.stderr


def test_the_projects_own_packages_pass_the_shadow_check():
    from bench.shadow import shadowed

    assert shadowed() is None


# -- with anomalib installed ---------------------------------------------------------------------
TINY = ['datasets=["synthetic"]', "seeds=[0]", "defaults.dataset.image_size=32", "dataset.synthetic.n_train=24",
        "dataset.synthetic.n_val=8", "dataset.synthetic.n_test=24"]


@pytest.mark.usefixtures("one_thread")
def test_anomalib_padim_cell_runs_and_is_scored_and_a_failing_peer_is_a_failed_cell(tmp_path, monkeypatch):
    pytest.importorskip("anomalib")
    from bench.run.grid import load_grid
    from bench.run.plan import Plan
    from bench.run.runner import Runner
    from bench.run.store import ResultStore

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    grid = load_grid("peers_check", TINY + [
        'detectors=["anomalib/padim", {name = "anomalib/cflow", id = "cflow_broken", fiber_batch_size = 1000000, '
        'epochs = 1, coupling_blocks = 2}]', "detector.anomalib/padim.n_features=16"])
    summary = Runner(Plan.of(grid), tmp_path / "run", cache_dir=tmp_path / "cache", progress=False,
                     device="cpu").run()
    assert (summary.ok, summary.failed) == (1, 1), summary.failures
    records = {r["detector"]: r for r in ResultStore(tmp_path / "run").records()}
    ok, broken = records["anomalib/padim"], records["cflow_broken"]
    assert ok["status"] == "ok"
    for key in ("image_auroc", "image_ap", "pixel_auroc", "pixel_ap"):
        assert 0.0 <= ok["metrics"][key] <= 1.0, key
    arrays = ResultStore(tmp_path / "run").arrays(ok["cell_id"])
    assert arrays["test_maps"].shape == (24, 32, 32)
    assert broken["status"] == "failed" and broken["stage"].endswith("fit"), broken.get("stage")
    assert "fibers" in broken["error"]
    assert list(cwd.iterdir()) == [], "Lightning wrote into the cwd"
    assert (tmp_path / "cache" / "work").is_dir(), "the peers' work folders live in the run's cache"


def test_preflight_refuses_what_offline_cannot_provide_in_one_line(tmp_path, monkeypatch):
    pytest.importorskip("anomalib")
    from bench.run.grid import load_grid
    from bench.run.plan import Plan
    from bench.run.preflight import preflight
    from bench.run.work import RunContext

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")                 # the hub counts as unreachable
    monkeypatch.setenv("UAD_BENCH_WEIGHTS", str(tmp_path / "no-weights"))
    grid = load_grid("peers_check", TINY + [
        'detectors=["anomalib/padim", "anomalib/fastflow", {name = "anomalib/efficient_ad", id = "ead", '
        f'teacher_weights = "{tmp_path / "missing.pth"}", imagenet_dir = "{tmp_path / "no-imagenette"}"}}]'])
    plan = Plan.of(grid)
    ctx = RunContext(run_name="peers_check", data_root=str(tmp_path), cache_dir=str(tmp_path / "cache"), device="cpu")
    problems = preflight(plan, ctx).problems
    assert len(problems) == 2, problems
    fastflow = next(p for p in problems if "anomalib/fastflow" in p)
    assert "resnet18" in fastflow and "weights" in fastflow and "\n" not in fastflow
    ead = next(p for p in problems if "detector.ead" in p)
    assert "teacher" in ead and "Imagenette" in ead and "\n" not in ead
