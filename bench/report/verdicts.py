"""The claims' verdicts as files: ``claims.md``, ``claims.csv``, ``claims.tex`` and a forest plot.

Numbers come from :mod:`bench.analysis.claims`; this module only renders them. The Markdown file is
what the report's index opens with, and what ``python -m bench claims RUN_DIR`` prints.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import pandas as pd

from bench.analysis.claims import ClaimsResult
from bench.report.tables import latex_escape
from bench.run.store import atomic_write_text

CSV_COLUMNS = ["claim", "dataset", "metric", "split", "effect", "ci_low", "ci_high", "p", "p_holm", "verdict",
               "reason", "note", "family", "tested_on", "se", "df", "test", "n_pairs", "n_seeds", "n_excluded",
               "n_resamples", "v_test", "v_seed", "deterministic", "direction", "group_a", "group_b", "match", "source",
               "statement"]
MARK = {"supported": "✔ supported", "contradicted": "✘ contradicted", "inconclusive": "~ inconclusive",
        "not testable": "– not testable"}


def _num(value, fmt: str = "+.3f") -> str:
    return format(value, fmt) if isinstance(value, (int, float)) and math.isfinite(value) else "–"


def _p(value) -> str:
    if not (isinstance(value, (int, float)) and math.isfinite(value)):
        return "–"
    return f"{value:.2g}" if value >= 1e-4 else "<1e-4"


def _name(row) -> str:
    return f"{row['claim']} [{row['split']}]" if row.get("split") else str(row["claim"])


def effect_text(row) -> str:
    effect = row["effect"]
    if not (isinstance(effect, (int, float)) and math.isfinite(effect)):
        return "–"
    core = _num(row["effect"])
    if math.isfinite(row["ci_low"]) and math.isfinite(row["ci_high"]):
        core += f" [{_num(row['ci_low'])}, {_num(row['ci_high'])}]"
    return core


def counts_line(table: pd.DataFrame) -> str:
    counts = table["verdict"].value_counts()
    return ", ".join(f"{int(counts.get(v, 0))} {v}" for v in MARK)


def split_absent(claims, records) -> tuple[list, list]:
    """``(kept, absent)``: a built-in claim with no cell on one of its two sides in ``records`` is not
    about this run, so it is counted in one line (:func:`absent_line`) instead of listed as a "not
    testable" row; claims of the grid and of ``--claims`` files are always kept."""
    from bench.analysis.claims import CLAIMS_DIR, cell_attributes, selects

    attrs = [cell_attributes(r) for r in records if r.get("cell_id")]
    kept, absent = [], []
    for claim in claims:
        builtin = Path(claim.origin).parent == CLAIMS_DIR
        present = all(any(selects(a, {**claim.where, **side}, claim.defaults) for a in attrs)
                      for side in (claim.a, claim.b))
        (kept if present or not builtin else absent).append(claim)
    return kept, absent


def absent_line(absent) -> str:
    """One line naming the built-in claims left out by :func:`split_absent` ("" when none)."""
    ids = list(dict.fromkeys(c.id for c in absent))
    if not ids:
        return ""
    shown = ", ".join(ids[:4]) + (f", ... and {len(ids) - 4} more" if len(ids) > 4 else "")
    return (f"{len(ids)} built-in claim{'s' if len(ids) > 1 else ''} ha{'ve' if len(ids) > 1 else 's'} no cells "
            f"on both sides in this run ({shown}); not listed (--set claims.builtin=false hides the built-in ones)")


def run_claim_settings(run_dir: str | Path) -> tuple[bool, list[str]]:
    """``(builtin, files)`` from the run's ``--set claims.builtin=...`` / ``claims.files=[...]`` overrides
    (``run.json``): the grid file's own ``[claims]`` table is read by the claims module itself."""
    import json

    from bench.run.grid import apply_override

    info = Path(run_dir) / "run.json"
    data: dict = {}
    try:
        for item in json.loads(info.read_text()).get("overrides") or []:
            if str(item).startswith("claims."):
                apply_override(data, item)
    except (OSError, ValueError):
        pass
    table = data.get("claims", {})
    return bool(table.get("builtin", True)), [str(f) for f in table.get("files", [])]


