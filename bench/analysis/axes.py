"""How much does each swept choice move the answer? Axis sensitivity from a run's cells.

Why: a default is an accident of the suite unless the run shows what the other choices give
(feature preprocessing, ImageNet input normalisation, a GMM's K ...). A grid sweeps a choice by
listing variants of one component that differ in one setting; this module finds every such
setting in the cells' configurations, without being told which, and says for each choice

* the best matched cell under it and its score (the headline a paper would print under that choice),
* the mean over the *matched* configurations (everything else equal, present under every choice),
* Kendall's tau between choices of the **encoder ranking** (each encoder by its best matched cell)
  and of the ranking of the matched cells themselves: a tau near 1 says the choice shifts numbers
  but not conclusions; a tau near 0 says the conclusion depends on it.

A setting left at its default in some variants and set explicitly in others is compared under its
effective value where the registry can tell it (``resolve``), else as ``default``; with ``resolve``,
cells whose component has no such setting are left off that axis.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

#: configuration keys that are never an axis of a representation study (they name components,
#: seeds or where maps come from; the tables already split by them)
NOT_AXES = ("config.seed", "config.localization")
DEFAULT = "default"


@dataclass
class Choice:
    value: str
    best_label: str
    best: float
    matched_mean: float
    n_matched: int
    tau_encoders: float = float("nan")
    tau_cells: float = float("nan")


@dataclass
class Axis:
    """One swept setting on one dataset: the reference choice first, then the others."""

    dataset: str
    key: str                     # e.g. "head.preprocess"
    metric: str
    reference: str
    choices: list[Choice] = field(default_factory=list)


def _text(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return DEFAULT
    return str(value)


def _kendall(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    from scipy.stats import kendalltau

    return float(kendalltau(a, b).statistic)


def _candidates(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c.startswith("config.") and c not in NOT_AXES
            and not c.endswith(".name") and not c.startswith("config.dataset.")]


def swept_axes(cells: pd.DataFrame, metric: str, *, lower_is_better: bool = False,
               resolve: Callable[[str, str, str], object] | None = None,
               scored: tuple = ("ok", "degenerate")) -> list[Axis]:
    """Every setting swept on each dataset of ``cells`` (the report's cell frame: ``config.*``,
    ``dataset``, ``label``, ``encoder``, ``status``, metrics), for encoder x head cells with a finite
    ``metric``. ``resolve(role, component, param)`` gives a setting's default where it was left out."""
    frame = cells[cells["status"].isin(scored) & cells[metric].notna() & cells["head"].notna()].copy()
    if frame.empty:
        return []
    sign = -1.0 if lower_is_better else 1.0
    out = []
    for dataset, sub in frame.groupby("dataset", sort=True):
        columns = _candidates(sub)
        for key in columns:
            values = sub[key].map(_text)
            filled_defaults: set[str] = set()
            if resolve is not None and (values == DEFAULT).any():
                role, _, param = key[len("config."):].partition(".")
                names = sub.get(f"config.{role}.name")
                if names is not None:
                    filled = [_text(resolve(role, str(n), param)) if v == DEFAULT else v
                              for v, n in zip(values, names)]
                    filled_defaults = {f for f, v in zip(filled, values) if v == DEFAULT}
                    values = pd.Series(filled, index=sub.index)
            # a component the registry gives no such setting (a VAE has no input norm) is not on this axis
            on_axis = values != DEFAULT if resolve is not None and (values != DEFAULT).any() else values.notna()
            values, part = values[on_axis], sub[on_axis]
            if values.nunique() < 2:
                continue
            rest = [c for c in part.columns if c.startswith("config.") and c not in (key, "config.seed")]
            keyed = part.assign(_value=values, _rest=part[rest].apply(lambda col: col.map(_text)).agg("|".join, axis=1))
            means = keyed.groupby(["_rest", "_value"])[metric].mean().unstack("_value")
            labels = keyed.groupby(["_rest", "_value"])["label"].first()
            encoders = keyed.groupby("_rest")["encoder"].first().astype(str)
            matched = means.dropna()
            if matched.empty:
                continue            # no configuration is present under every choice
            order = list(matched.columns)
            defaults = [v for v in order if v in filled_defaults or v == DEFAULT]
            reference = "none" if "none" in order else (defaults[0] if defaults else order[0])
            order = [reference] + sorted(v for v in order if v != reference)
            axis = Axis(str(dataset), key[len("config."):], metric, reference)
            best_enc = {v: matched[v].groupby(encoders.loc[matched.index]).max() * sign for v in order}
            for v in order:
                column = matched[v]
                pick = (column * sign).idxmax()
                choice = Choice(v, str(labels.loc[(pick, v)]), float(column.loc[pick]), float(matched[v].mean()),
                                int(len(matched)))
                if v != reference:
                    choice.tau_cells = _kendall(matched[reference].to_numpy(), matched[v].to_numpy())
                    choice.tau_encoders = _kendall(best_enc[reference].to_numpy(), best_enc[v].to_numpy())
                axis.choices.append(choice)
            out.append(axis)
    return out
