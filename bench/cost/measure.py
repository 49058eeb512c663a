"""Cost before commitment: a grid's planned wall time on the device it will run on, in seconds.

Why: ``bench run --grid full`` used to start 882 cells with no word on what they cost. Before its
first training step ``bench run`` (and ``--check``) prints this estimate; ``--budget HOURS``
refuses a grid whose estimate exceeds it, before any work.

Where records of the same units exist (a resumed run, other seeds) their timings are used
(:mod:`bench.cost.estimate`). Everything else is **measured** here, on the run's device and with
the run's thread count (``bench.run.work.unit_settings``), a few steps of each kind of work, and
extrapolated by the sizes the grid states:

* a trainable encoder: ``STEPS`` timed optimiser steps of its own ``training_step`` (after one
  warm-up step) at its batch size (at most :data:`PROBE_BATCH` images on a CPU, scaled linearly),
  times ``epochs x steps per epoch``; embedding: the per-image time of ``embed`` on a few images
  times every image embedded (train, validation, test, and the adequacy guard's reference);
* a global head: its fit and scoring on random features of the encoder's dimension and the
  training split's size, at most :data:`HEAD_ROWS` rows (fit scaled linearly beyond; a kNN head's
  scoring, which grows with the training set, is then an underestimate), a trained head at
  ``min(epochs, 2)`` epochs, scaled to its epochs; maps:
  the per-image time of the cell's map kind on a few images, times the images that get maps;
* a patch head: fit and predict on a subset of :data:`SUBSET` training images, scaled by images (a
  trained one fitted at its shortest loop and at twice that: the difference scaled to its lengths);
* a detector: its fit on a subset with every length parameter (``epochs``, ``iterations``,
  ``asr_epochs``) at 1, then each doubled until the fit takes visibly longer (within
  :data:`PROBE_BUDGET_S` per detector): the differences are the cost per epoch (per iteration)
  of each loop, scaled to the grid's values and, for epochs, to the full training set; predict
  per image; cells that share one fit (options in ``predict_params``) pay for it once;
* metrics: one ``bench.metrics.evaluate`` call on random scores and maps of the test split's shape.

Frozen ImageNet encoders whose weights are not available are timed with random weights (same
architecture, same cost). The estimate says what it measured and what it could not.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

import numpy as np

from bench.cost.estimate import Estimate, UnitCost

#: Timed optimiser steps per trainable encoder (after one warm-up step).
STEPS = 2
#: Most training rows a global head's fit is timed on (larger training sets are scaled linearly): the full
#: grid's 28 heads x 10 encoders x 4 datasets were fitted at full size and made --check take many minutes.
HEAD_ROWS = 1024
#: Largest batch a step is timed with on a CPU (larger batches are scaled linearly).
PROBE_BATCH = 32
#: Images for per-image timings (embedding, maps, predictions) and for subset fits.
PROBE_IMAGES = 8
SUBSET = 32
#: A detector loop is timed at doubling lengths until the fit takes this much longer than at the base
#: length (seconds, or a quarter of the base time), at most MAX_PROBE times the base length.
MIN_DELTA_S, MAX_PROBE = 0.5, 16
#: Seconds one detector kind may spend in timed fits: the doubling stops there (a Lightning-based peer
#: pays seconds of set-up per fit, and its loops are slow on a CPU; unbounded, the probing of the
#: peers grid took longer than 25 minutes). A first fit this long is its own base timing.
PROBE_BUDGET_S, WARM_ENOUGH_S = 20.0, 5.0
#: Seconds the estimate may spend measuring before a run (``--measure-budget``): units not timed by then
#: are listed as not timed, and the planned time covers what was timed (the full grid's GPU-sized units
#: took over 16 CPU-minutes to probe on a 2-core machine, and --check never printed a plan).
MEASURE_BUDGET_S = 300.0
#: Length parameters of detectors (epoch-like ones scale with the training set, iterations do not).
LENGTHS = {"epochs": True, "asr_epochs": True, "iterations": False}


# ---------------------------------------------------------------------------------------------
# Timing helpers
# ---------------------------------------------------------------------------------------------
def _sync(device: str) -> None:
    if str(device).startswith("cuda"):
        import torch

        torch.cuda.synchronize()


@contextmanager
def _timer(device: str, out: list):
    _sync(device)
    t0 = time.perf_counter()
    yield
    _sync(device)
    out.append(time.perf_counter() - t0)


def per_call(fn, device: str, repeats: int = 1) -> float:
    """Seconds per call after one warm-up call (the first call pays allocation and kernel selection)."""
    fn()
    times: list[float] = []
    for _ in range(repeats):
        with _timer(device, times):
            fn()
    return float(np.median(times))


def _normal(split):
    return split.normal() if split.n_anomalous else split


def _build_encoder(comp, dataset, notes: list):
    """The grid's encoder; a frozen ImageNet encoder without weights is timed with random weights."""
    from methods.base import seed_everything
    from methods.registry import create_encoder

    seed_everything(0)
    shape = {"in_chans": dataset.channels, "image_size": dataset.image_size}
    try:
        return create_encoder(comp.name, **shape, **comp.kwargs)
    except Exception as exc:  # noqa: BLE001
        if comp.name.startswith("imagenet/"):
            notes.append(f"{comp.id}: timed with random weights ({type(exc).__name__}: weights not available)")
            return create_encoder("random/" + comp.name.split("/", 1)[1], **shape,
                                  **{k: v for k, v in comp.kwargs.items() if k != "weights"})
        raise


