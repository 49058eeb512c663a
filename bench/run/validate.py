"""Check a grid (and every ``--set``) against the registries before anything runs.

Why: a misspelt key used to be ignored (``--set seed=[5]``), a misspelt parameter failed every
cell with a bare ``TypeError`` after the encoders had trained, and ``epochs=0`` recorded an
untrained model as ``ok``. Here every name is looked up, every parameter is matched against its
factory's signature (with the closest name suggested), and values are checked against their
default's type and the ranges below. The first problem raises :class:`GridError`, one line that
names the key; the CLI turns it into exit status 2 with nothing written.
"""

from __future__ import annotations

import difflib
import inspect
import math
import re
import typing
from collections import Counter
from typing import Any

from bench.run.grid import DEFAULT_MAP_KIND, SECTIONS, Component, Grid, GridError

#: Top-level keys a grid may hold.
TOP_LEVEL = {"name", "description", "seeds", "datasets", "encoders", "heads", "detectors", "localization",
             "defaults", "require_masks", "resources", "amp", "deterministic", "maps", "claims", "plugins",
             "selection", *SECTIONS.values()}
#: Arguments the runner passes itself; a grid never sets them.
RUNNER_ARGS = {"dataset": {"root"}, "encoder": {"in_chans", "image_size"}, "head": set(),
               "detector": {"in_chans", "image_size"}}
#: Seeds go to ``numpy.random.seed`` and ``torch.manual_seed``: unsigned 32-bit integers.
SEED_RANGE = (0, 2**32 - 1)
#: A grid's name becomes its run directory ``runs/<name>`` and report folder: a plain file name.
PLAIN_NAME = re.compile(r"[^/\\\x00-\x1f.][^/\\\x00-\x1f]*")


def _suggest(word: str, options) -> str:
    close = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _range_problem(key: str, value: Any) -> str | None:
    """Declared ranges by parameter name (the conventions every factory here follows)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if key in ("shifts",):
        return "must be >= 1" if value < 1 else None
    if key in ("n_train", "max_train"):
        return "must be >= 2 (encoders need at least two normal training images)" if value < 2 else None
    if key in ("n_test", "max_test"):
        return "must be >= 2 (the test split needs a normal and an anomalous image)" if value < 2 else None
    if key in ("smooth_samples", "noise"):
        return "must be >= 0" if value < 0 else None
    if key == "warmup_epochs":
        return "must be >= 0" if value < 0 else None
    if key == "epochs" or key.endswith("_epochs"):
        return "must be >= 1 (0 epochs would record an untrained model)" if value < 1 else None
    if key in ("batch_size", "n_components", "k", "n_blocks", "hidden_features", "n_train", "latent_dim",
               "ensemble_size", "queue_size") or key.endswith("_batch_size"):
        return "must be >= 1" if value < 1 else None
    if key == "lr" or key.endswith("_lr"):
        return "must be > 0" if value <= 0 else None
    if key in ("image_size", "input_size"):
        return "must be >= 16 pixels" if value < 16 else None
    return None


def accepted_parameters(factory, family: bool) -> dict[str, inspect.Parameter] | None:
    """Parameters a factory accepts (``None``: any), following ``**kwargs`` into the returned class."""
    target = factory.__init__ if inspect.isclass(factory) else factory
    params = list(inspect.signature(target).parameters.values())
    if inspect.isclass(factory):
        params = params[1:]                      # self
    if family and params:
        params = params[1:]                      # the member name
    accepted = {p.name: p for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    if any(p.kind == p.VAR_KEYWORD for p in params):
        try:
            returned = typing.get_type_hints(factory).get("return")
        except Exception:  # noqa: BLE001 - unresolvable annotation: accept anything
            returned = None
        if not inspect.isclass(returned):
            return None
        inner = accepted_parameters(returned, False)
        if inner is None:
            return None
        accepted = {**inner, **accepted}
    return accepted


#: Ranges that depend on the section as well as the name: a training batch of one breaks batch norm and
#: contrastive losses (MoCo fails, SimCLR collapses), so encoders and detectors train on two or more.
SECTION_RANGES = {("encoder", "batch_size"): 2, ("detector", "batch_size"): 2}


def _non_finite(value: Any) -> bool:
    """NaN or infinity anywhere in a value (TOML and ``--set`` accept ``nan`` and ``inf``)."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return any(_non_finite(v) for v in value)
    if isinstance(value, dict):
        return any(_non_finite(v) for v in value.values())
    return False


