"""The cell path of a unit: an encoder group (train or load the encoder once, every head on it) or an
end-to-end detector cell, from a fitted detector's predictions to each cell's :class:`Outcome`.

Split from :mod:`bench.run.work`, which keeps what every unit shares (the picklable context, outcomes,
thread settings, dataset loading, record headers): this module is the work itself. :func:`execute_unit`
is module-level, so the local executor, its worker processes and Ray tasks run the same code.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from bench.run.cache import DetectorCache, EncoderCache, dataset_spec, fit_key
from bench.run.grid import Cell
from bench.run.plan import Unit
from bench.run.provenance import git_sha, versions
from bench.run.work import (
    MAX_STORED_PIXELS,
    Outcome,
    RunContext,
    base_record,
    failed,
    load_dataset,
    not_applicable_reason,
    now,
    panel_indices,
    unit_settings,
    unlabeled_pool_for,
)


def execute_unit(unit: Unit, ctx: RunContext) -> Iterator[Outcome]:
    """Run one unit and yield one outcome per cell (module-level, so Ray can ship it)."""
    from bench.plugins import ensure_plugins

    ensure_plugins(ctx.plugins)
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
    source = EncoderGroup(unit, dataset, ctx) if unit.encoder is not None else EndToEnd(unit, dataset, ctx)
    yield from source.outcomes(load_s)



def degenerate_reason(test_scores: np.ndarray, test_maps: np.ndarray | None) -> str | None:
    """Why a result says nothing about the method, or None: every score tied, every map zero."""
    if len(test_scores) > 1 and np.ptp(test_scores) == 0:
        return f"all {len(test_scores)} test scores are equal ({test_scores[0]:.6g}): the ranking is a coin toss"
    if test_maps is not None and test_maps.size and not np.any(test_maps):
        return "every test map is zero: the maps localise nothing"
    return None


def score_cell(cell: Cell, dataset, ctx: RunContext, fingerprint: str, *, test_scores, val_scores, test_maps,
               val_maps, timings: dict, t_start: float, stamp: str, extra: dict | None = None,
               degenerate: str | None = None, synth: dict | None = None) -> Outcome:
    """Metrics, the record and its arrays for one cell whose scores (and maps) are computed."""
    from bench.metrics import evaluate
    from bench.metrics.pixel import NO_VALIDATION

    test, val = dataset.test, dataset.val
    pixsum: dict = {}
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
                           val_foreground=val.foreground if val_maps is not None else None,
                           val_scores=val_scores if len(val) else None, val_labels=val.labels)
        if test_maps is not None and test.masks is not None:     # resampled pixel metrics at any image size
            from bench.analysis.pixsum import summarize

            pixsum = summarize(test_maps, test.masks, dice_threshold=metrics.get("pixel_threshold"))
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
              "val_scores": np.asarray(val_scores, dtype=np.float32).reshape(-1), "val_labels": val.labels,
              "test_ids": case_ids(test)}
    panel = panel_indices(test)
    arrays.update(panel_index=panel, panel_images=test.images[panel])
    if test.masks is not None:
        arrays["panel_masks"] = test.masks[panel, 0]
    arrays.update(pixsum)
    if test_maps is not None:
        # float32 as computed: gradient maps span many orders of magnitude (a flow head's
        # outliers reach 1e5 while most pixels are tiny), so float16 would erase most of them.
        test_maps = np.asarray(test_maps, dtype=np.float32)
        arrays["panel_maps"] = test_maps[panel]
        if test_maps.size <= MAX_STORED_PIXELS:
            arrays["test_maps"] = test_maps
            arrays["test_masks"] = test.masks[:, 0]
    arrays.update(synth or {})          # label-free selection (issue 25): ``synth_*`` keys only
    return Outcome(cell, status, record, arrays)


def case_ids(split) -> np.ndarray:
    """File name or case id per image (``split.ids``, issue 24), else ``case-<index>``."""
    ids = getattr(split, "ids", None)
    if ids is None or len(ids) != len(split):
        return np.asarray([f"case-{i}" for i in range(len(split))])
    return np.asarray([str(i) for i in ids])


def predict_splits(detector, dataset, device: str, extra: dict | None = None) -> dict:
    """``score_cell``'s inputs from a fitted Detector: test (and, when there is one, validation)
    scores, and maps only where masks can score them (validation maps where it has anomalous pixels).

    ``extra``: named extra splits ``{name: (images, want maps)}`` scored by the same ``predict``
    (label-free selection's synthetic set); their predictions come back under ``"extra"``."""
    test, val = dataset.test, dataset.val
    want_test_maps = test.has_masks
    want_val_maps = want_test_maps and len(val) > 0 and val.has_masks and bool(val.masks.any())
    test_pred = detector.predict(test.images, device=device, with_maps=want_test_maps)
    val_pred = detector.predict(val.images, device=device, with_maps=want_val_maps) if len(val) else None
    out = {"test_scores": test_pred.scores, "val_scores": val_pred.scores if val_pred is not None else np.zeros(0),
           "test_maps": test_pred.maps if want_test_maps else None,
           "val_maps": val_pred.maps if want_val_maps else None}
    if extra is not None:
        t0 = time.perf_counter()
        out["extra"] = {name: detector.predict(images, device=device, with_maps=maps)
                        for name, (images, maps) in extra.items()}
        out["extra_s"] = time.perf_counter() - t0
    return out


# ---------------------------------------------------------------------------------------------
# The one cell path
# ---------------------------------------------------------------------------------------------


@dataclass
class CellPlan:
    """How one cell gets its fitted detector: built, then fitted or loaded by ``fit``."""

    cell: Cell
    label: str                           # "head gaussian", "detector ae": names the stage that failed
    build: Callable[[], object]          # a fresh (unfitted) Detector
    fit: Callable[[object], tuple]       # (fitted detector, record fields about the fit)
    timings: dict                        # what the unit spent before this cell (first cell only)
    degenerate: str | None = None        # a reason known before scoring (constant embeddings)


@dataclass
class FittedCell:
    """A cell whose detector is fitted (or loaded): what :func:`finish_cell` needs to score it."""

    plan: CellPlan
    detector: object
    extra: dict
    timings: dict
    stamp: str
    fit_wall_s: float                    # build + fit: the part of the cell's total_s spent before predicting


def run_cell(plan: CellPlan, dataset, ctx: RunContext, fingerprint: str) -> Outcome:
    """Every cell, whatever its kind: fit (or load) -> predict on the splits -> metrics -> outcome."""
    fitted = fit_cell(plan, ctx, fingerprint)
    return fitted if isinstance(fitted, Outcome) else finish_cell(fitted, dataset, ctx, fingerprint)


def fit_cell(plan: CellPlan, ctx: RunContext, fingerprint: str) -> FittedCell | Outcome:
    """The first half of :func:`run_cell`: build and fit (or load) the cell's detector; a failed outcome
    when that fails."""
    from methods.base import seed_everything

    cell, timings = plan.cell, dict(plan.timings)
    stamp, t_start = now(), time.perf_counter()
    stage = f"{plan.label} build"
    try:
        seed_everything(cell.seed)
        detector = plan.build()
        stage = f"{plan.label} fit"
        t0 = time.perf_counter()
        detector, extra = plan.fit(detector)
        timings["fit_s"] = time.perf_counter() - t0
    except Exception as exc:  # noqa: BLE001 - recorded, the grid goes on
        return failed(cell, ctx, exc, stage, stamp, fingerprint, timings)
    return FittedCell(plan, detector, extra, timings, stamp, time.perf_counter() - t_start)


def finish_cell(fitted: FittedCell, dataset, ctx: RunContext, fingerprint: str) -> Outcome:
    """The second half of :func:`run_cell`: predict on the splits, metrics, the outcome."""
    plan, detector, timings = fitted.plan, fitted.detector, fitted.timings
    cell, stamp = plan.cell, fitted.stamp
    t_start = time.perf_counter() - fitted.fit_wall_s    # total_s: build, fit, predict, metrics of this cell
    try:
        stage = f"{plan.label} predict"
        inputs = None
        if ctx.selection is not None:               # label-free selection (issue 25): bench.run.synth
            from bench.run.synth import inputs_for

            inputs = inputs_for(dataset, cell.seed, ctx.selection, ctx.cache_dir)
        t0 = time.perf_counter()
        predicted = predict_splits(detector, dataset, ctx.fit_device,
                                   inputs.splits(dataset.test.has_masks) if inputs is not None else None)
        timings["predict_s"] = time.perf_counter() - t0
    except Exception as exc:  # noqa: BLE001 - recorded, the grid goes on
        return failed(cell, ctx, exc, stage, stamp, fingerprint, timings)
    extra = {"setting": detector.setting, "deterministic_fit": bool(getattr(detector, "deterministic_fit", False)),
             **fitted.extra}
    synth = None
    if inputs is not None:
        from bench.run.synth import synth_arrays

        timings["synth_predict_s"] = predicted.pop("extra_s")
        synth, extra["selection"] = synth_arrays(inputs, predicted.pop("extra"))
    depends = getattr(detector, "map_depends_on_head", None)
    if depends is not None:
        extra["map_head_dependent"] = depends
    return score_cell(cell, dataset, ctx, fingerprint, **predicted, timings=timings, t_start=t_start, stamp=stamp,
                      degenerate=plan.degenerate, extra=extra, synth=synth)


class EncoderGroup:
    """One encoder, trained (or loaded with its embeddings) once, and every head cell on it.

    A global head's cell is a :class:`LatentDetector` over the fitted encoder, a patch head's cell a
    :class:`PatchDetector`; both share the encoder and its embeddings (a :class:`SplitMemo`).
    """

    def __init__(self, unit: Unit, dataset, ctx: RunContext):
        self.unit, self.dataset, self.ctx = unit, dataset, ctx
        self.cache = EncoderCache(Path(ctx.cache_dir) / "encoders")

    def prepare(self):
        """Build the encoder; load it and its embeddings from the cache, or train and embed once."""
        from bench.analysis.adequacy import encoder_adequacy, untrained_reference
        from methods.base import seed_everything
        from methods.registry import create_encoder

        comp, seed, ds, ctx = self.unit.encoder, self.unit.seed, self.dataset, self.ctx
        seed_everything(seed)        # initial weights are part of what the seed fixes
        encoder = create_encoder(comp.name, in_chans=ds.channels, image_size=ds.image_size, **comp.kwargs)
        data = dataset_spec(self.unit.dataset, self.unit.fingerprint)
        key = fit_key("encoder", data, comp.spec(), seed,
                      precision=ctx.fit_precision(encoder.trainable))
        entry = self.cache.load(key, encoder)       # None when absent; a corrupt entry is moved aside
        info = {"encoder_cache": str(self.cache.path(key)), "encoder_cached": entry is not None}
        if entry is not None:
            emb, meta = entry
            info.update(encoder_fit_s=0.0, embed_s=0.0, encoder_fit_s_original=meta.get("fit_s"),
                        encoder_history=meta.get("history"),   # adequacy guard (issue 15): stored, or judged now
                        adequacy=meta.get("adequacy") or encoder_adequacy(encoder, meta.get("history"), emb, ds))
            return encoder, emb, info
        reference = untrained_reference(encoder, ds, ctx.embed_batch_size, ctx.fit_device)   # adequacy guard
        t0 = time.perf_counter()
        encoder.fit(ds.train, seed=seed, device=ctx.fit_device, progress=ctx.progress)
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        emb = {name: encoder.embed(getattr(ds, name), ctx.embed_batch_size, ctx.fit_device).numpy()
               for name in ("train", "val", "test")}
        embed_s = time.perf_counter() - t0
        for name, z in emb.items():
            bad = int((~np.isfinite(z)).any(1).sum())
            if bad:
                raise FloatingPointError(f"encoder {comp.id} produced {bad} non-finite {name} embeddings")
        emb.update(val_labels=ds.val.labels, test_labels=ds.test.labels)
        history = [float(v) for v in encoder.history_]
        adequacy = encoder_adequacy(encoder, history, emb, ds, reference)         # adequacy guard (issue 15)
        self.cache.save(key, encoder.cpu(), emb, {"dataset": data, "encoder": comp.spec(), "seed": seed,
                                                  "fit_s": fit_s, "embed_s": embed_s, "history": history,
                                                  "adequacy": adequacy,
                                                  "versions": versions(), "git_sha": git_sha(),
                                                  "created": now()})
        info.update(encoder_fit_s=fit_s, embed_s=embed_s, encoder_history=history, adequacy=adequacy)
        return encoder, emb, info

    def outcomes(self, load_s: float) -> Iterator[Outcome]:
        import torch

        from methods.detectors.latent import SplitMemo

        stamp = now()
        try:
            encoder, emb, info = self.prepare()
        except Exception as exc:  # noqa: BLE001
            for cell in self.unit.cells:
                yield failed(cell, self.ctx, exc, f"encoder {self.unit.encoder.id}", stamp, self.unit.fingerprint)
            return
        memo = SplitMemo()              # every head sees the embeddings computed (or cached) once
        for name in ("train", "val", "test"):
            memo.put("embedding", getattr(self.dataset, name).images, torch.from_numpy(emb[name]))
        train = emb["train"]
        constant = (f"encoder {self.unit.encoder.id} gives every training image the same embedding"
                    if len(train) > 1 and np.ptp(train, axis=0).max() == 0 else None)
        first_timings = {"dataset_s": load_s, "encoder_fit_s": info["encoder_fit_s"], "embed_s": info["embed_s"]}
        fields = {k: info.get(k) for k in ("encoder_cache", "encoder_cached", "encoder_history",
                                           "encoder_fit_s_original", "adequacy")}
        # every head is fitted before any cell predicts, so that the gradient maps of all heads share
        # the encoder's forward pass (``LatentDetector`` peers on ``memo``); same numbers as cell by cell
        first, fitted = True, []
        for cell in self.unit.cells:
            plan = self.cell_plan(cell, encoder, memo, fields, constant)
            if plan is None:
                fitted.append(Outcome(cell, "not_applicable", why=not_applicable_reason(
                    cell, encoder, self.dataset.test.has_masks) or ""))
                continue
            plan.timings = first_timings if first else {k: 0.0 for k in first_timings}
            first = False
            fitted.append(fit_cell(plan, self.ctx, self.unit.fingerprint))
        for item in fitted:
            yield item if isinstance(item, Outcome) else finish_cell(item, self.dataset, self.ctx,
                                                                     self.unit.fingerprint)

    def cell_plan(self, cell: Cell, encoder, memo, fields: dict, constant: str | None) -> CellPlan | None:
        """The detector of one head cell over the fitted encoder, or None where the cell does not apply."""
        from methods.detectors.latent import LatentDetector
        from methods.detectors.patch import PatchDetector
        from methods.registry import create_head, is_patch_head

        ctx, train = self.ctx, self.dataset.train
        head = lambda: create_head(cell.head.name, **cell.head.kwargs)  # noqa: E731
        # a patch head makes its own maps, so its cell runs once (under the default map kind); another
        # map kind changes nothing where there are no masks to score maps against
        if not_applicable_reason(cell, encoder, self.dataset.test.has_masks) is not None:
            return None
        if is_patch_head(cell.head.name):
            # a constant *global* embedding says nothing about a patch head's patches
            build = lambda: PatchDetector(encoder, head(), fit_encoder=False)  # noqa: E731
            fields, constant = {**fields, "localization": "patch"}, None
        else:
            build = lambda: LatentDetector(encoder, head(), cell.localization, map_options=cell.map_kwargs,  # noqa: E731
                                           fit_encoder=False, memo=memo)

        def fit(detector):
            detector.fit(train, seed=cell.seed, device=ctx.fit_device, progress=ctx.progress)
            return detector, fields

        return CellPlan(cell, f"head {cell.head.id}", build, fit, {}, degenerate=constant)


class EndToEnd:
    """One end-to-end detector cell: its fit is cached (or made and cached at once), then the cell path."""

    def __init__(self, unit: Unit, dataset, ctx: RunContext):
        self.unit, self.dataset, self.ctx = unit, dataset, ctx
        self.cache = DetectorCache(Path(ctx.cache_dir) / "detectors")

    def outcomes(self, load_s: float) -> Iterator[Outcome]:
        for cell in self.unit.cells:
            yield run_cell(self.cell_plan(cell, load_s), self.dataset, self.ctx, self.unit.fingerprint)

    def cell_plan(self, cell: Cell, load_s: float) -> CellPlan:
        from methods.registry import create_detector

        ds, ctx = self.dataset, self.ctx
        comp = cell.detector

        def build():
            return create_detector(comp.name, in_chans=ds.channels, image_size=ds.image_size, **comp.kwargs)

        def fit(detector):
            extra = {}
            if detector.needs_pool:
                extra["unlabeled"] = unlabeled_pool_for(ds, detector.pool_request(), cell.seed)
            fit_spec = {k: v for k, v in comp.spec().items() if k not in detector.predict_params}
            key = fit_key("detector", dataset_spec(cell.dataset, self.unit.fingerprint), fit_spec, cell.seed,
                          precision=ctx.fit_precision())
            if detector.needs_workdir:              # third-party trainers write only inside the cache
                extra["workdir"] = str(Path(ctx.cache_dir) / "work" / key)
            fit_spec.pop("id", None)
            meta = {"detector": fit_spec, "seed": cell.seed, "created": now()}
            fit_kwargs = dict(seed=cell.seed, device=ctx.fit_device, progress=ctx.progress, **extra)
            cached = self.cache.load(key)
            if cached is None:
                from methods.base import seed_everything

                seed_everything(cell.seed)
                detector.fit(ds.train, **fit_kwargs)
                self.cache.save(key, detector, meta)
            else:
                for name in detector.predict_params:          # this cell's scoring options on the shared fit
                    setattr(cached, name, getattr(detector, name))
                detector = cached
                if detector.complete_fit(ds.train, **fit_kwargs):
                    self.cache.save(key, detector, meta)
            from bench.analysis.adequacy import assess_detector

            return detector, {"detector_cache": str(self.cache.path(key)), "detector_cached": cached is not None,
                              "adequacy": assess_detector(detector)}

        return CellPlan(cell, f"detector {comp.id}", build, fit, {"dataset_s": load_s})
