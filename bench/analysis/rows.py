"""Rows: which records may be aggregated together — those whose configurations differ in nothing but the seed.

Why: a table row, a comparison and a verdict average over seeds. A run directory can hold seeds of
one method at different configurations (seed 0 re-run with ``--set head.knn.k=2`` while seed 1
still has k = 5): averaging those mixes two methods under one name. Here every record gets a row
key, its flattened configuration without the seed (plus its data fingerprint); within one label
(dataset x encoder x head x map kind, or detector) the configuration of the newest record is the
label's own, and records of any other configuration become a row of their own, labelled with the
settings that differ: ``imagenet/tf_efficientnet_lite0 × knn [head.knn.k=5]``.

No torch: the report, claims and the runner's closing lines all use it.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

#: Configuration keys that vary with the seed alone (a seed's record differs from another seed's in these).
SEED_KEYS = ("seed",)
#: Record fields besides ``config`` that make two records different configurations.
DATA_KEY = "dataset_fingerprint"
#: Roles whose settings the grid names as ``<role>.<component id>.<param>`` (``--set head.knn.k=2``).
ROLES = ("dataset", "encoder", "head", "detector")


def method_label(record: Mapping) -> str:
    """Table label of a cell: the record's ``method``, else "encoder × head", else the detector."""
    if record.get("method"):
        return str(record["method"])
    if record.get("kind") == "latent" and record.get("encoder") and record.get("head"):
        return f"{record['encoder']} × {record['head']}"
    return str(record.get("detector") or record.get("cell_id") or "unknown")


def _canonical(value) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def configuration(record: Mapping) -> dict:
    """What must be equal for two records to share a row: the flattened config minus the seed, and the data."""
    config = {k: v for k, v in (record.get("config") or {}).items() if k not in SEED_KEYS}
    if record.get(DATA_KEY) is not None:
        config[f"({DATA_KEY})"] = record[DATA_KEY]
    return config


def row_key(record: Mapping) -> str:
    """The configuration of a record as one comparable string (equal for the seeds of one configuration)."""
    return _canonical(configuration(record))


@dataclass(frozen=True)
class RowInfo:
    """Where one record is aggregated."""

    label: str           # the label it would have had (method_label)
    row: str             # label, plus " [differing settings]" for a configuration other than the label's own
    variant: str         # "" for the label's own configuration, else the differing settings
    key: str             # row_key of the record

    def attributes(self) -> dict:
        """What claims see of it (``row`` and ``row_variant``, the latter only where it is one)."""
        return {"row": self.row, **({"row_variant": self.variant} if self.variant else {})}


def setting_name(key: str, record: Mapping) -> str:
    """A config key as the grid's ``--set`` names it: ``head.k`` of a knn head -> ``head.knn.k``."""
    role, _, param = key.partition(".")
    component = record.get(role)
    if role in ROLES and param and param != "name" and isinstance(component, str):
        return f"{role}.{component}.{param}"
    return key


def _value_text(value) -> str:
    return value if isinstance(value, str) else _canonical(value)


def differences(record: Mapping, reference: Mapping, resolve: Callable | None = None) -> str:
    """The settings of ``record`` that differ from ``reference`` (a record of the label's own configuration),
    as ``name=value`` joined by ", "; a setting ``record`` leaves unset reads ``name unset`` (or its default
    where ``resolve(role, component name, param)`` can tell: ``name=5 (default)``)."""
    mine, theirs = configuration(record), configuration(reference)
    parts = []
    for key in sorted(set(mine) | set(theirs)):
        if key in mine and key in theirs and _canonical(mine[key]) == _canonical(theirs[key]):
            continue
        if key == f"({DATA_KEY})":
            parts.append(f"other data (fingerprint {mine.get(key)})")
            continue
        name = setting_name(key, record if key in mine else reference)
        if key in mine:
            parts.append(f"{name}={_value_text(mine[key])}")
            continue
        role, _, param = key.partition(".")
        default = None
        if resolve is not None and (record.get("config") or {}).get(f"{role}.name"):
            try:
                default = resolve(role, str(record["config"][f"{role}.name"]), param)
            except Exception:  # noqa: BLE001 - a label, never a failure
                default = None
        parts.append(f"{name}={_value_text(default)} (default)" if default is not None else f"{name} unset")
    return ", ".join(parts)


def assign_rows(records: Sequence[Mapping], resolve: Callable | None = None) -> list[RowInfo]:
    """One :class:`RowInfo` per record (same order). Within a (dataset, label), the configuration of the
    most recently finished record is the label's own (ties: the one with more records); every other
    configuration is a row of its own named by its differing settings."""
    groups: dict[tuple, list[int]] = defaultdict(list)
    keys = [row_key(r) for r in records]
    labels = [method_label(r) for r in records]
    for i, rec in enumerate(records):
        groups[(str(rec.get("dataset")), labels[i])].append(i)
    out: list[RowInfo | None] = [None] * len(records)
    for members in groups.values():
        by_key: dict[str, list[int]] = defaultdict(list)
        for i in members:
            by_key[keys[i]].append(i)
        own = max(by_key, key=lambda k: (max(str(records[i].get("finished") or "") for i in by_key[k]),
                                         len(by_key[k]), k))
        reference = records[by_key[own][0]]
        for key, indices in by_key.items():
            variant = "" if key == own else differences(records[indices[0]], reference, resolve)
            for i in indices:
                row = f"{labels[i]} [{variant}]" if variant else labels[i]
                out[i] = RowInfo(labels[i], row, variant, key)
    return out  # type: ignore[return-value]


def mixed_rows(records: Sequence[Mapping], resolve: Callable | None = None) -> list[str]:
    """One line per label whose seeds hold another configuration than the label's own, saying which seeds
    and what to do: "seed 1 of `imagenet/tf_efficientnet_lite0 × knn` (synthetic) still has head.knn.k=5:
    re-run it or it is reported as its own row"."""
    rows = assign_rows(records, resolve)
    seeds: dict[tuple, list] = defaultdict(list)
    for rec, info in zip(records, rows, strict=True):
        if info.variant:
            seeds[(info.label, str(rec.get("dataset")), info.variant)].append(rec.get("seed"))
    lines = []
    for (label, dataset, variant), found in sorted(seeds.items()):
        found = sorted(found, key=lambda s: (not isinstance(s, int), s if isinstance(s, int) else str(s)))
        many = len(found) > 1
        lines.append(f"seed{'s' if many else ''} {', '.join(str(s) for s in found)} of `{label}` ({dataset}) "
                     f"still {'have' if many else 'has'} {variant}: re-run {'them' if many else 'it'} or "
                     f"{'they are' if many else 'it is'} reported as {'their' if many else 'its'} own row")
    return lines
