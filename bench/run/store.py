"""The results store: one JSON record (plus an optional ``.npz`` of arrays) per grid cell.

Why one file per cell: a crash can never corrupt finished results, resuming is "skip cells whose
record says ok", and several processes can fill one run directory. Writes are atomic
(temporary file + ``os.replace``).

Layout of a run directory::

    <run_dir>/run.json                 grid name, grid file text, command line, start time
    <run_dir>/records/<cell_id>.json   one record per cell (schema below)
    <run_dir>/records/<cell_id>.npz    per-case arrays for statistics and figures

Record schema (JSON)::

    cell_id, run, status ("ok" | "failed" | "degenerate"), error (str | null; for "degenerate" the
    reason, with metrics present), traceback (str | null)
    dataset, kind ("latent" | "detector"), method (table label), encoder, head, detector,
    setting ("uad" | "oc-ssl"), seed
    metrics: {<every name in bench.metrics' registry>, pixel_threshold}   (missing = not applicable)
    metrics_unavailable: {metric: reason}, e.g. {"pixel_dice": "no validation split"} (optional)
    config: flattened {"dataset.image_size": 64, "encoder.epochs": 10, ...}
    timings: {"encoder_fit_s", "embed_s", "head_fit_s", "score_s", "maps_s", "total_s"}
    encoder_cache: path of the cached encoder/embeddings directory (latent cells) or null
    versions: {python, torch, timm, ...}, git_sha, host, started, finished

Arrays (``.npz``): ``test_scores``, ``test_labels``, ``test_groups``, ``val_scores``,
``val_labels`` and, when the dataset has masks and the maps are small enough, ``test_maps``
(float32 ``[N, H, W]``) and ``test_masks`` (uint8).
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np



class BadRecordError(ValueError):
    """A record file that cannot be read (truncated, not JSON, not an object): the message names it."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


def _clean(value: Any) -> Any:
    """NaN is not JSON: store it as null so every reader agrees it is missing."""
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


class ResultStore:
    """Reads and writes the records of one run directory."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.records_dir = self.run_dir / "records"

    def json_path(self, cell_id: str) -> Path:
        return self.records_dir / f"{cell_id}.json"

    def arrays_path(self, cell_id: str) -> Path:
        return self.records_dir / f"{cell_id}.npz"

    def read(self, cell_id: str) -> dict | None:
        """The record of ``cell_id``; an unreadable one is moved to ``records/corrupt/`` (never lost)."""
        path = self.json_path(cell_id)
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            self._set_aside(cell_id, "corrupt", "unreadable")
            return None

    def done(self, cell_id: str, config_hash: str | None = None, fingerprint: str | None = None,
             statuses: tuple[str, ...] = ("ok",)) -> bool:
        """Finished (status in ``statuses``) with this configuration hash and dataset fingerprint."""
        record = self.read(cell_id)
        return (bool(record) and record.get("status") in statuses
                and (config_hash is None or record.get("config_hash") == config_hash)
                and (fingerprint is None or record.get("dataset_fingerprint") == fingerprint))

    def remove_stale_temporaries(self) -> int:
        """Temporary files of writes that a killed runner never finished (call under the run lock)."""
        stale = list(self.records_dir.glob(".*.tmp")) if self.records_dir.is_dir() else []
        for path in stale:
            path.unlink(missing_ok=True)
        return len(stale)

    def _set_aside(self, cell_id: str, folder: str, tag: str) -> None:
        """Move a record and its arrays to ``records/<folder>/`` under a name that keeps both."""
        target = self.records_dir / folder
        target.mkdir(parents=True, exist_ok=True)
        for path in (self.json_path(cell_id), self.arrays_path(cell_id)):
            if path.exists():
                os.replace(path, target / f"{cell_id}.{tag}{path.suffix}")

    def write(self, record: dict, arrays: dict[str, np.ndarray] | None = None) -> Path:
        """Arrays first, then the record: a record on disk always has its arrays.

        A finished record of another configuration or other data is never overwritten: it is
        kept aside in ``records/superseded/`` (named by its config hash and data fingerprint).
        """
        cell_id = record["cell_id"]
        old = self.read(cell_id)
        if old is not None and old.get("status") in ("ok", "degenerate") and (
                old.get("config_hash"), old.get("dataset_fingerprint")) != (
                record.get("config_hash"), record.get("dataset_fingerprint")):
            self._set_aside(cell_id, "superseded", f"{old.get('config_hash')}-{old.get('dataset_fingerprint')}")
        elif self.arrays_path(cell_id).exists() and not arrays:
            os.unlink(self.arrays_path(cell_id))     # a failed rerun must not sit beside stale arrays
        if arrays:
            buf = io.BytesIO()
            np.savez_compressed(buf, **arrays)
            atomic_write_bytes(self.arrays_path(cell_id), buf.getvalue())
        text = json.dumps(_clean(record), indent=1, sort_keys=True, default=_json_default)
        atomic_write_bytes(self.json_path(cell_id), text.encode())
        return self.json_path(cell_id)

    def records(self, *, skip_bad: bool = False) -> list[dict]:
        """Every record, sorted by file name.

        An unreadable record (truncated write, not JSON, not an object) raises
        :class:`BadRecordError` naming the file; with ``skip_bad=True`` it is left out and listed in
        ``self.skipped`` as ``(path, reason)``.
        """
        self.skipped: list[tuple[Path, str]] = []
        if not self.records_dir.exists():
            return []
        out = []
        for path in sorted(self.records_dir.glob("*.json")):
            try:
                record = json.loads(path.read_text())
                if not isinstance(record, dict):
                    raise ValueError(f"expected a JSON object, found {type(record).__name__}")
            except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as exc:
                reason = f"{type(exc).__name__}: {exc}"
                if not skip_bad:
                    raise BadRecordError(f"unreadable record {path}: {reason} (rerun its cell, delete the file, "
                                         "or pass --skip-bad to report without it)") from exc
                self.skipped.append((path, reason))
                continue
            out.append(record)
        return out

    def arrays(self, cell_id: str) -> dict[str, np.ndarray]:
        path = self.arrays_path(cell_id)
        if not path.exists():
            return {}
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}


class RunLockedError(RuntimeError):
    """Another live runner holds the run directory."""


class RunLock:
    """One runner per run directory: ``<run_dir>/.lock`` holds the owner's host and PID.

    Created with ``O_EXCL``; a lock whose process is gone (same host, PID not alive) is stale and
    taken over, so a runner killed with SIGKILL never blocks the next one. Workers of a Ray run
    never write records, so the driver's lock covers them.
    """

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / ".lock"

    def _owner(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    @staticmethod
    def _alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def acquire(self) -> None:
        import socket
        import time

        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                same_host = owner.get("host") == me["host"]
                if owner and not (same_host and not self._alive(int(owner.get("pid", -1)))):
                    raise RunLockedError(
                        f"run directory {self.path.parent} is in use by PID {owner.get('pid')} on "
                        f"{owner.get('host')} since {owner.get('since')}; wait for it to finish, or delete "
                        f"{self.path} if that process is gone") from None
                try:                       # stale (or unreadable, half-written) lock: take it over
                    os.unlink(self.path)
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, "w") as fh:
                json.dump(me, fh)
            return
        raise RunLockedError(f"could not take the lock {self.path}; another runner keeps taking it")

    def release(self) -> None:
        if self._owner().get("pid") == os.getpid():
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
