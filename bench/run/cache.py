"""On-disk caches of expensive fits: trained encoders with their embeddings, fitted detectors.

Why: a grid of E encoders x H heads must cost about E trainings, a rerun none, and an exception
after a long fit must not throw the fit away. Keys hash what determines the fit and nothing else:
the dataset (name, parameters and content fingerprint), the component's configuration (for a
detector, without the options that change only its predictions), the seed and a format version.

Safety on a shared filesystem, with several processes or Ray workers:

* entries are written under a temporary name and renamed into place (no half entry is visible);
* a valid entry is never replaced by a rebuild of the same key (keys are content-addressed, so
  the rebuild holds the same thing): there is no moment at which a reader finds it missing;
* every entry carries SHA-256 checksums of its files; an entry that fails them is named in a
  warning, moved aside to ``<cache>/.corrupt/`` and rebuilt.

Encoder entry: ``<cache>/encoders/<key>/meta.json``, ``encoder.pt`` (state dict; skipped for
frozen encoders, which are rebuilt), ``embeddings.npz``. Detector entry: one file
``<cache>/detectors/<key>.pt`` = a JSON header line (meta + checksum) followed by the pickled
fitted detector. Detector entries are pickles: load caches you (or your cluster) wrote, as with
any pickle.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from bench.run.grid import stable_hash

CACHE_ENV = "UAD_BENCH_CACHE"
FORMAT_VERSION = 2
#: Bumped when what a *detector* fit learns changes under the same configuration (issue 16:
#: PatchCore's per-stage pooling, CFlow-AD's patch_flow, pca_whiten's residual coordinate, the
#: flow head's internal z-score, amp reaching DDAD-ASR/AE): their cached fits are not reused.
#: Trained encoders are unaffected and keep their keys.
DETECTOR_REVISION = 2


class CacheCorruptWarning(UserWarning):
    """A cache entry failed its checksum or could not be read; it was moved aside and is rebuilt."""


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV, "runs/cache")).expanduser()


def dataset_spec(comp, fingerprint: str) -> dict:
    """What identifies a dataset in a cache key: its registry name, parameters and content hash."""
    return {"name": comp.name, **comp.kwargs, "content": fingerprint}


def fit_key(role: str, dataset: dict, spec: dict, seed: int, *, precision=None) -> str:
    """The one cache key of a fit (``role`` = ``"encoder"`` or ``"detector"``).

    Everything that changes what a fit learns goes in: the dataset (:func:`dataset_spec`), the
    component's configuration (without its table label ``id``; a detector's caller leaves out its
    ``predict_params``), the seed and, where the fit runs under autocast, its dtype (a bf16/fp16
    fit is another fit than an fp32 one). ``precision=None`` (fp32, every CPU fit) adds nothing, so
    CPU keys are those of earlier versions.
    """
    spec = {k: v for k, v in spec.items() if k != "id"}
    if precision is not None:
        spec["amp"] = str(precision).removeprefix("torch.")
    key = {"dataset": dataset, role: spec, "seed": seed, "format": FORMAT_VERSION}
    if role == "detector":
        key["revision"] = DETECTOR_REVISION
    return stable_hash(key, 20)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def move_aside(root: Path, path: Path, reason: str) -> Path:
    """Move a bad entry to ``<root>/.corrupt/`` (kept for inspection) and warn, naming it."""
    aside = root / ".corrupt" / f"{path.name}.{time.strftime('%Y%m%d-%H%M%S')}.{os.getpid()}"
    aside.parent.mkdir(parents=True, exist_ok=True)
    n, base = 0, aside
    while aside.exists():           # never onto an earlier copy (same second, same process)
        n += 1
        aside = base.with_name(f"{base.name}.{n}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:       # another process moved it first
        return aside
    warnings.warn(f"cache entry {path} is unusable ({reason}); moved to {aside} and rebuilt",
                  CacheCorruptWarning, stacklevel=3)
    return aside


class EncoderCache:
    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else default_cache_dir() / "encoders"

    def path(self, key: str) -> Path:
        return self.root / key

    def has(self, key: str) -> bool:
        return (self.path(key) / "meta.json").is_file()

    def load(self, key: str, encoder) -> tuple[dict[str, np.ndarray], dict] | None:
        """``(embeddings, meta)`` with the weights loaded into ``encoder``; None when absent or corrupt."""
        import torch

        entry = self.path(key)
        if not self.has(key):
            return None
        try:
            meta = json.loads((entry / "meta.json").read_text())
            for name, digest in meta["checksums"].items():
                if sha256_file(entry / name) != digest:
                    raise ValueError(f"{name} does not match its checksum")
            with np.load(entry / "embeddings.npz", allow_pickle=False) as data:
                embeddings = {k: data[k] for k in data.files}
            if (entry / "encoder.pt").is_file():
                encoder.load_state_dict(torch.load(entry / "encoder.pt", map_location="cpu", weights_only=True))
        except Exception as exc:  # noqa: BLE001 - any unreadable entry is rebuilt, never trusted
            move_aside(self.root, entry, f"{type(exc).__name__}: {exc}")
            return None
        encoder.eval()
        return embeddings, meta

    def save(self, key: str, encoder, embeddings: dict[str, np.ndarray], meta: dict) -> Path:
        """Write the entry under a temporary folder and rename it into place.

        Everything is serialised in memory and written with plain file writes, so a full disk is an
        ``OSError`` (ENOSPC) raised as a :class:`bench.run.store.StorageError` that says so ("no space
        left on device under <cache>"), not torch's "unexpected pos" from deep inside its zip writer.
        """
        import torch

        from bench.run.store import storage_error

        final = self.path(key)
        if self.has(key):               # content-addressed: a valid entry already holds this fit
            return final
        tmp = None
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=self.root, prefix=f".{key}."))
            files = {}
            if encoder.trainable:
                buf = io.BytesIO()
                torch.save(encoder.state_dict(), buf)
                files["encoder.pt"] = buf.getvalue()
            buf = io.BytesIO()
            np.savez(buf, **embeddings)
            files["embeddings.npz"] = buf.getvalue()
            for name, data in files.items():
                (tmp / name).write_bytes(data)
            checksums = {name: hashlib.sha256(files[name]).hexdigest() for name in sorted(files)}
            (tmp / "meta.json").write_text(json.dumps({**meta, "checksums": checksums}, indent=1, sort_keys=True,
                                                      default=str))
            try:
                os.rename(tmp, final)   # fails if another process put the entry in place meanwhile
            except OSError:
                if not self.has(key):
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException as exc:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(exc, OSError):
                raise storage_error(exc, self.root) from exc
            raise
        return final


class DetectorCache:
    """Fitted end-to-end detectors, one self-verifying file each (header line + pickle)."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else default_cache_dir() / "detectors"

    def path(self, key: str) -> Path:
        return self.root / f"{key}.pt"

    def load(self, key: str):
        import torch

        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with open(path, "rb") as fh:
                header = json.loads(fh.readline())
                payload = fh.read()
            if hashlib.sha256(payload).hexdigest() != header["sha256"]:
                raise ValueError("payload does not match its checksum")
            return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=False)
        except Exception as exc:  # noqa: BLE001
            move_aside(self.root, path, f"{type(exc).__name__}: {exc}")
            return None

    def save(self, key: str, detector, meta: dict) -> Path:
        """Write (or replace, atomically: one file) the entry for ``key``."""
        import torch

        from bench.run.store import atomic_write_bytes

        buf = io.BytesIO()
        try:
            torch.save(detector, buf)
        except Exception as exc:  # noqa: BLE001 - an unpicklable detector still gets its result
            warnings.warn(f"fitted {type(detector).__name__} cannot be cached ({type(exc).__name__}: {exc}); "
                          "reruns will fit it again", stacklevel=2)
            return self.path(key)
        payload = buf.getvalue()
        header = json.dumps({**meta, "sha256": hashlib.sha256(payload).hexdigest()}, sort_keys=True, default=str)
        atomic_write_bytes(self.path(key), header.encode() + b"\n" + payload)
        return self.path(key)
