"""Grid files: which datasets x encoders x heads (and detectors) x seeds a run crosses.

A grid is a TOML file (``bench/grids/<name>.toml`` or any path)::

    name = "quick"
    seeds = [0]
    datasets = ["synthetic"]
    encoders = ["simclr", "vae", "imagenet/tf_efficientnet_lite0"]
    heads = ["gaussian", {name = "gmm", id = "gmm8", n_components = 8}]
    detectors = []                      # end-to-end methods, crossed with datasets x seeds
    localization = ["gradient"]         # add "reconstruction" for encoders that reconstruct
    [maps.gradient]                     # options of a map kind (methods/maps/<kind>.py)
    shifts = 4

    [defaults.dataset]                  # parameters for every dataset (e.g. image_size)
    image_size = 64
    [dataset.synthetic]                 # parameters for one entry, by id
    n_train = 600
    [encoder.simclr]
    epochs = 10

A list entry is a registry name or an inline table with ``name``, an optional ``id`` (its label in
tables; several variants of one method need distinct ids) and parameters. ``--set`` edits the
parsed grid before expansion: ``--set encoder.simclr.epochs=2``, ``--set seeds=[0,1,2]``,
``--set datasets=["medmnist/pneumoniamnist"]``.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

GRID_DIR = Path(__file__).resolve().parents[1] / "grids"
SECTIONS = {"datasets": "dataset", "encoders": "encoder", "heads": "head", "detectors": "detector"}
#: The map kind of a grid that names none, and the one whose cells carry no suffix in their ids
#: (``methods.maps.DEFAULT``; a test keeps the two equal).
DEFAULT_MAP_KIND = "gradient"


class GridError(ValueError):
    """A grid file or ``--set`` override that cannot be used; the message names it."""


@dataclass(frozen=True)
class Component:
    """One configured entry of a grid axis: registry ``name``, table label ``id`` and parameters."""

    id: str
    name: str
    params: tuple = ()          # sorted (key, value) pairs, hashable

    @property
    def kwargs(self) -> dict:
        return {k: _thaw(v) for k, v in self.params}

    def spec(self) -> dict:
        return {"name": self.name, "id": self.id, **self.kwargs}


@dataclass(frozen=True)
class Cell:
    """One unit of work: a dataset x (encoder x head | detector) x seed, plus the map kind."""

    dataset: Component
    seed: int
    encoder: Component | None = None
    head: Component | None = None
    detector: Component | None = None
    localization: str | None = None
    map_options: tuple = ()     # sorted (key, value) pairs from the grid's [maps.<kind>] table
    #: sorted (module, fingerprint) of the plugins (``bench.plugins``) whose entries this cell uses
    plugins: tuple = ()

    @property
    def map_kwargs(self) -> dict:
        return {k: _thaw(v) for k, v in self.map_options}

    @property
    def kind(self) -> str:
        return "detector" if self.detector is not None else "latent"

    @property
    def method(self) -> str:
        if self.detector is not None:
            return self.detector.id
        label = f"{self.encoder.id} × {self.head.id}"
        return label if self.localization in (None, DEFAULT_MAP_KIND) else f"{label} [{self.localization}]"

    @property
    def cell_id(self) -> str:
        parts = [self.dataset.id]
        parts += [self.detector.id] if self.detector is not None else [self.encoder.id, self.head.id]
        if self.localization not in (None, DEFAULT_MAP_KIND):
            parts.append(self.localization)
        parts.append(f"s{self.seed}")
        return "__".join(re.sub(r"[^A-Za-z0-9_.+-]+", "-", p) for p in parts)

    def config(self) -> dict:
        """Flattened configuration of this cell (stored in its record, hashed for resume)."""
        flat: dict[str, Any] = {"seed": self.seed, "localization": self.localization}
        flat.update({f"maps.{k}": v for k, v in self.map_kwargs.items()})
        for role in ("dataset", "encoder", "head", "detector"):
            comp = getattr(self, role)
            if comp is not None:
                flat[f"{role}.name"] = comp.name
                flat.update({f"{role}.{k}": v for k, v in comp.kwargs.items()})
        flat.update({f"plugin.{module}": fingerprint for module, fingerprint in self.plugins})
        return flat

    def config_hash(self) -> str:
        return stable_hash(self.config())


@dataclass
class Grid:
    """A parsed grid; ``cells()`` expands it (called once, by :meth:`bench.run.plan.Plan.of`)."""

    name: str
    data: dict
    source: str = ""
    path: Path | None = None
    overrides: list = field(default_factory=list)

    def components(self, axis: str) -> list[Component]:
        section = SECTIONS[axis]
        tables = self.data.get(section, {})
        defaults = self.data.get("defaults", {}).get(section, {})
        out, seen = [], set()
        for entry in self.data.get(axis, []) or []:
            if isinstance(entry, str):
                name, cid, inline = entry, entry, {}
            elif isinstance(entry, dict) and "name" in entry:
                inline = {k: v for k, v in entry.items() if k not in ("name", "id")}
                name, cid = entry["name"], entry.get("id", entry["name"])
            else:
                raise GridError(f"grid '{self.name}': {axis} entries must be names or tables with 'name', got {entry!r}")
            if cid in seen:
                raise GridError(f"grid '{self.name}': two {axis} share the id '{cid}'; give one an 'id'")
            seen.add(cid)
            params = {**defaults, **tables.get(name, {}), **tables.get(cid, {}), **inline}
            out.append(Component(cid, name, _freeze(params)))
        return out

    @property
    def seeds(self) -> list[int]:
        seeds = self.data.get("seeds", [0])
        if not isinstance(seeds, list) or not all(isinstance(s, int) for s in seeds) or not seeds:
            raise GridError(f"grid '{self.name}': seeds must be a non-empty list of integers, got {seeds!r}")
        return seeds

    def cells(self) -> list[Cell]:
        """Datasets x seeds x (encoders x heads x localizations + detectors), in a stable order.

        Localizations other than ``gradient`` are kept only for encoders that support them; that
        check needs the encoder class, so it is done by the runner (``Cell.localization``).
        """
        locs = self.data.get("localization", [DEFAULT_MAP_KIND])
        marks = _PluginMarks()
        cells = []
        for dataset in self.components("datasets"):
            for seed in self.seeds:
                for encoder in self.components("encoders"):
                    for loc in locs:
                        options = _freeze(self.data.get("maps", {}).get(loc, {}))
                        for head in self.components("heads"):
                            cells.append(Cell(dataset, seed, encoder=encoder, head=head, localization=loc,
                                              map_options=options,
                                              plugins=marks(dataset=dataset, encoder=encoder, head=head, map=loc)))
                for detector in self.components("detectors"):
                    cells.append(Cell(dataset, seed, detector=detector,
                                      plugins=marks(dataset=dataset, detector=detector)))
        if not cells:
            raise GridError(f"grid '{self.name}' expands to no cells: it needs datasets and encoders+heads or detectors")
        return cells


class _PluginMarks:
    """The plugin fingerprints of a cell's entries (empty, and no registry lookup, without plugins)."""

    def __init__(self):
        self.memo: dict = {}

    def factory(self, role: str, name: str):
        if (role, name) not in self.memo:
            from datasets import DATASETS
            from methods.maps import MAP_KINDS
            from methods.registry import DETECTORS, ENCODERS, HEADS

            registry = {"dataset": DATASETS, "encoder": ENCODERS, "head": HEADS, "detector": DETECTORS,
                        "map": MAP_KINDS}[role]
            try:
                self.memo[role, name] = registry.lookup(name)[0].factory
            except KeyError:                  # unknown names are refused by validation, not here
                self.memo[role, name] = None
        return self.memo[role, name]

    def __call__(self, **parts) -> tuple:
        from bench.plugins import LOADED, fingerprints_of

        if not LOADED:
            return ()
        names = {role: (p if isinstance(p, str) else p.name) for role, p in parts.items() if p is not None}
        return fingerprints_of(self.factory(role, name) for role, name in names.items())


