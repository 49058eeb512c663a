"""What a run scores besides val and test when label-free selection is on (issue 25): the ``synth_*`` arrays.

Three extra inputs, all made without a test image or label, scored through the cell's own
``Detector.predict`` (``predict_splits``' named extra splits):

* ``synth``: the synthetic validation set (anomalies made from validation normals by the registered
  generators, :mod:`datasets.generators`), with maps where the cell makes test maps;
* ``mv_reference``: reference samples for the Mass-Volume criterion, each pixel drawn independently
  from the same pixel of a random validation normal (the product of the normals' per-pixel marginals);
* ``pool``: the dataset's unlabelled pool where it has one (a seeded subset; its labels are never read).

A cell stores its scores on them and, for synthetic maps, the compact per-case pixel summary the test
maps get (:mod:`bench.analysis.pixsum`, under ``synth_pixsum_*``): pixel AP per generator from the
record alone, computed as the test split's resampled pixel metrics are.

Record arrays (the ``synth_*`` prefix is reserved for these): ``synth_scores`` float32 ``[S]``,
``synth_generator`` str ``[S]``, ``synth_source`` int ``[S]`` (index in ``val``); with maps
the ``synth_pixsum_*`` summary (``pixsum.KEYS``, ``PIXEL_BINS`` thresholds, no Dice; records written
before it hold ``synth_pix_edges`` ``[K+1]`` and ``synth_pix_pos`` / ``synth_pix_neg`` ``[S, K]``);
``synth_mv_scores`` float32 ``[R]``; ``synth_pool_scores`` float32 ``[P]`` where the dataset has a pool.
Record field ``selection``: generators, cap, set key, counts (or ``error``); timing ``synth_predict_s``
(part of ``predict_s``).
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.analysis.pixsum import SYNTH_PREFIX, summarize

#: Grid settings of ``selection`` (a grid's ``selection = true`` or ``[selection]`` table overrides them).
DEFAULTS = {"generators": None, "per_generator": 200, "mv_reference": 200, "pool": 200}
#: Thresholds of the per-case pixel summaries of synthetic maps (quantiles of the cell's own map values).
PIXEL_BINS = 128
#: Stream of the Mass-Volume reference and pool subset draws (independent of the synthetic images).
REFERENCE_STREAM = 25


def selection_settings(value) -> dict | None:
    """A grid's ``selection`` value -> settings, or None when off (absent or false)."""
    if value is None or value is False:
        return None
    if value is True:
        return dict(DEFAULTS)
    if isinstance(value, dict):
        unknown = set(value) - set(DEFAULTS) - {"enabled"}
        if unknown:
            raise ValueError(f"[selection]: unknown key(s) {', '.join(sorted(unknown))}; "
                             f"known: enabled, {', '.join(DEFAULTS)}")
        if value.get("enabled", True) is False:
            return None
        return {**DEFAULTS, **{k: v for k, v in value.items() if k != "enabled"}}
    raise ValueError(f"selection must be true, false or a table, got {value!r}")


@dataclass
class SelectionInputs:
    """The extra images of one (dataset, seed), or the reason there are none."""

    synth: object | None = None                    # datasets.generators._synthset.SyntheticSet
    mv_reference: np.ndarray | None = None
    pool: np.ndarray | None = None
    info: dict = field(default_factory=dict)

    def splits(self, with_maps: bool) -> dict[str, tuple[np.ndarray, bool]]:
        """``predict_splits``' extra splits: name -> (images, want maps)."""
        out = {}
        if self.synth is not None and len(self.synth):
            out["synth"] = (self.synth.images, with_maps)
        if self.mv_reference is not None:
            out["mv_reference"] = (self.mv_reference, False)
        if self.pool is not None:
            out["pool"] = (self.pool, False)
        return out


