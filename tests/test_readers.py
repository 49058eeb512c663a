"""Readers for the published medical layouts, on tiny fake trees written by ``fake_layouts``.

Checks per layout: counts, shapes, masks aligned to images (a lesion drawn at a known place lands
at the same place after resizing), group-disjoint splits, normal-only training, identical splits
under two processes with different ``PYTHONHASHSEED``, cache hits and atomic cache writes, and a
one-line :class:`DatasetError` naming the offending path for every kind of bad input.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datasets import DATASETS, DatasetCard, DatasetError, create_dataset
from datasets._splits import allocate, assign_by_group, carve_by_group, drop_shared_groups
from fake_layouts import FakeLayouts

PROJECT = Path(__file__).resolve().parents[1]
SIZE = 16                                    # fake images are 32 px: the lesion square halves exactly
EXPECTED_MASK = np.zeros((SIZE, SIZE), np.uint8)
EXPECTED_MASK[2:6, 7:11] = 1                 # FakeLayouts.lesion = rows 4:12, cols 14:22 at 32 px

# name -> (writer, loader kwargs, channels, has masks, expected counts)
LAYOUTS = {
    "medianomaly/rsna": (lambda g: g.write_medianomaly("rsna"), {"val_fraction": 0.25}, 1, False,
                         {"train": 6, "normal": 4, "anomalous": 4}),
    "medianomaly/lag": (lambda g: g.write_medianomaly("lag"), {"val_fraction": 0.25}, 3, False,
                        {"train": 6, "normal": 4, "anomalous": 4}),
    "medianomaly/isic2018": (lambda g: g.write_medianomaly("isic2018"), {"val_fraction": 0.25}, 3, False,
                             {"train": 6, "normal": 4, "anomalous": 4}),
    "medianomaly/camelyon16": (lambda g: g.write_medianomaly("camelyon16"), {"val_fraction": 0.25}, 3, False,
                               {"train": 6, "normal": 4, "anomalous": 4}),
    "medianomaly/brats2021": (lambda g: g.write_medianomaly("brats2021"), {"val_fraction": 0.25}, 1, True,
                              {"train": 6, "normal": 4, "anomalous": 4}),
    "bmad/brats": (lambda g: g.write_bmad("brats"), {}, 1, True, {"train": 6, "normal": 6, "anomalous": 6}),
    "bmad/liver": (lambda g: g.write_bmad("liver", mask_folder="anomaly_mask"), {}, 1, True,
                   {"train": 6, "normal": 6, "anomalous": 6}),
    "bmad/camelyon16": (lambda g: g.write_bmad("camelyon16"), {}, 3, False, {"train": 6, "normal": 6, "anomalous": 6}),
    "bmad/oct2017": (lambda g: g.write_bmad("oct2017"), {}, 1, False, {"train": 6, "normal": 6, "anomalous": 6}),
    "lgg": (lambda g: g.write_lgg(), {}, 1, True, {"total": 60, "anomalous": 14}),
    "nifti": (lambda g: g.write_nifti(), {"path": "brats_nifti"}, 1, True,
              {"total": 72, "anomalous": 12, "dropped": 24}),   # 6 volumes x 12 slices, 4 per volume brainless
    "mvtec/bottle": (lambda g: g.write_mvtec(), {}, 3, True, {"train": 6, "normal": 4, "anomalous": 6}),
    "folders": (lambda g: g.write_folders(), {"path": "my_dataset", "group_pattern": r"^(p\d+)_"}, 1, True,
                {"total": 16, "anomalous": 4}),
}


def load(name: str, root: Path, **kwargs):
    params = {"image_size": SIZE, **(LAYOUTS[name][1] if name in LAYOUTS else {}), **kwargs}
    return create_dataset(name, root=root, **params)


@pytest.fixture(scope="module")
def trees(tmp_path_factory) -> Path:
    """Every layout written once under one data root (read-only for the tests that share it)."""
    root = tmp_path_factory.mktemp("data")
    gen = FakeLayouts(root)
    for writer, *_ in LAYOUTS.values():
        writer(gen)
    return root


def fresh(tmp_path: Path, name: str) -> tuple[Path, object]:
    """A private copy of one layout for tests that break it."""
    written = LAYOUTS[name][0](FakeLayouts(tmp_path))
    return tmp_path, written


# -- every layout loads -------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_layout_loads_with_counts_shapes_masks_and_disjoint_groups(trees, name):
    _, _, channels, has_masks, counts = LAYOUTS[name]
    ds = load(name, trees)
    splits = [ds.train, ds.val, ds.test]
    for split in splits:
        assert split.images.dtype == np.uint8 and split.images.shape[1:] == (channels, SIZE, SIZE)
        assert (split.masks is not None) == has_masks
    assert ds.train.n_anomalous == 0 and ds.train.n_normal > 0
    assert len(ds.val) > 0 and ds.val.n_anomalous > 0 and ds.test.n_anomalous > 0
    for i, a in enumerate(splits):
        for b in splits[i + 1:]:
            assert not set(a.groups) & set(b.groups), f"{name}: {a.name} and {b.name} share groups"
    n_eval_normal = ds.val.n_normal + ds.test.n_normal
    n_anomalous = ds.val.n_anomalous + ds.test.n_anomalous
    if "train" in counts:
        assert (len(ds.train), n_eval_normal, n_anomalous) == (counts["train"], counts["normal"], counts["anomalous"])
    else:   # assigned by group: every slice lands somewhere or is counted as unused
        assert sum(len(s) for s in splits) + ds.config["unused"] == counts["total"]
        assert n_anomalous + ds.config["unused"] >= counts["anomalous"] >= n_anomalous
        assert ds.config.get("dropped_low_foreground", 0) == counts.get("dropped", 0)
    if has_masks:
        for split in splits:
            for image, label, mask in zip(split.images, split.labels, split.masks, strict=True):
                if label == 1:
                    np.testing.assert_array_equal(mask[0], EXPECTED_MASK)
                    inside, outside = image[:, mask[0] == 1].mean(), image[:, mask[0] == 0].mean()
                    assert inside > outside + 60, "the bright lesion must sit under its mask"
                else:
                    assert mask.sum() == 0
    assert ds.config["split_sizes"]["val"]["n"] == len(ds.val) and "this build:" in ds.card.splits


def test_cards_are_registered_for_every_reader():
    names = {"medianomaly": "brats2021", "bmad": "brats", "mvtec": "bottle", "lgg": None, "nifti": None,
             "folders": None}
    for family, member in names.items():
        entry, _ = DATASETS.lookup(f"{family}/{member}" if member else family)
        card = entry.tags["card"]
        card = card(member) if callable(card) else card
        assert isinstance(card, DatasetCard)
        for field in ("modality", "license", "citation", "source", "layout", "splits"):
            assert getattr(card, field), f"{family}: card.{field} is empty"
    with pytest.raises(DatasetError, match="expected one of"):
        create_dataset("bmad/nosuch", root=PROJECT)


# -- split behaviour ----------------------------------------------------------------------------
def test_group_assignment_is_order_free_stratified_and_seeded():
    rng = np.random.default_rng(3)
    groups = np.repeat([f"g{i:02d}" for i in range(30)], 4)
    labels = (rng.random(len(groups)) < 0.3).astype(int)
    labels[groups == "g00"] = 1                             # an anomalous-only group
    tags = assign_by_group(groups, labels, 0.6, 0.1, seed=0)
    mapping = {g: set(tags[groups == g]) - {"unused"} for g in np.unique(groups)}
    assert all(len(v) <= 1 for v in mapping.values())       # whole groups stay together
    assert "train" not in mapping["g00"]
    assert set(tags[labels == 1]) <= {"val", "test", "unused"}
    perm = rng.permutation(len(groups))                     # input order must not matter
    np.testing.assert_array_equal(assign_by_group(groups[perm], labels[perm], 0.6, 0.1, seed=0), tags[perm])
    assert (assign_by_group(groups, labels, 0.6, 0.1, seed=1) != tags).any()
    carved = carve_by_group(groups, labels, 0.25, seed=0)
    assert set(labels[carved]) == {0, 1} and 0 < carved.mean() < 0.5
    assert allocate(5, [0.6, 0.1]) == [3, 1, 1] and sum(allocate(7, [0.25])) == 7 and allocate(2, [0.1])[0] == 1


def test_shared_groups_are_dropped_from_the_later_split():
    tags, dropped = drop_shared_groups(np.array(["train", "train", "val", "test"]), np.array(["a", "b", "a", "a"]))
    assert list(tags) == ["unused", "train", "unused", "test"] and dropped == {"val": 1, "train": 1}


def test_lgg_train_takes_normal_slices_of_training_patients_only(trees):
    ds = load("lgg", trees)
    assert set(ds.train.groups).isdisjoint(set(ds.val.groups) | set(ds.test.groups))
    assert all(g.startswith("TCGA_FK_") and g.count("_") == 2 for g in ds.train.groups)   # date suffix stripped
    assert ds.config["unused"] > 0                                  # tumour slices of training patients
    assert load("lgg", trees, seed=1).config["split_sizes"] != ds.config["split_sizes"] or \
        not np.array_equal(load("lgg", trees, seed=1).train.groups, ds.train.groups)
    flair = ds.train.images
    all3 = load("lgg", trees, modality="all").train.images
    assert all3.shape[1] == 3 and np.array_equal(all3[:, 1], flair[:, 0])


def test_val_fraction_zero_keeps_the_published_test_set_and_isic_uses_official_validation(trees, tmp_path):
    ds = load("medianomaly/rsna", trees, val_fraction=0.0)
    assert len(ds.val) == 0 and len(ds.test) == 8 and "val_fraction=0" in ds.card.splits
    gen = FakeLayouts(tmp_path)
    gen.write_medianomaly("isic2018")
    gen.write_isic_validation(2, 2)
    isic = load("medianomaly/isic2018", tmp_path)
    assert (isic.val.n_normal, isic.val.n_anomalous, len(isic.test)) == (2, 2, 8)
    assert len(set(isic.train.groups)) == 3                     # lesion ids group 6 training images


def test_channel_choice_and_bad_parameters(trees):
    gray3 = load("medianomaly/rsna", trees, channels=3).train.images
    assert gray3.shape[1] == 3 and np.array_equal(gray3[:, 0], gray3[:, 2])
    assert load("medianomaly/lag", trees, channels=1).channels == 1
    with pytest.raises(DatasetError, match="channels must be"):
        load("bmad/brats", trees, channels=2)
    with pytest.raises(DatasetError, match="modality must be one of"):
        load("lgg", trees, modality="t2")
    with pytest.raises(DatasetError, match="val_fraction"):
        load("mvtec/bottle", trees, val_fraction=1.5)


def test_unlabeled_pool_is_read_when_asked(trees):
    ds = load("medianomaly/rsna", trees, with_pool=True)
    assert ds.pool is not None and (ds.pool.n_normal, ds.pool.n_anomalous) == (2, 2)
    assert load("medianomaly/rsna", trees).pool is None


def test_splits_identical_across_processes_with_different_hash_seeds(trees, tmp_path):
    script = textwrap.dedent(f"""
        import hashlib, json
        from pathlib import Path
        from datasets.lgg import lgg
        from datasets.folders import folders
        from datasets.medianomaly import medianomaly
        from datasets.nifti import nifti
        root, cache = Path({str(trees)!r}), Path(__import__("sys").argv[1])
        built = {{"lgg": lgg(root=root, image_size=16, cache_dir=cache),
                  "folders": folders(root=root, path="my_dataset", group_pattern=r"^(p\\d+)_", image_size=16,
                                     cache_dir=cache),
                  "brats2021": medianomaly("brats2021", root=root, image_size=16, val_fraction=0.25, cache_dir=cache),
                  "nifti": nifti(root=root, path="brats_nifti", image_size=16, cache_dir=cache)}}
        out = {{}}
        for name, ds in built.items():
            for s in ("train", "val", "test"):
                split = getattr(ds, s)
                blob = "|".join(split.groups) + str(split.labels.tolist()) + hashlib.sha256(split.images).hexdigest()
                out[name + "/" + s] = hashlib.sha256(blob.encode()).hexdigest()
        print(json.dumps(out, sort_keys=True))
    """)
    outputs = []
    for hash_seed in ("1", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed, PYTHONPATH=str(PROJECT))
        run = subprocess.run([sys.executable, "-c", script, str(tmp_path / f"cache{hash_seed}")], env=env,
                             cwd=PROJECT, capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        outputs.append(json.loads(run.stdout.strip().splitlines()[-1]))
    assert outputs[0] == outputs[1] and len(outputs[0]) == 12


# -- cache --------------------------------------------------------------------------------------
def test_cache_hit_on_second_load_and_miss_after_an_edit(tmp_path, monkeypatch):
    root, _ = fresh(tmp_path, "mvtec/bottle")
    first = load("mvtec/bottle", root)
    assert not first.config["cache_hit"] and Path(first.config["cache_file"]).parent == root / ".uad_cache"

    def no_decoding(*args, **kwargs):
        raise AssertionError("a cache hit must not decode images")

    import datasets._io

    monkeypatch.setattr(datasets._io, "decode_records", no_decoding)
    second = load("mvtec/bottle", root)
    assert second.config["cache_hit"] and np.array_equal(second.test.images, first.test.images)
    assert load("mvtec/bottle", root, seed=5).config["cache_hit"]           # split seed: same decoded cache
    monkeypatch.undo()
    image = root / "bottle" / "test" / "good" / "000.png"
    Image.fromarray(np.full((32, 32, 3), 7, np.uint8)).save(image)
    third = load("mvtec/bottle", root, val_fraction=0.0)
    assert not third.config["cache_hit"] and third.config["cache_file"] != first.config["cache_file"]
    assert load("mvtec/bottle", root, image_size=8).config["cache_file"] not in (first.config["cache_file"],
                                                                                  third.config["cache_file"])


# -- bad input: one line, names the path, leaves no cache --------------------------------------
def assert_clear(exc_info, path: Path) -> None:
    message = str(exc_info.value)
    assert "\n" not in message and str(path) in message, message


def test_missing_root_and_missing_folder(tmp_path):
    with pytest.raises(DatasetError) as err:
        create_dataset("lgg", root=tmp_path / "nowhere")
    assert_clear(err, tmp_path / "nowhere")
    root, written = fresh(tmp_path, "bmad/brats")
    with pytest.raises(DatasetError) as err:
        load("medianomaly/rsna", root)
    assert_clear(err, root / "RSNA")
    shutil.rmtree(written.path / "valid" / "good")
    with pytest.raises(DatasetError) as err:
        load("bmad/brats", root)
    assert_clear(err, written.path / "valid" / "good")


def test_truncated_image_raises_and_leaves_no_cache_entry(tmp_path):
    root, written = fresh(tmp_path, "folders")
    bad = written.path / "normal" / "p02_1.png"
    bad.write_bytes(bad.read_bytes()[:60])
    with pytest.raises(DatasetError, match="unreadable or truncated") as err:
        load("folders", root)
    assert_clear(err, bad)
    cache = root / ".uad_cache"
    assert not cache.exists() or not any(cache.iterdir()), list(cache.iterdir())


def test_mask_whose_size_differs_from_its_image(tmp_path):
    root, written = fresh(tmp_path, "mvtec/bottle")
    mask = written.path / "ground_truth" / "crack" / "001_mask.png"
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(mask)
    with pytest.raises(DatasetError, match="mask is 20x20") as err:
        load("mvtec/bottle", root)
    assert_clear(err, mask)


@pytest.mark.parametrize("name,orphan", [
    ("mvtec/bottle", "bottle/ground_truth/broken/099_mask.png"),
    ("medianomaly/brats2021", "BraTS2021/test/annotation/BraTS2021_00999_seg_70.png"),
    ("lgg", "kaggle_3m/TCGA_FK_1000_19960101/TCGA_FK_1000_19960101_99_mask.tif"),
    ("bmad/liver", "Liver/test/Ungood/anomaly_mask/liver_99_1.png"),
    ("folders", "my_dataset/masks/p99_0.png"),
])
def test_mask_without_an_image(tmp_path, name, orphan):
    root, _ = fresh(tmp_path, name)
    FakeLayouts.save(root / orphan, np.zeros((32, 32), np.uint8))
    with pytest.raises(DatasetError, match="without an image") as err:
        load(name, root)
    assert_clear(err, root / orphan)


def test_image_without_its_mask(tmp_path):
    root, written = fresh(tmp_path, "lgg")
    mask = next(iter(sorted(written.path.glob("*/*_3_mask.tif"))))
    mask.unlink()
    with pytest.raises(DatasetError, match="mask not found") as err:
        load("lgg", root)
    assert_clear(err, mask)


def test_empty_normal_set(tmp_path):
    root, written = fresh(tmp_path, "folders")
    for file in (written.path / "normal").iterdir():
        file.unlink()
    with pytest.raises(DatasetError, match="normal") as err:
        load("folders", root)
    assert_clear(err, written.path / "normal")
    root2, written2 = fresh(tmp_path / "b", "bmad/oct2017")
    for file in (written2.path / "train" / "good").iterdir():
        file.unlink()
    with pytest.raises(DatasetError) as err:
        load("bmad/oct2017", root2)
    assert_clear(err, written2.path / "train" / "good")


def test_label_file_that_disagrees_with_the_folders(tmp_path):
    root, written = fresh(tmp_path, "medianomaly/rsna")
    label_file = written.path / "data.json"
    data = json.loads(label_file.read_text())
    data["test"]["1"].append("ghost.png")
    label_file.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match="does not exist") as err:
        load("medianomaly/rsna", root)
    assert_clear(err, written.path / "images" / "ghost.png")
    data["test"]["1"].remove("ghost.png")
    data["test"]["0"].append(data["test"]["1"][0])               # one image, two labels
    label_file.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match="listed as") as err:
        load("medianomaly/rsna", root)
    assert_clear(err, label_file)

    root2, written2 = fresh(tmp_path / "isic", "medianomaly/isic2018")
    extra = written2.path / "ISIC2018_Task3_Test_Input" / "ISIC_0099999.jpg"
    shutil.copy(next(iter(sorted(extra.parent.glob("*.jpg")))), extra)
    with pytest.raises(DatasetError, match="not listed") as err:
        load("medianomaly/isic2018", root2)
    assert_clear(err, extra)


def test_bad_nifti_volumes(tmp_path):
    import nibabel as nib

    root, written = fresh(tmp_path, "nifti")
    seg = written.path / "BraTS2021_00001" / "BraTS2021_00001_seg.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((32, 32, 5), np.uint8), np.eye(4)), seg)
    with pytest.raises(DatasetError, match="differs from its image") as err:
        load("nifti", root)
    assert_clear(err, seg)
    flair = written.path / "BraTS2021_00002" / "BraTS2021_00002_flair.nii.gz"
    flair.write_bytes(flair.read_bytes()[:200])
    seg.unlink()
    shutil.copy(written.path / "BraTS2021_00000" / "BraTS2021_00000_seg.nii.gz", seg)
    with pytest.raises(DatasetError, match="unreadable or truncated") as err:
        load("nifti", root)
    assert_clear(err, flair)
    assert not (root / ".uad_cache").exists() or not list((root / ".uad_cache").iterdir())


def test_grid_runner_builds_the_readers_by_name(trees, tmp_path):
    from bench.run.grid import load_grid
    from bench.run.plan import Plan
    from bench.run.runner import Runner

    grid_file = tmp_path / "real.toml"
    grid_file.write_text(textwrap.dedent("""
        name = "real-layouts"
        datasets = ["lgg", "medianomaly/brats2021", "bmad/brats",
                    {name = "nifti", id = "volumes", path = "brats_nifti"}]
        encoders = ["vae"]
        heads = ["gaussian"]
        [defaults.dataset]
        image_size = 16
        [dataset."medianomaly/brats2021"]
        val_fraction = 0.25
    """))
    grid = load_grid(str(grid_file))
    runner = Runner(Plan.of(grid), tmp_path / "out", data_root=trees, device="cpu", progress=False)
    built = {comp.id: runner.load_dataset(comp) for comp in grid.components("datasets")}
    assert set(built) == {"lgg", "medianomaly/brats2021", "bmad/brats", "volumes"}
    assert all(ds.image_size == 16 and ds.has_masks for ds in built.values())
    assert built["medianomaly/brats2021"].config["val_fraction"] == 0.25


# -- foreground from intensity, not "non-zero" (the fake trees have noisy, positive air) --------
def air_and_brain(radius: float) -> tuple[np.ndarray, np.ndarray]:
    """At SIZE px, by hand: pixels whose centre lies 4 px (32-px units) outside the fake organ disc of
    ``radius`` (``FakeLayouts.pixels``: 0.45 * 32; ``write_nifti``: 0.4 * 32), and 2 px inside it."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    distance = np.hypot(2 * yy + 1 - 16, 2 * xx + 1 - 16)        # centre of a 16-px pixel, 32-px units
    return distance > radius + 4, distance < radius - 2


