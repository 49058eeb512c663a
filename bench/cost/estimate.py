"""``python -m bench perf --estimate GRID --gpus N [--run RUN_DIR]``: size a cluster before renting it.

Every record holds its ``timings`` (dataset_s, encoder_fit_s, embed_s, head_fit_s, score_s,
maps_s, metrics_s, fit_s, predict_s, total_s; ``encoder_fit_s_original`` when the encoder came
from the cache). From them this module estimates, per unit of work of a grid (an encoder group or
a detector cell, the tasks an executor schedules), how long it takes, then the wall time on N
GPUs: the sum of unit times, the longest unit, and a longest-processing-time-first (LPT) list
schedule on the number of tasks that run at once (N / ``[resources] gpu_per_task``).

A unit whose cells have records of the same configuration is *measured*. Otherwise it is
*extrapolated* from records of the same encoder (head, detector) on other datasets, seeds or
settings, scaled linearly by the sizes the two configurations state (epochs, n_train, n_test,
image_size / input_size: training ~ epochs x n_train x pixels, embedding and maps ~ images x
pixels, heads ~ n_train); a size a configuration does not state (e.g. a MedMNIST split's length)
is not scaled, and the output says so. A unit with no record of its encoder or detector at all is
*unestimated* and counted. The seconds are those of the machine that made the records: records
made on a CPU say nothing about a GPU, and the output says which device made them.
"""

from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ENCODER_PART = ("dataset_s", "encoder_fit_s", "embed_s")
CELL_PART = ("head_fit_s", "score_s", "maps_s", "fit_s", "predict_s", "metrics_s")


@dataclass
class UnitEstimate:
    label: str
    seconds: float | None
    how: str                        # measured | extrapolated | unestimated
    notes: list = field(default_factory=list)


def _units(plan) -> dict:
    """``(kind, dataset, component, seed, detector cell id) -> cells`` of the plan's units."""
    return {("detector" if unit.encoder is None else "latent", unit.dataset, unit.component, unit.seed,
             None if unit.encoder is not None else unit.cells[0].cell_id): list(unit.cells)
            for unit in plan.units(plan.cells, lambda ds: "")}


def _t(rec: dict, key: str) -> float:
    value = (rec.get("timings") or {}).get(key)
    return float(value) if isinstance(value, (int, float)) else 0.0


def encoder_seconds(rec: dict) -> float:
    """The encoder part of a latent record (the first cell of its group carries it)."""
    fit = _t(rec, "encoder_fit_s") or float(rec.get("encoder_fit_s_original")
                                            or (rec.get("timings") or {}).get("encoder_fit_s_original") or 0)
    return _t(rec, "dataset_s") + fit + _t(rec, "embed_s")


def synth_seconds(rec: dict, selection: dict | None) -> float:
    """Seconds label-free selection (issue 25) adds to a cell of a grid with ``selection`` settings:
    the record's own ``synth_predict_s`` when it was run with selection, else its ``predict_s`` scaled by
    the extra images (generators x min(validation size, cap) + Mass-Volume reference + pool) over val + test;
    negative (removed) when the record has it and the grid does not."""
    measured = _t(rec, "synth_predict_s")
    if selection is None:
        return -measured
    if measured:
        return 0.0
    from bench.run.synth import DEFAULTS
    from datasets.generators._synthset import DEFAULT_GENERATORS

    n_val, n_test = int(rec.get("n_val") or 0), int(rec.get("n_test") or 0)
    generators = len(selection.get("generators") or DEFAULT_GENERATORS)
    extra = (generators * min(n_val, int(selection.get("per_generator", DEFAULTS["per_generator"])))
             + int(selection.get("mv_reference", DEFAULTS["mv_reference"])))
    return _t(rec, "predict_s") * extra / max(n_val + n_test, 1)


def cell_seconds(rec: dict, selection: dict | None = None, *, adjust: bool = False) -> float:
    """A cell's seconds; with ``adjust``, plus (or minus) what label-free selection adds (:func:`synth_seconds`)."""
    extra = synth_seconds(rec, selection) if adjust else 0.0
    if rec.get("kind") == "detector":
        return extra + (_t(rec, "total_s") or sum(_t(rec, k) for k in ("dataset_s", "fit_s", "predict_s", "metrics_s")))
    return extra + sum(_t(rec, k) for k in CELL_PART)


