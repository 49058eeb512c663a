"""Compact per-case pixel summaries (bench.analysis.pixsum, issue 23 item 7): the resampled pixel metrics
computed from them equal the exact full-map metrics, on synthetic maps and on the real BUSI test set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from bench.analysis import pixsum, stats
from bench.analysis.claims import evaluate_claims, parse_claim
from bench.metrics import evaluate
from bench.metrics.curves import dice_at
from bench.metrics.pixel import pixel_metrics
from bench.run.store import ResultStore, arrays_problem

BUSI = Path("/work/shared/data/busi.npz")
COMPARED = ("pixel_auroc", "pixel_ap", "pixel_aupro", "pixel_dice_oracle")


def smooth_case(n: int, side: int, seed: int, signal: float = 1.0):
    """Seeded smooth maps with 0-2 lesions per case (some touching the border, some split in two regions)."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, side, side), np.uint8)
    for i in range(n // 2):
        r, c, h = rng.integers(0, side - 4), rng.integers(0, side - 4), rng.integers(2, side // 3)
        masks[i, r:r + h, c:c + h] = 1
        if i % 3 == 0:                                # a second, disjoint region
            masks[i, -3:, :3] = 1
    noise = ndimage.gaussian_filter(rng.normal(size=masks.shape), (0, 1.5, 1.5))
    maps = (noise + signal * ndimage.gaussian_filter(masks.astype(float), (0, 1, 1))).astype(np.float32)
    return maps, masks


def from_summary(arrays: dict) -> dict[str, float]:
    return {k: float(v[0]) for k, v in stats.pixel_metric_samples(pixsum.pixel_counts_of(arrays)).items()}


def assert_summary_matches_exact(test_maps, test_masks, threshold: float, tolerance=0.002):
    """The summary's AUROC, AP, AUPRO and oracle Dice within ``tolerance`` of bench.metrics' exact ones; its Dice
    at ``threshold`` (in a run: the validation-chosen one) exactly equal."""
    exact = pixel_metrics(test_maps, test_masks)
    summary = pixsum.summarize(test_maps, test_masks, dice_threshold=threshold)
    got = from_summary(summary)
    for name in COMPARED:
        assert got[name] == pytest.approx(exact[name], abs=tolerance), name
    assert got["pixel_dice"] == pytest.approx(dice_at(test_maps, test_masks, threshold), abs=1e-12)
    return exact, summary


def test_summary_equals_the_exact_metrics_on_synthetic_maps():
    maps, masks = smooth_case(60, 48, seed=1, signal=0.5)
    exact, summary = assert_summary_matches_exact(maps, masks, threshold=float(np.quantile(maps, 0.9)))
    assert 0.05 < exact["pixel_ap"] < 0.95 and 0.05 < exact["pixel_aupro"] < 0.95    # neither trivial nor perfect
    # one region per connected lesion, each in its own case
    labelled = [ndimage.label(m, np.ones((3, 3)))[1] for m in masks]
    assert summary["test_pixsum_region"].shape[0] == sum(labelled)
    assert np.array_equal(np.bincount(summary["test_pixsum_region_image"], minlength=len(masks)), labelled)
    # the counts hold every pixel once
    assert summary["test_pixsum_pos"].sum() == masks.sum()
    assert summary["test_pixsum_neg"].sum() == masks.size - masks.sum()


def test_summary_size_does_not_grow_with_the_image():
    small, large = (pixsum.summarize(*smooth_case(20, side, seed=3), dice_threshold=0.5) for side in (24, 96))
    for key in ("test_pixsum_pos", "test_pixsum_neg"):          # 16x the pixels, at most T columns either way
        assert small[key].shape[0] == large[key].shape[0] == 20
        assert small[key].shape[1] <= large[key].shape[1] <= pixsum.PIXSUM_THRESHOLDS
    assert small["test_pixsum_dice"].shape == large["test_pixsum_dice"].shape == (20, 3)
    assert large["test_pixsum_pos"].sum() + large["test_pixsum_neg"].sum() == 20 * 96 * 96


def test_counts_from_maps_and_from_a_summary_agree_and_old_records_still_work():
    maps, masks = smooth_case(30, 32, seed=4)
    via_maps = pixsum.pixel_counts_of({"test_maps": maps, "test_masks": masks})       # a record before summaries
    via_summary = pixsum.pixel_counts_of(pixsum.summarize(maps, masks))
    assert np.array_equal(via_maps.pos_above, via_summary.pos_above)
    assert np.array_equal(via_maps.region_overlap, via_summary.region_overlap)
    assert pixsum.pixel_counts_of({"test_scores": np.zeros(3)}) is None
    # stats.pixel_counts bins the same way
    assert np.array_equal(stats.pixel_counts(maps, masks).neg_above, via_summary.neg_above)


@pytest.mark.skipif(not BUSI.is_file(), reason="needs /work/shared/data/busi.npz")
def test_summary_equals_the_exact_metrics_on_the_real_busi_test_set():
    from datasets import create_dataset

    ds = create_dataset("busi", root=str(BUSI.parent))
    assert ds.test.masks[:, 0].size > 4_000_000, "the case the store's map limit left untestable"

    # lesions are dark in ultrasound: a cheap, deterministic map
    maps = ndimage.gaussian_filter(-ds.test.images[:, 0].astype(np.float32) / 255, (0, 3, 3)).astype(np.float32)

    exact, summary = assert_summary_matches_exact(maps, ds.test.masks[:, 0], threshold=float(np.quantile(maps, 0.8)))
    assert sum(a.nbytes for a in summary.values()) < ds.test.masks.size   # smaller than the uint8 masks alone


def _record(cell_id: str, encoder: str, maps, masks, labels, scores, **arrays_extra):
    metrics = evaluate(scores, labels, test_maps=maps, test_masks=masks, val_maps=maps, val_masks=masks)
    record = {"cell_id": cell_id, "status": "ok", "dataset": "d", "kind": "latent", "encoder": encoder, "head": "h",
              "localization": "gradient", "setting": "uad", "seed": 0, "metrics": dict(metrics),
              "metrics_unavailable": dict(metrics.unavailable), "config": {"encoder.name": encoder, "head.name": "h"},
              "n_test": len(scores), "deterministic_fit": True}   # one seed decides only seed-independent fits
    arrays = {"test_scores": scores, "test_labels": labels, "test_groups": np.arange(len(labels)).astype(str),
              "val_scores": scores, "val_labels": labels, **arrays_extra}
    return record, arrays


def test_pixel_claims_are_testable_from_summaries_alone(tmp_path):
    rng = np.random.default_rng(5)
    maps, masks = smooth_case(40, 20, seed=5, signal=2.0)
    weak = (maps + rng.normal(scale=1.5, size=maps.shape)).astype(np.float32)
    labels = masks.reshape(40, -1).any(1).astype(int)
    scores = rng.normal(size=40) + labels
    records, stored = [], {}
    for encoder, m in (("good", maps), ("ctrl", weak)):
        metrics = evaluate(scores, labels, test_maps=m, test_masks=masks, val_maps=m, val_masks=masks)
        summary = pixsum.summarize(m, masks, dice_threshold=metrics["pixel_threshold"])   # as score_cell stores it
        record, arrays = _record(f"d__{encoder}__h__s0", encoder, m, masks, labels, scores, **summary)
        records.append(record)
        stored[record["cell_id"]] = arrays
    claim = parse_claim({"id": "pix", "source": "t", "statement": "good maps beat weak ones",
                         "metrics": ["pixel_ap", "pixel_dice"], "a": {"encoder": "good"}, "b": {"encoder": "ctrl"},
                         "match": ["seed", "head"]}, "test")
    table = evaluate_claims(records, [claim], stored.__getitem__, n_resamples=400).table.set_index("metric")
    assert set(table["verdict"]) == {"supported"}, table[["verdict", "reason"]]
    # without summary and maps (an old record over the map limit) the pixel claim is not testable, and says why
    bare = {cid: {k: v for k, v in a.items() if not k.startswith(pixsum.PREFIX)} for cid, a in stored.items()}
    table = evaluate_claims(records, [claim], bare.__getitem__, n_resamples=400).table
    assert set(table["verdict"]) == {"not testable"} and table["reason"].str.contains("re-run the cell").all()

    # the store trusts the new keys, and refuses them beside a record without pixel metrics or out of shape
    store = ResultStore(tmp_path / "run")
    store.write(records[0], stored[records[0]["cell_id"]])
    path = store.arrays_path(records[0]["cell_id"])
    assert arrays_problem(path, records[0]) is None and store.records()
    no_pixels = {**records[0], "metrics": {k: v for k, v in records[0]["metrics"].items() if not k.startswith("pixel")},
                 "metrics_unavailable": {}}
    assert "pixel summary" in arrays_problem(path, no_pixels)
    broken = {**stored[records[0]["cell_id"]], "test_pixsum_neg": np.zeros((3, 2), np.int32)}
    store.write(records[0], broken)
    assert "inconsistent shapes" in arrays_problem(path, records[0])
