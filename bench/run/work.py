"""The worker side of a run: one unit of work at a time, in any process (``bench.run.runner`` drives).

A :class:`Unit` (an encoder group or one detector cell) and the :class:`RunContext` are plain
picklable values and :func:`execute_unit` is a module-level function, so the local executor and
Ray tasks run exactly the same code. Workers write cache entries only (``bench.run.cache``); every
cell's result comes back as an :class:`Outcome` (record + arrays) for the driver to write.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import time
import traceback
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import numpy as np

from bench.run.cache import DetectorCache, EncoderCache, detector_key, encoder_key
from bench.run.grid import Cell, Component, Grid
from bench.run.provenance import git_sha, host, versions

#: Store full test maps with a record only up to this many pixels (float32, compressed .npz).
MAX_STORED_PIXELS = 4_000_000
#: Record statuses that count as finished (a degenerate result is a result; rerunning repeats it).
FINISHED = ("ok", "degenerate")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def dataset_fingerprint(dataset) -> str:
    """Content hash of the splits: caches and resume follow the data, not its path or name."""
    h = hashlib.sha1()
    for split in (dataset.train, dataset.val, dataset.test):
        h.update(np.ascontiguousarray(split.images).data)
        h.update(split.labels.tobytes())
        if split.masks is not None:
            h.update(np.ascontiguousarray(split.masks).data)
    if dataset.pool is not None:
        h.update(np.ascontiguousarray(dataset.pool.images).data)
        h.update(dataset.pool.labels.tobytes())
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


# ---------------------------------------------------------------------------------------------
# Units of work and what they return
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunContext:
    """Everything a worker needs besides the unit; picklable, identical on every executor."""

    run_name: str
    data_root: str | None
    cache_dir: str
    device: str
    progress: bool = False
    embed_batch_size: int = 256
    #: torch intra-op threads while a unit runs (None: leave the process's setting, as before). Float
    #: reductions split over threads, so the same thread count is part of "bit-identical".
    threads: int | None = None
    #: mixed precision for training loops on CUDA (None: on where CUDA is used); ignored on CPU.
    amp: bool | None = None
    #: ``torch.use_deterministic_algorithms(True)`` (+ cuBLAS workspace, cuDNN flags) while a unit runs.
    deterministic: bool = False
    #: channels-last memory format for conv trunks on CUDA (None: on where CUDA is used); ignored on CPU.
    channels_last: bool | None = None
    #: which executor ran the unit (recorded in each record's host info).
    executor: str = "local"

    @classmethod
    def for_grid(cls, grid: Grid, **kwargs) -> "RunContext":
        """The context of ``grid``: its ``[resources]`` table, ``amp`` and ``deterministic`` keys."""
        resources = grid.data.get("resources", {})
        return cls(grid.name, **kwargs, threads=resources.get("cpus_per_task"), amp=grid.data.get("amp"),
                   deterministic=bool(grid.data.get("deterministic", False)))

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    def runtime(self) -> dict:
        """What the record's host info says about how the unit ran (effective values)."""
        import torch

        return {"executor": self.executor, "torch_threads": torch.get_num_threads(),
                "amp": bool(self.cuda and self.amp is not False), "deterministic": self.deterministic,
                "channels_last": bool(self.cuda and self.channels_last is not False)}


@dataclass(frozen=True)
class Unit:
    """One encoder group (``kind='encoder'``) or one detector cell (``kind='detector'``)."""

    kind: str
    dataset: Component
    seed: int
    component: Component
    cells: tuple[Cell, ...]
    fingerprint: str

    @property
    def label(self) -> str:
        return f"{self.dataset.id} × {self.component.id} (seed {self.seed})"


@dataclass
class Outcome:
    """The result of one cell: a record (and arrays) to write, or a cell that does not apply."""

    cell: Cell
    status: str                       # ok | degenerate | failed | not_applicable
    record: dict | None = None
    arrays: dict | None = None

    @property
    def message(self) -> str:
        return (self.record or {}).get("error") or ""


