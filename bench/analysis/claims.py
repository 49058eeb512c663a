"""Claims: what the study set out to test, as data, and a verdict for each from a run's records.

A **claim** names its source, a statement, one or more metrics, two groups of cells and the
direction it expects (group A better than group B), and says which attributes the two cells of a
pair must share (``match``), so every comparison is matched on everything else. Claims are TOML
files (``bench/claims/*.toml`` ship with the suite; a user adds one with ``--claims FILE`` or the
grid's ``[claims]`` table, no code)::

    [[claim]]
    id = "cradl-contrastive-vs-vae"
    source = "CRADL (Lüth et al., BVM 2023, arXiv 2301.02126)"
    statement = "A contrastive latent with a density head beats the VAE latent with the same head"
    metrics = ["image_auroc"]
    direction = "greater"                    # A - B > 0 expected ("less": lower is the claim)
    where = { kind = "latent" }              # both groups
    a = { encoder = ["simclr", "moco", "cradl"] }
    b = { encoder = "vae" }
    match = ["seed", "head", "localization"] # the dataset is always matched
    split_by = []                            # one verdict per value of these attributes of A
    sanity = false                           # a gate: see below
    defaults = { backbone = "resnet18" }     # value of an attribute a record does not state

Selectors map an attribute to a value or a list of values; strings may be globs (``"patch_*"``,
``"imagenet/*"``) and ``{ not = ... }`` negates (``"head.n_components" = { not = 1 }``). Attributes of a cell: ``dataset, seed, kind, status, encoder, head, detector,
localization, setting`` (the record's ids), ``encoder_name, head_name, detector_name`` (registry
names), ``family`` (``imagenet`` of ``imagenet/resnet18``), ``backbone`` (``encoder.backbone`` or
``detector.backbone`` of the config, else the timm name of ``imagenet/<name>``/``random/<name>``),
``preprocess, input_norm, score, anomaly_rate`` (config values) and every flattened config key
(``"detector.score"``). An attribute a record does not state is ``defaults[attr]`` or missing.

**What a verdict rests on.** For each claim, dataset and metric: the pairs (a, b) of cells with
equal ``match`` attributes (this module: selection of cells and pairing); the effect, its variance over
test cases *and* seeds, a two-sided t test with Satterthwaite degrees of freedom (or a permutation test
for few cases), the interval it inverts and one Holm over the run: :mod:`bench.analysis.inference`.
Verdicts: **supported** / **contradicted** (Holm p < alpha, effect in / against the claimed
direction), **inconclusive** otherwise (also: one seed of a stochastic fit), **not testable** with the
reason: no cells or no matched pairs in the run, every pair rests on a failed, degenerate or *not
adequately trained* cell (the label-free guard, :mod:`bench.analysis.adequacy`), on an encoder that did
not pass the sanity gate, or the metric/arrays it needs do not exist. Pairs left out for these reasons
are counted in the note of a testable row.

**Sanity gate, decided on validation.** A claim with ``sanity = true`` ("every trained encoder beats
the untrained control") is tested first on the **validation** split (the records' ``val_scores`` and
``val_labels``), never on the test cases the gated claims use, so passing the gate is no selection on
the test set. Its rows belong to the run's one Holm family; the gate opens for an encoder and dataset
only where its row is supported with Holm taken over the largest family the run can have (every
sanity row and every claim row testable with all gates open, the other p-values taken as 1), so an open
gate is supported in the final table too. Where the row is not supported, is undecided (one seed), or
is not testable on validation (no anomalous validation cases, no validation scores), the gate is
closed: that encoder's pairs in other claims on that dataset are left out (conservative). A sanity
claim with no pairs at all (no control in the run) gates nothing.

Pure numpy/scipy/pandas: building claims never imports torch.
"""

from __future__ import annotations

