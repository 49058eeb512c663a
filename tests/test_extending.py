"""Extending is one file: a head and a metric written in a module of their own (outside the
project) are registered by importing it, appear in a grid, in its records and in its report, with
no other edit."""

from __future__ import annotations

import csv
import importlib
import sys
import textwrap

import pytest

HEAD_MODULE = '''
import torch
from methods.base import DensityHead
from methods.registry import register_head


@register_head("centroid_distance", tiny=dict())
class CentroidDistance(DensityHead):
    """Anomaly score = distance to the training mean (a one-file head)."""

    def _fit(self, z, *, seed, device, progress):
        self.centre_ = z.mean(0).to(device)

    def _score(self, z):
        return (z - self.centre_.to(z.device)).norm(dim=1)
'''

METRIC_MODULE = '''
import numpy as np
from bench.metrics import register_metric


@register_metric("image_top_decile", label="anomalies in top 10 %", level="image")
def image_top_decile(scores, labels):
    """Fraction of the highest-scored tenth of the test images that are anomalous (a one-file metric)."""
    top = np.argsort(-np.asarray(scores))[: max(1, len(scores) // 10)]
    return float(np.asarray(labels)[top].mean())
'''


@pytest.fixture
def extension(tmp_path, monkeypatch):
    for name, text in (("ext_head", HEAD_MODULE), ("ext_metric", METRIC_MODULE)):
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(text))
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("ext_head", "ext_metric"):
        sys.modules.pop(name, None)
        importlib.import_module(name)
    yield
    from bench.metrics import registry as metric_registry
    from methods.registry import HEADS

    HEADS._entries.pop("centroid_distance", None)          # leave the registries as the other tests expect
    metric_registry._REGISTRY.pop("image_top_decile", None)


@pytest.mark.usefixtures("one_thread")
def test_a_new_head_and_metric_reach_the_grid_the_records_and_the_report(extension, tmp_path):
    from bench.report import build_report
    from bench.run.grid import load_grid
    from bench.run.plan import Plan
    from bench.run.runner import Runner
    from bench.run.store import ResultStore
    from bench.run.validate import validate_grid

    grid = load_grid("quick", ['datasets=["synthetic"]', "seeds=[0]", "defaults.dataset.image_size=32",
                               "dataset.synthetic.n_train=40", "dataset.synthetic.n_val=10",
                               "dataset.synthetic.n_test=30", 'encoders=["imagenet/tf_efficientnet_lite0"]',
                               'heads=["centroid_distance", "gaussian"]', 'localization=["gradient"]'])
    validate_grid(grid)
    summary = Runner(Plan.of(grid), tmp_path / "run", cache_dir=tmp_path / "cache", progress=False,
                     device="cpu").run()
    assert (summary.ok, summary.failed) == (2, 0), summary.failures
    records = {r["head"]: r for r in ResultStore(tmp_path / "run").records()}
    assert set(records) == {"centroid_distance", "gaussian"}
    for rec in records.values():
        assert 0.0 <= rec["metrics"]["image_top_decile"] <= 1.0
    report = build_report(tmp_path / "run", tmp_path / "report", full=False)
    rows = list(csv.DictReader(open(report / "summary.csv")))
    assert {"image_top_decile"} <= set(rows[0]) and any("centroid_distance" in r["label"] for r in rows)