def reference_samples(val, n: int, seed: int) -> np.ndarray:
    """``n`` images whose every pixel is that pixel of a random validation normal (independently per pixel)."""
    normal = val.images[val.labels == 0]
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(REFERENCE_STREAM, 0)))
    h, w = normal.shape[2:]
    pick = rng.integers(0, len(normal), size=(n, h, w))
    rows, cols = np.mgrid[0:h, 0:w]
    return np.ascontiguousarray(normal[pick, :, rows[None], cols[None]].transpose(0, 3, 1, 2))


def build_inputs(dataset, seed: int, settings: dict, cache_dir: str | None) -> SelectionInputs:
    """The extra images of ``dataset`` for ``seed`` (a failure is recorded, never fatal to the cell)."""
    from datasets.generators._synthset import DEFAULT_GENERATORS, synthetic_validation

    val = dataset.val
    generators = list(settings.get("generators") or DEFAULT_GENERATORS)
    info = {"generators": generators, "per_generator": int(settings["per_generator"])}
    if len(val) == 0 or int((val.labels == 0).sum()) < 2:
        return SelectionInputs(info={**info, "error": "fewer than 2 validation normals: no synthetic set"})
    try:
        synth = synthetic_validation(val, generators, int(settings["per_generator"]), seed,
                                     None if cache_dir is None else Path(cache_dir) / "synthetic")
    except Exception as exc:  # noqa: BLE001 - recorded with every cell, the grid goes on
        return SelectionInputs(info={**info, "error": f"synthetic set: {type(exc).__name__}: {exc}",
                                     "traceback": "".join(traceback.format_exception(exc))})
    info.update(set_key=synth.key[:16], n_synth=len(synth))
    mv = reference_samples(val, int(settings["mv_reference"]), seed) if settings.get("mv_reference") else None
    pool = None
    if dataset.pool is not None and len(dataset.pool) and settings.get("pool"):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(REFERENCE_STREAM, 1)))
        n = min(int(settings["pool"]), len(dataset.pool))
        pool = dataset.pool.images[np.sort(rng.choice(len(dataset.pool), n, replace=False))]
    info.update(n_mv_reference=0 if mv is None else len(mv), n_pool=0 if pool is None else len(pool))
    return SelectionInputs(synth, mv, pool, info)


_INPUTS: dict[tuple, tuple] = {}


def inputs_for(dataset, seed: int, settings: dict | None, cache_dir: str | None) -> SelectionInputs | None:
    """:func:`build_inputs`, once per process per (dataset, seed); None when selection is off."""
    if settings is None:
        return None
    key = (id(dataset), int(seed), repr(sorted(settings.items())), cache_dir)
    hit = _INPUTS.get(key)
    if hit is None or hit[0] is not dataset:
        hit = _INPUTS[key] = (dataset, build_inputs(dataset, seed, settings, cache_dir))
    return hit[1]


def synth_arrays(inputs: SelectionInputs, predictions: dict) -> tuple[dict, dict]:
    """(``synth_*`` arrays, record fields) from the extra splits' predictions."""
    arrays, info = {}, dict(inputs.info)
    info.pop("traceback", None)
    synth = predictions.get("synth")
    if synth is not None:
        arrays.update(synth_scores=np.asarray(synth.scores, dtype=np.float32).reshape(-1),
                      synth_generator=inputs.synth.generator.astype(str), synth_source=inputs.synth.source)
        if synth.maps is not None:
            try:
                arrays.update(summarize(synth.maps, inputs.synth.masks, n_thresholds=PIXEL_BINS, prefix=SYNTH_PREFIX))
            except ValueError as exc:
                info["pixel_error"] = str(exc)
    if predictions.get("mv_reference") is not None:
        arrays["synth_mv_scores"] = np.asarray(predictions["mv_reference"].scores, dtype=np.float32).reshape(-1)
    if predictions.get("pool") is not None:
        arrays["synth_pool_scores"] = np.asarray(predictions["pool"].scores, dtype=np.float32).reshape(-1)
    return arrays, info
