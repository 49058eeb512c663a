"""Check every cell's prerequisites before the first minute of training.

Why: a DDAD-ASR cell once failed after 84 minutes because its validation split was empty; an
offline ImageNet backbone fails only when its cell starts. The preflight loads every dataset,
builds every component with the dataset's shape (unknown parameters, bad values and missing
weights surface here), assembles every unlabeled pool a detector asks for, and checks that
masks exist where the grid requires pixel metrics. ``bench run`` stops with one line per problem
(exit 2) before any work; ``bench run --check`` does only this.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from bench.run.plan import Plan


@dataclass
class PreflightResult:
    problems: list[str] = field(default_factory=list)          # each one line; any problem stops the run
    notes: list[str] = field(default_factory=list)             # facts worth a line, not errors
    fingerprints: dict = field(default_factory=dict)           # dataset component -> content hash
    dataset_errors: dict = field(default_factory=dict)         # dataset component -> exception
    not_applicable: dict = field(default_factory=dict)         # cell id -> why it is not computed
    datasets: dict = field(default_factory=dict)               # dataset component -> dataset (or stand-in)
    stand_ins: dict = field(default_factory=dict)              # dataset component -> why a stand-in is used

    @property
    def ok(self) -> bool:
        return not self.problems


def cells_line(plan: Plan, checked: PreflightResult, done: int = 0) -> str:
    """``N cells: n to compute, d already done, m not applicable (why: count; ...)`` for ``bench run``."""
    why: dict[str, int] = {}
    for reason in checked.not_applicable.values():
        why[reason] = why.get(reason, 0) + 1
    unloadable = sum(1 for c in plan.cells
                     if c.dataset in checked.dataset_errors and c.dataset not in checked.fingerprints)
    n_na = len(checked.not_applicable)
    todo = len(plan) - n_na - done - unloadable
    return (f"{len(plan)} cells: {todo} to compute" + (f", {done} already done" if done else "")
            + (f", {unloadable} on datasets that do not load" if unloadable else "")
            + (f", {n_na} not applicable (" + "; ".join(f"{w}: {n}" for w, n in why.items()) + ")" if n_na else ""))


def _problem(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


class _Causes:
    """Problems of encoders and detectors grouped by cause: one line each, with the cells it stops
    ("ImageNet weights ... not available offline: 36 cells (padim, patchcore × 3 datasets × 3 seeds)")."""

    def __init__(self):
        self.causes: dict[str, dict] = {}

    def add(self, cause: str, who: str, cells) -> None:
        entry = self.causes.setdefault(cause, {"who": {}, "datasets": {}, "seeds": {}, "cells": set()})
        entry["who"][who] = None
        for cell in cells:
            entry["datasets"][cell.dataset.id] = None
            entry["seeds"][cell.seed] = None
            entry["cells"].add(cell.cell_id)

    def lines(self) -> list[str]:
        out = []
        for cause, e in self.causes.items():
            n_d, n_s = len(e["datasets"]), len(e["seeds"])
            spread = (f" × {n_d} dataset{'s' if n_d > 1 else ''}" if n_d > 1 else f" on {next(iter(e['datasets']))}")
            spread += f" × {n_s} seeds" if n_s > 1 else ""
            n = len(e["cells"])
            out.append(f"{cause}: {n} cell{'s' if n != 1 else ''} ({', '.join(e['who'])}{spread})")
        return out


def preflight(plan: Plan, ctx, plan_only: bool = False) -> PreflightResult:
    """Run every check on the cells of ``plan`` with the run's context (data root, cache, device).

    ``plan_only`` (``bench run --check``): generated datasets are not generated but stood in for by
    random images of their declared sizes (:mod:`datasets.stand_in`), and a dataset that does not load
    is stood in for too where it declares its sizes, so the components are still checked on it and the
    grid's cost can be planned; such datasets have no fingerprint (resume then matches configurations).
    """
    from bench.run.work import dataset_fingerprint, load_dataset, not_applicable_reason, unlabeled_pool_for
    from datasets.stand_in import is_generated, stand_in
    from methods.backbones import weights_source
    from methods.registry import create_detector, create_encoder, create_head

    result = PreflightResult()
    causes = _Causes()
    grid = plan.grid
    for head in sorted(plan.heads(), key=lambda h: h.id):
        try:
            create_head(head.name, **head.kwargs)
        except Exception as exc:  # noqa: BLE001
            result.problems.append(f"head.{head.id}: {_problem(exc)}")

    def standing_in(comp, why: str):
        try:
            made = stand_in(comp.name, **comp.kwargs)
        except Exception:  # noqa: BLE001 - arguments the loader refuses: the load error says so
            made = None
        if made is not None:
            result.stand_ins[comp] = f"dataset {comp.id}: {why}; planned from its declared sizes ({made[1].note})"
        return None if made is None else made[0]

    for comp in plan.datasets():
        t0 = time.perf_counter()
        dataset = standing_in(comp, "generated data, not generated for --check") \
            if plan_only and is_generated(comp.name) else None
        if dataset is not None:
            result.fingerprints[comp] = None
        else:
            try:
                dataset = load_dataset(comp, ctx)
            except Exception as exc:  # noqa: BLE001
                result.dataset_errors[comp] = exc
                result.problems.append(f"dataset.{comp.id}: does not load: {_problem(exc)}")
                dataset = standing_in(comp, "does not load")
                if dataset is None:
                    continue
                if plan_only:
                    result.fingerprints[comp] = None
            else:
                result.fingerprints[comp] = dataset_fingerprint(dataset)
                result.notes.append(f"dataset {comp.id}: train {len(dataset.train)}, val {len(dataset.val)}, "
                                    f"test {len(dataset.test)} ({time.perf_counter() - t0:.1f} s)")
        result.datasets[comp] = dataset
        real = comp not in result.stand_ins
        if real and (len(dataset.test) == 0 or dataset.test.n_anomalous == 0 or dataset.test.n_normal == 0):
            result.problems.append(f"dataset.{comp.id}: the test split needs normal and anomalous images "
                                   f"(has {dataset.test.n_normal} normal, {dataset.test.n_anomalous} anomalous)")
        if real and len(dataset.val) == 0:
            result.notes.append(f"dataset {comp.id}: no validation split; Dice at the validation threshold "
                                "will be n/a, every other metric is computed")
        if not dataset.test.has_masks:
            if grid.data.get("require_masks"):
                result.problems.append(f"dataset.{comp.id}: has no masks, but the grid sets require_masks")
            else:
                result.notes.append(f"dataset {comp.id}: no masks; pixel metrics are skipped")
        shape = {"in_chans": dataset.channels, "image_size": dataset.image_size}
        for enc in plan.encoders(comp):
            cells = [c for c in plan.cells if c.dataset == comp and c.encoder == enc]
            try:
                encoder = create_encoder(enc.name, **shape, **enc.kwargs)
            except Exception as exc:  # noqa: BLE001
                causes.add(_problem(exc), f"encoder.{enc.id}", cells)
                continue
            for cell in cells:
                why = not_applicable_reason(cell, encoder, dataset.test.has_masks)
                if why is not None:
                    result.not_applicable[cell.cell_id] = why
        for cell in plan.detector_cells(comp):
            det = cell.detector
            try:
                detector = create_detector(det.name, **shape, **det.kwargs)
                for name, pretrained, weights in detector.required_weights():
                    weights_source(name, pretrained=pretrained, weights=weights)
                for missing in detector.prerequisites():
                    causes.add(str(missing), f"detector.{det.id}", [cell])
                if detector.needs_pool and real:         # assembled here once, reused by the cell
                    unlabeled_pool_for(dataset, detector.pool_request(), cell.seed)
            except Exception as exc:  # noqa: BLE001
                causes.add(_problem(exc), f"detector.{det.id}", [cell])
    result.problems += causes.lines()
    result.notes += list(result.stand_ins.values())
    return result