# ---------------------------------------------------------------------------------------------
# Encoder units
# ---------------------------------------------------------------------------------------------
def training_step_seconds(encoder, images: np.ndarray, batch: int, device: str, seed: int = 0) -> float:
    """Seconds of one optimiser step of ``encoder.training_step`` at batch ``batch`` (as in its fit)."""
    import torch

    from methods.base import seed_everything

    generator = seed_everything(seed)
    encoder.to(device).train()
    if hasattr(encoder, "init_centres") and not getattr(encoder, "centres_ready", True):
        encoder.init_centres(images[:batch], torch.Generator().manual_seed(seed), device)
    opt = encoder.make_optimizer()
    data = torch.from_numpy(np.ascontiguousarray(images[:batch])).to(device)

    def step():
        x = data.float().div(255.0)
        loss = encoder.training_step(x, generator).float()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        encoder.after_step(0, 10)

    step()
    times: list[float] = []
    for _ in range(STEPS):
        with _timer(device, times):
            step()
    encoder.eval()
    return float(np.median(times))


def _shape(dataset) -> tuple:
    return (dataset.channels, dataset.image_size)


def _n_train(dataset) -> int:
    return len(_normal(dataset.train))


def encoder_rates(comp, dataset, device: str, batch_size: int, notes: list) -> dict:
    """Per-step and per-image seconds of an encoder (they depend on its configuration and the image
    shape only, so one measurement serves every dataset of that shape), and the built encoder."""
    encoder = _build_encoder(comp, dataset, notes)
    train = _normal(dataset.train)
    probe = dataset.train.images[:PROBE_IMAGES]
    out = {"encoder": encoder, "embed_per_image": per_call(lambda: encoder.embed(probe, batch_size, device), device)
           / len(probe), "step_s": None}
    if getattr(encoder, "trainable", False):
        batch = int(encoder.batch_size)
        probe_batch = min(batch, len(train)) if str(device).startswith("cuda") else min(batch, PROBE_BATCH, len(train))
        out["step_s"] = training_step_seconds(encoder, train.images, probe_batch, device)
        out["step_batch"] = probe_batch
        out["encoder"] = _build_encoder(comp, dataset, [])      # the timed steps changed its weights
    return out