# ---------------------------------------------------------------------------------------------
# The worker side: one unit at a time, anywhere
# ---------------------------------------------------------------------------------------------

_DATASETS: dict[tuple, object] = {}


def load_dataset(comp: Component, ctx: RunContext):
    """Load (once per process) the dataset of ``comp``; decoded-image caches follow ``--cache``."""
    from datasets import DATASETS, create_dataset

    key = (comp, ctx.data_root, ctx.cache_dir)
    if key not in _DATASETS:
        kwargs = dict(comp.kwargs)
        entry, _ = DATASETS.lookup(comp.name)
        if "cache_dir" in inspect.signature(entry.factory).parameters and "cache_dir" not in kwargs:
            kwargs["cache_dir"] = str(Path(ctx.cache_dir) / "datasets")
        _DATASETS[key] = create_dataset(comp.name, root=ctx.data_root, **kwargs)
    return _DATASETS[key]


@contextmanager
def unit_settings(ctx: RunContext):
    """Thread count, deterministic algorithms and mixed precision for one unit, restored afterwards.

    Applied the same way by every executor (inside :func:`execute_unit`), so a unit computes the
    same bits in this process and in a Ray worker given the same ``ctx``.
    """
    import torch

    from methods.precision import training_options

    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    stack = ExitStack()
    try:
        if ctx.threads is not None:
            torch.set_num_threads(ctx.threads)
            # numpy/scipy BLAS and OpenMP pools too (scikit-learn's GMM, Ledoit-Wolf): Ray sets
            # OMP_NUM_THREADS=1 in its workers, so without this the same unit differs in its last bits
            from threadpoolctl import threadpool_limits

            stack.enter_context(threadpool_limits(limits=ctx.threads))
        if ctx.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")   # cuBLAS reproducibility
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        with training_options(amp=ctx.amp, channels_last=ctx.channels_last):
            yield
    finally:
        stack.close()
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn


def execute_unit(unit: Unit, ctx: RunContext) -> Iterator[Outcome]:
    """Run one unit and yield one outcome per cell (module-level, so Ray can ship it)."""
    with unit_settings(ctx):
        yield from _execute_unit(unit, ctx)


def _execute_unit(unit: Unit, ctx: RunContext) -> Iterator[Outcome]:
    stamp, t0 = now(), time.perf_counter()
    try:
        dataset = load_dataset(unit.dataset, ctx)
    except Exception as exc:  # noqa: BLE001 - recorded, the grid goes on
        for cell in unit.cells:
            yield failed(cell, ctx, exc, f"dataset {unit.dataset.id}", stamp, unit.fingerprint)
        return
    load_s = time.perf_counter() - t0
    if unit.kind == "detector":
        yield from (DetectorCellWork(cell, dataset, ctx, unit.fingerprint, load_s).run() for cell in unit.cells)
    else:
        yield from EncoderUnitWork(unit, dataset, ctx, load_s).run()


def base_record(cell: Cell, ctx: RunContext, fingerprint: str) -> dict:
    return {
        "cell_id": cell.cell_id, "run": ctx.run_name, "kind": cell.kind, "method": cell.method,
        "dataset": cell.dataset.id, "seed": cell.seed, "setting": "uad",
        "encoder": cell.encoder.id if cell.encoder else None,
        "head": cell.head.id if cell.head else None,
        "detector": cell.detector.id if cell.detector else None,
        "localization": cell.localization,
        "config": cell.config(), "config_hash": cell.config_hash(), "dataset_fingerprint": fingerprint,
        "versions": versions(), "git_sha": git_sha(), "host": {**host(ctx.device), **ctx.runtime()},
    }


