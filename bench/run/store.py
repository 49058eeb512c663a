"""The results store: one JSON record (plus an optional ``.npz`` of arrays) per grid cell.

Why one file per cell: a crash can never corrupt finished results, resuming is "skip cells whose
record says ok", and several processes can fill one run directory. Writes are atomic
(temporary file + ``os.replace``).

Layout of a run directory::

    <run_dir>/run.json                 grid name, grid file text, command line, start time
    <run_dir>/records/<cell_id>.json   one record per cell (schema below)
    <run_dir>/records/<cell_id>.npz    per-case arrays for statistics and figures
    <run_dir>/records/<cell_id>.test_scores.csv   case (file name or id), group, label, score, decision
                                       at the validation threshold (issue 24)

Record schema (JSON)::

    cell_id, run, status ("ok" | "failed" | "degenerate"), error (str | null; for "degenerate" the
    reason, with metrics present), traceback (str | null)
    dataset, kind ("latent" | "detector"), method (table label), encoder, head, detector,
    setting ("uad" | "oc-ssl"), seed
    metrics: {<every name in bench.metrics' registry>, pixel_threshold, image_threshold}   (missing = not
             applicable; image_threshold: chosen on the validation split, bench.metrics.image.validation_threshold)
    metrics_unavailable: {metric: reason}, e.g. {"pixel_dice": "no validation split"} (optional)
    config: flattened {"dataset.image_size": 64, "encoder.epochs": 10, ...}
    timings: {"encoder_fit_s", "embed_s", "head_fit_s", "score_s", "maps_s", "total_s"}
    encoder_cache: path of the cached encoder/embeddings directory (latent cells) or null
    versions: {python, torch, timm, ...}, git_sha, host, started, finished

Arrays (``.npz``): ``test_scores``, ``test_labels``, ``test_groups``, ``val_scores``,
``val_labels``, ``test_ids`` (file name or case id) and, when the dataset has masks and the maps are small enough, ``test_maps``
(float32 ``[N, H, W]``) and ``test_masks`` (uint8). Where the cell has pixel metrics, at any map size,
the compact per-case pixel summary ``test_pixsum_*`` (``bench.analysis.pixsum``: per-case and
per-region counts on one threshold grid, TP/FP/FN at the Dice threshold) that resampled pixel
metrics read.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import math
import os
import tempfile
import time
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from bench.metrics import metric_names



#: Arrays every finished record has (``score_cell`` writes them all).
REQUIRED_ARRAYS = ("test_scores", "test_labels", "val_scores", "val_labels")


class BadRecordError(ValueError):
    """A record file that cannot be read (truncated, not JSON, not an object): the message names it."""


class StorageError(OSError):
    """A filesystem problem (full disk, read-only folder, a file in the way) as one line naming the path.

    Raised instead of the bare ``OSError`` wherever this package writes, because the bare one often
    names no path at all (a full disk fails ``write``, not ``open``) or a temporary name.
    """

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.errno = code


def _blocking_file(path: Path) -> Path | None:
    """The first existing ancestor-or-self of ``path`` that is a file (where a folder is expected)."""
    for candidate in [path, *path.parents]:
        if candidate.exists():
            return candidate if not candidate.is_dir() else None
    return None


def describe_os_error(exc: OSError, path: str | Path | None = None) -> str:
    """One line for an ``OSError``: what went wrong and under which path (``path`` or the error's own)."""
    if isinstance(exc, StorageError) or (exc.errno is None and not exc.filename):
        return str(exc)
    where = Path(path if path is not None else exc.filename or ".")
    code = exc.errno
    if code == errno.ENOSPC:
        return f"no space left on device under {where if where.is_dir() else where.parent}"
    if code == errno.EDQUOT:
        return f"disk quota exceeded under {where if where.is_dir() else where.parent}"
    if code == errno.EROFS:
        return f"{where}: read-only file system; choose a writable location"
    if code in (errno.EACCES, errno.EPERM):
        return f"{where}: permission denied; choose a folder you can write to"
    if code in (errno.EEXIST, errno.ENOTDIR):
        blocker = _blocking_file(where)
        if blocker is not None:
            return f"{blocker} is a file where a folder is expected"
    if code == errno.EISDIR:
        return f"{where} is a folder where a file is expected"
    if code == errno.ENOENT:
        return f"{where}: no such file or folder"
    return f"{where}: {exc.strerror or exc}"


def storage_error(exc: OSError, path: str | Path) -> StorageError:
    """``exc`` as a :class:`StorageError` naming ``path`` (kept as is when it already is one)."""
    if isinstance(exc, StorageError):
        return exc
    return StorageError(describe_os_error(exc, path), exc.errno)


def check_folder(path: str | Path, what: str) -> Path:
    """Refuse, before any work, a folder that cannot be one: a file in its place or on its path, or
    (for users other than root) a first existing ancestor that is not writable. Creates nothing."""
    path = Path(path)
    blocker = _blocking_file(path)
    if blocker is not None:
        where = "is a file" if blocker == path else f"is under {blocker}, which is a file"
        raise StorageError(f"{what} {path} {where}; give a folder", errno.ENOTDIR)
    existing = next((p for p in [path, *path.parents] if p.exists()), Path("."))
    if not os.access(existing, os.W_OK | os.X_OK):
        raise StorageError(f"{what} {path}: {existing} is not writable; choose a folder you can write to",
                           errno.EACCES)
    return path


def atomic_write_bytes(path: Path, data: bytes, *, sync: bool = True) -> None:
    """Write ``data`` to ``path`` under a temporary name and rename it into place, so a reader (or a
    process killed mid-write) sees the old file or the new one, never a part. A filesystem error is a
    :class:`StorageError` naming ``path`` (a full disk: "no space left on device under ...")."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise storage_error(exc, path.parent) from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if sync:
                os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)              # mkstemp makes 0600; records and reports are shared
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise storage_error(exc, path) from exc
        raise


def npz_bytes(arrays: dict[str, np.ndarray], level: int = 1) -> bytes:
    """``arrays`` as a compressed ``.npz`` (what ``np.savez_compressed`` writes, read by ``np.load``)
    at deflate level ``level``. Why level 1: a BUSI record's maps took 0.37 s to compress at numpy's
    level 6 and 0.23 s at level 1, for a file 1.6 % larger; the driver compresses every record."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=level) as archive:
        for name, value in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.asanyarray(value), allow_pickle=False)
    return buf.getvalue()