def encoder_seconds(rates: dict, dataset) -> dict:
    """The fit and embedding seconds of one encoder unit on ``dataset`` from :func:`encoder_rates`."""
    encoder, n_train = rates["encoder"], _n_train(dataset)
    n_embedded = len(dataset.train) + len(dataset.val) + len(dataset.test)
    out = {"fit_s": 0.0, "embed_s": rates["embed_per_image"] * n_embedded}
    if rates["step_s"] is not None:
        batch = min(int(encoder.batch_size), n_train)
        step = rates["step_s"] * batch / rates["step_batch"]                     # per image beyond the probe
        out["fit_s"] = step * max(1, n_train // batch) * int(encoder.epochs)
        out["embed_s"] += rates["embed_per_image"] * (min(n_train, 512) + min(dataset.val.n_normal, 512))
        if hasattr(encoder, "init_centres"):             # MSACL's fixed class centres: forward passes
            out["fit_s"] += rates["embed_per_image"] * min(n_train, encoder.centre_samples or n_train) * encoder.n_classes
    return out


def head_rates(cell, encoder, n_train: int, device: str) -> dict:
    """A global head's fit on random features of the encoder's dimension and ``n_train`` rows, and its
    scoring per row (a trained head at 2 epochs, scaled to its epochs)."""
    import torch

    from methods.registry import create_head

    kwargs = dict(cell.head.kwargs)
    head = create_head(cell.head.name, **kwargs)
    scale = 1.0
    if isinstance(getattr(head, "epochs", None), int) and head.epochs > 2:
        scale = head.epochs / 2
        head = create_head(cell.head.name, **{**kwargs, "epochs": 2})
    rng = np.random.default_rng(0)
    z = torch.from_numpy(rng.normal(size=(n_train, encoder.out_dim)).astype(np.float32))
    times: list[float] = []
    with _timer(device, times):
        head.fit(z, seed=0, device=device)
    z_eval = torch.from_numpy(rng.normal(size=(256, encoder.out_dim)).astype(np.float32))
    per_row = per_call(lambda: head.score(z_eval, device=device), device) / len(z_eval)
    return {"fit_s": times[0] * scale, "score_per_row": per_row, "head": head}


def map_seconds_per_image(cell, encoder, head, dataset, device: str) -> tuple[float, float]:
    """Seconds per image of the cell's maps for one head alone, and for each further head that shares the
    encoder's pass (``MapKind.make_many``: a backward pass per gradient-map head)."""
    from methods.detectors.latent import LatentDetector
    from methods.maps import map_kind

    kind = map_kind(cell.localization)
    batch = LatentDetector(encoder, head, cell.localization).batch_size // 2     # as the runner's detectors
    probe = dataset.test.images[:PROBE_IMAGES]

    def make(heads):
        return kind.make_many(encoder, heads, probe, device=device, batch_size=batch, **cell.map_kwargs)

    one = per_call(lambda: make([head]), device) / len(probe)
    if not kind.head_dependent:
        return one, 0.0
    two = per_call(lambda: make([head, head]), device) / len(probe)
    return one, min(one, max(0.0, two - one))


def patch_rates(cell, encoder, dataset, device: str, notes: list) -> dict:
    """An encoder x patch head cell: fit on a subset of training images and predict, per image.

    A trained patch head (``patch_flow``: meta-epochs x sub-epochs) is fitted twice, at its shortest
    loop and at twice that: the difference is the loop's cost, scaled to the grid's lengths, and the
    rest (feature extraction, sampling, set-up) is paid once. Scaling the whole probe fit by the
    lengths counted the feature extraction of every image once per epoch: the dense grid's plan was
    1.29x its measured cells (issue 27 item 5).
    """
    from methods.detectors.patch import PatchDetector
    from methods.registry import create_head

    train = _normal(dataset.train)
    subset = train.subset(np.arange(min(SUBSET, len(train))))
    head = create_head(cell.head.name, **cell.head.kwargs)
    lengths = {key: value for key in ("epochs", "meta_epochs", "sub_epochs")
               if isinstance(value := getattr(head, key, None), int) and not isinstance(value, bool) and value > 1}

    def fit_seconds(settings: dict) -> tuple[float, PatchDetector]:
        detector = PatchDetector(encoder, create_head(cell.head.name, **{**cell.head.kwargs, **settings}),
                                 fit_encoder=False)
        times: list[float] = []
        with _timer(device, times):
            detector.fit(subset, seed=0, device=device)
        return times[0], detector

    if lengths:
        fit_seconds({key: 1 for key in lengths})                      # warm-up: allocation, kernel selection
        once, _ = fit_seconds({key: 1 for key in lengths})
        first = next(iter(lengths))
        twice, detector = fit_seconds({key: (2 if key == first else 1) for key in lengths})
        loop = max(twice - once, 0.0)                                  # one pass of the innermost loop nest
        total = max(once - loop, 0.0) + loop * float(np.prod(list(lengths.values())))
    else:
        total, detector = fit_seconds({})
    probe = dataset.test.images[:PROBE_IMAGES]
    per_image = per_call(lambda: detector.predict(probe, device=device), device) / len(probe)
    if cell.head.name == "patch_knn":
        notes.append("patch_knn: the coreset selection grows faster than the training set; its fit is scaled linearly "
                     "(an underestimate)")
    return {"fit_per_image": total / len(subset), "predict_per_image": per_image}


def metrics_seconds(dataset, memo: dict) -> float:
    """One ``evaluate`` call on random scores (and maps where the dataset has masks) of its test split."""
    key = ("metrics", id(dataset))
    if key not in memo:
        from bench.metrics import evaluate

        rng = np.random.default_rng(0)
        test = dataset.test
        scores = rng.normal(size=len(test))
        maps = None
        if test.has_masks:
            maps = rng.random(size=(len(test), *test.images.shape[2:])).astype(np.float32)
        t0 = time.perf_counter()
        evaluate(scores, test.labels, test_maps=maps, test_masks=test.masks if maps is not None else None,
                 test_foreground=test.foreground if maps is not None else None)
        memo[key] = time.perf_counter() - t0
    return memo[key]


def _memo(memo: dict, key, make):
    if key not in memo:
        memo[key] = make()
    return memo[key]


def encoder_unit_cost(unit, dataset, ctx, memo: dict) -> UnitCost:
    from bench.run.work import not_applicable_reason
    from methods.maps import map_kind
    from methods.registry import is_patch_head

    notes: list[str] = []
    comp, shape, n_train = unit.component, _shape(dataset), _n_train(dataset)
    rates = _memo(memo, ("encoder", comp, shape),
                  lambda: encoder_rates(comp, dataset, ctx.device, ctx.embed_batch_size, notes))
    encoder = rates["encoder"]
    parts = {**encoder_seconds(rates, dataset), "heads_s": 0.0, "maps_s": 0.0, "metrics_s": 0.0, "cells": []}
    n_scored = len(dataset.val) + len(dataset.test)
    n_maps = len(dataset.test) + (len(dataset.val) if dataset.val.has_masks and dataset.val.masks.any() else 0)
    shared_maps: set = set()
    for cell in unit.cells:
        if not_applicable_reason(cell, encoder, dataset.test.has_masks) is not None:     # the worker's rule
            continue
        if is_patch_head(cell.head.name):
            rates_p = _memo(memo, ("patch", comp, cell.head, shape), lambda: patch_rates(cell, encoder, dataset,
                                                                                          ctx.device, notes))
            parts["heads_s"] += rates_p["fit_per_image"] * n_train + rates_p["predict_per_image"] * n_scored
        else:
            # timed once per (encoder, head) on at most HEAD_ROWS rows, scaled linearly to each dataset's training set
            rows = min(n_train, HEAD_ROWS)
            rates_h = _memo(memo, ("head", comp, cell.head, rows), lambda: head_rates(cell, encoder, rows,
                                                                                          ctx.device))
            parts["heads_s"] += rates_h["fit_s"] * n_train / rows + rates_h["score_per_row"] * n_scored
            if dataset.test.has_masks and cell.localization is not None:
                # head-independent maps are made once per encoder; gradient maps of further heads share
                # the encoder's forward pass (the runner fits every head first), so they cost a backward
                dependent = map_kind(cell.localization).head_dependent
                group = ("maps", comp, cell.localization, cell.map_options, shape)
                if dependent or group not in shared_maps:
                    first, further = _memo(memo, group + (cell.head.name if dependent else None,),
                                           lambda: map_seconds_per_image(cell, encoder, rates_h["head"], dataset,
                                                                         ctx.device))
                    parts["maps_s"] += (further if group in shared_maps else first) * n_maps
                    shared_maps.add(group)
        parts["metrics_s"] += metrics_seconds(dataset, memo)
        parts["cells"].append(cell.cell_id)
    seconds = sum(v for k, v in parts.items() if k != "cells")
    return UnitCost(unit.label, seconds, parts, "measured", notes)


# ---------------------------------------------------------------------------------------------
# Detector units
# ---------------------------------------------------------------------------------------------
def _detector_lengths(detector) -> dict[str, int]:
    """The value of each length parameter the (built) detector uses: its own attribute, or that of the
    encoder it trains (``msacl_patch``); ReContrast counts ``iterations`` unless ``epochs`` is set."""
    out = {}
    for key in LENGTHS:
        value = getattr(detector, key, None)
        if value is None and getattr(detector, "fit_encoder", False):
            value = getattr(getattr(detector, "encoder", None), key, None)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            out[key] = value
    if "iterations" in out and "epochs" in out:
        out.pop("iterations")
    return out


def _pool_subset(dataset, detector, seed: int, fraction: float):
    from methods.detectors._pool import unlabeled_pool

    request = detector.pool_request()
    pool = unlabeled_pool(dataset, anomaly_rate=request.anomaly_rate, size=request.size, seed=seed)
    keep = max(2, int(round(len(pool) * fraction)))
    return pool.subset(np.arange(min(keep, len(pool))))


def detector_fit_costs(comp, dataset, device: str, notes: list) -> dict:
    """Fixed and per-length-unit seconds of a detector's fit, measured on a subset, and predict per image."""
    from methods.base import seed_everything
    from methods.registry import create_detector

    shape = {"in_chans": dataset.channels, "image_size": dataset.image_size}
    lengths = _detector_lengths(create_detector(comp.name, **shape, **comp.kwargs))
    train = _normal(dataset.train)
    subset = train.subset(np.arange(min(SUBSET, len(train))))
    fraction = len(subset) / len(train)                     # of the pool too, for detectors that take one
    probe_of = {k: (2 if LENGTHS[k] else 4) for k in lengths}           # iterations: start at 2 steps

    def fit_seconds(settings: dict):
        seed_everything(0)
        detector = create_detector(comp.name, **shape, **{**comp.kwargs, **settings})
        extra = {"unlabeled": _pool_subset(dataset, detector, 0, fraction)} if detector.needs_pool else {}
        times: list[float] = []
        with _timer(device, times):
            detector.fit(subset, seed=0, device=device, **extra)
        return times[0], detector

    base_settings = {k: (1 if LENGTHS[k] else probe_of[k] // 2) for k in lengths}
    base, detector = fit_seconds(base_settings)         # warm-up: the first fit pays allocation and set-up
    spent = base
    if base < WARM_ENOUGH_S:
        base, detector = fit_seconds(base_settings)
        spent += base
    slopes = {}
    for key in lengths:                 # more epochs until the difference stands out of the timing noise
        value = base_settings[key]
        while True:
            value *= 2
            bumped, _ = fit_seconds({**base_settings, key: value})
            spent += bumped
            stands_out = bumped - base > max(MIN_DELTA_S, 0.25 * base)
            if stands_out or value >= MAX_PROBE * base_settings[key] or value >= lengths[key]:
                break
            if spent + 2 * bumped > PROBE_BUDGET_S:
                notes.append(f"{comp.id}: {key} timed up to {value} within the {PROBE_BUDGET_S:.0f} s probe budget, "
                             f"before its cost stood out of the set-up time; the estimate may be low")
                break
        slopes[key] = max(0.0, (bumped - base) / (value - base_settings[key]))
    fixed = max(0.0, base - sum(slopes[k] * base_settings[k] for k in lengths))
    probe = dataset.test.images[:PROBE_IMAGES]
    per_image = per_call(lambda: detector.predict(probe, device=device), device) / len(probe)
    # epoch-like loops pass over every training image: their cost per epoch is per image of the subset
    per_unit = {k: slopes[k] / len(subset) if LENGTHS[k] else slopes[k] for k in lengths}
    return {"lengths": lengths, "fixed_s": fixed if lengths else 0.0, "per_length_s": per_unit,
            "fit_per_image": 0.0 if lengths else base / len(subset), "predict_per_image": per_image,
            "subset": len(subset)}


def detector_fit_seconds(costs: dict, n_train: int) -> float:
    """A detector's fit on ``n_train`` training images from :func:`detector_fit_costs`: fixed cost, plus
    each loop's cost per epoch (per image) x its epochs x ``n_train`` (per iteration x its iterations)."""
    lengths, per = costs["lengths"], costs["per_length_s"]
    return (costs["fixed_s"] + costs["fit_per_image"] * n_train
            + sum(per[k] * lengths[k] * (n_train if LENGTHS[k] else 1) for k in lengths))


def detector_unit_cost(unit, dataset, ctx, memo: dict, shared_fits: set) -> UnitCost:
    from methods.registry import create_detector

    notes: list[str] = []
    comp, cell = unit.component, unit.cells[0]
    probe = create_detector(comp.name, in_chans=dataset.channels, image_size=dataset.image_size, **comp.kwargs)
    fit_spec = (comp.name, tuple(sorted((k, str(v)) for k, v in comp.kwargs.items() if k not in probe.predict_params)))
    key = ("detector", fit_spec, _shape(dataset))
    if key not in memo:
        try:
            memo[key] = detector_fit_costs(comp, dataset, ctx.device, notes)
        except Exception as exc:  # noqa: BLE001 - a detector that cannot be timed is named, not fatal
            memo[key] = None
            memo[("why", key)] = _why(comp.id, exc)
    costs = memo[key]
    if costs is None:
        return UnitCost(unit.label, 0.0, {"cells": [cell.cell_id]}, "unestimated", [memo[("why", key)]])
    shared = (unit.dataset, fit_spec, unit.seed) in shared_fits       # cells that differ in predict_params only
    shared_fits.add((unit.dataset, fit_spec, unit.seed))
    fit = 0.0 if shared else detector_fit_seconds(costs, _n_train(dataset))
    predict = costs["predict_per_image"] * (len(dataset.val) + len(dataset.test))
    parts = {"fit_s": fit, "predict_s": predict, "metrics_s": metrics_seconds(dataset, memo), "cells": [cell.cell_id]}
    return UnitCost(unit.label, fit + predict + parts["metrics_s"], parts, "measured", notes)


# ---------------------------------------------------------------------------------------------
# The grid
# ---------------------------------------------------------------------------------------------
def _slots(ctx, executor: str, slots: int | None = None) -> int:
    if slots is not None:                                 # the executor says how many units run at once
        return max(1, slots)
    if executor != "ray":
        return 1
    import os

    if ctx.cuda:
        import torch

        return max(1, torch.cuda.device_count())
    return max(1, (os.cpu_count() or 1) // max(1, ctx.threads or 1))


def _why(who: str, exc: BaseException) -> str:
    return f"{who}: {type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"


def estimate_grid(plan, ctx, records=None, *, units=None, executor: str = "local", slots: int | None = None,
                  datasets=None, budget_s: float | None = MEASURE_BUDGET_S, not_applicable=()) -> Estimate:
    """The planned wall time of ``plan``'s pending ``units`` (default: every cell) on ``ctx.device``.

    ``records``: existing records; units whose cells they time (same configuration, or the same
    encoder/detector elsewhere) are planned from them (:func:`bench.cost.estimate.estimate_units`),
    the rest is measured here (see the module docstring). ``datasets``: dataset component -> the
    dataset (or the stand-in of its declared sizes) the preflight built; others are loaded here.
    ``budget_s``: once measuring has taken this long, the remaining units are listed as not timed
    (None: no limit). ``not_applicable``: cell ids the preflight found not applicable (not counted as
    cells to compute where a unit is not measured; a measured unit applies the worker's rule itself).
    """
    from bench.cost.estimate import estimate_units
    from bench.run.work import load_dataset, unit_settings

    units = list(units) if units is not None else plan.units(plan.cells, lambda ds: "")
    started = time.perf_counter()
    from_records = {}
    if records:
        from_records = {e.label: e for e in estimate_units(plan, list(records)) if e.seconds is not None}
    memo: dict = {}
    shared_fits: set = set()
    skip = set(not_applicable)

    def cells_of(unit) -> dict:
        return {"cells": [c.cell_id for c in unit.cells if c.cell_id not in skip]}

    costs, notes = [], []
    with unit_settings(ctx):
        import torch

        threads = torch.get_num_threads()
        for unit in units:
            hit = from_records.get(unit.label)
            if hit is not None:
                costs.append(UnitCost(unit.label, hit.seconds, cells_of(unit), "records",
                                      list(hit.notes)))
                continue
            if budget_s is not None and time.perf_counter() - started > budget_s:
                costs.append(UnitCost(unit.label, 0.0, cells_of(unit), "unestimated",
                                      [f"measuring stopped at its {budget_s:.0f} s budget (--measure-budget "
                                       "SECONDS times more)"]))
                continue
            dataset = (datasets or {}).get(unit.dataset)
            try:
                dataset = dataset if dataset is not None else load_dataset(unit.dataset, ctx)
            except Exception as exc:  # noqa: BLE001 - the preflight names it
                costs.append(UnitCost(unit.label, 0.0, cells_of(unit), "unestimated",
                                      [f"dataset {unit.dataset.id} does not load ({type(exc).__name__}) and "
                                       "declares no sizes to plan from"]))
                continue
            if unit.encoder is None:
                try:
                    costs.append(detector_unit_cost(unit, dataset, ctx, memo, shared_fits))
                except Exception as exc:  # noqa: BLE001 - a detector that cannot be built (no weights) is named
                    costs.append(UnitCost(unit.label, 0.0, cells_of(unit), "unestimated",
                                          [_why(unit.component.id, exc)]))
                continue
            key = ("encoder-failed", unit.encoder, _shape(dataset))
            if key not in memo:
                try:
                    costs.append(encoder_unit_cost(unit, dataset, ctx, memo))
                    continue
                except Exception as exc:  # noqa: BLE001 - an encoder that cannot be timed is named, not fatal
                    memo[key] = _why(unit.encoder.id, exc)
            costs.append(UnitCost(unit.label, 0.0, cells_of(unit), "unestimated",
                                  [memo[key]]))
    return Estimate(plan.name, ctx.device, threads, costs, time.perf_counter() - started, _slots(ctx, executor, slots),
                    notes)



def estimate_run(runner, checked, executor: str = "local", slots: int | None = None,
                 budget_s: float | None = None) -> Estimate:
    """The estimate ``bench run`` prints before its first step: the runner's pending units, planned from
    the run directory's records where they time them, measured on the runner's device otherwise."""
    units, _ = runner.pending(checked.fingerprints)
    records = runner.store.records(skip_bad=True) if runner.store.records_dir.is_dir() else []
    return estimate_grid(runner.plan, runner.context, records, units=units, executor=executor, slots=slots,
                         datasets=checked.datasets, budget_s=MEASURE_BUDGET_S if budget_s is None else budget_s,
                         not_applicable=checked.not_applicable)
