"""Lazy record arrays: the report reads the arrays it uses, never a record's full maps."""

import numpy as np
import pytest

from bench.run.store import ResultStore, npz_bytes
from bench.run.stored_arrays import StoredArrays


def _write(tmp_path, arrays):
    store = ResultStore(tmp_path)
    store.records_dir.mkdir(parents=True, exist_ok=True)
    store.arrays_path("c").write_bytes(npz_bytes(arrays))
    return store


def test_lazy_arrays_equal_the_eager_ones_and_read_only_what_is_asked(tmp_path, monkeypatch):
    arrays = {"test_scores": np.arange(4, dtype=np.float32), "test_maps": np.ones((4, 8, 8), np.float32),
              "test_ids": np.array(["a", "b", "c", "d"])}
    store = _write(tmp_path, arrays)
    lazy = store.arrays("c", lazy=True)
    assert isinstance(lazy, StoredArrays) and set(lazy) == set(arrays) and "test_maps" in lazy
    read = []
    real_load = np.load
    monkeypatch.setattr(np, "load", lambda *a, **k: read.append(1) or real_load(*a, **k))
    np.testing.assert_array_equal(lazy["test_scores"], arrays["test_scores"])
    np.testing.assert_array_equal(lazy["test_scores"], arrays["test_scores"])     # kept: read once
    assert len(read) == 1 and lazy._read.keys() == {"test_scores"}
    eager = store.arrays("c")
    assert eager.keys() == dict(lazy).keys() and all(np.array_equal(eager[k], lazy[k]) for k in eager)
    del lazy["test_maps"]                                  # the report drops what it no longer needs
    assert "test_maps" not in lazy and set(store.arrays("c")) == set(arrays)    # the file is untouched
    with pytest.raises(KeyError):
        lazy["test_maps"]


def test_a_damaged_member_is_named_when_read(tmp_path):
    store = _write(tmp_path, {"test_scores": np.arange(4000, dtype=np.float64)})
    path = store.arrays_path("c")
    data = bytearray(path.read_bytes())
    middle = len(data) // 3
    data[middle:middle + 64] = bytes(64)                   # the compressed member, not the directory
    path.write_bytes(bytes(data))
    lazy = store.arrays("c", lazy=True)
    with pytest.raises(ValueError, match=r"test_scores.*c\.npz.*unreadable"):
        lazy["test_scores"]
