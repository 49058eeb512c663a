"""Your method from outside the project: ``--plugin FILE`` registers it for every command, in the
driver and its workers, and the record carries the plugin's fingerprint, so editing the plugin
makes the record stale on resume (recomputed, the old one set aside)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PIXELS = '''
import torch
from methods.base import Encoder
from methods.registry import register_encoder


@register_encoder("pixels", tiny=dict())
class Pixels(Encoder):
    """The image itself, flattened (a one-file encoder from outside the project)."""

    trainable = False
    deterministic_fit = True

    def __init__(self, in_chans=1, image_size=64, scale=1.0):
        super().__init__(in_chans, image_size)
        self.scale = scale
        self.out_dim = in_chans * image_size * image_size

    def forward(self, x):
        return x.flatten(1) * self.scale
'''

SETTINGS = ['datasets=["synthetic"]', "seeds=[0]", "defaults.dataset.image_size=32",
            "dataset.synthetic.n_train=24", "dataset.synthetic.n_val=8", "dataset.synthetic.n_test=16",
            'encoders=["pixels"]', 'heads=["gaussian"]', 'localization=["gradient"]', "detectors=[]"]


def bench(*args, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def record(run: Path) -> dict:
    (path,) = (run / "records").glob("*.json")
    return json.loads(path.read_text())


def test_a_plugin_file_runs_end_to_end_and_a_changed_plugin_is_recomputed(tmp_path):
    plugin = tmp_path / "my_methods.py"
    plugin.write_text(textwrap.dedent(PIXELS))
    listed = bench("list", "encoders", "--plugin", str(plugin), cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "pixels" in listed.stdout.split()

    args = ["run", "--plugin", str(plugin), "--out", str(tmp_path / "run"), "--cache", str(tmp_path / "cache"),
            "--no-report", "--quiet", "--device", "cpu"] + [a for s in SETTINGS for a in ("--set", s)]
    first = bench(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    rec = record(tmp_path / "run")
    assert rec["status"] == "ok" and rec["encoder"] == "pixels"
    assert rec["config"]["plugin.my_methods"].startswith("sha256:")

    again = bench(*args, cwd=tmp_path)                         # unchanged plugin: nothing recomputed
    assert "1 already done" in again.stdout, again.stdout

    plugin.write_text(plugin.read_text().replace("* self.scale", "* self.scale * 2.0"))
    changed = bench(*args, cwd=tmp_path)
    assert changed.returncode == 0, changed.stdout + changed.stderr
    assert "1 ok" in changed.stdout and "0 already done" in changed.stdout, changed.stdout
    assert record(tmp_path / "run")["config"]["plugin.my_methods"] != rec["config"]["plugin.my_methods"]
    assert list((tmp_path / "run" / "records" / "superseded").rglob("*.json")), "the old record is set aside"


def test_a_module_plugin_in_a_grid_file_and_a_missing_plugin(tmp_path):
    (tmp_path / "my_methods.py").write_text(textwrap.dedent(PIXELS))
    grid = tmp_path / "mine.toml"
    grid.write_text('name = "mine"\nplugins = ["my_methods"]\ndatasets = ["synthetic"]\nencoders = ["pixels"]\n'
                    'heads = ["gaussian"]\n')
    checked = bench("run", "--grid", str(grid), "--check", "--out", str(tmp_path / "r"),
                    "--cache", str(tmp_path / "cache"), "--set", "dataset.synthetic.n_train=24",
                    "--set", "dataset.synthetic.n_test=16", "--set", "defaults.dataset.image_size=32", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_missing_plugin_is_one_line(tmp_path, monkeypatch, capsys):
    from bench.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["list", "grids", "--plugin", "no_such_module_here"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no_such_module_here" in err
    assert main(["list", "grids", "--plugin", "missing_file.py"]) == 2
    assert "missing_file.py" in capsys.readouterr().err


def test_entry_point_group_is_read(monkeypatch):
    """An installed package's ``uad_bench.plugins`` entry point is imported like --plugin."""
    import importlib.metadata as md

    from bench import plugins

    seen = []

    class FakeEntry:
        name, value, module = "mine", "json", "json"

        def load(self):
            seen.append(self.module)

    monkeypatch.setattr(md, "entry_points", lambda group: [FakeEntry()] if group == plugins.ENTRY_POINT_GROUP else [])
    monkeypatch.setattr(plugins, "_ENTRY_POINTS", [])
    monkeypatch.setattr(plugins, "LOADED", {})
    loaded = plugins.load_entry_points()
    assert seen == ["json"] and [p.module for p in loaded] == ["json"]
    assert plugins.LOADED["json"].fingerprint.startswith("sha256:")