def _ratio(target: dict, source: dict, keys: tuple, notes: list, what: str) -> float:
    """Product of target/source for each size key; a key missing on either side is not scaled."""
    r = 1.0
    for key in keys:
        a, b = _size(target, key), _size(source, key)
        if a is None and b is None:
            continue                              # a size this component does not have (a head's epochs)
        if a is None or b is None:
            if key.startswith("dataset.") or key == "images":    # one note per dataset, not per head
                what = f"dataset {target.get('dataset.name')}"
            notes.append(f"{what}: {key.split('.')[-1]} not stated by {'the grid' if a is None else 'the record'}, "
                         "not scaled")
            continue
        r *= a / b
    return r


def _with_defaults(config: dict) -> dict:
    """A cell's flattened config plus its components' factory defaults (a grid states only overrides)."""
    from bench.run.validate import accepted_parameters, component_registries

    try:
        registries = component_registries()
    except ImportError:  # pragma: no cover
        registries = {}
    out = dict(config)
    for role, registry in registries.items():
        name = config.get(f"{role}.name")
        if name is None:
            continue
        try:
            entry, _ = registry.lookup(name)
            params = accepted_parameters(entry.factory, entry.family)
        except Exception:  # noqa: BLE001 - an unknown entry: no defaults
            continue
        for key, param in (params or {}).items():
            if isinstance(param.default, (int, float)) and not isinstance(param.default, bool):
                out.setdefault(f"{role}.{key}", param.default)
    return out


def _size(config: dict, key: str) -> float | None:
    if key == "pixels":
        side = config.get("encoder.input_size") or config.get("detector.input_size") or config.get("dataset.image_size")
        return float(side) ** 2 if side else None
    if key == "images":
        parts = [config.get(f"dataset.{k}") for k in ("n_train", "n_val", "n_test")]
        return float(sum(parts)) if all(p is not None for p in parts) else None
    value = config.get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _pick(candidates: list, cell) -> dict | None:
    """The closest record: same dataset and seed first, then same dataset, then any."""
    for test in (lambda r: r["dataset"] == cell.dataset.id and r["seed"] == cell.seed,
                 lambda r: r["dataset"] == cell.dataset.id, lambda r: True):
        hits = [r for r in candidates if test(r)]
        if hits:
            return hits[0]
    return None