def atomic_write_text(path: Path, text: str, *, sync: bool = True) -> None:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"), sync=sync)


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


#: Metrics every finished record has held since the store's first version: a record without them
#: is not a result. Metrics registered later are checked where present (an older record lacks them).
CORE_METRICS = {"image": ("image_auroc", "image_ap", "image_fpr95"),
                "pixel": ("pixel_auroc", "pixel_ap", "pixel_aupro", "pixel_dice", "pixel_dice_oracle")}


def record_unit(record: dict) -> tuple[str, str | None]:
    """``(kind, id)`` of the fit a record's cell belongs to: ("encoder", its encoder), or ("detector", its
    end-to-end detector)."""
    if record.get("kind") == "detector" or record.get("encoder") is None:
        return "detector", record.get("detector")
    return "encoder", record.get("encoder")


def has_pixel_metrics(record: dict) -> bool:
    """Whether the record scored maps (its dataset has masks and the cell made maps)."""
    pixel = set(metric_names("pixel"))
    return any(name in pixel for name in [*(record.get("metrics") or {}), *(record.get("metrics_unavailable") or {})])


def record_problem(record: Any) -> str | None:
    """Why a record that says it finished cannot be trusted, or None.

    A finished record (``ok`` or ``degenerate``) holds every image metric as a finite number. Where
    it scored maps at all, every pixel metric is there, as a finite number, as null (NaN: nothing to
    score, e.g. no lesion pixel in the selection) or listed in ``metrics_unavailable`` with its
    reason; the foreground (``*_fg``) variants too where it has any.
    """
    if not isinstance(record, dict):
        return f"expected a JSON object, found {type(record).__name__}"
    metrics = record.get("metrics")
    unavailable = record.get("metrics_unavailable") or {}
    if not isinstance(metrics, dict) or not isinstance(unavailable, dict):
        return "its metrics are missing (expected an object of metric values)"
    image = dict.fromkeys([*CORE_METRICS["image"], *(m for m in metric_names("image") if m in metrics)])
    for name in image:
        if name not in metrics:
            return f"metric {name} is missing"
        if not _finite_number(metrics[name]):
            return f"metric {name} = {metrics[name]!r}: expected a finite number"
    if not has_pixel_metrics(record):
        return None
    suffixes = [""] + (["_fg"] if any(k.endswith("_fg") for k in [*metrics, *unavailable]) else [])
    required = [core + suffix for suffix in suffixes for core in CORE_METRICS["pixel"]]
    for name in dict.fromkeys([*required, *(m for m in metric_names("pixel") if m in metrics)]):
        value = metrics.get(name)
        if name in unavailable and value is None:
            continue
        if name not in metrics:
            return f"metric {name} is missing (and metrics_unavailable gives no reason)"
        if not (value is None or _finite_number(value)):
            return f"metric {name} = {value!r}: expected a finite number or null"
    return None