def test_foreground_rule_on_a_hand_made_volume():
    from datasets._foreground import foreground_fraction, foreground_masks, volume_thresholds

    brain = np.full((5, 5), 3, np.uint8)                 # noisy air (3) around a ring of tissue (100)
    brain[1:4, 1:4] = 100
    brain[2, 2] = 5                                      # a dark ventricle inside: a hole to fill
    air = np.array([[0, 1, 2, 3, 4]] * 5, np.uint8)      # a slice above the head: noise only
    flat = np.full((5, 5), 7, np.uint8)                  # a volume with no contrast at all
    images = np.stack([brain, air, flat])[:, None]
    groups = np.array(["a", "a", "b"])
    thresholds = volume_thresholds(images, groups, 0.1)
    assert thresholds == {"a": 10.0, "b": 7.0}            # 0 + 0.1 * (100 - 0); 7 + 0.1 * 0
    masks = foreground_masks(images, groups, thresholds)
    expected = np.zeros((5, 5), np.uint8)
    expected[1:4, 1:4] = 1                                # ring + filled ventricle
    np.testing.assert_array_equal(masks[0, 0], expected)
    assert masks.shape == (3, 1, 5, 5) and masks[1:].sum() == 0
    np.testing.assert_allclose(foreground_fraction(images, groups, thresholds), [9 / 25, 0, 0])
    nonzero = volume_thresholds(images, groups, 0.0)      # level 0: above the minimum = non-zero here
    np.testing.assert_allclose(foreground_fraction(images, groups, nonzero), [1.0, 20 / 25, 0])
    with pytest.raises(DatasetError, match="foreground_level"):
        volume_thresholds(images, groups, 1.0)