def estimate_units(plan, records: list[dict]) -> list[UnitEstimate]:
    from bench.run.synth import selection_settings

    selection = selection_settings(plan.grid.data.get("selection"))     # issue 25: synthetic scoring
    usable = [r for r in records if r.get("timings") and r.get("status") in ("ok", "degenerate")]
    for r in usable:
        r["config"] = _with_defaults(r.get("config") or {})
    exact = {(r["cell_id"], r.get("config_hash")): r for r in usable}
    by_encoder: dict[str, list] = {}
    by_pair: dict[tuple, list] = {}
    by_detector: dict[str, list] = {}
    for r in usable:
        if r.get("kind") == "detector":
            by_detector.setdefault(r["detector"], []).append(r)
            continue
        if encoder_seconds(r) > 0:
            by_encoder.setdefault(r["encoder"], []).append(r)
        by_pair.setdefault((r["encoder"], r["head"]), []).append(r)
        head_name = (r.get("config") or {}).get("head.name")
        by_pair.setdefault((r["encoder"], f"name:{head_name}"), []).append(r)

    out = []
    for (kind, dataset, comp, seed, _), cells in _units(plan).items():
        label = f"{dataset.id} × {comp.id} (seed {seed})"
        hits = [exact.get((c.cell_id, c.config_hash())) for c in cells]
        notes: list[str] = []
        if kind == "detector":
            rec = hits[0]
            if rec is not None:
                out.append(UnitEstimate(label, cell_seconds(rec, selection, adjust=True), "measured"))
                continue
            src = _pick(by_detector.get(comp.id, []), cells[0])
            if src is None:
                out.append(UnitEstimate(label, None, "unestimated", [f"no record of detector {comp.id}"]))
                continue
            scale = _ratio(_with_defaults(cells[0].config()), src["config"],
                           ("detector.epochs", "dataset.n_train", "pixels"), notes, comp.id)
            out.append(UnitEstimate(label, cell_seconds(src, selection, adjust=True) * scale, "extrapolated", notes))
            continue
        # encoder group: the encoder once, then every head cell
        measured = [h for h in hits if h is not None]
        enc_exact = [h for h in measured if encoder_seconds(h) > 0]
        total, how = 0.0, "measured"
        target = _with_defaults(cells[0].config())
        if enc_exact:
            total += encoder_seconds(enc_exact[0])
        else:
            src = _pick(by_encoder.get(comp.id, []), cells[0])
            if src is None:
                out.append(UnitEstimate(label, None, "unestimated", [f"no record of encoder {comp.id}"]))
                continue
            how = "extrapolated"
            src_cfg = src["config"]
            fit = encoder_seconds(src) - _t(src, "dataset_s") - _t(src, "embed_s")
            total += _t(src, "dataset_s")
            total += fit * _ratio(target, src_cfg, ("encoder.epochs", "dataset.n_train", "pixels"), notes,
                                  f"{comp.id} training")
            total += _t(src, "embed_s") * _ratio(target, src_cfg, ("images", "pixels"), notes, f"{comp.id} embedding")
        for cell, hit in zip(cells, hits):
            if hit is not None:
                total += cell_seconds(hit, selection, adjust=True)
                continue
            candidates = (by_pair.get((comp.id, cell.head.id)) or by_pair.get((comp.id, f"name:{cell.head.name}"))
                          or [r for (e, _), rs in by_pair.items() if e == comp.id for r in rs])
            src = _pick([r for r in candidates if r.get("localization") == cell.localization] or candidates, cell)
            if src is None:
                notes.append(f"no head record for {cell.cell_id}")
                continue
            how = "extrapolated"
            cfg = _with_defaults(cell.config())
            # records before the one cell path: head_fit_s/score_s/maps_s; since: fit_s/predict_s
            head = (_t(src, "head_fit_s") + _t(src, "score_s") + _t(src, "fit_s")) * _ratio(
                cfg, src["config"], ("head.epochs", "dataset.n_train"), notes, f"head {cell.head.id}")
            maps = (_t(src, "maps_s") + _t(src, "predict_s")) * _ratio(cfg, src["config"], ("dataset.n_test", "pixels"), notes,
                                              f"maps {cell.head.id}")
            total += head + maps + _t(src, "metrics_s") * _ratio(cfg, src["config"], ("dataset.n_test", "pixels"),
                                                                  [], "metrics")
        out.append(UnitEstimate(label, total, how, list(dict.fromkeys(notes))))
    return out


def lpt(times: list[float], slots: int) -> float:
    """Makespan of longest-processing-time-first list scheduling on ``slots`` identical machines."""
    loads = [0.0] * max(1, slots)
    heapq.heapify(loads)
    for t in sorted(times, reverse=True):
        heapq.heappush(loads, heapq.heappop(loads) + t)
    return max(loads)


def _fmt(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.2f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.1f} s"


def estimate_report(plan, run_dir: Path, gpus: list[int]) -> list[str]:
    from bench.run.store import ResultStore

    records = ResultStore(run_dir).records(skip_bad=True) if (Path(run_dir) / "records").is_dir() else []
    grid = plan.grid
    estimates = estimate_units(plan, records)
    devices = Counter((r.get("host") or {}).get("device", "?") for r in records)
    how = Counter(e.how for e in estimates)
    known = [e.seconds for e in estimates if e.seconds is not None]
    gpu_per_task = float(grid.data.get("resources", {}).get("gpu_per_task", 1) or 1)
    lines = [f"plan for grid '{grid.name}': {len(plan)} cells in {len(estimates)} units (tasks); "
             f"timings from {len(records)} records in {run_dir} "
             f"(made on: {', '.join(f'{d} x{n}' for d, n in devices.items()) or 'none'})",
             f"  units measured (same configuration): {how['measured']}; extrapolated from other "
             f"datasets/seeds/settings of the same encoder or detector: {how['extrapolated']}; "
             f"unestimated (no record of that encoder/detector): {how['unestimated']}"]
    missing = Counter(n for e in estimates if e.how == "unestimated" for n in e.notes)
    for note, n in missing.items():
        lines.append(f"    unestimated: {note} ({n} units)")
    scaled = Counter(n for e in estimates if e.how == "extrapolated" for n in e.notes)
    for note, n in scaled.most_common(10):
        lines.append(f"    caveat: {note} ({n} units)")
    if any(not str(d).startswith("cuda") for d in devices):
        lines.append("  note: timings from CPU records; a GPU runs the same units faster by a factor "
                     "these records cannot tell (rerun on one GPU, then plan from that run)")
    if not known:
        lines.append("  nothing to estimate from")
        return lines
    total, longest = sum(known), max(known)
    lines.append(f"  sum of unit times {_fmt(total)}; longest unit {_fmt(longest)} "
                 f"({next(e.label for e in estimates if e.seconds == longest)})")
    for n in gpus:
        slots = max(1, int(n / gpu_per_task)) if gpu_per_task > 0 else n
        bound = max(total / slots, longest)
        lines.append(f"  {n} GPU(s), {slots} task(s) at once: lower bound {_fmt(bound)}, "
                     f"LPT schedule {_fmt(lpt(known, slots))}"
                     + (f" (+ {how['unestimated']} unestimated units)" if how["unestimated"] else ""))
    return lines


