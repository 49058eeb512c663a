from __future__ import annotations

import pytest

from bench.grid import GridError, apply_override, available_grids, load_grid


def test_shipped_grids_parse():
    assert {"quick", "full"} <= set(available_grids())
    for name in available_grids():
        grid = load_grid(name)
        ids = [c.cell_id for c in grid.cells()]
        assert len(ids) == len(set(ids)), f"grid {name} has duplicate cell ids"


def test_quick_grid_crosses_axes():
    grid = load_grid("quick")
    data = grid.data
    n_latent = (len(data["datasets"]) * len(grid.seeds) * len(data["encoders"]) * len(data["heads"])
                * len(data.get("localization", ["gradient"])))
    assert len(grid.cells()) == n_latent + len(data["datasets"]) * len(grid.seeds) * len(data.get("detectors", []))


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
        load_grid(str(path))
