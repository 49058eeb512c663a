"""Run a grid: every cell once, every encoder trained once, every result kept.

Order of work (DESIGN.md): for each dataset, for each (encoder config, seed), load the encoder
and its embeddings from the cache or train and embed once; then every head is fitted on the same
embeddings and scored, maps are made, metrics computed and one record written per cell. A cell
whose record is ``ok`` for the same configuration is skipped, so rerunning a grid resumes it. A
failure (a dataset that will not load, an encoder that diverges, a head with NaN scores) is
written as a ``failed`` record naming the cell and the error, and the grid goes on.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
import traceback
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from bench.cache import EncoderCache, encoder_key
from bench.grid import Cell, Component, Grid
from bench.provenance import git_sha, host, versions
from bench.store import ResultStore

#: Store full test maps with a record only up to this many pixels (float32, compressed .npz).
MAX_STORED_PIXELS = 4_000_000


def resolve_device(device: str | None) -> str:
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"--device {device} requested but torch sees no CUDA device")
    return device


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def dataset_fingerprint(dataset) -> str:
    """Content hash of the splits: the cache key follows the data, not its path or name."""
    h = hashlib.sha1()
    for split in (dataset.train, dataset.val, dataset.test):
        h.update(np.ascontiguousarray(split.images).data)
        h.update(split.labels.tobytes())
    return h.hexdigest()[:16]


def panel_indices(split, n_anomalous: int = 4, n_normal: int = 2) -> np.ndarray:
    """Test cases for qualitative panels, chosen by a rule (never by hand).

    Anomalous cases at the 10/40/70/95 % quantiles of lesion area (of index order when there are
    no masks) and the first normal cases in index order; identical for every method of a dataset.
    """
    anomalous = np.flatnonzero(split.labels == 1)
    normal = np.flatnonzero(split.labels == 0)[:n_normal]
    if len(anomalous):
        if split.masks is not None:
            area = split.masks[anomalous].reshape(len(anomalous), -1).sum(1)
            anomalous = anomalous[np.lexsort((anomalous, area))]
        q = np.unique(np.round(np.linspace(0.1, 0.95, n_anomalous) * (len(anomalous) - 1)).astype(int))
        anomalous = anomalous[q]
    return np.concatenate([anomalous, normal]).astype(np.int64)


@dataclass
class RunSummary:
    run_dir: Path
    total: int = 0
    ok: int = 0
    failed: int = 0
    resumed: int = 0
    not_applicable: int = 0
    wall_s: float = 0.0
    failures: list = field(default_factory=list)

    def line(self) -> str:
        return (f"{self.total} cells: {self.ok} ok, {self.failed} failed, {self.resumed} already done"
                + (f", {self.not_applicable} not applicable" if self.not_applicable else "")
                + f" — {self.wall_s:.1f} s")


class Runner:
    """Runs the cells of ``grid`` into ``out_dir`` (a run directory of records)."""

    def __init__(self, grid: Grid, out_dir: str | Path, *, data_root: str | Path | None = None,
                 device: str | None = "auto", cache_dir: str | Path | None = None, progress: bool = True,
                 embed_batch_size: int = 256):
        self.grid = grid
        self.store = ResultStore(out_dir)
        self.data_root = data_root
        self.device = resolve_device(device)
        self.cache = EncoderCache(cache_dir)
        self.progress = progress
        self.embed_batch_size = embed_batch_size

    # -- bookkeeping --------------------------------------------------------------------
    def is_done(self, cell: Cell) -> bool:
        return self.store.done(cell.cell_id, cell.config_hash())

    def base_record(self, cell: Cell) -> dict:
        return {
            "cell_id": cell.cell_id, "run": self.grid.name, "kind": cell.kind, "method": cell.method,
            "dataset": cell.dataset.id, "seed": cell.seed, "setting": "uad",
            "encoder": cell.encoder.id if cell.encoder else None,
            "head": cell.head.id if cell.head else None,
            "detector": cell.detector.id if cell.detector else None,
            "localization": cell.localization,
            "config": cell.config(), "config_hash": cell.config_hash(),
            "versions": versions(), "git_sha": git_sha(), "host": host(self.device),
        }

    def fail(self, cell: Cell, exc: BaseException, stage: str, summary: RunSummary, started: str) -> None:
        record = self.base_record(cell)
        message = f"{stage}: {type(exc).__name__}: {exc}"
        record.update(status="failed", error=message, traceback=traceback.format_exc(), started=started,
                      finished=now(), metrics={}, timings={})
        self.store.write(record)
        summary.failed += 1
        summary.failures.append(f"{cell.cell_id}: {message}")
        if self.progress:
            from tqdm.auto import tqdm

            tqdm.write(f"FAILED {cell.cell_id} — {message}", file=sys.stderr)

    def write_run_info(self, cells: list[Cell]) -> None:
        info_path = self.store.run_dir / "run.json"
        info = {"grid": self.grid.name, "grid_file": str(self.grid.path) if self.grid.path else None,
                "grid_source": self.grid.source, "overrides": self.grid.overrides, "argv": sys.argv,
                "device": self.device, "cells": len(cells), "versions": versions(), "git_sha": git_sha()}
        if info_path.exists():
            info["first_started"] = json.loads(info_path.read_text()).get("first_started")
        info.setdefault("first_started", None)
        info["first_started"] = info["first_started"] or now()
        info["last_started"] = now()
        from bench.store import atomic_write_bytes

        atomic_write_bytes(info_path, json.dumps(info, indent=1, default=str).encode())

    # -- the run ------------------------------------------------------------------------
    def run(self) -> RunSummary:
        from tqdm.auto import tqdm

        started = time.perf_counter()
        cells = self.grid.cells()
        self.write_run_info(cells)
        summary = RunSummary(self.store.run_dir, total=len(cells))
        pending = [c for c in cells if not self.is_done(c)]
        summary.resumed = len(cells) - len(pending)
        by_dataset: OrderedDict[Component, list[Cell]] = OrderedDict()
        for cell in pending:
            by_dataset.setdefault(cell.dataset, []).append(cell)
        bar = tqdm(total=len(pending), desc=f"grid {self.grid.name}", unit="cell", disable=not self.progress)
        for dataset_comp, ds_cells in by_dataset.items():
            t0, stamp = time.perf_counter(), now()
            try:
                dataset = self.load_dataset(dataset_comp)
            except Exception as exc:  # noqa: BLE001 - recorded, the grid goes on
                for cell in ds_cells:
                    self.fail(cell, exc, f"dataset {dataset_comp.id}", summary, stamp)
                    bar.update()
                continue
            load_s = time.perf_counter() - t0
            groups: OrderedDict[tuple, list[Cell]] = OrderedDict()
            for cell in ds_cells:
                key = ("detector", cell.detector, cell.seed) if cell.detector else ("latent", cell.encoder, cell.seed)
                groups.setdefault(key, []).append(cell)
            for (kind, comp, seed), group in groups.items():
                if kind == "detector":
                    for cell in group:
                        self.run_detector_cell(cell, dataset, summary, load_s)
                        bar.update()
                else:
                    self.run_encoder_group(comp, seed, group, dataset, dataset_comp, summary, bar, load_s)
        bar.close()
        summary.wall_s = time.perf_counter() - started
        return summary

    def load_dataset(self, comp: Component):
        from datasets import create_dataset

        return create_dataset(comp.name, root=self.data_root, **comp.kwargs)

    # -- encoder x head cells -----------------------------------------------------------
    def prepare_encoder(self, comp: Component, seed: int, dataset, dataset_comp: Component):
        """Build the encoder; load it and its embeddings from the cache, or train and embed once."""
        from methods.base import seed_everything
        from methods.registry import create_encoder

        seed_everything(seed)        # initial weights are part of what the seed fixes
        encoder = create_encoder(comp.name, in_chans=dataset.channels, image_size=dataset.image_size,
                                 **comp.kwargs)
        dataset_spec = {"name": dataset_comp.name, **dataset_comp.kwargs, "content": dataset_fingerprint(dataset)}
        key = encoder_key(dataset_spec, comp.spec(), seed)
        info = {"encoder_cache": str(self.cache.path(key)), "encoder_cached": self.cache.has(key)}
        if info["encoder_cached"]:
            self.cache.load_state(key, encoder)
            meta = self.cache.meta(key)
            info.update(encoder_fit_s=0.0, embed_s=0.0, encoder_fit_s_original=meta.get("fit_s"),
                        encoder_history=meta.get("history"))
            return encoder, self.cache.embeddings(key), info
        t0 = time.perf_counter()
        encoder.fit(dataset.train, seed=seed, device=self.device, progress=self.progress)
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        emb = {name: encoder.embed(getattr(dataset, name), self.embed_batch_size, self.device).numpy()
               for name in ("train", "val", "test")}
        embed_s = time.perf_counter() - t0
        for name, z in emb.items():
            bad = int((~np.isfinite(z)).any(1).sum())
            if bad:
                raise FloatingPointError(f"encoder {comp.id} produced {bad} non-finite {name} embeddings")
        emb.update(val_labels=dataset.val.labels, test_labels=dataset.test.labels)
        history = [float(v) for v in getattr(encoder, "history_", [])]
        self.cache.save(key, encoder.cpu(), emb, {"dataset": dataset_spec, "encoder": comp.spec(), "seed": seed,
                                                  "fit_s": fit_s, "embed_s": embed_s, "history": history,
                                                  "versions": versions(), "git_sha": git_sha(),
                                                  "created": now()})
        info.update(encoder_fit_s=fit_s, embed_s=embed_s, encoder_history=history)
        return encoder, emb, info

    def run_encoder_group(self, comp, seed, cells, dataset, dataset_comp, summary, bar, load_s) -> None:
        from methods.localization import supports

        stamp = now()
        try:
            encoder, emb, info = self.prepare_encoder(comp, seed, dataset, dataset_comp)
        except Exception as exc:  # noqa: BLE001
            for cell in cells:
                self.fail(cell, exc, f"encoder {comp.id}", summary, stamp)
                bar.update()
            return
        first = True
        shared_maps: dict = {}   # head-independent maps (reconstruction) are made once per encoder
        for cell in cells:
            # another map kind changes nothing where there are no masks to score maps against
            redundant = cell.localization not in (None, "gradient") and not dataset.test.has_masks
            if redundant or not supports(encoder, cell.localization or "gradient"):
                summary.not_applicable += 1
                bar.update()
                continue
            self.run_latent_cell(cell, encoder, emb, dataset, info, summary, load_s, first, shared_maps)
            first = False
            bar.update()

    def run_latent_cell(self, cell, encoder, emb, dataset, info, summary, load_s, first, shared_maps) -> None:
        import torch

        from methods.base import seed_everything
        from methods.detectors.latent import LatentDetector
        from methods.registry import create_head

        stamp, t_start = now(), time.perf_counter()
        timings = {"dataset_s": load_s if first else 0.0,
                   "encoder_fit_s": info["encoder_fit_s"] if first else 0.0,
                   "embed_s": info["embed_s"] if first else 0.0}
        stage = f"head {cell.head.id}"
        try:
            t0 = time.perf_counter()
            seed_everything(cell.seed)
            head = create_head(cell.head.name, **cell.head.kwargs)
            head.fit(torch.from_numpy(emb["train"]), seed=cell.seed, device=self.device, progress=self.progress)
            timings["head_fit_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            test_scores = head.score(torch.from_numpy(emb["test"]), device=self.device)
            val_scores = head.score(torch.from_numpy(emb["val"]), device=self.device)
            timings["score_s"] = time.perf_counter() - t0
            stage = f"{cell.localization} maps"
            t0 = time.perf_counter()
            detector = LatentDetector(encoder, head, cell.localization)
            if cell.localization == "gradient" or cell.localization not in shared_maps:
                maps = self.maps_for(lambda imgs: detector.maps(imgs, device=self.device), dataset)
                if cell.localization != "gradient":
                    shared_maps[cell.localization] = maps
            test_maps, val_maps = maps if cell.localization == "gradient" else shared_maps[cell.localization]
            timings["maps_s"] = time.perf_counter() - t0
            head.cpu()
        except Exception as exc:  # noqa: BLE001
            self.fail(cell, exc, stage, summary, stamp)
            return
        self.finish(cell, dataset, test_scores, val_scores, test_maps, val_maps, timings, t_start, stamp,
                    summary, extra={"encoder_cache": info["encoder_cache"], "encoder_cached": info["encoder_cached"],
                                    "encoder_history": info.get("encoder_history"),
                                    "encoder_fit_s_original": info.get("encoder_fit_s_original")})

    def maps_for(self, make, dataset):
        """Test (and validation) maps, only where the dataset has masks to score them against."""
        if not dataset.test.has_masks:
            return None, None
        test_maps = make(dataset.test.images)
        val = dataset.val
        val_maps = make(val.images) if val.has_masks and val.masks.any() else None
        return test_maps, val_maps

    # -- end-to-end detector cells ------------------------------------------------------
    def run_detector_cell(self, cell: Cell, dataset, summary: RunSummary, load_s: float) -> None:
        from methods.base import seed_everything
        from methods.registry import create_detector

        stamp, t_start = now(), time.perf_counter()
        timings = {"dataset_s": load_s}
        stage = f"detector {cell.detector.id}"
        setting = "uad"
        try:
            seed_everything(cell.seed)
            detector = create_detector(cell.detector.name, in_chans=dataset.channels,
                                       image_size=dataset.image_size, **cell.detector.kwargs)
            setting = detector.setting
            extra = {}
            if detector.needs_pool:
                from methods.detectors._pool import unlabeled_pool

                request = detector.pool_request()
                extra["unlabeled"] = unlabeled_pool(dataset, anomaly_rate=request.anomaly_rate, size=request.size,
                                                    seed=cell.seed)
            t0 = time.perf_counter()
            detector.fit(dataset.train, seed=cell.seed, device=self.device, progress=self.progress, **extra)
            timings["fit_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            test = detector.predict(dataset.test.images, device=self.device)
            val = detector.predict(dataset.val.images, device=self.device)
            timings["predict_s"] = time.perf_counter() - t0
        except Exception as exc:  # noqa: BLE001
            self.fail(cell, exc, stage, summary, stamp)
            return
        masks_ok = dataset.test.has_masks and test.maps is not None
        val_maps = val.maps if (masks_ok and dataset.val.has_masks) else None
        self.finish(cell, dataset, test.scores, val.scores, test.maps if masks_ok else None, val_maps, timings,
                    t_start, stamp, summary, extra={"setting": setting})

    # -- scoring and the record ---------------------------------------------------------
    def finish(self, cell, dataset, test_scores, val_scores, test_maps, val_maps, timings, t_start, stamp,
               summary, extra=None) -> None:
        from bench.metrics import evaluate

        test, val = dataset.test, dataset.val
        try:
            test_scores = np.asarray(test_scores, dtype=np.float64).reshape(-1)
            if len(test_scores) != len(test) or not np.isfinite(test_scores).all():
                raise FloatingPointError(f"{len(test_scores)} test scores for {len(test)} images, "
                                         f"{int((~np.isfinite(test_scores)).sum())} non-finite")
            t0 = time.perf_counter()
            metrics = evaluate(test_scores, test.labels,
                               test_maps=test_maps, test_masks=test.masks if test_maps is not None else None,
                               val_maps=val_maps, val_masks=val.masks if val_maps is not None else None)
            timings["metrics_s"] = time.perf_counter() - t0
        except Exception as exc:  # noqa: BLE001
            self.fail(cell, exc, "metrics", summary, stamp)
            return
        timings["total_s"] = time.perf_counter() - t_start + timings.get("dataset_s", 0.0) \
            + timings.get("encoder_fit_s", 0.0) + timings.get("embed_s", 0.0)
        record = self.base_record(cell)
        record.update(extra or {})
        record.update(status="ok", error=None, traceback=None, metrics=metrics, timings=timings,
                      started=stamp, finished=now(), n_test=len(test), n_val=len(val), n_train=len(dataset.train))
        arrays = {"test_scores": test_scores.astype(np.float32), "test_labels": test.labels,
                  "test_groups": test.groups.astype(str),
                  "val_scores": np.asarray(val_scores, dtype=np.float32).reshape(-1), "val_labels": val.labels}
        panel = panel_indices(test)
        arrays.update(panel_index=panel, panel_images=test.images[panel])
        if test.masks is not None:
            arrays["panel_masks"] = test.masks[panel, 0]
        if test_maps is not None:
            # float32 as computed: gradient maps span many orders of magnitude (a flow head's
            # outliers reach 1e5 while most pixels are tiny), so float16 would erase most of them.
            test_maps = np.asarray(test_maps, dtype=np.float32)
            arrays["panel_maps"] = test_maps[panel]
            if test_maps.size <= MAX_STORED_PIXELS:
                arrays["test_maps"] = test_maps
                arrays["test_masks"] = test.masks[:, 0]
        self.store.write(record, arrays)
        summary.ok += 1