def render_markdown(result: ClaimsResult, title: str = "Claims", absent: str = "") -> str:
    table = result.table
    lines = [f"## {title}", "", *([absent, ""] if absent else []),
             f"{len(table)} comparisons: {counts_line(table)} (alpha = {result.alpha:g}; one two-sided test per "
             "comparison, Holm over all of them; effect = mean over matched pairs of metric(A) − metric(B) with the "
             "95 % interval the test inverts, over test cases and seeds; the sanity gate is decided on the "
             "validation split, every other row on the test split: column 'on').", "",
             "| claim | dataset | metric | on | effect [95% CI] | p (Holm) | verdict | reason / note |",
             "|:--|:--|:--|:--|--:|--:|:--|:--|"]
    for _, row in table.iterrows():
        why = row["reason"] or row["note"] or ""
        lines.append(f"| {_name(row)} | {row['dataset']} | {row['metric']} | {row.get('tested_on') or '–'} "
                     f"| {effect_text(row)} | {_p(row['p_holm'])} "
                     f"| {MARK[row['verdict']]} | {str(why).replace('|', '/')} |")
    lines += ["", "### The claims", ""]
    for claim in result.claims:
        sign = ">" if claim.direction == "greater" else "<"
        lines.append(f"- **{claim.id}**{' (sanity gate)' if claim.sanity else ''}: {claim.statement}. "
                     f"A = {claim.describe('a')}; B = {claim.describe('b')}; expected A {sign} B on "
                     f"{', '.join(claim.metrics)}; matched on dataset, {', '.join(claim.match)}. "
                     f"Source: {claim.source or 'n/a'} ({Path(claim.origin).name}).")
    lines += ["", "How to read it: a pair is two cells equal on every matched attribute; pairs resting on a failed, "
              "degenerate or not adequately trained cell (the label-free guard in each record's `adequacy`) or on "
              "an encoder whose sanity gate is closed are left out and listed in the note. The variance of an effect "
              "is the test-set part (DeLong's covariance of the correlated AUROCs, clustered by patient where the "
              "split has patients; a case bootstrap with the seeds fixed for other metrics, "
              f"{', '.join(f'{v} resamples' for v in result.n_resamples.values())}) plus the between-seed part "
              "s²/S; the reference is Student's t with Satterthwaite's degrees of freedom (column `df` of "
              "claims.csv), and with fewer than 10 patients (cases) in a class or no variance an exact "
              "permutation test. One seed of a stochastic fit leaves the training variance unknown: inconclusive. "
              "Supported = Holm p < alpha with the effect in the claimed direction (lower for lower-is-better "
              "metrics); contradicted = the same against it; inconclusive otherwise.", ""]
    return "\n".join(lines)


def render_latex(result: ClaimsResult) -> str:
    lines = ["% claims and verdicts; generated by bench.report.verdicts; do not edit",
             r"\begin{tabular}{lllrrl}", r"\toprule",
             r"claim & dataset & metric & effect [95\% CI] & $p_\mathrm{Holm}$ & verdict \\", r"\midrule"]
    for _, row in result.table.iterrows():
        lines.append(" & ".join(latex_escape(x) for x in (_name(row), row["dataset"], row["metric"], effect_text(row),
                                                             _p(row["p_holm"]), row["verdict"])) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def render_text(result: ClaimsResult, absent: str = "") -> str:
    """A plain table for the terminal."""
    table = result.table
    rows = [("claim", "dataset", "metric", "on", "effect [95% CI]", "p(Holm)", "verdict", "reason")]
    for _, row in table.iterrows():
        why = str(row["reason"] or row["note"] or "")
        rows.append((_name(row), str(row["dataset"]), str(row["metric"]), str(row.get("tested_on") or "–"),
                     effect_text(row), _p(row["p_holm"]), str(row["verdict"]),
                     why[:110] + ("…" if len(why) > 110 else "")))
    widths = [max(len(r[i]) for r in rows) for i in range(7)]
    out = ["  ".join(c.ljust(w) for c, w in zip(r[:7], widths)) + "  " + r[7] for r in rows]
    return "\n".join(out + [f"{len(table)} comparisons: {counts_line(table)}"] + ([absent] if absent else []))


def write_claims(result: ClaimsResult, out_dir: str | Path, absent: str = "") -> list[Path]:
    """``claims.md``, ``claims.csv``, ``claims.tex`` and ``figures/claims_forest.{png,pdf}`` in ``out_dir``."""
    from bench.analysis import figures

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md, csv, tex = out_dir / "claims.md", out_dir / "claims.csv", out_dir / "claims.tex"
    atomic_write_text(md, render_markdown(result, absent=absent) + "\n", sync=False)
    atomic_write_text(csv, result.table[CSV_COLUMNS].to_csv(index=False), sync=False)
    atomic_write_text(tex, render_latex(result), sync=False)
    paths = [md, csv, tex]
    if not result.table.empty:
        frame = result.table.assign(label=[f"{_name(r)} · {r['dataset']} · {r['metric']}"
                                           for _, r in result.table.iterrows()])
        paths += figures.forest_plot(frame, "Claims: effect (A − B) with 95% CI", out_dir / "figures" / "claims_forest")
    return paths


class ClaimParts:
    """The claims part of :class:`bench.report.builder.ReportBuilder`: verdicts first in the index."""

    claims_markdown: str | None = None
    claims_table: pd.DataFrame | None = None
    builtin_claims: bool = True

    def claims_part(self) -> None:
        from bench.analysis.claims import evaluate_claims, claims_for_run

        builtin, files = run_claim_settings(self.run_dir)
        claims = claims_for_run(self.run_dir, [*files, *self.claim_files], builtin and self.builtin_claims)
        claims, absent = split_absent(claims, self.records)
        line = absent_line(absent)
        if not claims:
            if line:
                self.claims_markdown = f"## Claims and verdicts\n\n{line}"
            return
        result = evaluate_claims(self.records, claims, functools.partial(self.store.arrays, lazy=True),
                                 alpha=self.alpha)
        self.claims_table = result.table          # the answer on screen lists the testable verdicts
        paths = write_claims(result, self.out_dir, line)
        self.claims_markdown = render_markdown(result, "Claims and verdicts", line)
        self.add("Run", "Claims and verdicts (supported / contradicted / inconclusive / not testable)",
                 [p for p in paths if p.suffix in (".md", ".csv", ".tex")])
        self.add("Run", "Claims: effect and 95% CI per claim, dataset and metric", [p for p in paths if
                                                                                   p.suffix in (".png", ".pdf")],
                 figure=True, headline=True)
