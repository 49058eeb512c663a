"""Preprocessing cache: decoded arrays stored once as ``.npz``, keyed by everything that made them.

Why: decoding tens of thousands of PNG/JPEG/TIFF files or NIfTI volumes takes minutes; the
benchmark reloads the same dataset for every cell. The key hashes the loader name, the resolved
source folder, every input file's relative path, size and modification time, and all
preprocessing parameters, so an edited file or a new ``image_size`` builds a new entry while a
rerun loads in seconds. Entries are written to a temporary file and moved into place with
``os.replace``: a failed build (bad image, interrupted run) never leaves a half-written entry.
Split parameters (seed, fractions) are *not* part of the key: splitting is cheap and done after
loading, so every seed reuses one decoded copy.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from datasets.base import DatasetError

#: Overrides the user-level fallback location (``~/.cache/uad-bench``).
CACHE_ENV = "UAD_BENCH_CACHE"


def _writable(folder: Path) -> bool:
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            return False
        probe = probe.parent
    return probe.is_dir() and os.access(probe, os.W_OK | os.X_OK)


def resolve_cache_dir(root: Path, cache_dir: str | Path | None = None) -> Path:
    """``cache_dir`` if given, else ``<root>/.uad_cache`` when writable, else the user cache."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    local = Path(root).expanduser() / ".uad_cache"
    if Path(root).expanduser().is_dir() and _writable(local):
        return local
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "uad-bench")).expanduser()


def fingerprint(files: Iterable[Path], base: Path) -> list[tuple[str, int, int]]:
    """(relative path, size, mtime in ns) of every file: edits and replacements change the key."""
    out = []
    for path in files:
        try:
            stat = path.stat()
        except OSError:
            raise DatasetError(f"{path}: file not found while fingerprinting; expected a readable file") from None
        try:
            rel = path.resolve().relative_to(base.resolve()).as_posix()
        except ValueError:
            rel = path.resolve().as_posix()
        out.append((rel, int(stat.st_size), int(stat.st_mtime_ns)))
    return out


def cache_key(loader: str, source: Path, files: Iterable[Path], params: dict) -> str:
    """sha256 over (loader, resolved source, file fingerprints, preprocessing params)."""
    source = Path(source).resolve()
    payload = {"loader": loader, "source": source.as_posix(), "files": fingerprint(files, source),
               "params": params, "format": 1}
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


class ArrayCache:
    """A folder of ``<loader>-<key>.npz`` entries with atomic writes."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    def path(self, loader: str, key: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in loader)
        return self.directory / f"{safe}-{key[:24]}.npz"

    def load(self, path: Path) -> dict[str, np.ndarray] | None:
        """Read an entry; an unreadable one is deleted (and rebuilt by the caller)."""
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError):
            path.unlink(missing_ok=True)
            return None

    def save(self, path: Path, arrays: dict[str, np.ndarray]) -> bool:
        """Write atomically; returns False (and warns) when the folder is not writable."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
        except OSError as exc:
            print(f"warning: cache folder {path.parent} is not writable ({exc}); not caching",
                  file=sys.stderr)
            return False
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, **arrays)
            os.chmod(tmp, 0o644)          # mkstemp makes 0600; entries are shareable data
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return True

    def get_or_build(self, loader: str, key: str,
                     build: Callable[[], dict[str, np.ndarray]]) -> tuple[dict[str, np.ndarray], bool, Path]:
        """Return (arrays, hit, entry path); ``build`` runs only on a miss and may raise freely."""
        path = self.path(loader, key)
        arrays = self.load(path)
        if arrays is not None:
            return arrays, True, path
        arrays = build()
        self.save(path, arrays)
        return arrays, False, path


def cached_decode(loader: str, source: Path, records, *, image_size: int, channels: int,
                  cache_dir: Path, band: int | None = None, with_masks: bool = False,
                  extra: dict | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """Decode ``records`` (see :func:`datasets._io.decode_records`) through the cache.

    Returns the arrays and a small info dict (``cache_hit``, ``cache_file``) for the config.
    """
    from datasets._io import decode_records

    files = [r.image for r in records] + [r.mask for r in records if r.mask is not None]
    params = {"image_size": int(image_size), "channels": int(channels), "band": band,
              "with_masks": bool(with_masks), "resize": "pil-bilinear-aa/mask-nearest", **(extra or {})}
    key = cache_key(loader, source, files, params)
    arrays, hit, path = ArrayCache(cache_dir).get_or_build(
        loader, key, lambda: decode_records(records, image_size, channels, band=band, with_masks=with_masks))
    return arrays, {"cache_hit": hit, "cache_file": str(path)}
