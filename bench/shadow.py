"""Are ``bench``, ``methods`` and ``datasets`` this project's? (Hugging Face ships a ``datasets`` too.)

Why: this project's data package is called ``datasets``, as is Hugging Face's. In an environment
that has both (anomalib's optional extras, transformers, ...), whichever comes first on the path
wins, and the suite would fail much later with an unrelated ``ImportError`` or, worse, a missing
registry. ``python -m bench`` checks at start that the three packages resolve to one project root
and otherwise stops with one line naming the package that shadows and what to do.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

PACKAGES = ("bench", "methods", "datasets")


def _location(name: str) -> Path | None:
    """Where ``import name`` would load the package from (the already-imported one if any)."""
    module = sys.modules.get(name)
    origin = getattr(module, "__file__", None) if module is not None else None
    if origin is None:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            return None
        origin = spec.origin if spec is not None else None
    return Path(origin).resolve().parent if origin else None


def shadowed() -> str | None:
    """The one line to stop with when a package of another project shadows one of ours, else None."""
    root = Path(__file__).resolve().parent.parent
    for name in PACKAGES:
        where = _location(name)
        if where is None:
            return (f"package '{name}' of this project ({root / name}) cannot be imported; "
                    f"install the project (pip install -e .) or run from {root}")
        if where != root / name:
            return (f"package '{name}' resolves to {where}, which shadows this project's {root / name} "
                    f"(Hugging Face's 'datasets' has the same name); use a separate virtual environment "
                    f"for this project (python -m venv .venv) or remove the other '{name}' from this one")
    return None