import fnmatch
import json
import math
import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.analysis.rows import assign_rows
from bench.analysis.inference import (
    DEFAULT_RESAMPLES,
    SPLIT_NAMES,
    Comparison,
    SplitSamples,
    bounded_holm_open,
    light_arrays,
    decide,
    one_seed_problem,
    test_comparison,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CLAIMS_DIR = Path(__file__).resolve().parents[1] / "claims"
VERDICTS = ("supported", "contradicted", "inconclusive", "not testable")
DIRECTIONS = {"greater": 1.0, "less": -1.0}
#: Keys a claim table may hold.
CLAIM_KEYS = {"id", "source", "statement", "metrics", "metric", "direction", "where", "a", "b", "match", "split_by",
              "sanity", "defaults", "a_label", "b_label"}
SCORED = ("ok", "degenerate")
__all__ = ["Comparison", "ClaimsResult", "evaluate_claims", "evaluate_run"]


class ClaimError(ValueError):
    """A claim file or table that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class Claim:
    id: str
    source: str
    statement: str
    metrics: tuple[str, ...]
    a: Mapping[str, Any]
    b: Mapping[str, Any]
    match: tuple[str, ...] = ("seed",)
    direction: str = "greater"
    where: Mapping[str, Any] = field(default_factory=dict)
    split_by: tuple[str, ...] = ()
    sanity: bool = False
    defaults: Mapping[str, Any] = field(default_factory=dict)
    a_label: str | None = None
    b_label: str | None = None
    origin: str = ""

    @property
    def sign(self) -> float:
        return DIRECTIONS[self.direction]

    def describe(self, side: str) -> str:
        label = self.a_label if side == "a" else self.b_label
        if label:
            return label
        selector = {**self.where, **(self.a if side == "a" else self.b)}
        return ", ".join(f"{k} = {_show(v)}" for k, v in selector.items()) or "all cells"


def _show(value) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------
def parse_claim(table: Mapping, origin: str) -> Claim:
    """One ``[[claim]]`` table -> :class:`Claim`; every problem is a one-line :class:`ClaimError`."""
    where = f"{origin}: claim {table.get('id', '?')!r}"
    unknown = set(table) - CLAIM_KEYS
    if unknown:
        raise ClaimError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(CLAIM_KEYS)}")
    for key in ("id", "statement", "a", "b"):
        if key not in table:
            raise ClaimError(f"{where}: missing '{key}'")
    metrics = table.get("metrics", table.get("metric"))
    if metrics is None:
        raise ClaimError(f"{where}: missing 'metrics' (e.g. [\"image_auroc\"])")
    metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    from bench.metrics import metric_names

    bad = [m for m in metrics if m not in metric_names()]
    if bad or not metrics:
        raise ClaimError(f"{where}: unknown metric(s) {bad or metrics}; known: {', '.join(metric_names())}")
    direction = table.get("direction", "greater")
    if direction not in DIRECTIONS:
        raise ClaimError(f"{where}: direction must be 'greater' or 'less', got {direction!r}")
    for key in ("a", "b", "where", "defaults"):
        if not isinstance(table.get(key, {}), Mapping):
            raise ClaimError(f"{where}: '{key}' must be a table of attribute = value(s)")
    for key in ("match", "split_by"):
        value = table.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ClaimError(f"{where}: '{key}' must be a list of attribute names")
    match = tuple(a for a in table.get("match", ["seed"]) if a != "dataset")
    return Claim(id=str(table["id"]), source=str(table.get("source", "")), statement=str(table["statement"]),
                 metrics=metrics, a=dict(table["a"]), b=dict(table["b"]), match=match, direction=direction,
                 where=dict(table.get("where", {})), split_by=tuple(table.get("split_by", [])),
                 sanity=bool(table.get("sanity", False)), defaults=dict(table.get("defaults", {})),
                 a_label=table.get("a_label"), b_label=table.get("b_label"), origin=origin)


def load_claims(path: str | Path) -> list[Claim]:
    """The ``[[claim]]`` tables of a TOML file."""
    path = Path(path)
    if not path.is_file():
        raise ClaimError(f"claims file {path} not found")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ClaimError(f"claims file {path}: {exc}") from exc
    tables = data.get("claim", [])
    if not isinstance(tables, list) or not tables:
        raise ClaimError(f"claims file {path}: no [[claim]] tables")
    return [parse_claim(t, str(path)) for t in tables]


def builtin_claim_files() -> list[Path]:
    return sorted(CLAIMS_DIR.glob("*.toml"))


def grid_claims(grid_data: Mapping, grid_file: str | Path | None) -> tuple[list[Claim], bool]:
    """Claims a grid names in its ``[claims]`` table (``files`` relative to the grid file, inline
    ``[[claims.claim]]`` tables) and whether it keeps the built-in ones (``builtin``, default true)."""
    table = grid_data.get("claims") or {}
    if not isinstance(table, Mapping):
        raise ClaimError("grid key 'claims' must be a table: [claims] files = [...], builtin = true")
    base = Path(grid_file).parent if grid_file else Path.cwd()
    out = []
    for name in table.get("files", []):
        path = Path(name)
        out += load_claims(path if path.is_absolute() else base / path)
    out += [parse_claim(t, f"grid {grid_file or ''} [claims]") for t in table.get("claim", [])]
    return out, bool(table.get("builtin", True))


def claims_for_run(run_dir: str | Path, extra: Iterable[str | Path] = (), builtin: bool = True) -> list[Claim]:
    """Built-in claims, the run's grid's ``[claims]`` and ``extra`` files; a later claim of the same id
    replaces an earlier one (a user file can restate a built-in claim)."""
    from_grid, keep_builtin = [], builtin
    info = Path(run_dir) / "run.json"
    if info.is_file():
        try:
            meta = json.loads(info.read_text())
            source = meta.get("grid_source")
            if source:
                from_grid, grid_builtin = grid_claims(tomllib.loads(source), meta.get("grid_file"))
                keep_builtin = keep_builtin and grid_builtin
        except (ValueError, tomllib.TOMLDecodeError):
            pass
    claims = [c for f in builtin_claim_files() for c in load_claims(f)] if keep_builtin else []
    claims += from_grid
    for path in extra:
        claims += load_claims(path)
    by_id: dict[str, Claim] = {}
    for claim in claims:
        by_id.pop(claim.id, None)
        by_id[claim.id] = claim
    return list(by_id.values())


# ---------------------------------------------------------------------------------------------
# Cells and their attributes
# ---------------------------------------------------------------------------------------------
def _after_slash(name) -> str | None:
    return name.split("/", 1)[1] if isinstance(name, str) and "/" in name else None


def cell_attributes(record: Mapping) -> dict:
    """What selectors and ``match`` see of one record (see the module docstring)."""
    config = record.get("config") or {}
    encoder_name = config.get("encoder.name") or record.get("encoder")
    attrs = {k: record.get(k) for k in ("cell_id", "dataset", "seed", "kind", "status", "encoder", "head", "detector",
                                        "localization", "setting")}
    attrs.update(config)
    attrs.update(
        encoder_name=encoder_name, head_name=config.get("head.name") or record.get("head"),
        detector_name=config.get("detector.name") or record.get("detector"),
        family=encoder_name.split("/")[0] if isinstance(encoder_name, str) else None,
        backbone=config.get("encoder.backbone") or config.get("detector.backbone") or _after_slash(encoder_name),
        preprocess=config.get("head.preprocess"), input_norm=config.get("encoder.input_norm"),
        score=config.get("detector.score"), anomaly_rate=config.get("detector.anomaly_rate"))
    return {k: v for k, v in attrs.items() if v is not None}


def _norm(value):
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float, np.number)):
        return float(value)
    return str(value)


def value_matches(value, wanted) -> bool:
    """``wanted``: a value, a glob string or a list of them; numbers compare as numbers;
    ``{not = ...}`` matches what the inner selector does not."""
    if isinstance(wanted, Mapping):
        if set(wanted) != {"not"}:
            raise ClaimError(f"a selector table may only hold 'not', got {sorted(wanted)}")
        return not value_matches(value, wanted["not"])
    if isinstance(wanted, (list, tuple)):
        return any(value_matches(value, w) for w in wanted)
    if value is None:
        return wanted is None
    if isinstance(wanted, str) and isinstance(value, str):
        return fnmatch.fnmatchcase(value, wanted)
    return _norm(value) == _norm(wanted)


def selects(attrs: Mapping, selector: Mapping, defaults: Mapping) -> bool:
    return all(value_matches(attrs.get(k, defaults.get(k)), wanted) for k, wanted in selector.items())


@dataclass
class CellInfo:
    """One record as claims see it."""

    record: dict
    attrs: dict

    @property
    def id(self) -> str:
        return self.record["cell_id"]

    @property
    def who(self) -> str:
        return str(self.record.get("encoder") or self.record.get("detector") or self.id)

    def problem(self, metric: str) -> tuple[str, str] | None:
        """(category, text) why this cell is no evidence for ``metric``, or None."""
        rec = self.record
        status = rec.get("status")
        if status not in SCORED:
            return "failed", f"failed: {str(rec.get('error') or '').splitlines()[0][:160] if rec.get('error') else ''}"
        if status == "degenerate":
            return "degenerate", f"degenerate: {str(rec.get('error') or '')[:160]}"
        if self.attrs.get("row_variant"):         # its seeds' configurations differ (bench.analysis.rows)
            return ("another configuration than the other seeds of its row",
                    f"{self.attrs['row_variant']}: re-run it with the grid's configuration")
        adequacy = rec.get("adequacy") or {}
        if adequacy.get("passed") is False:
            reasons = "; ".join(adequacy.get("reasons") or []) or "failed the adequacy guard"
            return "not adequately trained at this scale", reasons
        value = (rec.get("metrics") or {}).get(metric)
        if value is None or not math.isfinite(float(value)):
            why = (rec.get("metrics_unavailable") or {}).get(metric) or "not computed for this cell"
            return "metric unavailable", f"{metric}: {why}"
        return None


# ---------------------------------------------------------------------------------------------
# One comparison: pairs, exclusions, effect
# ---------------------------------------------------------------------------------------------
def build_comparisons(claim: Claim, cells: Sequence[CellInfo], gates: Mapping | None = None) -> list[Comparison]:
    """Every (dataset, split value, metric) comparison of ``claim`` with its usable pairs."""
    gates = gates or {}
    defaults = claim.defaults
    group_a = [c for c in cells if selects(c.attrs, {**claim.where, **claim.a}, defaults)]
    group_b = [c for c in cells if selects(c.attrs, {**claim.where, **claim.b}, defaults)]
    datasets = sorted({c.attrs.get("dataset") for c in cells if c.attrs.get("dataset") is not None}, key=str)
    out = []
    for dataset in datasets:
        a_cells = [c for c in group_a if c.attrs.get("dataset") == dataset]
        b_cells = [c for c in group_b if c.attrs.get("dataset") == dataset]
        splits: dict[str, list[CellInfo]] = defaultdict(list)
        for c in a_cells:
            splits[", ".join(str(c.attrs.get(k, defaults.get(k))) for k in claim.split_by)].append(c)
        if not splits:
            splits[""] = []
        for split, a_split in sorted(splits.items()):
            for metric in claim.metrics:
                comp = Comparison(claim, dataset, metric, split, n_a=len(a_split), n_b=len(b_cells),
                                  family="sanity" if claim.sanity else "claims")
                pair_up(comp, a_split, b_cells, gates)
                out.append(comp)
    return out


def _key(cell: CellInfo, attrs: Sequence[str], defaults: Mapping) -> tuple:
    return tuple(_norm(cell.attrs.get(k, defaults.get(k))) for k in attrs)


def pair_up(comp: Comparison, a_cells: Sequence[CellInfo], b_cells: Sequence[CellInfo], gates: Mapping) -> None:
    claim = comp.claim
    if not a_cells or not b_cells:
        missing = "A" if not a_cells else "B"
        comp.reason = (f"no cells of group {missing} ({claim.describe(missing.lower())}) on {comp.dataset} in this run")
        return
    by_key: dict[tuple, list[CellInfo]] = defaultdict(list)
    for b in b_cells:
        by_key[_key(b, claim.match, claim.defaults)].append(b)
    for a in a_cells:
        for b in by_key.get(_key(a, claim.match, claim.defaults), []):
            if a.id == b.id:
                continue
            comp.n_matched += 1
            seed = a.attrs.get("seed")
            bad = next((c for c in (a, b) if c.problem(comp.metric) is not None), None)
            if bad is not None:
                category, text = bad.problem(comp.metric)
                comp.exclude(category, bad.who, text, bad.attrs.get("seed"))
                continue
            gated = [c for c in (a, b) if (comp.dataset, c.attrs.get("encoder")) in gates]
            if gated and not claim.sanity:
                c = gated[0]
                comp.exclude("sanity gate closed (not shown to beat the untrained control)", c.who,
                             gates[(comp.dataset, c.attrs.get("encoder"))], c.attrs.get("seed"))
                continue
            comp.pairs.append((a, b, seed))
    if comp.n_matched == 0:
        comp.reason = (f"no matched pairs on {comp.dataset}: group A has {len(a_cells)} cells, group B {len(b_cells)}, "
                       f"none share {', '.join(claim.match) or 'anything'}")
    elif not comp.pairs:
        comp.reason = comp.exclusion_text()
    if comp.pairs:                      # the effect on the records' test metrics; inference recomputes it per split
        comp.effect = float(np.mean([float(a.record["metrics"][comp.metric]) - float(b.record["metrics"][comp.metric])
                                     for a, b, _ in comp.pairs]))


# ---------------------------------------------------------------------------------------------
# The whole run
# ---------------------------------------------------------------------------------------------
@dataclass
class ClaimsResult:
    table: pd.DataFrame
    claims: list[Claim]
    alpha: float
    n_resamples: dict


COLUMNS = ["claim", "family", "dataset", "metric", "split", "tested_on", "effect", "ci_low", "ci_high", "se", "df",
           "p", "p_holm", "verdict", "reason", "note", "n_pairs", "n_seeds", "n_excluded", "test", "n_resamples",
           "v_test", "v_seed", "deterministic", "direction", "group_a", "group_b", "match", "source", "statement"]


def _row(c: Comparison) -> dict:
    n_excluded = sum(len(seeds) for items in c.excluded.values() for seeds in items.values())
    notes = [n for n in (c.exclusion_text() if c.excluded else "", c.note_extra) if n]
    return {"claim": c.claim.id, "family": c.family, "dataset": c.dataset, "metric": c.metric, "split": c.split,
            "tested_on": SPLIT_NAMES.get(c.data_split, c.data_split) if c.pairs or c.claim.sanity else "",
            "effect": c.effect if c.pairs else float("nan"), "ci_low": c.ci_low, "ci_high": c.ci_high, "se": c.se,
            "df": c.df, "p": c.p, "p_holm": c.p_holm, "verdict": c.verdict,
            "reason": c.reason if c.verdict == "not testable" else c.undecided,
            "note": " | ".join(notes) if c.verdict != "not testable" else c.note_extra,
            "n_pairs": len(c.pairs), "n_seeds": len({s for _, _, s in c.pairs}), "n_excluded": n_excluded,
            "test": c.test, "n_resamples": c.n_resamples, "v_test": c.v_test, "v_seed": c.v_seed,
            "deterministic": bool(c.pairs) and all(x.record.get("deterministic_fit") is True
                                                   for a, b, _ in c.pairs for x in (a, b)),
            "direction": c.claim.direction, "group_a": c.claim.describe("a"), "group_b": c.claim.describe("b"),
            "match": ", ".join(["dataset", *c.claim.match]), "source": c.claim.source, "statement": c.claim.statement}


def _test_all(comparisons: Sequence[Comparison], split: str, cached_arrays, arrays_of, n_resamples: int,
              seed: int, reference: str) -> None:
    per_dataset: dict[str, SplitSamples] = {}
    for comp in comparisons:
        if comp.pairs and not comp.reason:
            samples = per_dataset.setdefault(comp.dataset, SplitSamples(comp.dataset, cached_arrays, arrays_of,
                                                                        n_resamples, seed, split))
            test_comparison(comp, samples, reference)


def _gates(sanity: Sequence[Comparison], family_size: int, alpha: float) -> dict:
    """(dataset, encoder) -> why its gate is closed, from the sanity rows (see the module docstring)."""
    opened = bounded_holm_open(sanity, family_size, alpha)
    gates = {}
    for i, comp in enumerate(sanity):
        if not comp.pairs or i in opened:
            continue
        if comp.reason:
            why = f"not testable on validation ({comp.reason})"
        elif comp.undecided:
            why = comp.undecided
        else:
            why = "not supported on validation"
        for encoder in {a.attrs.get("encoder") for a, _, _ in comp.pairs} - {None}:
            gates[(comp.dataset, encoder)] = (f"sanity claim '{comp.claim.id}' for {encoder} on {comp.dataset} "
                                              f"({comp.metric}): {why}")
    return gates


def evaluate_claims(records: Sequence[Mapping], claims: Sequence[Claim], arrays_of, *, alpha: float = 0.05,
                    n_resamples: int | None = None, seed: int = 0, reference: str = "auto") -> ClaimsResult:
    """Verdicts for ``claims`` on ``records``; ``arrays_of(cell_id)`` returns a cell's stored arrays.

    ``n_resamples``: case-bootstrap resamples for the test variance of non-AUROC metrics (default
    :data:`bench.analysis.inference.DEFAULT_RESAMPLES`); ``reference``: ``auto`` (Hsu's df below 5 seeds,
    Satterthwaite's from 5; :mod:`bench.analysis.inference`), ``satterthwaite`` or ``hsu`` everywhere (the
    calibration compares them)."""
    if not 0 < alpha < 1:
        raise ClaimError(f"alpha must be in (0, 1), got {alpha}")
    records = [r for r in records if r.get("cell_id")]
    cells = [CellInfo(dict(r), {**cell_attributes(r), **row.attributes()})            # one configuration per row
             for r, row in zip(records, assign_rows(records), strict=True)]
    cache: dict[str, dict] = {}

    def cached_arrays(cell_id: str) -> dict:
        """:func:`~bench.analysis.inference.light_arrays` of a cell, read once (none for an unreadable file)."""
        if cell_id not in cache:
            try:
                cache[cell_id] = light_arrays(arrays_of(cell_id))     # the maps are not read (lazy stores)
            except (OSError, ValueError):
                cache[cell_id] = light_arrays({})
        return cache[cell_id]

    b = n_resamples or DEFAULT_RESAMPLES
    sanity = [comp for claim in claims if claim.sanity for comp in build_comparisons(claim, cells)]
    for comp in sanity:
        comp.data_split = "val"
    _test_all(sanity, "val", cached_arrays, arrays_of, b, seed, reference)
    others = [c for c in claims if not c.sanity]
    # the largest family: every sanity row with a p plus every claim row that could get one with all gates open
    ungated = [comp for claim in others for comp in build_comparisons(claim, cells)]
    largest = sum(c.in_family for c in sanity) + sum(1 for c in ungated if c.pairs and not c.reason
                                                     and not one_seed_problem(c))
    gates = _gates(sanity, largest, alpha)
    comparisons = [comp for claim in others for comp in build_comparisons(claim, cells, gates)]
    _test_all(comparisons, "test", cached_arrays, arrays_of, b, seed, reference)
    decide([*sanity, *comparisons], alpha)
    for comp in sanity:
        closed = any((comp.dataset, a.attrs.get("encoder")) in gates for a, _, _ in comp.pairs)
        if comp.verdict == "supported" and closed:
            comp.note_extra = (f"gate kept closed: not supported with Holm over the run's largest family "
                               f"(m = {largest})")
    table = pd.DataFrame([_row(c) for c in [*sanity, *comparisons]], columns=COLUMNS)
    return ClaimsResult(table, list(claims), alpha, {"bootstrap": b})


def evaluate_run(run_dir: str | Path, extra: Iterable[str | Path] = (), *, builtin: bool = True, alpha: float = 0.05,
                 n_resamples: int | None = None, seed: int = 0) -> ClaimsResult:
    """:func:`evaluate_claims` on a run directory's records with its claims (:func:`claims_for_run`)."""
    from bench.run.store import ResultStore

    store = ResultStore(run_dir)
    records = store.records(skip_bad=True)
    return evaluate_claims(records, claims_for_run(run_dir, extra, builtin), store.arrays, alpha=alpha,
                           n_resamples=n_resamples, seed=seed)
