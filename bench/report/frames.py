"""Records as frames: one row per cell, one row per table entry, seed aggregates.

Two views of the same cells, because map kinds are not methods:

* a **cell** is one record (``cell_frame``); cells that differ only in their map kind (``vae × flow``
  with gradient maps and with reconstruction maps) carry the same scores;
* an **entry** is one row of a table (``entry_frame``): image metrics of an encoder × head appear
  once (row ``vae × flow``), and pixel metrics once per map; a map that does not depend on the head
  (reconstruction) is one row for the encoder (``vae [reconstruction]``), not one per head.
"""

from __future__ import annotations

import functools

import json
import math

import numpy as np
import pandas as pd

from bench.analysis import stats
from bench.analysis.rows import assign_rows, method_label  # noqa: F401 - method_label re-exported
from bench.metrics import metric_names
from bench.run.grid import DEFAULT_MAP_KIND

LATENT = "latent"  # record kind of encoder x head cells (the other kind is "detector")
#: Record statuses whose metrics are shown ("degenerate": metrics present, marked in tables).
SCORED = ("ok", "degenerate")


@functools.lru_cache(maxsize=1)
def head_independent_maps() -> frozenset[str]:
    """Map kinds whose maps depend on the encoder only (one table row per encoder, not per head);
    declared by each kind (``methods/maps/``)."""
    from methods.maps import MAP_KINDS

    return frozenset(e.name for e in MAP_KINDS.entries() if not e.factory.head_dependent)


def map_per_encoder(rec: dict) -> bool:
    """Whether a record's map depends on its encoder only: the record says so (``map_head_dependent``);
    records written before it did are looked up in the map-kind registry (which imports torch)."""
    if "map_head_dependent" in rec:
        return rec["map_head_dependent"] is False
    return rec.get("localization") in head_independent_maps()


def _finite(x) -> bool:
    return x is not None and isinstance(x, (int, float, np.number)) and math.isfinite(float(x))


def _natural(values: pd.Series) -> pd.Series:
    """Sort key: numbers as numbers (seed 10 after seed 2), anything else as text."""
    numeric = pd.to_numeric(values, errors="coerce")
    return numeric if numeric.notna().all() else values.astype(str)


def _seed_order(seed) -> tuple:
    return (0, float(seed), "") if _finite(seed) else (1, 0.0, str(seed))


def _slug(text: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(text))
    return keep.strip("_") or "unnamed"


def _first_line(text) -> str:
    return text.strip().splitlines()[0][:300] if isinstance(text, str) and text.strip() else ""


def cell_frame(records: list[dict], resolve=None) -> pd.DataFrame:
    """All records as a tidy frame: scalars, ``label``, metrics, ``time.*``, ``config.*``, ``versions.*``.

    ``image_label`` is the label without the map kind; ``pixel_label`` names the map (one per
    encoder for head-independent maps); ``unavailable`` is the record's ``metrics_unavailable`` (JSON).
    A record whose configuration differs from its label's other seeds (``bench.analysis.rows``) is a row
    of its own: every label gets the differing settings, e.g. ``... × knn [head.knn.k=5]``, and
    ``row_variant`` holds them (``resolve`` names the defaults of unset settings).
    """
    settings = {r.get("setting") for r in records if r.get("setting")}
    rows = []
    for rec, where in zip(records, assign_rows(records, resolve), strict=True):
        row = {k: v for k, v in rec.items() if not isinstance(v, (dict, list)) and k != "traceback"}
        if isinstance(row.get("error"), str):
            row["error"] = _first_line(row["error"])
        row["dataset"] = rec.get("dataset") or "unknown"
        label, loc, latent = method_label(rec), rec.get("localization"), rec.get("kind") == LATENT
        other_map = latent and loc not in (None, DEFAULT_MAP_KIND)
        image_label = label[:-len(f" [{loc}]")] if other_map and label.endswith(f" [{loc}]") else label
        pixel_label = label
        per_encoder = other_map and map_per_encoder(rec)
        if per_encoder and rec.get("encoder"):
            pixel_label = f"{rec['encoder']} [{loc}]"
        row_name = str(rec.get("encoder"))
        if len(settings) > 1 and rec.get("setting") and rec.get("setting") != "uad":
            suffix = f" [{rec['setting']}]"
            label, image_label, pixel_label, row_name = (label + suffix, image_label + suffix, pixel_label + suffix,
                                                         row_name + suffix)
        if where.variant:                   # another configuration than the label's own: a row of its own
            suffix = f" [{where.variant}]"
            label, image_label, pixel_label, row_name = (label + suffix, image_label + suffix, pixel_label + suffix,
                                                         row_name + suffix)
        row.update(label=label, image_label=image_label, pixel_label=pixel_label,
                   matrix_row=row_name if latent else None,
                   map_row=(row_name + (f" [{loc}]" if other_map else "")) if latent else None,
                   head_independent_map=bool(per_encoder), row_variant=where.variant or None,
                   unavailable=json.dumps(rec["metrics_unavailable"]) if rec.get("metrics_unavailable") else None)
        adequacy = rec.get("adequacy") or {}          # the label-free guard (bench.analysis.adequacy)
        row["inadequate"] = adequacy.get("passed") is False
        row["inadequate_reason"] = "; ".join(adequacy.get("reasons") or []) or None
        metrics = rec.get("metrics") or {}
        for m in metric_names() + ["pixel_threshold", "image_threshold"]:
            row[m] = metrics.get(m)
        for prefix in ("timings", "config", "versions"):
            short = "time" if prefix == "timings" else prefix
            for k, v in (rec.get(prefix) or {}).items():
                row[f"{short}.{k}"] = v if not isinstance(v, (dict, list)) else json.dumps(v)
        rows.append(row)
    frame = pd.DataFrame(rows)
    for col in ("cell_id", "status", "kind", "encoder", "head", "detector", "setting", "seed", "localization",
                "encoder_cache", "error"):
        if col not in frame:
            frame[col] = None
    for m in metric_names() + ["pixel_threshold", "image_threshold"]:
        frame[m] = pd.to_numeric(frame[m], errors="coerce")
    first = ["cell_id", "status", "dataset", "kind", "label", "encoder", "head", "detector", "localization",
             "setting", "seed", *metric_names(), "pixel_threshold", "image_threshold"]
    rest = sorted(c for c in frame.columns if c not in first)
    return frame[first + rest].sort_values(["dataset", "label", "seed", "cell_id"], kind="mergesort",
                                           key=_natural).reset_index(drop=True)


