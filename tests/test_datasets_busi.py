"""``busi`` loader: the published folder (fake tree), ``busi.npz`` (fake and real), and foreground masks."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datasets import DatasetError, Split, create_dataset
from datasets._splits import assemble
from datasets.base import DatasetCard, nonzero_foreground
from datasets.synthetic import PhantomGenerator
from fake_layouts import FakeLayouts
from tests.conftest import SHARED_DATA

#: FakeLayouts.busi_lesions at 16 px, by hand: every fake side is a multiple of 16, so the first lesion
#: (rows h/4..h/2, cols w/4..w/2) covers rows 4:8, cols 4:8 and the second (rows 5h/8..3h/4,
#: cols 5w/8..7w/8) rows 10:12, cols 10:14, after nearest to 128 px and nearest to 16 px.
LESION = np.zeros((16, 16), np.uint8)
LESION[4:8, 4:8] = 1
SECOND = np.zeros((16, 16), np.uint8)
SECOND[10:12, 10:14] = 1


def write_fake_busi(root: Path, n=(20, 30, 10), size: int = 32) -> Path:
    rng = np.random.default_rng(0)
    subtype = np.array(["normal"] * n[0] + ["benign"] * n[1] + ["malignant"] * n[2])
    images = rng.integers(0, 256, (len(subtype), size, size), dtype=np.uint8)
    masks = np.zeros_like(images)
    masks[subtype != "normal", 8:16, 8:16] = 1
    images[-1] = images[n[0]]                      # a pixel-identical duplicate (as benign 433 / malignant 145)
    names = np.array([f"{s} ({i}).png" for i, s in enumerate(subtype)])
    path = root / "busi.npz"
    np.savez(path, images=images, masks=masks, labels=(subtype != "normal").astype(np.uint8),
             subtype=subtype, names=names, orig_hw=np.full((len(subtype), 2), 500, np.int16))
    return path


def test_busi_fake_file_splits(tmp_path):
    write_fake_busi(tmp_path)
    ds = create_dataset("busi", root=tmp_path, image_size=16, train_fraction=0.5, val_fraction=0.3, seed=1)
    assert ds.train.n_anomalous == 0 and len(ds.train) == 10
    assert ds.val.n_normal == 3 and ds.test.n_normal == 7                 # the other 10 normals, 30 % to val
    assert ds.val.n_anomalous + ds.test.n_anomalous == 39                 # 40 lesion images, one duplicate dropped
    assert ds.test.images.shape[1:] == (1, 16, 16) and ds.test.masks.shape[1:] == (1, 16, 16)
    assert ds.test.masks[ds.test.labels == 1].any() and not ds.test.masks[ds.test.labels == 0].any()
    assert ds.test.foreground is None
    again = create_dataset("busi", root=tmp_path, image_size=16, train_fraction=0.5, val_fraction=0.3, seed=1)
    np.testing.assert_array_equal(ds.test.groups, again.test.groups)
    other = create_dataset("busi", root=tmp_path, image_size=16, train_fraction=0.5, val_fraction=0.3, seed=2)
    assert not np.array_equal(np.sort(ds.train.groups), np.sort(other.train.groups))


def test_busi_pool_fraction_holds_out_lesion_images(tmp_path):
    write_fake_busi(tmp_path)
    base = create_dataset("busi", root=tmp_path, image_size=16, train_fraction=0.5, seed=1)
    assert base.pool is None
    ds = create_dataset("busi", root=tmp_path, image_size=16, train_fraction=0.5, seed=1, pool_fraction=0.5)
    # benign 30 -> 15 pooled, malignant 9 (one duplicate dropped) -> round(4.5) = 4: 19 unlabeled lesion images
    assert len(ds.pool) == 19 and ds.pool.n_normal == 0 and ds.pool.masks is not None
    assert ds.val.n_anomalous + ds.test.n_anomalous == 39 - 19
    np.testing.assert_array_equal(ds.train.groups, base.train.groups)            # training is untouched
    assert not set(ds.pool.groups) & (set(ds.test.groups) | set(ds.val.groups))
    with pytest.raises(DatasetError, match="pool_fraction"):
        create_dataset("busi", root=tmp_path, pool_fraction=1.0)


def test_busi_errors(tmp_path):
    with pytest.raises(DatasetError, match="Dataset_BUSI_with_GT: folder not found.*or busi.npz"):
        create_dataset("busi", root=tmp_path)
    with pytest.raises(DatasetError, match="busi.npz: file not found"):
        create_dataset("busi", root=tmp_path, source="npz")
    write_fake_busi(tmp_path)
    with pytest.raises(DatasetError, match="image_size"):
        create_dataset("busi", root=tmp_path, image_size=256)
    with pytest.raises(DatasetError, match="train_fraction"):
        create_dataset("busi", root=tmp_path, train_fraction=1.0)


def test_busi_real_file():
    if not (SHARED_DATA / "busi.npz").exists():
        pytest.skip(f"busi.npz not found in {SHARED_DATA} (set UAD_BENCH_SHARED_DATA)")
    ds = create_dataset("busi", root=SHARED_DATA, image_size=64)
    total = sum(len(s) for s in (ds.train, ds.val, ds.test))
    assert total == 779 and ds.config["duplicates_dropped"] == 1      # benign 433 = malignant 145
    assert len(ds.train) == 80 and ds.train.n_anomalous == 0            # 60 % of 133 normals
    assert ds.val.n_normal + ds.test.n_normal == 53
    lesion = ds.test.masks[ds.test.labels == 1].reshape(ds.test.n_anomalous, -1)
    assert (lesion.sum(1) > 0).all() and ds.test.images.shape[-1] == 64


def test_split_validates_and_subsets_foreground():
    images = np.zeros((3, 1, 8, 8), np.uint8)
    with pytest.raises(DatasetError, match="foreground must have shape"):
        Split(images, np.zeros(3), foreground=np.ones((3, 1, 4, 4)))
    body = np.zeros((3, 8, 8)); body[1, 2:4, 2:4] = 5
    split = Split(images, np.zeros(3), foreground=body)
    assert split.foreground.shape == (3, 1, 8, 8) and split.foreground.max() == 1
    assert split.subset(np.array([1])).foreground.sum() == 4


def test_synthetic_foreground_is_intracranial_and_holds_the_lesions():
    split = PhantomGenerator(32, seed=0).split("test", 12, 6)
    fg = split.foreground.astype(bool)
    head = split.images > 0
    assert fg.any(1).any() and (fg <= head).all() and fg.sum() < head.sum()    # skull ring excluded
    assert not (split.masks.astype(bool) & ~fg).any()


def test_nonzero_foreground_in_assemble():
    images = np.zeros((4, 1, 8, 8), np.uint8); images[:, :, 2:6, 2:6] = 9
    tags = np.array(["train", "train", "val", "test"])
    ds = assemble("x", {"images": images}, np.array([0, 0, 0, 1]), np.arange(4).astype(str), tags,
                  DatasetCard("x"), {}, source="x", quiet=True, foreground="nonzero")
    assert ds.test.foreground.sum() == 16 and np.array_equal(ds.val.foreground, nonzero_foreground(images[2:3]))


# -- the published folder (Dataset_BUSI_with_GT) ------------------------------------------------
def items(ds) -> dict[str, tuple[str, np.ndarray, int, np.ndarray]]:
    """File name -> (split, image [H, W], label, mask [H, W]) over train, val and test."""
    out = {}
    for split in (ds.train, ds.val, ds.test):
        for group, image, label, mask in zip(split.groups, split.images, split.labels, split.masks, strict=True):
            out[group.removeprefix("busi-")] = (split.name, image[0], int(label), mask[0])
    return out


def npz_from_folder(folder: Path, path: Path) -> Path:
    """busi.npz as busi.README.md says it was made: Pillow L, bilinear to 128, masks OR-ed then nearest."""
    rows = []
    for subtype in ("normal", "benign", "malignant"):
        files = [p for p in (folder / subtype).glob("*.png") if "_mask" not in p.name]
        for image_path in sorted(files, key=lambda p: int(p.stem.split("(")[1].rstrip(")"))):
            image = Image.open(image_path).convert("L")
            union = np.zeros(image.size[::-1], bool)
            for mask_path in folder.glob(f"{subtype}/{glob_escape(image_path.stem)}_mask*.png"):
                union |= np.asarray(Image.open(mask_path)) > 0
            mask = Image.fromarray(union.astype(np.uint8) * 255).resize((128, 128), Image.NEAREST)
            rows.append((np.asarray(image.resize((128, 128), Image.BILINEAR)), np.asarray(mask) > 0, subtype,
                         image_path.name, image.size[::-1]))
    images, masks, subtype, names, hw = zip(*rows, strict=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, images=np.stack(images), masks=np.stack(masks).astype(np.uint8),
             labels=(np.array(subtype) != "normal").astype(np.uint8), subtype=np.array(subtype),
             names=np.array(names), orig_hw=np.array(hw, np.int16))
    return path


def glob_escape(text: str) -> str:
    return text.replace("[", "[[]").replace("(", "[(]").replace(")", "[)]")


def test_busi_folder_counts_labels_and_merged_masks(tmp_path):
    written = FakeLayouts(tmp_path).write_busi()
    ds = create_dataset("busi", root=tmp_path, image_size=16, train_fraction=0.5, val_fraction=0.5, seed=0)
    got = items(ds)
    assert ds.config["source_kind"] == "folder" and ds.config["duplicates_dropped"] == 1
    assert len(got) == written.counts["images"] - 1 == 10 and "malignant (3).png" not in got   # = benign (1)
    assert len(ds.train) == 2 and ds.train.n_anomalous == 0                # half of the 4 normals
    assert {name: label for name, (_, _, label, _) in got.items()} == {
        name: int(not name.startswith("normal")) for name in got}
    np.testing.assert_array_equal(got["benign (2).png"][3], LESION | SECOND)     # _mask.png OR _mask_1.png
    np.testing.assert_array_equal(got["malignant (1).png"][3], LESION | SECOND)
    for name in ("benign (1).png", "benign (3).png", "benign (4).png", "malignant (2).png"):
        np.testing.assert_array_equal(got[name][3], LESION)
    for name in ("normal (1).png", "normal (2).png", "normal (3).png", "normal (4).png"):
        assert got[name][3].sum() == 0
    _, image, _, mask = got["benign (2).png"]
    assert image[mask == 1].mean() < image[mask == 0].mean() - 30             # the dark lesion under its mask
    assert "This build read the published folder" in ds.card.notes and str(written.path) in ds.card.notes


def test_busi_folder_is_cached_and_may_be_the_root_itself(tmp_path, monkeypatch):
    import datasets.busi

    FakeLayouts(tmp_path).write_busi()
    first = create_dataset("busi", root=tmp_path, image_size=16)
    assert not first.config["cache_hit"] and Path(first.config["cache_file"]).parent == tmp_path / ".uad_cache"

    def no_decoding(*args, **kwargs):
        raise AssertionError("a cache hit must not decode images")

    monkeypatch.setattr(datasets.busi, "decode_folder", no_decoding)
    second = create_dataset("busi", root=tmp_path, image_size=16)
    assert second.config["cache_hit"] and np.array_equal(second.test.images, first.test.images)
    assert create_dataset("busi", root=tmp_path, image_size=32, seed=3).config["cache_hit"]   # one 128-px entry
    monkeypatch.undo()
    edited = tmp_path / "Dataset_BUSI_with_GT" / "normal" / "normal (1).png"
    Image.fromarray(np.full((48, 64, 3), 9, np.uint8)).save(edited)
    assert not create_dataset("busi", root=tmp_path, image_size=16).config["cache_hit"]

    FakeLayouts(tmp_path / "flat").write_busi(inside=False)                   # root = the BUSI folder itself
    flat = create_dataset("busi", root=tmp_path / "flat", image_size=16)
    assert flat.config["source"] == str(tmp_path / "flat") and len(items(flat)) == 10


def test_busi_folder_and_npz_give_the_same_arrays_and_splits(tmp_path):
    written = FakeLayouts(tmp_path).write_busi()
    npz_from_folder(written.path, tmp_path / "busi.npz")          # both sources in one data root
    for size in (128, 16):
        folder = create_dataset("busi", root=tmp_path, image_size=size, seed=2)
        npz = create_dataset("busi", root=tmp_path, image_size=size, seed=2, source="npz")
        assert (folder.config["source_kind"], npz.config["source_kind"]) == ("folder", "npz")   # auto: folder
        assert "busi.npz (BUSI at 128 px)" in npz.card.notes
        for a, b in zip((folder.train, folder.val, folder.test), (npz.train, npz.val, npz.test), strict=True):
            np.testing.assert_array_equal(a.groups, b.groups)
            np.testing.assert_array_equal(a.images, b.images)
            np.testing.assert_array_equal(a.masks, b.masks)
    assert folder.config["duplicates_dropped"] == npz.config["duplicates_dropped"] == 1


def _missing_folder(folder: Path) -> Path:
    shutil.rmtree(folder)
    return folder


def _drop_class(folder: Path) -> Path:
    shutil.rmtree(folder / "malignant")
    return folder / "malignant"


def _orphan_mask(folder: Path) -> Path:
    return FakeLayouts.save(folder / "benign" / "benign (99)_mask.png", np.zeros((48, 64), np.uint8))


def _image_without_mask(folder: Path) -> Path:
    mask = folder / "benign" / "benign (3)_mask.png"
    mask.unlink()
    return mask


def _truncated(folder: Path) -> Path:
    image = folder / "malignant" / "malignant (2).png"
    image.write_bytes(image.read_bytes()[:80])
    return image


def _lesion_in_a_normal(folder: Path) -> Path:
    mask = np.zeros((64, 48), np.uint8)         # normal (2) is 64 x 48
    mask[5:9, 5:9] = 255
    return FakeLayouts.save(folder / "normal" / "normal (2)_mask.png", mask)


@pytest.mark.parametrize("breakage,match", [
    (_missing_folder, "folder not found"), (_drop_class, "folder not found"),
    (_orphan_mask, "mask without an image"), (_image_without_mask, "mask not found"),
    (_truncated, "unreadable or truncated"), (_lesion_in_a_normal, "expected empty masks"),
])
def test_busi_folder_bad_input_is_one_line_naming_the_file(tmp_path, breakage, match):
    written = FakeLayouts(tmp_path).write_busi()
    culprit = breakage(written.path)
    with pytest.raises(DatasetError, match=match) as err:
        create_dataset("busi", root=tmp_path, image_size=16)
    assert "\n" not in str(err.value) and str(culprit) in str(err.value), str(err.value)
    cache = tmp_path / ".uad_cache"
    assert not cache.exists() or not any(cache.iterdir())       # a failed build leaves no entry