def _check_value(where: str, key: str, value: Any, param: inspect.Parameter | None) -> None:
    if _non_finite(value):
        raise GridError(f"{where}.{key} = {value!r}: must be a finite number")
    section = where.split(".")[0]
    least = SECTION_RANGES.get((section, key))
    if least is not None and isinstance(value, int) and not isinstance(value, bool) and value < least:
        raise GridError(f"{where}.{key} = {value!r}: must be >= {least} (a training batch of one breaks "
                        "batch norm and contrastive losses)")
    default = param.default if param is not None else inspect.Parameter.empty
    if default is not inspect.Parameter.empty and default is not None and value is not None:
        kinds = {bool: (bool,), int: (int,), float: (int, float), str: (str,), tuple: (list, tuple),
                 list: (list, tuple), dict: (dict,)}
        want = kinds.get(type(default))
        if want and (not isinstance(value, want) or (isinstance(value, bool) and bool not in want)):
            raise GridError(f"{where}.{key} = {value!r}: expected {type(default).__name__} "
                            f"(like its default {default!r})")
    problem = _range_problem(key, value)
    if problem:
        raise GridError(f"{where}.{key} = {value!r}: {problem}")


def _check_component(section: str, comp: Component, registry) -> None:
    from datasets._shared.registry import UnknownEntryError

    where = f"{section}.{comp.id}"
    try:
        entry, _ = registry.lookup(comp.name)
    except UnknownEntryError:
        raise GridError(f"{where}: unknown {section} '{comp.name}'{_suggest(comp.name, registry.names())} "
                        f"(python -m bench list {section}s)") from None
    accepted = accepted_parameters(entry.factory, entry.family)
    for key, value in comp.kwargs.items():
        if section == "dataset" and key == "split_seed":     # the loader's seed (datasets.registry.create_dataset)
            if accepted is not None and "seed" not in accepted:
                raise GridError(f"{where}.split_seed: this dataset has no seeded split (fixed by its source)")
            if "seed" in comp.kwargs:
                raise GridError(f"{where}: give split_seed or seed, not both (they are the same setting)")
            if isinstance(value, bool) or not isinstance(value, int) or not SEED_RANGE[0] <= value <= SEED_RANGE[1]:
                raise GridError(f"{where}.split_seed = {value!r}: expected an integer in [0, 2**32 - 1]")
            continue
        if accepted is not None and key not in accepted:
            raise GridError(f"{where}: unknown parameter '{key}'{_suggest(key, accepted)} "
                            f"(parameters: {', '.join(sorted(set(accepted) - RUNNER_ARGS[section]))})")
        if key in RUNNER_ARGS[section]:
            raise GridError(f"{where}.{key}: set by the runner from the dataset; remove it from the grid")
        _check_value(where, key, value, (accepted or {}).get(key))


#: ``[resources]``: what one unit of work (an encoder group or a detector cell) asks of a machine.
RESOURCES = {"cpus_per_task": "CPU cores per task, also its torch thread count (int >= 1)",
             "gpu_per_task": "GPUs per task under Ray: a fraction in (0, 1] shares a GPU, or a whole number",
             "workers": "units the local executor runs at once in worker processes (int >= 1 or \"auto\": "
                        "cores / cpus_per_task)"}


def _check_runtime(data: dict) -> None:
    """``[resources]``, ``amp`` and ``deterministic``: how units run, never what they compute on CPU."""
    for key in ("amp", "deterministic"):
        if key in data and not isinstance(data[key], bool):
            raise GridError(f"{key} = {data[key]!r}: expected true or false")
    resources = data.get("resources", {})
    if not isinstance(resources, dict):
        raise GridError(f"resources = {resources!r}: expected a table ([resources] cpus_per_task = 1, ...)")
    for key, value in resources.items():
        if key not in RESOURCES:
            raise GridError(f"resources.{key}: unknown key{_suggest(key, RESOURCES)} "
                            f"({'; '.join(f'{k}: {v}' for k, v in RESOURCES.items())})")
        if key == "cpus_per_task" and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise GridError(f"resources.cpus_per_task = {value!r}: expected a whole number >= 1")
        if key == "workers" and value != "auto" and (isinstance(value, bool) or not isinstance(value, int)
                                                      or value < 1):
            raise GridError(f"resources.workers = {value!r}: expected a whole number >= 1 or \"auto\"")
        if key == "gpu_per_task":
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not number or value < 0 or (value > 1 and value != int(value)):
                raise GridError(f"resources.gpu_per_task = {value!r}: expected 0, a fraction in (0, 1] "
                                f"(e.g. 0.5: two tasks share a GPU) or a whole number of GPUs")