def available_grids() -> list[str]:
    return sorted(p.stem for p in GRID_DIR.glob("*.toml"))


def load_grid(name_or_path: str, overrides: list[str] | None = None) -> Grid:
    """Read a grid by name (``bench/grids/<name>.toml``) or path and apply ``key=value`` overrides."""
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        path = GRID_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        raise GridError(f"grid '{name_or_path}' not found (no file {path}); available: {', '.join(available_grids())}")
    source = path.read_text()
    try:
        data = tomllib.loads(source)
    except tomllib.TOMLDecodeError as exc:
        raise GridError(f"grid file {path}: {exc}") from exc
    for item in overrides or []:
        apply_override(data, item)
    check_list_keys(data)
    if data.get("plugins"):                      # imported now: their entries must exist for validation
        from bench.plugins import PluginError, load_plugin

        for spec in data["plugins"]:
            base = path.parent if (path.parent / str(spec)).is_file() else None
            try:
                load_plugin(str(spec), base)
            except PluginError as exc:
                raise GridError(f"grid file {path}: plugins: {exc}") from None
    return Grid(str(data.get("name", path.stem)), data, source, path, list(overrides or []))


#: Keys that hold lists (a string there would be expanded letter by letter), and the ones that may not be empty.
LIST_KEYS = ("seeds", *SECTIONS, "localization", "plugins")
NON_EMPTY = ("seeds", "localization")


