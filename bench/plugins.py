"""Plugins: your own encoders, heads, detectors, datasets, metrics or map kinds, from outside the project.

Why: every registry here is a decorator, so a method of your own is registered by *importing* the
module that holds it. A plugin is that module, named three ways:

* ``--plugin my_methods`` (a module importable from the current folder) or ``--plugin path/to/file.py``
  on any command (repeatable);
* ``plugins = ["my_methods", "methods/extra.py"]`` in a grid file (paths relative to the grid file);
* an installed package's entry point in the group ``uad_bench.plugins`` (``[project.entry-points."uad_bench.plugins"]
  mine = "my_package.methods"`` in its ``pyproject.toml``), imported by every command.

Each plugin is imported once per process (the driver, and every executor worker: the run's context
carries the plugins so a Ray worker imports them before its first unit). Its *fingerprint* (the
installed version when there is one, and a hash of its source files) goes into the configuration of
every cell that uses one of its entries, so a changed plugin makes those cells' records stale on
resume, like any other configuration change.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path

#: The entry-point group installed packages declare their plugin modules in.
ENTRY_POINT_GROUP = "uad_bench.plugins"


class PluginError(ValueError):
    """A plugin that cannot be found or imported; one line naming it."""


@dataclass(frozen=True)
class Plugin:
    """One imported plugin module and what identifies its code."""

    module: str               # the module name its entries' factories carry in ``__module__``
    fingerprint: str          # "<version> sha256:<hash>" or "sha256:<hash>" of its source files
    spec: str                 # how a worker imports it again: an absolute file path or a module name
    search_dir: str = ""      # for a module name: the folder it was importable from


#: module name -> Plugin, for every plugin imported in this process.
LOADED: dict[str, Plugin] = {}
_ENTRY_POINTS: list = []          # the installed plugins, once imported (entry points are read once)


def _source_hash(module) -> str:
    """sha256 of the module's file, or of every ``.py`` file of its package (sorted), first 16 digits."""
    h = hashlib.sha256()
    paths = getattr(module, "__path__", None)
    files = (sorted(p for d in paths for p in Path(d).rglob("*.py")) if paths
             else [Path(module.__file__)] if getattr(module, "__file__", None) else [])
    for path in files:
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def _version(module_name: str) -> str | None:
    top = module_name.split(".")[0]
    for dist in importlib.metadata.packages_distributions().get(top, []):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:  # pragma: no cover
            continue
    return None


def _register(module, spec: str, search_dir: str = "") -> Plugin:
    version = _version(module.__name__)
    fingerprint = f"{version + ' ' if version else ''}sha256:{_source_hash(module)}"
    plugin = Plugin(module.__name__, fingerprint, spec, search_dir)
    LOADED[module.__name__] = plugin
    return plugin


def _is_path(spec: str) -> bool:
    return spec.endswith(".py") or "/" in spec or os.sep in spec


def load_plugin(spec: str, base: str | Path | None = None, *, search_dir: str | None = None) -> Plugin:
    """Import plugin ``spec`` (a module name or a ``.py`` file; relative files are taken from ``base``,
    default the current folder) once per process, and return what identifies it."""
    spec = str(spec).strip()
    if not spec:
        raise PluginError("--plugin: empty plugin name; give a module name or a .py file")
    if _is_path(spec):
        path = Path(spec).expanduser()
        if not path.is_absolute():
            path = Path(base or Path.cwd()) / path
        path = path.resolve()
        if not path.is_file():
            raise PluginError(f"plugin {spec}: no file {path}; give a .py file or an importable module name")
        for plugin in LOADED.values():
            if plugin.spec == str(path):
                return plugin
        name = path.stem
        clash = sys.modules.get(name)
        if clash is not None and getattr(clash, "__file__", None) != str(path):
            raise PluginError(f"plugin {path}: the module name '{name}' is already taken by "
                              f"{getattr(clash, '__file__', None) or 'a built-in module'}; rename the file")
        if clash is not None:
            return LOADED.get(name) or _register(clash, str(path))
        loader_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[name] = module
        try:
            loader_spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(name, None)
            raise PluginError(f"plugin {path}: import failed ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''})") from exc
        return _register(module, str(path))
    if spec in LOADED:
        return LOADED[spec]
    folder = search_dir or str(Path(base or Path.cwd()).resolve())
    if folder not in sys.path:
        sys.path.insert(0, folder)
    try:
        module = importlib.import_module(spec)
    except ImportError as exc:
        raise PluginError(f"plugin {spec}: cannot import it ({exc}); give a module importable from {folder} "
                          "or a path to a .py file") from None
    except Exception as exc:
        raise PluginError(f"plugin {spec}: import failed ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''})") from exc
    return _register(module, spec, folder)


def load_plugins(specs, base: str | Path | None = None) -> list[Plugin]:
    return [load_plugin(s, base) for s in specs or ()]


def load_entry_points() -> list[Plugin]:
    """Import every module installed packages declare in the ``uad_bench.plugins`` entry-point group."""
    if _ENTRY_POINTS:
        return list(_ENTRY_POINTS[0])
    out = []
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry.module in LOADED:
            out.append(LOADED[entry.module])
            continue
        try:
            entry.load()
        except Exception as exc:
            raise PluginError(f"plugin {entry.name} (entry point {entry.value} in {ENTRY_POINT_GROUP}): import "
                              f"failed ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from exc
        out.append(_register(sys.modules[entry.module], entry.module))
    _ENTRY_POINTS.append(out)
    return out


def worker_specs() -> tuple:
    """What a worker process needs to import the same plugins: ``(spec, search_dir)`` pairs."""
    return tuple((p.spec, p.search_dir) for p in LOADED.values())


def ensure_plugins(specs) -> None:
    """In a worker: import the driver's plugins (and the installed ones) before any registry lookup."""
    load_entry_points()
    for spec, search_dir in specs or ():
        load_plugin(spec, search_dir=search_dir or None)


def plugin_of(module_name: str) -> Plugin | None:
    """The plugin that defines ``module_name`` (itself or a package above it), if any."""
    for name, plugin in LOADED.items():
        if module_name == name or module_name.startswith(name + "."):
            return plugin
    return None


def fingerprints_of(factories) -> tuple:
    """Sorted ``(module, fingerprint)`` of the plugins defining any of ``factories`` (registry entries' factories)."""
    if not LOADED:
        return ()
    found = {}
    for factory in factories:
        plugin = plugin_of(getattr(factory, "__module__", "") or "")
        if plugin is not None:
            found[plugin.module] = plugin.fingerprint
    return tuple(sorted(found.items()))
