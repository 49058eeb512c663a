"""The report's training-adequacy table: per trained encoder or detector and dataset, how many seeds
passed the label-free guard (:mod:`bench.analysis.adequacy`), and why the others did not.

Why: a claim resting on an undertrained fit is "not testable", and a reader should see which fits
count at a run's scale before reading any metric of theirs. Frozen features and the untrained
control are not judged and are left out. Pandas only (no torch), like the rest of the report.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping

import pandas as pd

from bench.run.store import atomic_write_text, record_unit

_NUMBER = re.compile(r"\d")
_FIGURE = re.compile(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


def reason_kind(reason: str) -> str:
    """A guard reason without its figures: "loss: still falling at the end: the last 6 of 50 ..." ->
    "loss: still falling at the end" (what failed, comparable across seeds)."""
    kept = []
    for part in str(reason).split(": "):
        if _NUMBER.search(part):
            if len(" ".join(kept).split()) < 3:     # only the figures' part says what failed: keep it, as x
                kept.append(_FIGURE.sub("x", part))
            break
        kept.append(part)
    return ": ".join(kept)


def adequacy_frame(records: Iterable[Mapping]) -> pd.DataFrame:
    """One row per judged fit (dataset, unit, seed): passed, and its reasons' kinds."""
    fits: dict[tuple, dict] = {}
    for record in records:
        guard = record.get("adequacy") or {}
        unit = record_unit(record)[1]       # the fit the guard judged: encoder or detector
        if not guard.get("judged") or unit is None:
            continue
        key = (str(record.get("dataset")), str(unit), record.get("seed"))
        fits.setdefault(key, {"dataset": key[0], "unit": key[1], "seed": key[2], "passed": bool(guard.get("passed")),
                              "reasons": [reason_kind(r) for r in guard.get("reasons") or []]})
    return pd.DataFrame(list(fits.values()), columns=["dataset", "unit", "seed", "passed", "reasons"])


def adequacy_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows: units; columns: datasets, entries "passed/judged" seeds; last column: the failing reasons
    with how many (dataset, seed) fits gave each."""
    if frame.empty:
        return pd.DataFrame()
    datasets = sorted(frame["dataset"].unique())
    rows = []
    for unit, group in frame.groupby("unit", sort=True):
        row = {"encoder / detector": unit}
        for dataset in datasets:
            fits = group[group["dataset"] == dataset]
            row[dataset] = f"{int(fits['passed'].sum())}/{len(fits)}" if len(fits) else "–"
        counts = Counter(r for reasons in group.loc[~group["passed"], "reasons"] for r in reasons)
        row["why not (fits)"] = "; ".join(f"{reason} ({n})" for reason, n in counts.most_common())
        rows.append(row)
    return pd.DataFrame(rows)


def adequacy_markdown(table: pd.DataFrame) -> str:
    if table.empty:
        return "No trained encoder or detector was judged by the adequacy guard in this run.\n"
    header = list(table.columns)
    lines = ["Seeds whose fit passed the label-free adequacy guard / seeds judged (`bench/analysis/adequacy.py`; "
             "frozen and untrained features are not judged). Claims resting on a fit that failed are "
             "\"not testable at this scale\".", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


class AdequacyParts:
    """Adequacy part of :class:`bench.report.builder.ReportBuilder`."""

    def adequacy_part(self) -> None:
        table = adequacy_table(adequacy_frame(self.records))
        if table.empty:
            return
        md, csv = self.out_dir / "adequacy.md", self.out_dir / "adequacy.csv"
        atomic_write_text(md, "# Training adequacy\n\n" + adequacy_markdown(table), sync=False)
        atomic_write_text(csv, table.to_csv(index=False), sync=False)
        self.add("Run", "Training adequacy: seeds passing the label-free guard per encoder/detector and dataset",
                 [md, csv])