def failed(cell: Cell, ctx: RunContext, exc: BaseException, stage: str, started: str, fingerprint: str,
           timings: dict | None = None) -> Outcome:
    record = base_record(cell, ctx, fingerprint)
    message = f"{stage}: {type(exc).__name__}: {exc}"
    record.update(status="failed", stage=stage, error=message, traceback="".join(traceback.format_exception(exc)),
                  started=started, finished=now(), metrics={}, timings=timings or {})
    return Outcome(cell, "failed", record)


def degenerate_reason(test_scores: np.ndarray, test_maps: np.ndarray | None) -> str | None:
    """Why a result says nothing about the method, or None: every score tied, every map zero."""
    if len(test_scores) > 1 and np.ptp(test_scores) == 0:
        return f"all {len(test_scores)} test scores are equal ({test_scores[0]:.6g}): the ranking is a coin toss"
    if test_maps is not None and test_maps.size and not np.any(test_maps):
        return "every test map is zero: the maps localise nothing"
    return None


def score_cell(cell: Cell, dataset, ctx: RunContext, fingerprint: str, *, test_scores, val_scores, test_maps,
               val_maps, timings: dict, t_start: float, stamp: str, extra: dict | None = None,
               degenerate: str | None = None) -> Outcome:
    """Metrics, the record and its arrays for one cell whose scores (and maps) are computed."""
    from bench.metrics import evaluate
    from bench.metrics.pixel import NO_VALIDATION

    test, val = dataset.test, dataset.val
    try:
        test_scores = np.asarray(test_scores, dtype=np.float64).reshape(-1)
        if len(test_scores) != len(test) or not np.isfinite(test_scores).all():
            raise FloatingPointError(f"{len(test_scores)} test scores for {len(test)} images, "
                                     f"{int((~np.isfinite(test_scores)).sum())} non-finite")
        t0 = time.perf_counter()
        metrics = evaluate(test_scores, test.labels,
                           test_maps=test_maps, test_masks=test.masks if test_maps is not None else None,
                           val_maps=val_maps, val_masks=val.masks if val_maps is not None else None,
                           test_foreground=test.foreground if test_maps is not None else None,
                           val_foreground=val.foreground if val_maps is not None else None)
        timings["metrics_s"] = time.perf_counter() - t0
    except Exception as exc:  # noqa: BLE001
        return failed(cell, ctx, exc, "metrics", stamp, fingerprint, timings)
    unavailable = {name: ("the validation split has no anomalous pixels" if len(val) and why == NO_VALIDATION
                           else why) for name, why in metrics.unavailable.items()}
    timings["total_s"] = time.perf_counter() - t_start + sum(
        timings.get(k, 0.0) for k in ("dataset_s", "encoder_fit_s", "embed_s"))
    reason = degenerate or degenerate_reason(test_scores, test_maps)
    status = "degenerate" if reason else "ok"
    record = base_record(cell, ctx, fingerprint)
    record.update(extra or {})
    record.update(status=status, error=reason, traceback=None, metrics=metrics, metrics_unavailable=unavailable,
                  timings=timings, started=stamp, finished=now(), n_test=len(test), n_val=len(val),
                  n_train=len(dataset.train))
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
    return Outcome(cell, status, record, arrays)


def maps_for(make, dataset):
    """Test (and validation) maps, only where the dataset has masks to score them against."""
    if not dataset.test.has_masks:
        return None, None
    test_maps = make(dataset.test.images)
    val = dataset.val
    val_maps = make(val.images) if len(val) and val.has_masks and val.masks.any() else None
    return test_maps, val_maps


def predict_splits(detector, dataset, device: str) -> dict:
    """``score_cell``'s inputs from a Detector: test (and, when there is one, validation) scores,
    and maps only where masks can score them (validation maps where it has anomalous pixels)."""
    test = detector.predict(dataset.test.images, device=device)
    val = detector.predict(dataset.val.images, device=device) if len(dataset.val) else None
    masks_ok = dataset.test.has_masks and test.maps is not None
    val_ok = masks_ok and val is not None and dataset.val.has_masks and dataset.val.masks.any()
    return {"test_scores": test.scores, "val_scores": val.scores if val is not None else np.zeros(0),
            "test_maps": test.maps if masks_ok else None, "val_maps": val.maps if val_ok else None}


