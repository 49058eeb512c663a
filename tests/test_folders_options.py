"""Your own data (issue 24 item 1, item 9): ``folders`` options in the anomalib ``Folder`` style, split
file, groups CSV, one-line errors naming the file, ``split_seed``, and the options from a grid."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from datasets import create_dataset
from datasets.base import DatasetError
from fake_layouts import FakeLayouts

STUDY = {"path": "study", "normal_dir": "good", "abnormal_dir": "lesion", "normal_test_dir": "good_test",
         "mask_dir": "lesion_masks", "extensions": [".png"], "groups_csv": "groups.csv", "image_size": 32}


@pytest.fixture
def study(tmp_path):
    written = FakeLayouts(tmp_path).write_study()
    return tmp_path, written


def load(root, **kwargs):
    return create_dataset("folders", root=root, cache_dir=root / "cache", **{**STUDY, **kwargs})


def ids_of(split):
    return set(split.ids.tolist())


def test_named_folders_groups_csv_and_held_out_normals(study):
    root, written = study
    data = load(root)
    total = sum(len(s) for s in (data.train, data.val, data.test)) + data.config["unused"]
    assert total == written.counts["normal"] + written.counts["normal_test"] + written.counts["abnormal"]
    assert not any(i.startswith("good_test/") for i in ids_of(data.train)), "held-out normals never train"
    assert all(i.endswith(".png") for s in (data.train, data.val, data.test) for i in ids_of(s)), "jpg filtered"
    assert {g for g in data.train.groups} <= {f"pt{p:02d}" for p in range(10)}      # groups from the CSV
    assert data.test.has_masks and data.config["masks_found"] == written.counts["abnormal"]
    for split in (data.train, data.val, data.test):              # the id names the file the pixels came from
        for i in range(len(split)):
            assert split.ids[i].split("/")[0] in ("good", "good_test", "lesion")


def test_split_file_is_followed_and_checked(study):
    root, written = study
    data = load(root, split_file="split.csv")
    listed = dict(line.split(",") for line in (written.path / "split.csv").read_text().split()[1:])
    for name in ("train", "val", "test"):
        assert all(listed[i] == name for i in ids_of(getattr(data, name)))
    assert data.config["unused"] == 5                              # unlisted: held out of training patients
    with (written.path / "split.csv").open("a") as handle:
        handle.write("lesion/pt01-a.png,train\n")
    with pytest.raises(DatasetError, match="pt01-a.png: an abnormal image in the train split"):
        load(root, split_file="split.csv")


def test_bad_files_are_one_line_naming_the_file(study):
    root, written = study
    rgb = written.path / "good" / "pt03-1.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(rgb)
    with pytest.raises(DatasetError) as err:
        load(root)
    assert str(rgb) in str(err.value) and "\n" not in str(err.value) and "channels" in str(err.value)
    assert load(root, channels=3).channels == 3                 # said how to convert: accepted
    rgb.write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="unreadable") as err:
        load(root, channels=1)
    assert str(rgb) in str(err.value)
    rgb.unlink()
    mask = written.path / "lesion_masks" / "pt03-a.png"
    mask.unlink()
    with pytest.raises(DatasetError, match="mask not found") as err:
        load(root)
    assert "pt03-a.png" in str(err.value) and "\n" not in str(err.value)


def test_split_seed_moves_the_split_and_nothing_else(study):
    root, _ = study
    first, again, other = load(root), load(root, split_seed=0), load(root, split_seed=1)
    assert ids_of(first.test) == ids_of(again.test)
    assert ids_of(first.test) != ids_of(other.test)
    with pytest.raises(DatasetError, match="not both"):
        load(root, split_seed=1, seed=1)


def test_options_from_the_command_line_and_the_grid(study, tmp_path):
    from bench.run.grid import GridError, load_grid
    from bench.run.validate import validate_grid

    root, written = study
    sets = ['datasets=["folders"]', f"dataset.folders.path={written.path}", "dataset.folders.normal_dir=good",
            'dataset.folders.extensions=[".png"]', "dataset.folders.split_seed=2"]
    grid = load_grid("quick", sets)
    validate_grid(grid)
    (comp,) = grid.components("datasets")
    assert comp.kwargs["normal_dir"] == "good" and comp.kwargs["split_seed"] == 2
    with pytest.raises(GridError, match="did you mean 'normal_dir'"):
        validate_grid(load_grid("quick", sets + ["dataset.folders.normal_dirs=good"]))
    with pytest.raises(GridError, match="split_seed"):
        validate_grid(load_grid("quick", ['datasets=["synthetic"]', "dataset.synthetic.split_seed=-1"]))
