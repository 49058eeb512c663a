"""Apply one cell of a finished run to new images: ``python -m bench predict RUN_DIR --cell ID ...``.

Why from the cache and not from a saved model file: the run already stores every fit content-addressed
(``bench.run.cache``), and the record names its entry (``encoder_cache`` for encoder × head cells,
``detector_cache`` for end-to-end detectors). ``predict`` rebuilds the cell from the run's own grid
(``run.json``: grid text and overrides, so the same components and options), loads that entry and
never trains an encoder or a detector: a cell whose fit is not in the cache is refused in one line.
A density head is not cached by the runner (it is seconds on the cached training embeddings); it is
fitted again here with the cell's seed, and the refit is checked against the record's stored test
scores before anything is written.

Images are read with the dataset readers' decoding (:mod:`datasets._io`: 8-bit, the dataset's
channels, resized to its ``image_size``). Outputs in ``--out``: ``scores.csv`` (file, score, the
validation threshold stored in the record, the decision ``score >= threshold``) and, for cells
that make maps, ``maps/<file>.npy`` (float32 ``[S, S]``) and ``overlays/<file>.png``.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class PredictError(ValueError):
    """A cell that cannot be applied (no record, not finished, fit not cached); one line for the CLI."""


@dataclass
class PredictResult:
    scores_csv: Path
    n_images: int
    n_maps: int
    threshold: float | None
    notes: list


def run_grid(run_dir: Path):
    """The grid the run was made with (its text and overrides from ``run.json``)."""
    from bench.run.grid import Grid, apply_override, check_list_keys

    info_path = run_dir / "run.json"
    if not info_path.is_file():
        raise PredictError(f"{run_dir} has no run.json: not a run directory made by `python -m bench run`")
    info = json.loads(info_path.read_text())
    data = tomllib.loads(info.get("grid_source") or "")
    for item in info.get("overrides") or []:
        apply_override(data, item)
    check_list_keys(data)
    return Grid(str(data.get("name", info.get("grid"))), data, info.get("grid_source") or "",
                Path(info["grid_file"]) if info.get("grid_file") else None, list(info.get("overrides") or []))


def find_cell(run_dir: Path, cell_id: str):
    """``(record, plan cell, grid)`` of ``cell_id``, or :class:`PredictError` saying what is wrong."""
    from bench.run.plan import Plan
    from bench.run.store import ResultStore

    record = ResultStore(run_dir).read(cell_id)
    if record is None:
        known = sorted(p.stem for p in (run_dir / "records").glob("*.json"))
        hint = f"; cells of this run: {', '.join(known[:6])}{' ...' if len(known) > 6 else ''}" if known else ""
        raise PredictError(f"no record of cell '{cell_id}' in {run_dir / 'records'}{hint}")
    if record.get("status") not in ("ok", "degenerate"):
        raise PredictError(f"cell '{cell_id}' is {record.get('status')} in {run_dir}: there is no fit to apply")
    grid = run_grid(run_dir)
    cell = next((c for c in Plan.of(grid).cells if c.cell_id == cell_id), None)
    if cell is None or cell.config_hash() != record.get("config_hash"):
        raise PredictError(f"cell '{cell_id}': the grid stored in {run_dir / 'run.json'} no longer gives the "
                           "record's configuration; re-run the grid to refresh the record")
    return record, cell, grid


def cached_fit_path(record: dict, cache_dir: str | Path | None) -> Path:
    """The cache entry the record names (moved under ``cache_dir`` when given), refused when absent."""
    field, folder = ("detector_cache", "detectors") if record.get("kind") == "detector" else ("encoder_cache", "encoders")
    stored = record.get(field)
    if not stored:
        raise PredictError(f"cell '{record['cell_id']}': its record names no {field}; re-run the grid to record it")
    path = Path(stored) if cache_dir is None else Path(cache_dir) / folder / Path(stored).name
    present = path.is_file() if field == "detector_cache" else (path / "meta.json").is_file()
    if not present:
        cache = path.parent.parent
        raise PredictError(f"cell '{record['cell_id']}': its fit is not cached ({path} is missing); re-run the grid "
                           f"with the same cache to make it (python -m bench run ... --cache {cache}) or pass "
                           "--cache DIR where it is")
    return path


def read_images(folder: Path, size: int, channels: int) -> tuple[list[Path], np.ndarray]:
    """Every image file of ``folder`` (sorted), decoded as the dataset readers do."""
    from datasets._io import Record, decode_record, list_images, require_dir

    files = sorted(list_images(require_dir(Path(folder), "image files to score")))
    images = np.zeros((len(files), channels, size, size), np.uint8)
    for i, path in enumerate(files):
        images[i] = decode_record(Record(image=path, label=0, group=path.stem), size, channels)[0]
    return files, images


def build_detector(record: dict, cell, dataset, ctx, fit_path: Path, notes: list):
    """The cell's fitted detector, from the cache entry (plus a head refitted on cached embeddings)."""
    import torch

    from methods.base import seed_everything
    from methods.registry import create_detector, create_encoder, create_head, is_patch_head

    seed_everything(cell.seed)
    if record.get("kind") == "detector":
        from bench.run.cache import DetectorCache

        comp = cell.detector
        fresh = create_detector(comp.name, in_chans=dataset.channels, image_size=dataset.image_size, **comp.kwargs)
        detector = DetectorCache(fit_path.parent).load(fit_path.stem)
        if detector is None:
            raise PredictError(f"cell '{record['cell_id']}': cache entry {fit_path} is unreadable (moved aside); "
                               "re-run the grid with the same --cache")
        for name in fresh.predict_params:          # this cell's scoring options on the shared fit
            setattr(detector, name, getattr(fresh, name))
        return detector
    from bench.run.cache import EncoderCache
    from methods.detectors.latent import LatentDetector, SplitMemo
    from methods.detectors.patch import PatchDetector

    encoder = create_encoder(cell.encoder.name, in_chans=dataset.channels, image_size=dataset.image_size,
                             **cell.encoder.kwargs)
    entry = EncoderCache(fit_path.parent).load(fit_path.name, encoder)
    if entry is None:
        raise PredictError(f"cell '{record['cell_id']}': cache entry {fit_path} is unreadable (moved aside); "
                           "re-run the grid with the same --cache")
    emb, _ = entry
    head = create_head(cell.head.name, **cell.head.kwargs)
    if is_patch_head(cell.head.name):
        detector = PatchDetector(encoder, head, fit_encoder=False)
    else:
        memo = SplitMemo()
        for name in ("train", "val", "test"):
            memo.put("embedding", getattr(dataset, name).images, torch.from_numpy(emb[name]))
        detector = LatentDetector(encoder, head, cell.localization, map_options=cell.map_kwargs, fit_encoder=False,
                                  memo=memo)
    detector.fit(dataset.train, seed=cell.seed, device=ctx.fit_device, progress=False)
    notes.append(f"head {cell.head.id} refitted on the cached training embeddings (seed {cell.seed})")
    return detector