class EncoderUnitWork:
    """One encoder (trained or loaded once) and every head cell on its embeddings."""

    def __init__(self, unit: Unit, dataset, ctx: RunContext, load_s: float):
        self.unit, self.dataset, self.ctx, self.load_s = unit, dataset, ctx, load_s
        self.cache = EncoderCache(Path(ctx.cache_dir) / "encoders")

    def prepare(self):
        """Build the encoder; load it and its embeddings from the cache, or train and embed once."""
        from methods.base import seed_everything
        from methods.registry import create_encoder

        comp, seed, ds = self.unit.component, self.unit.seed, self.dataset
        seed_everything(seed)        # initial weights are part of what the seed fixes
        encoder = create_encoder(comp.name, in_chans=ds.channels, image_size=ds.image_size, **comp.kwargs)
        dataset_spec = {"name": self.unit.dataset.name, **self.unit.dataset.kwargs, "content": self.unit.fingerprint}
        spec = comp.spec()
        if self.ctx.cuda and encoder.trainable:
            from methods.precision import amp_dtype

            dtype = amp_dtype(self.ctx.device)       # a CUDA fit under autocast is another fit
            spec["amp"] = str(dtype).removeprefix("torch.") if dtype is not None else None
        key = encoder_key(dataset_spec, spec, seed)
        entry = self.cache.load(key, encoder)       # None when absent; a corrupt entry is moved aside
        info = {"encoder_cache": str(self.cache.path(key)), "encoder_cached": entry is not None}
        if entry is not None:
            emb, meta = entry
            info.update(encoder_fit_s=0.0, embed_s=0.0, encoder_fit_s_original=meta.get("fit_s"),
                        encoder_history=meta.get("history"))
            return encoder, emb, info
        t0 = time.perf_counter()
        encoder.fit(ds.train, seed=seed, device=self.ctx.device, progress=self.ctx.progress)
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        emb = {name: encoder.embed(getattr(ds, name), self.ctx.embed_batch_size, self.ctx.device).numpy()
               for name in ("train", "val", "test")}
        embed_s = time.perf_counter() - t0
        for name, z in emb.items():
            bad = int((~np.isfinite(z)).any(1).sum())
            if bad:
                raise FloatingPointError(f"encoder {comp.id} produced {bad} non-finite {name} embeddings")
        emb.update(val_labels=ds.val.labels, test_labels=ds.test.labels)
        history = [float(v) for v in encoder.history_]
        self.cache.save(key, encoder.cpu(), emb, {"dataset": dataset_spec, "encoder": comp.spec(), "seed": seed,
                                                  "fit_s": fit_s, "embed_s": embed_s, "history": history,
                                                  "versions": versions(), "git_sha": git_sha(),
                                                  "created": now()})
        info.update(encoder_fit_s=fit_s, embed_s=embed_s, encoder_history=history)
        return encoder, emb, info

    def run(self) -> Iterator[Outcome]:
        from methods.maps import map_kind
        from methods.registry import is_patch_head

        stamp = now()
        try:
            encoder, emb, info = self.prepare()
        except Exception as exc:  # noqa: BLE001
            for cell in self.unit.cells:
                yield failed(cell, self.ctx, exc, f"encoder {self.unit.component.id}", stamp, self.unit.fingerprint)
            return
        train = emb["train"]
        constant = (f"encoder {self.unit.component.id} gives every training image the same embedding"
                    if len(train) > 1 and np.ptp(train, axis=0).max() == 0 else None)
        first = True
        self.shared_maps: dict = {}   # head-independent maps (reconstruction) are made once per encoder
        for cell in self.unit.cells:
            # another map kind changes nothing where there are no masks to score maps against
            redundant = cell.localization not in (None, "gradient") and not self.dataset.test.has_masks
            if redundant or not map_kind(cell.localization or "gradient").applies(encoder):
                yield Outcome(cell, "not_applicable")
                continue
            yield (self.patch_cell if is_patch_head(cell.head.name) else self.head_cell)(  # issue 9
                cell, encoder, emb, info, first, constant)
            first = False

    def head_cell(self, cell: Cell, encoder, emb: dict, info: dict, first: bool, constant: str | None) -> Outcome:
        import torch

        from methods.base import seed_everything
        from methods.detectors.latent import LatentDetector
        from methods.registry import create_head

        ctx, dataset = self.ctx, self.dataset
        stamp, t_start = now(), time.perf_counter()
        timings = {"dataset_s": self.load_s if first else 0.0,
                   "encoder_fit_s": info["encoder_fit_s"] if first else 0.0,
                   "embed_s": info["embed_s"] if first else 0.0}
        stage = f"head {cell.head.id}"
        try:
            t0 = time.perf_counter()
            seed_everything(cell.seed)
            head = create_head(cell.head.name, **cell.head.kwargs)
            head.fit(torch.from_numpy(emb["train"]), seed=cell.seed, device=ctx.device, progress=ctx.progress)
            timings["head_fit_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            test_scores = head.score(torch.from_numpy(emb["test"]), device=ctx.device)
            val_scores = head.score(torch.from_numpy(emb["val"]), device=ctx.device)
            timings["score_s"] = time.perf_counter() - t0
            stage = f"{cell.localization} maps"
            t0 = time.perf_counter()
            detector = LatentDetector(encoder, head, cell.localization, map_options=cell.map_kwargs)
            shared = (cell.localization, cell.map_options)       # a head-independent map is made once
            if detector.kind.head_dependent or shared not in self.shared_maps:
                maps = maps_for(lambda imgs: detector.maps(imgs, device=ctx.device), dataset)
                if not detector.kind.head_dependent:
                    self.shared_maps[shared] = maps
            test_maps, val_maps = maps if detector.kind.head_dependent else self.shared_maps[shared]
            timings["maps_s"] = time.perf_counter() - t0
            head.cpu()
        except Exception as exc:  # noqa: BLE001
            return failed(cell, ctx, exc, stage, stamp, self.unit.fingerprint, timings)
        return score_cell(cell, dataset, ctx, self.unit.fingerprint, test_scores=test_scores, val_scores=val_scores,
                          test_maps=test_maps, val_maps=val_maps, timings=timings, t_start=t_start, stamp=stamp,
                          degenerate=constant,
                          extra={"encoder_cache": info["encoder_cache"], "encoder_cached": info["encoder_cached"],
                                 "encoder_history": info.get("encoder_history"),
                                 "encoder_fit_s_original": info.get("encoder_fit_s_original")})


    def patch_cell(self, cell: Cell, encoder, emb: dict, info: dict, first: bool, constant: str | None) -> Outcome:
        """Encoder x patch head (issue 9): the head fits on the feature maps of the training images.

        The trained (or cached) encoder is reused as is; the head's own maps are the localization,
        so the cell runs once (under ``gradient``) and is not applicable for other map kinds.
        """
        from methods.base import seed_everything
        from methods.detectors.patch import PatchDetector
        from methods.registry import create_head

        if cell.localization not in (None, "gradient"):
            return Outcome(cell, "not_applicable")
        ctx, dataset = self.ctx, self.dataset
        stamp, t_start = now(), time.perf_counter()
        timings = {"dataset_s": self.load_s if first else 0.0,
                   "encoder_fit_s": info["encoder_fit_s"] if first else 0.0,
                   "embed_s": info["embed_s"] if first else 0.0}
        try:
            seed_everything(cell.seed)
            detector = PatchDetector(encoder, create_head(cell.head.name, **cell.head.kwargs), fit_encoder=False)
            t0 = time.perf_counter()
            detector.fit(dataset.train, seed=cell.seed, device=ctx.device, progress=ctx.progress)
            timings["head_fit_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            predicted = predict_splits(detector, dataset, ctx.device)
            timings["score_s"] = time.perf_counter() - t0
        except Exception as exc:  # noqa: BLE001
            return failed(cell, ctx, exc, f"patch head {cell.head.id}", stamp, self.unit.fingerprint, timings)
        return score_cell(cell, dataset, ctx, self.unit.fingerprint, **predicted, timings=timings,
                          t_start=t_start, stamp=stamp,   # constant *global* embeddings say nothing of patches
                          extra={"localization": "patch", "encoder_cache": info["encoder_cache"],
                                 "encoder_cached": info["encoder_cached"]})


class DetectorCellWork:
    """One end-to-end detector cell: cached fit (or fit and cache at once), predict, score."""

    def __init__(self, cell: Cell, dataset, ctx: RunContext, fingerprint: str, load_s: float):
        self.cell, self.dataset, self.ctx, self.fingerprint, self.load_s = cell, dataset, ctx, fingerprint, load_s
        self.cache = DetectorCache(Path(ctx.cache_dir) / "detectors")

    def run(self) -> Outcome:
        from methods.base import seed_everything
        from methods.registry import create_detector

        cell, ds, ctx = self.cell, self.dataset, self.ctx
        stamp, t_start = now(), time.perf_counter()
        timings = {"dataset_s": self.load_s}
        stage = f"detector {cell.detector.id}"
        try:
            seed_everything(cell.seed)
            detector = create_detector(cell.detector.name, in_chans=ds.channels, image_size=ds.image_size,
                                       **cell.detector.kwargs)
            setting, extra = detector.setting, {}
            if detector.needs_pool:
                from methods.detectors._pool import unlabeled_pool

                request = detector.pool_request()
                extra["unlabeled"] = unlabeled_pool(ds, anomaly_rate=request.anomaly_rate, size=request.size,
                                                    seed=cell.seed)
            fit_spec = {k: v for k, v in cell.detector.spec().items()
                        if k not in detector.predict_params and k != "id"}
            key = detector_key({"name": cell.dataset.name, **cell.dataset.kwargs, "content": self.fingerprint},
                               fit_spec, cell.seed)
            stage = f"detector {cell.detector.id} fit"
            t0 = time.perf_counter()
            cached = self.cache.load(key)
            fit_kwargs = dict(seed=cell.seed, device=ctx.device, progress=ctx.progress, **extra)
            if cached is None:
                seed_everything(cell.seed)
                detector.fit(ds.train, **fit_kwargs)
                self.cache.save(key, detector, {"detector": fit_spec, "seed": cell.seed, "created": now()})
            else:
                for name in detector.predict_params:          # this cell's scoring options on the shared fit
                    setattr(cached, name, getattr(detector, name))
                detector = cached
                if detector.complete_fit(ds.train, **fit_kwargs):
                    self.cache.save(key, detector, {"detector": fit_spec, "seed": cell.seed, "created": now()})
            timings["fit_s"] = time.perf_counter() - t0
            stage = f"detector {cell.detector.id} predict"
            t0 = time.perf_counter()
            predicted = predict_splits(detector, ds, ctx.device)
            timings["predict_s"] = time.perf_counter() - t0
        except Exception as exc:  # noqa: BLE001
            return failed(cell, ctx, exc, stage, stamp, self.fingerprint, timings)
        return score_cell(cell, ds, ctx, self.fingerprint, **predicted, timings=timings, t_start=t_start, stamp=stamp,
                          extra={"setting": setting, "detector_cache": str(self.cache.path(key)),
                                 "detector_cached": cached is not None})
