"""The one sort behind every pixel metric: packed-key ordering of float32 scores, and the foreground
curves that read their order off the all-pixel sort instead of sorting again."""

from __future__ import annotations

import numpy as np
import pytest

from bench.metrics.curves import _ascending_order, _DescendingOrder
from bench.metrics.pixel import PixelCurve, compute_pixel_metrics, pixel_curves


def _scores(rng, n: int, ties: bool) -> np.ndarray:
    x = rng.normal(size=n).astype(np.float32)
    if ties:
        x = np.round(x * 4) / 4 + 0.0         # + 0.0: no -0.0 (it sorts just below 0.0 here)
    x[rng.integers(0, n, n // 10)] = 0.0
    return x.astype(np.float32)


@pytest.mark.parametrize("ties", [False, True])
def test_float32_order_is_numpys_stable_argsort(ties):
    x = _scores(np.random.default_rng(0), 20_000, ties)
    x[-5:] = [np.float32(3.4e38), np.float32(-3.4e38), np.float32(1e-45), np.float32(-1e-45), 0.0]
    assert np.array_equal(_ascending_order(x), np.argsort(x, kind="stable"))


def test_negative_zero_sorts_with_zero_and_other_dtypes_fall_back_to_argsort():
    x = np.array([0.0, -0.0, -1.0, 0.0, -0.0, 2.0], dtype=np.float32)
    ranked = x[_ascending_order(x)]
    assert np.all(np.diff(ranked) >= 0) and ranked[0] == -1.0 and ranked[-1] == 2.0
    order = _DescendingOrder.of(x)
    assert order.thresholds.tolist() == [2.0, 0.0, -1.0]       # both zeros are one tie group
    y = x.astype(np.float64)
    assert np.array_equal(np.sort(y), y[_ascending_order(y)])


@pytest.mark.parametrize("ties", [False, True])
def test_foreground_order_read_off_the_all_pixel_sort(ties):
    rng = np.random.default_rng(1)
    maps = _scores(rng, 8 * 24 * 24, ties).reshape(8, 24, 24)
    masks = np.zeros_like(maps, dtype=bool)
    masks[:4, 5:12, 6:14] = True
    maps[masks] += 1.0
    select = rng.random(maps.shape) < 0.7
    full = _DescendingOrder.of(maps.ravel())
    derived = full.within(select, maps[select])
    direct = _DescendingOrder.of(maps[select])
    assert np.array_equal(derived.thresholds, direct.thresholds) and np.array_equal(derived.ends, direct.ends)
    assert np.array_equal(np.sort(derived.order), np.arange(select.sum()))
    for a, b in zip(derived.counts(masks[select]), direct.counts(masks[select])):
        assert np.array_equal(a, b)
    # every foreground metric and threshold: the derived curve equals one sorted on its own
    curves = pixel_curves(maps, masks, val_maps=maps[:5], val_masks=masks[:5], test_foreground=select,
                          val_foreground=select[:5])
    alone = PixelCurve(maps, masks, select=select, threshold=curves[True].threshold)
    derived_values, _ = compute_pixel_metrics({True: curves[True]})
    alone_values, _ = compute_pixel_metrics({True: alone})
    assert derived_values.keys() == alone_values.keys() and derived_values
    for name, value in derived_values.items():
        assert value == pytest.approx(alone_values[name], abs=1e-12), name
    val_alone = PixelCurve(maps[:5], masks[:5], select=select[:5])
    best = int(np.argmax(2.0 * val_alone.counts[0] / (val_alone.counts[0] + val_alone.counts[1]
                                                      + val_alone.counts[0][-1])))
    assert curves[True].threshold == val_alone.order.thresholds[best]