def check_list_keys(data: dict) -> None:
    """A value check that must precede expansion: list keys hold lists (``datasets = "synthetic"``
    means ``["synthetic"]``; say so rather than expand ``s``, ``y``, ...), and ``seeds`` and
    ``localization`` are not empty (no seed or no map kind would silently drop every latent cell)."""
    for key in LIST_KEYS:
        if key not in data:
            continue
        value = data[key]
        if not isinstance(value, list):
            example = f"[{value!r}]".replace("'", '"') if isinstance(value, (str, int)) else "[...]"
            raise GridError(f"{key} = {value!r}: expected a list, e.g. {key} = {example}")
        if key in NON_EMPTY and not value:
            default = '["gradient"]' if key == "localization" else "[0]"
            raise GridError(f"{key} = []: give at least one (e.g. {key} = {default})")


def apply_override(data: dict, item: str) -> None:
    """``section.name.key=value`` (the name may contain dots or slashes) or ``key=value``."""
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise GridError(f"--set expects key=value, got '{item}'")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    parts = key.strip().split(".")
    if parts[0] in SECTIONS.values() or parts[0] in ("defaults", "maps"):
        if len(parts) < 3:
            raise GridError(f"--set {key}: expected {parts[0]}.<name>.<parameter>=value")
        target = data.setdefault(parts[0], {}).setdefault(".".join(parts[1:-1]), {})
        target[parts[-1]] = value
    elif len(parts) == 1:
        data[parts[0]] = value
    elif parts[0] in ("resources", "selection", "claims") and len(parts) == 2:  # resources.cpus_per_task=1,
        if not isinstance(data.get(parts[0]), dict):                     # selection = true -> a table,
            data[parts[0]] = {}                                          # claims.builtin=false
        data[parts[0]][parts[1]] = value
    else:
        raise GridError(f"--set {key}: unknown section '{parts[0]}' "
                        f"(dataset, encoder, head, detector, defaults, maps, resources, selection, claims)")


def stable_hash(payload: Any, length: int = 16) -> str:
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:length]


def _freeze(params: dict) -> tuple:
    return tuple(sorted((k, json.dumps(v, sort_keys=True) if isinstance(v, (list, dict)) else v)
                        for k, v in params.items()))


def _thaw(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value
