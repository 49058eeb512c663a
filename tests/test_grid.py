from __future__ import annotations

import pytest

from bench.run.grid import GridError, apply_override, available_grids, load_grid
from bench.run.plan import Plan


def test_shipped_grids_parse():
    assert {"quick", "full"} <= set(available_grids())
    for name in available_grids():
        grid = load_grid(name)
        ids = [c.cell_id for c in grid.cells()]
        assert len(ids) == len(set(ids)), f"grid {name} has duplicate cell ids"


def test_quick_grid_crosses_axes():
    """Counts written out by hand from bench/grids/quick.toml: 1 dataset x 1 seed x 5 encoders x 4 heads
    x 2 map kinds = 40 cells (the runner later marks reconstruction cells of non-reconstructing
    encoders not applicable)."""
    from collections import Counter

    cells = load_grid("quick").cells()
    assert len(cells) == 40
    assert Counter(c.localization for c in cells) == {"gradient": 20, "reconstruction": 20}
    assert Counter(c.encoder.id for c in cells) == {"simclr": 8, "moco": 8, "vae": 8,
                                                    "imagenet/tf_efficientnet_lite0": 8, "random/resnet18": 8}
    assert Counter(c.head.id for c in cells) == {"gaussian": 10, "gmm": 10, "flow": 10, "knn": 10}
    assert not [c for c in cells if c.detector is not None]


@pytest.mark.parametrize("name, n_cells, n_detector_cells", [
    ("quick", 40, 0),    # above
    ("cradl", 20, 0),    # 1 dataset x 2 encoders x 5 heads x 2 map kinds
    ("seeds", 32, 16),   # 2 datasets x (2 encoders x 4 heads + 8 detectors)
    ("families", 264, 0),  # 2 datasets x 3 seeds x 11 encoders x 4 heads (issue 26)
])
def test_shipped_grid_sizes(name, n_cells, n_detector_cells):
    cells = load_grid(name).cells()
    assert len(cells) == n_cells
    assert sum(c.detector is not None for c in cells) == n_detector_cells


def test_overrides_and_variants(tmp_path):
    path = tmp_path / "g.toml"
    path.write_text('''
name = "g"
seeds = [0]
datasets = ["synthetic"]
encoders = ["vae", {name = "vae", id = "vae-small", latent_dim = 8}]
heads = ["gaussian"]
[defaults.dataset]
image_size = 32
[encoder.vae]
epochs = 3
''')
    grid = load_grid(str(path), ["encoder.vae.epochs=1", "seeds=[1,2]", "dataset.synthetic.n_train=10"])
    cells = grid.cells()
    assert [c.seed for c in cells] == [1, 1, 2, 2]
    small = next(c for c in cells if c.encoder.id == "vae-small")
    assert small.encoder.kwargs == {"epochs": 1, "latent_dim": 8}
    assert small.dataset.kwargs == {"image_size": 32, "n_train": 10}
    assert cells[0].config_hash() != small.config_hash()
    assert small.method == "vae-small × gaussian"


def test_names_with_dots_and_slashes_in_overrides():
    data = {}
    apply_override(data, "encoder.imagenet/wide_resnet50_2.tv_in1k.input_size=128")
    assert data == {"encoder": {"imagenet/wide_resnet50_2.tv_in1k": {"input_size": 128}}}
    apply_override(data, 'datasets=["medmnist/pneumoniamnist"]')
    assert data["datasets"] == ["medmnist/pneumoniamnist"]


@pytest.mark.parametrize("bad, match", [
    ("nokey", "key=value"), ("encoder.x=1", "expected encoder"), ("what.a.b=1", "unknown section")])
def test_bad_overrides(bad, match):
    with pytest.raises(GridError, match=match):
        apply_override({}, bad)


def test_missing_grid_names_alternatives():
    with pytest.raises(GridError, match="available: .*quick"):
        load_grid("does-not-exist")


def test_duplicate_ids_rejected(tmp_path):
    path = tmp_path / "g.toml"
    path.write_text('datasets=["synthetic"]\nencoders=["vae","vae"]\nheads=["knn"]\n')
    with pytest.raises(GridError, match="share the id 'vae'"):
        Plan.of(load_grid(str(path)))