def arrays_problem(path: Path, record: dict | None = None, *, full: bool = True) -> str | None:
    """Why the ``.npz`` beside a record does not load, or None. ``full`` reads every array (checking
    each member's CRC) and the arrays a finished record must have; otherwise only the archive's index."""
    try:
        with np.load(path, allow_pickle=False) as data:
            files = set(data.files)
            if "panel_maps" in files and record is not None and not has_pixel_metrics(record):
                return f"{path.name} holds maps, but the record has no pixel metrics"
            if any(k.startswith("test_pixsum_") for k in files) and record is not None and not has_pixel_metrics(record):
                return f"{path.name} holds a pixel summary, but the record has no pixel metrics"
            if not full:
                return None
            missing = [k for k in REQUIRED_ARRAYS if k not in files]
            if missing:
                return f"{path.name} lacks the arrays {missing}"
            loaded = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
        return f"{path.name} does not load ({type(exc).__name__}: {' '.join(str(exc).split())})"
    scores = loaded["test_scores"]
    n_test = (record or {}).get("n_test")
    if scores.ndim != 1 or (isinstance(n_test, int) and len(scores) != n_test):
        return f"{path.name}: test_scores has shape {scores.shape}, the record says {n_test} test images"
    if scores.dtype.kind not in "fiu" or not np.isfinite(scores).all():
        return f"{path.name}: test_scores holds non-finite or non-numeric values"
    from bench.analysis.pixsum import summary_problem

    problem = summary_problem(loaded, len(scores))
    return f"{path.name}: {problem}" if problem else None


