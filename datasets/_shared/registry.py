"""A tiny timm-style registry shared by datasets, encoders, heads and detectors.

Why one class: adding an entry must be *one file and one decorator*. Each registry knows the
package whose modules hold its entries and imports all of them on first use, so a new file is
discovered without editing any ``__init__``. Entries may declare tags at registration;
``tiny=dict(...)`` holds the settings that make an entry run in seconds for the tests (as timm keeps per-model metadata beside the model), so the tests
that build every entry need no edit for a new one. Names containing ``/`` address a *family*: the part
before the slash picks the factory, the rest is passed to it (``imagenet/resnet18``,
``medmnist/pneumoniamnist``).
"""

from __future__ import annotations

import fnmatch
import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable


class UnknownEntryError(KeyError):
    """Raised for a name that no registered entry or family matches."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


@dataclass
class Entry:
    name: str
    factory: Callable[..., Any]
    family: bool = False
    summary: str = ""
    tags: dict = field(default_factory=dict)

    @property
    def display(self) -> str:
        return f"{self.name}/<{self.tags.get('member', 'name')}>" if self.family else self.name


class Registry:
    """Maps names to factories; ``create(name, **kwargs)`` builds an entry."""

    def __init__(self, kind: str, package: str):
        self.kind = kind
        self.package = package
        self._entries: dict[str, Entry] = {}
        self._loaded = False

    # -- registration -------------------------------------------------------------------
    def register(self, name: str | None = None, *, family: bool = False, member: str = "name",
                 **tags: Any) -> Callable:
        """Decorator: ``@register_encoder("simclr")`` or ``@register_encoder("imagenet", family=True)``.

        A family factory receives the part of the name after the slash as its first argument.
        """

        def decorator(factory: Callable) -> Callable:
            key = name or factory.__name__
            if key in self._entries and self._entries[key].factory is not factory:
                raise ValueError(f"{self.kind} '{key}' is registered twice")
            doc = (factory.__doc__ or "").strip().splitlines()
            self._entries[key] = Entry(key, factory, family, doc[0] if doc else "",
                                       dict(tags, member=member))
            return factory

        return decorator

    # -- discovery ----------------------------------------------------------------------
    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        pkg = importlib.import_module(self.package)
        for mod in pkgutil.iter_modules(pkg.__path__):
            if not mod.name.startswith("_"):
                importlib.import_module(f"{self.package}.{mod.name}")

    def entries(self) -> list[Entry]:
        self._load()
        return [self._entries[k] for k in sorted(self._entries)]

    def names(self, pattern: str = "*") -> list[str]:
        return [e.display for e in self.entries() if fnmatch.fnmatch(e.name, pattern)]

    def lookup(self, name: str) -> tuple[Entry, str | None]:
        """Return the entry for ``name`` and, for a family, the member part after the slash."""
        self._load()
        if name in self._entries and not self._entries[name].family:
            return self._entries[name], None
        head, sep, member = name.partition("/")
        entry = self._entries.get(head)
        if entry is not None and entry.family and sep and member:
            return entry, member
        known = ", ".join(self.names()) or "none"
        raise UnknownEntryError(f"unknown {self.kind} '{name}'; registered: {known}")

    def tiny(self, name: str) -> dict:
        """The tiny settings ``name`` declared at registration (``tiny=dict(...)``) for the tests that
        build every entry: seconds on a CPU, so a new entry is tested with no test edit."""
        entry, _ = self.lookup(name)
        return dict(entry.tags.get("tiny", {}))

    def __contains__(self, name: str) -> bool:
        try:
            self.lookup(name)
        except UnknownEntryError:
            return False
        return True

    def create(self, name: str, **kwargs: Any) -> Any:
        """Build ``name`` with ``kwargs`` passed as given (``None`` included: it is a value, not "default")."""
        entry, member = self.lookup(name)
        obj = entry.factory(member, **kwargs) if entry.family else entry.factory(**kwargs)
        try:
            obj.registry_name = name
        except AttributeError:  # pragma: no cover - read-only objects
            pass
        return obj