def check_reproduces(cell_id: str, detector, dataset, stored: np.ndarray, ctx, notes: list) -> None:
    """The rebuilt detector must give the record's test scores (else its fit is not the cell's)."""
    scores = np.asarray(detector.predict(dataset.test.images, device=ctx.fit_device, with_maps=False).scores,
                        dtype=np.float64)
    stored = np.asarray(stored, dtype=np.float64)
    if scores.shape != stored.shape or not np.allclose(scores, stored, rtol=1e-4, atol=1e-5 * (np.abs(stored).max() + 1)):
        diff = float(np.max(np.abs(scores - stored))) if scores.shape == stored.shape else float("nan")
        raise PredictError(f"cell '{cell_id}': the rebuilt detector does not reproduce the record's "
                           f"test scores (max |difference| {diff:.3g}); its fit is not the cell's")
    notes.append(f"rebuilt detector reproduces the record's {len(stored)} test scores")


def predict_cell(run_dir: str | Path, cell_id: str, images_dir: str | Path, out_dir: str | Path, *,
                 cache_dir: str | Path | None = None, data_root: str | Path | None = None,
                 device: str = "auto") -> PredictResult:
    """Score every image of ``images_dir`` with cell ``cell_id`` of ``run_dir``; write to ``out_dir``."""
    from bench.metrics.image import validation_threshold
    from bench.run.runner import resolve_device
    from bench.run.store import ResultStore, atomic_write_text
    from bench.run.work import RunContext, load_dataset

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    record, cell, grid = find_cell(run_dir, cell_id)
    fit_path = cached_fit_path(record, cache_dir)
    ctx = RunContext.for_grid(grid, data_root=str(data_root) if data_root is not None else None,
                              cache_dir=str(cache_dir if cache_dir is not None else fit_path.parent.parent),
                              device=resolve_device(device), progress=False)
    dataset = load_dataset(cell.dataset, ctx)
    notes: list[str] = []
    detector = build_detector(record, cell, dataset, ctx, fit_path, notes)
    arrays = ResultStore(run_dir).arrays(cell_id)
    check_reproduces(cell_id, detector, dataset, arrays["test_scores"], ctx, notes)
    threshold = (record.get("metrics") or {}).get("image_threshold")
    if threshold is None and len(arrays.get("val_scores", [])):
        threshold = validation_threshold(arrays["val_scores"], arrays["val_labels"])   # a record made before it
        notes.append("image threshold recomputed from the record's stored validation scores")
    files, images = read_images(Path(images_dir), dataset.image_size, dataset.channels)
    pred = detector.predict(images, device=ctx.fit_device, with_maps=True)
    scores = np.asarray(pred.scores, dtype=np.float64).reshape(-1)
    import pandas as pd

    table = pd.DataFrame({"file": [p.name for p in files], "score": scores,
                          "threshold": np.nan if threshold is None else float(threshold)})
    table["anomalous"] = (scores >= threshold).astype(int) if threshold is not None else pd.NA
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "scores.csv", table.to_csv(index=False, float_format="%.9g"), sync=False)
    n_maps = 0
    if pred.maps is not None:
        from bench.analysis.overlays import map_overlays

        maps = np.asarray(pred.maps, dtype=np.float32)
        (out_dir / "maps").mkdir(exist_ok=True)
        for path, m in zip(files, maps, strict=True):
            np.save(out_dir / "maps" / f"{path.stem}.npy", m)
        map_overlays(images, maps, [p.name for p in files], scores, threshold, out_dir / "overlays")
        n_maps = len(maps)
    return PredictResult(out_dir / "scores.csv", len(files), n_maps, threshold, notes)

