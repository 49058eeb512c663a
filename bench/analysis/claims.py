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
equal ``match`` attributes; the effect is the mean over pairs of ``metric(a) - metric(b)`` (the
records' values). Its 95 % interval is a percentile bootstrap that resamples test cases (whole
groups where the split has patient/volume ids: ``test_groups``) *and* seeds (pairs are weighted by
how often their seed was drawn). The one-sided p-value in the claimed direction: for image AUROC
DeLong's test on the contrast of the correlated AUROCs (clustered by group, Obuchowski 1997), its
variance plus the between-seed variance of the per-seed effects; for every other metric the
bootstrap p ``(#{resampled effect on the wrong side of 0} + 1) / (B + 1)`` with ``B`` large enough
for the correction (``B >= 20 m / alpha`` for m comparisons, so Holm's smallest threshold is
resolvable). p-values are Holm-corrected across the comparisons of the run (two families, below).
Verdicts: **supported** (Holm p < alpha in the claimed direction), **contradicted** (Holm p <
alpha in the opposite direction, that family of p-values corrected the same way), **inconclusive**
otherwise, **not testable** with the reason: no cells or no matched pairs in the run, every pair
rests on a failed, degenerate or *not adequately trained* cell (the label-free guard,
:mod:`bench.analysis.adequacy`), on an encoder that did not beat the untrained control (a failed
sanity claim), or the metric/arrays it needs do not exist. Pairs left out for these reasons are
counted in the note of a testable row.

**Sanity gate.** A claim with ``sanity = true`` ("every trained encoder beats the untrained
control") is evaluated first, Holm-corrected within its own family; where its verdict for an
encoder and dataset is not *supported*, every other claim's pairs involving that encoder on that
dataset are not evidence and are left out. The other claims form the second family.

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
from scipy import stats as sps

from bench.analysis import stats
from bench.analysis.pixsum import has_pixel_data, pixel_counts_of
from bench.analysis.rows import assign_rows

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
#: The resamples' resolution: B >= RESOLUTION * m / alpha, within [MIN_RESAMPLES, MAX_RESAMPLES].
RESOLUTION, MIN_RESAMPLES, MAX_RESAMPLES = 20, 2000, 20000
#: Resamples per block (bounds memory: a block of weights is block x N).
BLOCK = 1000
#: Thresholds of the pixel-count grid for pixel metrics in the bootstrap (bench.analysis.stats).
PIXEL_THRESHOLDS = 256
SCORED = ("ok", "degenerate")
PIXEL_ARRAYS = ("test_maps", "test_masks")


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
@dataclass
class Comparison:
    claim: Claim
    dataset: str
    metric: str
    split: str = ""
    pairs: list = field(default_factory=list)          # [(cell a, cell b, seed)] usable
    n_a: int = 0
    n_b: int = 0
    n_matched: int = 0
    excluded: dict = field(default_factory=dict)       # category -> {(who, text): seeds}
    effect: float = float("nan")
    ci_low: float = float("nan")
    ci_high: float = float("nan")
    p: float = float("nan")
    p_opposite: float = float("nan")
    p_holm: float = float("nan")
    p_holm_opposite: float = float("nan")
    test: str = ""
    n_resamples: int = 0
    verdict: str = "not testable"
    reason: str = ""
    family: str = "claims"

    @property
    def testable(self) -> bool:
        return bool(self.pairs) and not self.reason

    @property
    def sign_effect(self) -> float:
        """The effect in the claimed direction (positive: as claimed)."""
        return self.claim.sign * self.effect

    def exclude(self, category: str, who: str, text: str, seed) -> None:
        self.excluded.setdefault(category, {}).setdefault((who, text), set()).add(seed)

    def exclusion_text(self, limit: int = 3) -> str:
        parts = []
        for category, items in self.excluded.items():
            shown = [f"{who} (seed {', '.join(str(s) for s in sorted(seeds, key=str))}): {text}"
                     for (who, text), seeds in list(items.items())[:limit]]
            more = len(items) - limit
            parts.append(f"{category}: " + "; ".join(shown) + (f"; and {more} more" if more > 0 else ""))
        return " | ".join(parts)


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
                comp.exclude("no better than the untrained control", c.who,
                             gates[(comp.dataset, c.attrs.get("encoder"))], c.attrs.get("seed"))
                continue
            comp.pairs.append((a, b, seed))
    if comp.n_matched == 0:
        comp.reason = (f"no matched pairs on {comp.dataset}: group A has {len(a_cells)} cells, group B {len(b_cells)}, "
                       f"none share {', '.join(claim.match) or 'anything'}")
    elif not comp.pairs:
        comp.reason = comp.exclusion_text()
    if comp.pairs:
        diffs = [float(a.record["metrics"][comp.metric]) - float(b.record["metrics"][comp.metric])
                 for a, b, _ in comp.pairs]
        comp.effect = float(np.mean(diffs))


# ---------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------
def resamples_for(m: int, alpha: float) -> int:
    """Enough bootstrap resamples that Holm's smallest threshold ``alpha / m`` is resolvable."""
    return int(min(MAX_RESAMPLES, max(MIN_RESAMPLES, math.ceil(RESOLUTION * max(m, 1) / alpha))))


class DatasetSamples:
    """Per-cell metrics on shared case resamples of one dataset (the same weights for every cell,
    which is what makes differences paired); computed lazily, per cell and metric level."""

    def __init__(self, dataset: str, arrays_of, load_all, n_resamples: int, seed: int = 0):
        self.dataset, self.arrays_of, self.load_all = dataset, arrays_of, load_all
        self.n_resamples, self.seed = n_resamples, seed
        self.labels: np.ndarray | None = None
        self.groups: np.ndarray | None = None
        self._weights: list[np.ndarray] | None = None
        self._cache: dict[tuple[str, str], np.ndarray] = {}

    def reference(self, cell: CellInfo) -> str | None:
        """Fix the test set from the first cell; a problem text for a cell whose test set differs."""
        arrays = self.arrays_of(cell.id)
        if "test_scores" not in arrays or "test_labels" not in arrays:
            return f"cell {cell.id} has no stored test scores"
        labels = np.asarray(arrays["test_labels"]).astype(int)
        if self.labels is None:
            self.labels = labels
            groups = arrays.get("test_groups")
            self.groups = np.asarray(groups).astype(str) if groups is not None else np.arange(len(labels)).astype(str)
        elif not np.array_equal(labels, self.labels):
            return f"cell {cell.id} was scored on another test set than the other cells of {self.dataset}"
        return None

    def weights(self) -> list[np.ndarray]:
        if self._weights is None:
            blocks, left, block = [], self.n_resamples, 0
            while left > 0:
                size = min(BLOCK, left)
                blocks.append(stats.group_bootstrap_weights(self.groups, size,
                                                            stats.stable_seed("claims", self.seed, self.dataset, block)))
                left -= size
                block += 1
            self._weights = blocks
        return self._weights

    def samples(self, cell: CellInfo, metric: str) -> np.ndarray:
        key = (cell.id, metric)
        if key not in self._cache:
            arrays = self.arrays_of(cell.id)
            from bench.metrics import get_metric

            if get_metric(metric).level == "image":
                fn = stats.image_metrics_weighted().get(metric)
                if fn is None:
                    raise KeyError(f"{metric} has no case-weighted version for the bootstrap")
                self._cache[key] = np.concatenate([np.atleast_1d(fn(arrays["test_scores"], self.labels, w))
                                                   for w in self.weights()])
            else:
                full = self.load_all(cell.id)
                counts = pixel_counts_of(full, n_thresholds=PIXEL_THRESHOLDS)      # summary, else full maps
                del full
                parts: dict[str, list] = defaultdict(list)
                for w in self.weights():
                    for name, values in stats.pixel_metric_samples(counts, w).items():
                        parts[name].append(values)
                for name, values in parts.items():
                    self._cache[(cell.id, name)] = np.concatenate(values)
                if key not in self._cache:
                    raise KeyError(f"{metric} cannot be resampled from the stored maps")
        return self._cache[key]


def seed_resamples(seeds: Sequence, n_resamples: int, seed: int) -> np.ndarray:
    """Multiplicity of each distinct seed per resample ``[B, S]`` (the seeds drawn with replacement)."""
    unique = sorted(set(seeds), key=str)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(unique), size=(n_resamples, len(unique)))
    counts = np.zeros((n_resamples, len(unique)))
    np.add.at(counts, (np.repeat(np.arange(n_resamples), len(unique)), draws.ravel()), 1)
    return counts


def bootstrap_effect(comp: Comparison, samples: DatasetSamples) -> np.ndarray:
    """The effect on every resample: pairs weighted by how often their seed was drawn."""
    seeds = [s for _, _, s in comp.pairs]
    unique = sorted(set(seeds), key=str)
    seed_counts = seed_resamples(seeds, samples.n_resamples,
                                 stats.stable_seed("seeds", comp.claim.id, comp.dataset, comp.metric, comp.split))
    index = np.array([unique.index(s) for s in seeds])
    weights = seed_counts[:, index]                                       # [B, P]
    diffs = np.stack([samples.samples(a, comp.metric) - samples.samples(b, comp.metric)
                      for a, b, _ in comp.pairs], axis=1)                  # [B, P]
    ok = np.isfinite(diffs)
    w = np.where(ok, weights, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(w.sum(1) > 0, np.sum(np.where(ok, diffs, 0.0) * w, axis=1) / w.sum(1), np.nan)


def delong_p(comp: Comparison, samples: DatasetSamples) -> tuple[float, float]:
    """One-sided p-values (claimed direction, opposite) of the mean AUROC difference: DeLong's
    covariance of the correlated AUROCs (clustered by group) plus the between-seed variance."""
    cells = list(dict.fromkeys([c.id for a, b, _ in comp.pairs for c in (a, b)]))
    arrays = [samples.arrays_of(cid)["test_scores"] for cid in cells]
    clustered = samples.groups is not None and len(np.unique(samples.groups)) < len(samples.groups)
    _, cov = stats.delong(np.vstack(arrays), samples.labels, samples.groups if clustered else None)
    contrast = np.zeros(len(cells))
    for a, b, _ in comp.pairs:
        contrast[cells.index(a.id)] += 1.0 / len(comp.pairs)
        contrast[cells.index(b.id)] -= 1.0 / len(comp.pairs)
    variance = float(contrast @ cov @ contrast)
    per_seed: dict = defaultdict(list)
    for a, b, s in comp.pairs:
        per_seed[s].append(float(a.record["metrics"][comp.metric]) - float(b.record["metrics"][comp.metric]))
    seed_effects = [np.mean(v) for v in per_seed.values()]
    if len(seed_effects) > 1:
        variance += float(np.var(seed_effects, ddof=1)) / len(seed_effects)
    if variance <= 0:
        return (0.5, 0.5) if comp.effect == 0 else ((0.0, 1.0) if comp.sign_effect > 0 else (1.0, 0.0))
    z = comp.claim.sign * comp.effect / math.sqrt(variance)
    return float(sps.norm.sf(z)), float(sps.norm.cdf(z))


def test_comparison(comp: Comparison, samples: DatasetSamples) -> None:
    """Interval, p-values and the test used; a comparison that cannot be resampled becomes not testable."""
    for a, b, _ in comp.pairs:
        for cell in (a, b):
            problem = samples.reference(cell)
            if problem:
                comp.reason = problem
                return
            stored = set(samples.arrays_of(cell.id).get("available", []))
            if comp.metric.startswith("pixel") and not has_pixel_data(stored):
                comp.reason = (f"neither a per-case pixel summary nor per-case maps were stored with {cell.id} (a "
                               "record written before summaries existed, with maps over the store's pixel limit), "
                               "so the pixel metric cannot be resampled; re-run the cell")
                return
    try:
        effects = bootstrap_effect(comp, samples)
    except KeyError as exc:                       # e.g. a foreground metric: the store has no foreground
        comp.reason = str(exc.args[0])
        return
    effects = effects[np.isfinite(effects)]
    if effects.size == 0:
        comp.reason = "no resample has both normal and anomalous cases"
        return
    comp.n_resamples = int(effects.size)
    comp.ci_low, comp.ci_high = stats.percentile_interval(effects)
    if comp.metric == "image_auroc":
        comp.p, comp.p_opposite = delong_p(comp, samples)
        comp.test = "DeLong (+ seed variance)"
    else:
        signed = comp.claim.sign * effects
        comp.p = float((np.sum(signed <= 0) + 1) / (effects.size + 1))
        comp.p_opposite = float((np.sum(signed >= 0) + 1) / (effects.size + 1))
        comp.test = f"bootstrap ({effects.size} resamples)"


def decide(comparisons: Sequence[Comparison], alpha: float) -> None:
    """Holm within the given family, then the verdicts (see the module docstring)."""
    live = [c for c in comparisons if c.testable and math.isfinite(c.p)]
    if live:
        holm = stats.holm_adjust([c.p for c in live])
        holm_opp = stats.holm_adjust([c.p_opposite for c in live])
        for c, ph, po in zip(live, holm, holm_opp, strict=True):
            c.p_holm, c.p_holm_opposite = float(ph), float(po)
            c.verdict = "supported" if ph < alpha else "contradicted" if po < alpha else "inconclusive"
    for c in comparisons:
        if not (c.testable and math.isfinite(c.p)):
            c.verdict = "not testable"
            c.reason = c.reason or "no usable pairs"


# ---------------------------------------------------------------------------------------------
# The whole run
# ---------------------------------------------------------------------------------------------
@dataclass
class ClaimsResult:
    table: pd.DataFrame
    claims: list[Claim]
    alpha: float
    n_resamples: dict


COLUMNS = ["claim", "family", "dataset", "metric", "split", "effect", "ci_low", "ci_high", "p", "p_holm",
           "p_holm_opposite", "verdict", "reason", "note", "n_pairs", "n_seeds", "n_excluded", "test", "n_resamples",
           "direction", "group_a", "group_b", "match", "source", "statement"]


def _row(c: Comparison) -> dict:
    n_excluded = sum(len(seeds) for items in c.excluded.values() for seeds in items.values())
    return {"claim": c.claim.id, "family": c.family, "dataset": c.dataset, "metric": c.metric, "split": c.split,
            "effect": c.effect if c.pairs else float("nan"), "ci_low": c.ci_low, "ci_high": c.ci_high, "p": c.p,
            "p_holm": c.p_holm, "p_holm_opposite": c.p_holm_opposite, "verdict": c.verdict,
            "reason": c.reason if c.verdict == "not testable" else "",
            "note": c.exclusion_text() if c.verdict != "not testable" and c.excluded else "",
            "n_pairs": len(c.pairs), "n_seeds": len({s for _, _, s in c.pairs}), "n_excluded": n_excluded,
            "test": c.test, "n_resamples": c.n_resamples, "direction": c.claim.direction,
            "group_a": c.claim.describe("a"), "group_b": c.claim.describe("b"),
            "match": ", ".join(["dataset", *c.claim.match]), "source": c.claim.source, "statement": c.claim.statement}


def evaluate_claims(records: Sequence[Mapping], claims: Sequence[Claim], arrays_of, *, alpha: float = 0.05,
                    n_resamples: int | None = None, seed: int = 0) -> ClaimsResult:
    """Verdicts for ``claims`` on ``records``; ``arrays_of(cell_id)`` returns a cell's stored arrays."""
    if not 0 < alpha < 1:
        raise ClaimError(f"alpha must be in (0, 1), got {alpha}")
    records = [r for r in records if r.get("cell_id")]
    cells = [CellInfo(dict(r), {**cell_attributes(r), **row.attributes()})            # rows: issue 23 item 6
             for r, row in zip(records, assign_rows(records), strict=True)]
    cache: dict[str, dict] = {}

    def cached_arrays(cell_id: str) -> dict:
        """A cell's arrays without its maps (those are read again when resampled: they are the large ones);
        ``available`` lists every stored key."""
        if cell_id not in cache:
            try:
                arrays = dict(arrays_of(cell_id))
            except (OSError, ValueError):
                arrays = {}
            cache[cell_id] = {k: v for k, v in arrays.items() if k not in PIXEL_ARRAYS}
            cache[cell_id]["available"] = np.array(sorted(arrays))
        return cache[cell_id]

    rows, used = [], {}
    gates: dict = {}
    for family, members in (("sanity", [c for c in claims if c.sanity]), ("claims", [c for c in claims if not c.sanity])):
        comparisons = [comp for claim in members for comp in build_comparisons(claim, cells, gates)]
        m = sum(1 for c in comparisons if c.pairs and not c.reason)
        b = n_resamples or resamples_for(m, alpha)
        used[family] = b
        per_dataset: dict[str, DatasetSamples] = {}
        for comp in comparisons:
            if comp.pairs and not comp.reason:
                samples = per_dataset.setdefault(comp.dataset,
                                                 DatasetSamples(comp.dataset, cached_arrays, arrays_of, b, seed))
                test_comparison(comp, samples)
        decide(comparisons, alpha)
        if family == "sanity":      # a tested sanity claim that is not supported gates its encoders
            for comp in comparisons:
                if comp.verdict not in ("contradicted", "inconclusive"):
                    continue
                for encoder in {a.attrs.get("encoder") for a, _, _ in comp.pairs} - {None}:
                    gates[(comp.dataset, encoder)] = (f"sanity claim '{comp.claim.id}' is {comp.verdict} for "
                                                      f"{encoder} on {comp.dataset} ({comp.metric})")
        rows += [_row(c) for c in comparisons]
    table = pd.DataFrame(rows, columns=COLUMNS)
    return ClaimsResult(table, list(claims), alpha, used)


def evaluate_run(run_dir: str | Path, extra: Iterable[str | Path] = (), *, builtin: bool = True, alpha: float = 0.05,
                 n_resamples: int | None = None, seed: int = 0) -> ClaimsResult:
    """:func:`evaluate_claims` on a run directory's records with its claims (:func:`claims_for_run`)."""
    from bench.run.store import ResultStore

    store = ResultStore(run_dir)
    records = store.records(skip_bad=True)
    return evaluate_claims(records, claims_for_run(run_dir, extra, builtin), store.arrays, alpha=alpha,
                           n_resamples=n_resamples, seed=seed)
