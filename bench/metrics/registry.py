"""The metric registry: a metric is one function and one decorator.

Every table, the results store, the bootstrap and the report read the list of metrics from here,
so adding a metric touches exactly one place, a module under ``bench/metrics/`` (every module of the
package is imported on first use of the registry, as the other registries discover theirs)::

    @register_metric("image_auroc", label="image AUROC", level="image", weighted=weighted_auroc)
    def image_auroc(scores, labels):
        ...

* ``level="image"``: ``compute(scores, labels) -> float`` on 1-D scores and {0, 1} labels (both
  classes present; :func:`bench.metrics.evaluate` returns NaN otherwise). ``weighted`` is the
  optional case-weighted version ``(scores, labels, weights [B, N]) -> [B]`` the bootstrap uses
  for confidence intervals; without it the metric simply gets no CI.
* ``level="pixel"``: ``compute(curve: PixelCurve) -> float``. The curve holds the test pixels
  sorted once (shared by every pixel metric) and the validation threshold. Pixel metrics also get a
  **foreground variant** ``<name>_fg`` (label "… (foreground)") computed over the foreground pixels
  only, which :func:`bench.metrics.evaluate` reports when a foreground mask is given.
* ``thresholded=True`` (image level): ``compute(scores, labels, threshold)`` at the image threshold
  chosen on the validation split (:func:`bench.metrics.image.validation_threshold`); never chosen
  on test labels. Without validation scores the metric is left out and ``evaluate`` says why.
* A metric that cannot be computed for a reason the reader must see (no validation split) raises
  :class:`MetricUnavailable` with that reason; ``evaluate`` leaves the metric out and records why.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

LEVELS = ("image", "pixel")
FOREGROUND_SUFFIX = "_fg"


class MetricUnavailable(Exception):
    """Raised by a metric's ``compute`` when it cannot exist for this input; the message says why."""


@dataclass(frozen=True)
class Metric:
    """A registered metric: what tables call it, where it applies, which direction is better."""

    name: str
    label: str
    level: str
    compute: Callable
    lower_is_better: bool = False
    weighted: Callable | None = None
    foreground: bool = False  # the foreground variant of a pixel metric
    #: an image metric at the validation threshold: ``compute(scores, labels, threshold)`` and
    #: ``weighted(scores, labels, weights, threshold)``; left out where no threshold could be chosen
    thresholded: bool = False


_REGISTRY: dict[str, Metric] = {}
_DISCOVERED = False


def _discover() -> None:
    """Import every public module of ``bench.metrics`` once, so a new metric file needs no import list."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True
    import importlib
    import pkgutil

    package = importlib.import_module("bench.metrics")
    for module in pkgutil.iter_modules(package.__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"bench.metrics.{module.name}")


def register_metric(name: str, *, label: str, level: str, lower_is_better: bool = False,
                    weighted: Callable | None = None, foreground_variant: bool = True,
                    thresholded: bool = False) -> Callable:
    """Decorator registering ``compute`` as metric ``name`` (and ``name_fg`` for pixel metrics)."""
    if level not in LEVELS:
        raise ValueError(f"metric {name!r}: level must be one of {LEVELS}, got {level!r}")
    if not name.startswith(f"{level}_"):
        raise ValueError(f"metric {name!r}: names start with their level ('{level}_…') so tables can group them")

    def decorator(compute: Callable) -> Callable:
        if thresholded and level != "image":
            raise ValueError(f"metric {name!r}: only image metrics take the validation threshold")
        variants = [Metric(name, label, level, compute, lower_is_better, weighted, thresholded=thresholded)]
        if level == "pixel" and foreground_variant:
            variants.append(Metric(name + FOREGROUND_SUFFIX, f"{label} (foreground)", level, compute,
                                   lower_is_better, None, foreground=True))
        for metric in variants:
            if metric.name in _REGISTRY:
                raise ValueError(f"metric {metric.name!r} is registered twice")
            _REGISTRY[metric.name] = metric
        return compute

    return decorator


def get_metric(name: str) -> Metric:
    _discover()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown metric {name!r}; registered: {', '.join(_REGISTRY)}") from None


def metrics(level: str | None = None, *, foreground: bool | None = None) -> list[Metric]:
    """Registered metrics, image level first, foreground variants after the others, otherwise in
    registration order; optionally filtered."""
    _discover()
    chosen = [m for m in _REGISTRY.values() if (level is None or m.level == level)
              and (foreground is None or m.foreground == foreground)]
    return sorted(chosen, key=lambda m: (LEVELS.index(m.level), m.foreground))


def metric_names(level: str | None = None, *, foreground: bool | None = None) -> list[str]:
    return [m.name for m in metrics(level, foreground=foreground)]


def metric_label(name: str) -> str:
    """Table label of a metric (the name itself for anything unregistered)."""
    _discover()
    return _REGISTRY[name].label if name in _REGISTRY else name


def lower_is_better(name: str) -> bool:
    _discover()
    return name in _REGISTRY and _REGISTRY[name].lower_is_better