def test_scores_csv(arrays: dict, threshold: float | None) -> str:
    """One row per test case: ``case`` (file name or case id), ``group``, ``label`` (1 anomalous),
    ``score`` and, where the record has an image threshold chosen on validation, ``anomalous_at_val_threshold``."""
    import pandas as pd

    scores = np.asarray(arrays["test_scores"], dtype=np.float64).reshape(-1)
    n = len(scores)
    ids = arrays.get("test_ids")
    frame = pd.DataFrame({"case": ids if ids is not None and len(ids) == n else [f"case-{i}" for i in range(n)]})
    if arrays.get("test_groups") is not None and len(arrays["test_groups"]) == n:
        frame["group"] = np.asarray(arrays["test_groups"]).astype(str)
    frame["label"] = np.asarray(arrays["test_labels"]).astype(int) if "test_labels" in arrays else -1
    frame["score"] = scores
    if _finite_number(threshold):
        frame["anomalous_at_val_threshold"] = (scores >= float(threshold)).astype(int)
    return frame.to_csv(index=False, float_format="%.9g")


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
        #: cell id -> record of every cell :meth:`done` found finished (until this store rewrites it):
        #: what a resumed run reports about the cells it did not recompute.
        self.finished: dict[str, dict] = {}
        #: every record this store moved aside (``records/superseded/``, ``records/corrupt/``), as moved to
        self.moved_aside: list[Path] = []

    def check_layout(self) -> None:
        """Refuse a run directory whose ``records`` (or itself) is a file, before any work."""
        check_folder(self.run_dir, "run directory")
        if self.records_dir.exists() and not self.records_dir.is_dir():
            raise StorageError(f"{self.records_dir} is a file where the run's records folder is expected; "
                               "move it away or choose another --out", errno.ENOTDIR)

    def json_path(self, cell_id: str) -> Path:
        return self.records_dir / f"{cell_id}.json"

    def arrays_path(self, cell_id: str) -> Path:
        return self.records_dir / f"{cell_id}.npz"

    def scores_path(self, cell_id: str) -> Path:
        return self.records_dir / f"{cell_id}.test_scores.csv"

    def read(self, cell_id: str) -> dict | None:
        """The record of ``cell_id``; an unreadable one is moved to ``records/corrupt/`` (never lost)."""
        path = self.json_path(cell_id)
        if not path.is_file():
            return None
        try:
            record = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            record = None
        if not isinstance(record, dict):
            self._set_aside(cell_id, "corrupt", "unreadable")
            return None
        return record

    def done(self, cell_id: str, config_hash: str | None = None, fingerprint: str | None = None,
             statuses: tuple[str, ...] = ("ok",)) -> bool:
        """Finished (status in ``statuses``) with this configuration hash and dataset fingerprint, and
        verified: its metrics are there and finite (:func:`record_problem`) and its arrays load
        (:func:`arrays_problem`). A record that claims to be finished but fails either check is moved
        to ``records/corrupt/`` and its cell counts as not done (it is recomputed)."""
        record = self.read(cell_id)
        matches = (bool(record) and record.get("status") in statuses
                   and (config_hash is None or record.get("config_hash") == config_hash)
                   and (fingerprint is None or record.get("dataset_fingerprint") == fingerprint))
        if not matches:
            return False
        if record.get("status") in ("ok", "degenerate"):
            arrays = self.arrays_path(cell_id)
            problem = record_problem(record) or (
                arrays_problem(arrays, record) if arrays.is_file() else f"its arrays {arrays.name} are missing")
            if problem:
                aside = self._set_aside(cell_id, "corrupt", "unverified")
                warnings.warn(f"record {self.json_path(cell_id)} says {record.get('status')!r} but {problem}; "
                              f"moved to {aside} and recomputed", stacklevel=2)
                return False
        self.finished[cell_id] = record
        return True

    def remove_stale_temporaries(self) -> int:
        """Temporary files of writes that a killed runner never finished (call under the run lock)."""
        stale = list(self.records_dir.glob(".*.tmp")) if self.records_dir.is_dir() else []
        for path in stale:
            path.unlink(missing_ok=True)
        return len(stale)

    def _set_aside(self, cell_id: str, folder: str, tag: str) -> Path:
        """Move a record and its arrays to ``records/<folder>/`` under a name of their own.

        The name is ``<cell_id>.<tag>.<UTC time>-<content hash>`` (plus ``.<n>`` should even that
        exist), shared by the record and its arrays: a cell superseded or corrupted again and again
        keeps every copy, since nothing is ever renamed onto an existing file.
        """
        target = self.records_dir / folder
        sources = [p for p in (self.json_path(cell_id), self.arrays_path(cell_id)) if p.exists()]
        try:
            target.mkdir(parents=True, exist_ok=True)
            digest = hashlib.sha256(sources[0].read_bytes()).hexdigest()[:10] if sources else "none"
            stem = f"{cell_id}.{tag}.{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{digest}"
            names, n = [f"{stem}{p.suffix}" for p in sources], 0
            while any((target / name).exists() for name in names):
                n += 1
                names = [f"{stem}.{n}{p.suffix}" for p in sources]
            for path, name in zip(sources, names):
                os.rename(path, target / name)
        except OSError as exc:
            raise storage_error(exc, target) from exc
        self.moved_aside.append(target / (names[0] if sources else stem))
        return target / (names[0] if sources else stem)

    def set_aside_counts(self) -> dict[Path, int]:
        """Records kept aside so far, per folder (``records/superseded/``: another configuration or other data
        of the same cell; ``records/corrupt/``: unreadable or unverified); none of them is reported."""
        folders = (self.records_dir / name for name in ("superseded", "corrupt"))
        return {f: n for f in folders if f.is_dir() and (n := sum(1 for _ in f.glob("*.json")))}

    def write(self, record: dict, arrays: dict[str, np.ndarray] | None = None) -> Path:
        """Arrays first, then the record: a record on disk always has its arrays.

        A finished record of another configuration or other data is never overwritten: it is
        kept aside in ``records/superseded/`` (named by its config hash and data fingerprint).
        """
        cell_id = record["cell_id"]
        self.finished.pop(cell_id, None)
        old = self.read(cell_id)
        if old is not None and old.get("status") in ("ok", "degenerate") and (
                old.get("config_hash"), old.get("dataset_fingerprint")) != (
                record.get("config_hash"), record.get("dataset_fingerprint")):
            self._set_aside(cell_id, "superseded", f"{old.get('config_hash')}-{old.get('dataset_fingerprint')}")
        elif self.arrays_path(cell_id).exists() and not arrays:
            try:
                os.unlink(self.arrays_path(cell_id))     # a failed rerun must not sit beside stale arrays
            except OSError as exc:
                raise storage_error(exc, self.arrays_path(cell_id)) from exc
        if arrays:
            atomic_write_bytes(self.arrays_path(cell_id), npz_bytes(arrays))
        scores_csv = self.scores_path(cell_id)
        if arrays and "test_scores" in arrays:
            atomic_write_text(scores_csv, test_scores_csv(arrays, (record.get("metrics") or {}).get("image_threshold")))
        elif scores_csv.exists():
            scores_csv.unlink()                          # a failed rerun leaves no stale scores
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
            reason = self._untrusted(path, record)
            if reason:
                if not skip_bad:
                    raise BadRecordError(f"record {path} cannot be trusted: {reason} (bench run on this run "
                                         "directory recomputes it; or pass --skip-bad to report without it)")
                self.skipped.append((path, reason))
                continue
            out.append(record)
        return out

    @staticmethod
    def _untrusted(path: Path, record: dict) -> str | None:
        """Why a finished record must not be reported (its metrics, or arrays that do not open)."""
        if record.get("status") not in ("ok", "degenerate"):
            return None
        problem = record_problem(record)
        arrays = path.with_suffix(".npz")
        if problem is None and arrays.is_file():
            problem = arrays_problem(arrays, record, full=False)
        return problem

    def arrays(self, cell_id: str, *, lazy: bool = False):
        """The cell's arrays (``{}`` without a file); ``lazy``: each read when first asked for
        (:class:`~bench.run.stored_arrays.StoredArrays`: the report and the claims never touch the maps)."""
        path = self.arrays_path(cell_id)
        if not path.exists():
            return {}
        if lazy:
            from bench.run.stored_arrays import StoredArrays

            return StoredArrays(path)
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