def _check_selection(data: dict) -> None:
    """``selection = true`` or a ``[selection]`` table (issue 25): known keys, registered generators."""
    from bench.run.synth import selection_settings
    from datasets.generators import GENERATORS

    try:
        settings = selection_settings(data.get("selection"))
    except ValueError as exc:
        raise GridError(str(exc)) from None
    if settings is None:
        return
    for g in settings.get("generators") or ():
        name = g if isinstance(g, str) else (g.get("name") if isinstance(g, dict) else None)
        if not isinstance(name, str) or name not in GENERATORS:
            raise GridError(f"selection.generators: {g!r} is not a registered generator "
                            f"({', '.join(GENERATORS.names())})")
    for key in ("per_generator", "mv_reference", "pool"):
        value = settings[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise GridError(f"selection.{key} = {value!r}: expected a whole number >= 0")


def component_registries() -> dict:
    """The registry of each grid role that names components (dataset, encoder, head, detector)."""
    from datasets import DATASETS
    from methods.registry import DETECTORS, ENCODERS, HEADS

    return {"dataset": DATASETS, "encoder": ENCODERS, "head": HEADS, "detector": DETECTORS}


def validate_grid(grid: Grid) -> None:
    """Raise :class:`GridError` naming the first problem of ``grid``; return quietly when it is usable."""
    from methods.maps import MAP_KINDS

    data = grid.data
    for key in data:
        if key not in TOP_LEVEL:
            raise GridError(f"grid '{grid.name}': unknown key '{key}'{_suggest(key, TOP_LEVEL)}")
    _check_name(grid)
    _check_seeds(grid)
    _check_runtime(data)
    _check_selection(data)
    if "claims" in data:                     # claim files the report will read (bench.analysis.claims)
        from bench.analysis.claims import ClaimError, grid_claims

        try:
            grid_claims(data, grid.path)
        except ClaimError as exc:
            raise GridError(f"grid '{grid.name}': [claims]: {exc}") from exc
    kinds = MAP_KINDS.names()
    for loc in [*data.get("localization", [DEFAULT_MAP_KIND]), *data.get("maps", {})]:
        if loc not in kinds:
            raise GridError(f"localization: unknown map kind '{loc}'{_suggest(loc, kinds)} "
                            f"(choose from {', '.join(kinds)})")
    for kind, options in data.get("maps", {}).items():
        accepted = accepted_parameters(MAP_KINDS.lookup(kind)[0].factory.make, False)
        accepted = {k: p for k, p in (accepted or {}).items()
                    if k not in ("self", "encoder", "head", "images", "device", "batch_size")}
        for key, value in options.items():
            if key not in accepted:
                raise GridError(f"maps.{kind}: unknown option '{key}'{_suggest(key, accepted)} "
                                f"(options: {', '.join(sorted(accepted)) or 'none'})")
            _check_value(f"maps.{kind}", key, value, accepted[key])
    registries = component_registries()
    overridden = {}                       # section -> tables named by --set (they must be in the grid)
    for item in grid.overrides:
        parts = item.partition("=")[0].strip().split(".")
        if parts[0] in SECTIONS.values() and len(parts) >= 3:
            overridden.setdefault(parts[0], set()).add(".".join(parts[1:-1]))
    for axis, section in SECTIONS.items():
        comps = grid.components(axis)
        known = {c.name for c in comps} | {c.id for c in comps}
        for table in data.get(section, {}):
            if table in known:
                continue
            # A grid file may carry settings for entries its own axes leave out (a --set can add
            # them back); a --set for an entry that is not in the grid would silently do nothing.
            if table in overridden.get(section, ()) or table not in registries[section]:
                raise GridError(f"{section}.{table}: no {section} '{table}' in this grid's {axis}"
                                f"{_suggest(table, known)} ({', '.join(sorted(known)) or 'none'})")
        for comp in comps:
            _check_component(section, comp, registries[section])
    for section in data.get("defaults", {}):
        if section not in SECTIONS.values():
            raise GridError(f"defaults.{section}: unknown section{_suggest(section, SECTIONS.values())} "
                            f"(dataset, encoder, head, detector)")
    _check_unique_cells(grid)


def _check_name(grid: Grid) -> None:
    """The name is the default run directory ``runs/<name>``: ``../x`` would escape ``runs/`` and ``""``
    would be ``runs/`` itself (the default cache's parent)."""
    name = grid.data.get("name", grid.name)
    if not isinstance(name, str) or not PLAIN_NAME.fullmatch(name):
        raise GridError(f"name = {name!r}: a grid's name must be a plain file name (no / or \\, not empty, "
                        "not starting with '.'): it names the run directory runs/<name>")


def _check_seeds(grid: Grid) -> None:
    seeds = grid.seeds                                   # a non-empty list of integers, or GridError
    low, high = SEED_RANGE
    for seed in seeds:
        if isinstance(seed, bool) or not low <= seed <= high:
            raise GridError(f"seeds: {seed!r} is outside [{low}, {high}] (seeds are unsigned 32-bit integers)")
    repeated = sorted(s for s, n in Counter(seeds).items() if n > 1)
    if repeated:
        raise GridError(f"seeds = {seeds}: {repeated[0]} appears more than once (each seed is one run of every cell)")


def _check_unique_cells(grid: Grid) -> None:
    """Two entries that end up in one record (a repeated map kind, ids that differ only in characters
    a file name cannot hold) would overwrite each other's result."""
    locs = grid.data.get("localization", [DEFAULT_MAP_KIND])
    repeated = sorted(k for k, n in Counter(locs).items() if n > 1)
    if repeated:
        raise GridError(f"localization = {locs}: '{repeated[0]}' appears more than once")
    # cells sharing a record name are refused by Plan.of, where the grid is expanded (once)
