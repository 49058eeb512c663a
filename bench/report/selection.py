"""The report's label-free selection section (issue 25), placed right after the verdicts."""

from __future__ import annotations

import functools


class SelectionParts:
    """Selection part of :class:`bench.report.builder.ReportBuilder`: only for runs made with ``selection``."""

    selection_markdown: str | None = None

    def selection_part(self) -> None:
        from bench.selection.grade import selection_table
        from bench.selection.render import render_markdown, write_selection

        if not any(r.get("selection") for r in self.records):
            return
        table, cells = selection_table(self.records, functools.partial(self.store.arrays, lazy=True),
                                       n_resamples=self.n_resamples)
        paths = write_selection(table, cells, self.out_dir)
        self.selection_markdown = render_markdown(table, "Label-free selection (graded with the test labels)")
        self.add("Run", "Label-free selection: criteria, selected configuration, tau, regret, top 3",
                 [p for p in paths if p.suffix in (".md", ".csv", ".tex")])
        self.add("Run", "Label-free selection: criterion value vs true test metric per configuration",
                 [p for p in paths if p.suffix in (".png", ".pdf")], figure=True)