def test_chunked_hole_filling_matches_scipy_plane_by_plane():
    from scipy import ndimage

    from datasets._foreground import fill_holes

    planes = np.random.default_rng(0).random((50, 9, 11)) > 0.45      # many holes, some touching the edges
    expected = np.stack([ndimage.binary_fill_holes(p) for p in planes])
    assert (expected != planes).any()
    np.testing.assert_array_equal(fill_holes(planes, chunk=7), expected)   # chunks never join planes


def test_lgg_drops_a_blank_but_noisy_slice_and_its_foreground_leaves_out_the_air(tmp_path):
    """Fails under the non-zero rule: the noisy slice would pass the filter and the air count as brain."""
    root, _ = fresh(tmp_path, "lgg")
    patient = sorted((root / "kaggle_3m").iterdir())[0]
    noise = FakeLayouts(tmp_path / "unused", seed=1)
    FakeLayouts.save(patient / f"{patient.name}_99.tif", noise.blank_slice(channels=3))   # air: positive noise
    FakeLayouts.save(patient / f"{patient.name}_99_mask.tif", np.zeros((32, 32), np.uint8))
    assert np.asarray(Image.open(patient / f"{patient.name}_99.tif")).mean() > 1     # not a zero slice
    kept = load("lgg", root)
    assert kept.config["dropped_low_foreground"] == 1 and "1 slices with less than 5% brain" in kept.card.splits
    assert kept.config["foreground_level"] == 0.1 and "10% of the patient's intensity range" in kept.card.splits
    every = load("lgg", root, min_foreground=0.0)
    total = lambda ds: sum(len(s) for s in (ds.train, ds.val, ds.test))
    assert every.config["dropped_low_foreground"] == 0 and total(every) == total(kept) + 1
    air, brain = air_and_brain(0.45 * 32)
    for split in (kept.train, kept.val, kept.test):
        assert split.foreground is not None and split.foreground.shape == split.masks.shape
        assert not split.foreground[:, 0][:, air].any() and split.foreground[:, 0][:, brain].all()
    nonzero = load("lgg", root, foreground_level=0.0)     # "above the minimum": the old non-zero rule here
    assert nonzero.config["dropped_low_foreground"] == 0
    assert nonzero.test.foreground[:, 0][:, air].mean() > 0.9


@pytest.mark.parametrize("name,radius", [("lgg", 0.45 * 32), ("nifti", 0.4 * 32),
                                         ("medianomaly/brats2021", 0.45 * 32)])
def test_brain_readers_foreground_leaves_out_the_noisy_air(trees, name, radius):
    ds = load(name, trees)
    air, brain = air_and_brain(radius)
    for split in (ds.train, ds.val, ds.test):
        images = split.images[:, 0]
        assert images[:, air].mean() > 0.5, "the fake air must be noisy, as real scans"
        fg = split.foreground[:, 0]
        assert not fg[:, air].any() and fg[:, brain].all(), f"{name}/{split.name}"
    assert ds.config["foreground_level"] == 0.1 and "foreground_level" in ds.card.notes


def test_nifti_drops_the_noisy_slices_outside_the_brain_only_under_the_intensity_rule(trees):
    assert load("nifti", trees).config["dropped_low_foreground"] == 24        # 2 + 2 noisy slices per volume
    assert load("nifti", trees, foreground_level=0.0).config["dropped_low_foreground"] == 0
    with pytest.raises(DatasetError, match="foreground_level"):
        load("nifti", trees, foreground_level=1.5)