def entry_frame(cells: pd.DataFrame) -> pd.DataFrame:
    """Table entries: each cell's image metrics under ``image_label`` (one cell per label and seed,
    preferring finished cells and gradient maps) and its pixel metrics under ``pixel_label`` (one
    cell per label and seed). ``label`` is the entry's row and ``level`` says which metrics it holds."""
    if cells.empty:
        return cells.assign(level=[])
    preference = cells.assign(
        _scored=(~cells["status"].isin(SCORED)).astype(int),
        _map=(~cells["localization"].isin([None, DEFAULT_MAP_KIND]) & cells["localization"].notna()).astype(int))
    parts = []
    for level, key, metrics in (("image", "image_label", metric_names("image")), ("pixel", "pixel_label", metric_names("pixel"))):
        sub = preference
        if level == "pixel":
            # a cell enters pixel tables where it has a map: a pixel metric, a map kind, or it failed
            has_pixel = sub[metric_names("pixel")].notna().any(axis=1) | (
                sub["localization"].notna() & ~sub["status"].isin(SCORED))
            sub = sub[has_pixel]
        sub = sub.sort_values(["_scored", "_map", "head", "cell_id"], kind="mergesort", key=_natural)
        sub = sub.drop_duplicates(["dataset", key, "seed"], keep="first").copy()
        other = metric_names("pixel") if level == "image" else metric_names("image")
        sub[other] = np.nan
        sub["label"] = sub[key]
        sub["level"] = level
        if level == "pixel":
            sub["matrix_row"] = sub["map_row"].where(~sub["head_independent_map"].astype(bool), None)
        parts.append(sub.drop(columns=["_scored", "_map"]))
    return pd.concat(parts, ignore_index=True).sort_values(
        ["dataset", "label", "seed", "cell_id"], kind="mergesort", key=_natural).reset_index(drop=True)


def _unavailable_reason(group: pd.DataFrame, metric: str) -> str | None:
    reasons = {json.loads(u).get(metric) for u in group["unavailable"].dropna()} - {None}
    return "; ".join(sorted(reasons)) or None


def seed_aggregate(entries: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, label): kind, encoder, head, counts and ``<metric>.mean/.std/.n``
    (plus ``<metric>.unavailable``: why the records say a metric is missing)."""
    rows = []
    for (dataset, label), group in entries.groupby(["dataset", "label"], sort=True):
        scored = group[group["status"].isin(SCORED)]
        cells = group.drop_duplicates("cell_id")  # a row holds a cell's image and pixel entries once each
        first = group.iloc[0]
        row = {"dataset": dataset, "label": label, "kind": first["kind"], "encoder": first["encoder"],
               "head": first["head"], "matrix_row": first["matrix_row"],
               "n_ok": int(cells["status"].isin(SCORED).sum()),
               "n_failed": int((~cells["status"].isin(SCORED)).sum()),
               "n_degenerate": int((cells["status"] == "degenerate").sum()),
               "n_inadequate": int(cells["inadequate"].fillna(False).astype(bool).sum()) if "inadequate" in cells else 0,
               "levels": ",".join(sorted(set(group["level"])))}
        for m in metric_names():
            mean, std, n = stats.mean_std(scored[m].to_numpy(dtype=float))
            row.update({f"{m}.mean": mean, f"{m}.std": std, f"{m}.n": n,
                        f"{m}.unavailable": _unavailable_reason(scored, m) if n == 0 else None})
        rows.append(row)
    return pd.DataFrame(rows).set_index(["dataset", "label"])