# ---------------------------------------------------------------------------------------------
# The plan a run prints (units measured by bench.cost.measure or timed by records)
# ---------------------------------------------------------------------------------------------
@dataclass
class UnitCost:
    label: str
    seconds: float
    parts: dict = field(default_factory=dict)
    how: str = "measured"          # measured (steps on this device) | records
    notes: list = field(default_factory=list)


@dataclass
class Estimate:
    """The planned wall time of a grid's pending units on one device."""

    grid: str
    device: str
    threads: int | None
    units: list[UnitCost]
    measure_s: float = 0.0
    slots: int = 1
    notes: list = field(default_factory=list)

    @property
    def seconds(self) -> float:
        if self.slots <= 1:
            return sum(u.seconds for u in self.units)
        return lpt([u.seconds for u in self.units], self.slots)

    def exceeds(self, hours: float) -> bool:
        return self.seconds > hours * 3600.0

    def lines(self, top: int | None = None) -> list[str]:
        how = {u.how for u in self.units}
        source = ("measured: a few steps of each kind of unit on this device, extrapolated by epochs x steps per "
                  "epoch and by images" if how == {"measured"} else
                  "from the timings of existing records" if how == {"records"} else
                  "from existing records where they exist, else measured on this device and extrapolated")
        n_cells = sum(len(u.parts.get("cells", [])) for u in self.units)
        timed = [u for u in self.units if u.how != "unestimated"]
        partial = f" for the {len(timed)} units timed" if len(timed) < len(self.units) else ""
        lines = [f"cost: {len(self.units)} units ({n_cells} cells to compute) pending on {self.device}"
                 f"{f' ({self.threads} torch threads per unit)' if self.threads else ''}"
                 f"{f', {self.slots} at once' if self.slots > 1 else ''}: planned wall time {_fmt(self.seconds)}"
                 f"{partial} ({source}; measuring took {_fmt(self.measure_s)})"]
        for unit in sorted(timed, key=lambda u: -u.seconds)[:top]:
            parts = ", ".join(f"{k} {_fmt(v)}" for k, v in unit.parts.items() if isinstance(v, float) and v >= 0.05)
            n = len(unit.parts.get("cells", []))
            how = {"records": "from existing records", "unestimated": "not timed, counted as 0 s"}.get(unit.how, parts)
            lines.append(f"  {unit.label}, {n} cell{'s' if n != 1 else ''}: {_fmt(unit.seconds)}"
                         + (f" ({how})" if how else ""))
        untimed: dict[str, list] = {}
        for unit in self.units:
            if unit.how == "unestimated":
                untimed.setdefault("; ".join(unit.notes) or "no reason recorded", []).append(unit)
        for why, units in untimed.items():
            n_cells = sum(len(u.parts.get("cells", [])) for u in units)
            lines.append(f"  not timed (counted as 0 s): {len(units)} unit{'s' if len(units) > 1 else ''} "
                         f"({n_cells} cells), {why}")
        notes = list(dict.fromkeys(self.notes + [n for u in timed for n in u.notes]))
        lines += [f"  note: {n}" for n in notes[:8]]
        if len(notes) > 8:
            lines.append(f"  note: ... and {len(notes) - 8} more")
        return lines
