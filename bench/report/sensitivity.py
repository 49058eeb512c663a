"""Part B: one table per dataset and swept setting (:mod:`bench.analysis.axes`) saying how much the
choice moves the answer: best cell under each choice, matched mean, Kendall's tau of the rankings."""

from __future__ import annotations

import inspect
import math
import typing

from bench.metrics import lower_is_better, metric_label
from bench.report.frames import _slug
from bench.report.tables import Cell, Table, _cells_frame

#: metrics an axis table is made for (when the run has them)
AXIS_METRICS = ("image_auroc", "pixel_ap")


def registered_default(role: str, name: str, param: str):
    """The value a component uses for ``param`` when a grid leaves it out: its constructor default,
    or the class's ``default_<param>`` where the constructor default is None (e.g. a head's
    ``default_preprocess``); None where the registry cannot tell."""
    try:
        from bench.run.validate import accepted_parameters, component_registries

        registry = component_registries()[role]
        entry, _ = registry.lookup(name)
        parameter = (accepted_parameters(entry.factory, entry.family) or {}).get(param)
        if parameter is not None and parameter.default not in (inspect.Parameter.empty, None):
            return parameter.default
        # a family's factory passes **kwargs on to the class it returns: that class declares the default
        owner = entry.factory if inspect.isclass(entry.factory) else typing.get_type_hints(entry.factory).get("return")
        return getattr(owner, f"default_{param}", None)
    except Exception:  # noqa: BLE001 - an unknown component reads as "default", never fails the report
        return None


def _number(value: float) -> Cell:
    return Cell(value=value, n=0) if not math.isnan(value) else Cell(text="–")


def _tau(value: float) -> Cell:
    """As text: a rank correlation is not a score to embolden."""
    return Cell(text=f"{value:+.2f}" if not math.isnan(value) else "–")


class SensitivityParts:
    """Axis-sensitivity tables of :class:`bench.report.builder.ReportBuilder`."""

    def sensitivity_tables(self) -> None:
        from bench.analysis.axes import swept_axes

        for metric in AXIS_METRICS:
            if metric not in self.cells or not self.cells[metric].notna().any():
                continue
            for axis in swept_axes(self.cells, metric, lower_is_better=lower_is_better(metric),
                                   resolve=registered_default):
                self.axis_table(axis)

    def axis_table(self, axis) -> None:
        label = metric_label(axis.metric)
        columns = ["best cell", f"best {label}", f"matched mean {label}", "τ encoders", "τ cells", "matched"]
        rows = [f"{axis.key} = {c.value}" for c in axis.choices]
        cells = _cells_frame(rows, columns)
        for row, choice in zip(rows, axis.choices):
            cells.at[row, "best cell"] = Cell(text=choice.best_label)
            cells.at[row, f"best {label}"] = _number(choice.best)
            cells.at[row, f"matched mean {label}"] = _number(choice.matched_mean)
            cells.at[row, "τ encoders"] = (Cell(text="reference") if choice.value == axis.reference
                                           else _tau(choice.tau_encoders))
            cells.at[row, "τ cells"] = (Cell(text="reference") if choice.value == axis.reference
                                        else _tau(choice.tau_cells))
            cells.at[row, "matched"] = Cell(text=str(choice.n_matched))
        notes = [f"Cells that differ only in `{axis.key}` are matched (same encoder, head, other settings); "
                 "means are over seeds. τ: Kendall's rank correlation with the reference choice of the encoder "
                 "ranking (each encoder by its best matched cell) and of the matched cells; near 1 = the choice "
                 "moves numbers, not conclusions. – = fewer than 3 to rank."]
        lower = lower_is_better(axis.metric)
        self.table(axis.dataset, Table(
            f"tables/{_slug(axis.dataset)}/axis_{_slug(axis.key).replace('.', '-')}_{axis.metric}",
            f"{axis.dataset}: how much `{axis.key}` moves {label}", cells,
            {f"best {label}": lower, f"matched mean {label}": lower}, notes=notes, index_name="choice",
            show_n=False))
