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

    @property
    def ok(self) -> bool:
        return not self.problems


def cells_line(plan: Plan, checked: PreflightResult, done: int = 0) -> str:
    """``N cells: n to compute, d already done, m not applicable (why: count; ...)`` for ``bench run``."""
    why: dict[str, int] = {}
    for reason in checked.not_applicable.values():
        why[reason] = why.get(reason, 0) + 1
    unloadable = sum(1 for c in plan.cells if c.dataset in checked.dataset_errors)
    n_na = len(checked.not_applicable)
    todo = len(plan) - n_na - done - unloadable
    return (f"{len(plan)} cells: {todo} to compute" + (f", {done} already done" if done else "")
            + (f", {unloadable} on datasets that do not load" if unloadable else "")
            + (f", {n_na} not applicable (" + "; ".join(f"{w}: {n}" for w, n in why.items()) + ")" if n_na else ""))


def _problem(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


def preflight(plan: Plan, ctx) -> PreflightResult:
    """Run every check on the cells of ``plan`` with the run's context (data root, cache, device)."""
    from bench.run.work import dataset_fingerprint, load_dataset, not_applicable_reason, unlabeled_pool_for
    from methods.backbones import weights_source
    from methods.registry import create_detector, create_encoder, create_head

    result = PreflightResult()
    grid = plan.grid
    for head in sorted(plan.heads(), key=lambda h: h.id):
        try:
            create_head(head.name, **head.kwargs)
        except Exception as exc:  # noqa: BLE001
            result.problems.append(f"head.{head.id}: {_problem(exc)}")
    for comp in plan.datasets():
        t0 = time.perf_counter()
        try:
            dataset = load_dataset(comp, ctx)
        except Exception as exc:  # noqa: BLE001
            result.dataset_errors[comp] = exc
            result.problems.append(f"dataset.{comp.id}: does not load: {_problem(exc)}")
            continue
        result.fingerprints[comp] = dataset_fingerprint(dataset)
        result.notes.append(f"dataset {comp.id}: train {len(dataset.train)}, val {len(dataset.val)}, "
                            f"test {len(dataset.test)} ({time.perf_counter() - t0:.1f} s)")
        if len(dataset.test) == 0 or dataset.test.n_anomalous == 0 or dataset.test.n_normal == 0:
            result.problems.append(f"dataset.{comp.id}: the test split needs normal and anomalous images "
                                   f"(has {dataset.test.n_normal} normal, {dataset.test.n_anomalous} anomalous)")
        if len(dataset.val) == 0:
            result.notes.append(f"dataset {comp.id}: no validation split; Dice at the validation threshold "
                                "will be n/a, every other metric is computed")
        if not dataset.test.has_masks:
            if grid.data.get("require_masks"):
                result.problems.append(f"dataset.{comp.id}: has no masks, but the grid sets require_masks")
            else:
                result.notes.append(f"dataset {comp.id}: no masks; pixel metrics are skipped")
        shape = {"in_chans": dataset.channels, "image_size": dataset.image_size}
        for enc in plan.encoders(comp):
            try:
                encoder = create_encoder(enc.name, **shape, **enc.kwargs)
            except Exception as exc:  # noqa: BLE001
                result.problems.append(f"encoder.{enc.id} on {comp.id}: {_problem(exc)}")
                continue
            for cell in plan.cells:
                if cell.dataset == comp and cell.encoder == enc:
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
                    line = f"detector.{det.id} on {comp.id} (seed {cell.seed}): {missing}"
                    if line not in result.problems:
                        result.problems.append(line)
                if detector.needs_pool:                 # assembled here once, reused by the cell
                    unlabeled_pool_for(dataset, detector.pool_request(), cell.seed)
            except Exception as exc:  # noqa: BLE001
                line = f"detector.{det.id} on {comp.id} (seed {cell.seed}): {_problem(exc)}"
                if line not in result.problems:
                    result.problems.append(line)
    return result
