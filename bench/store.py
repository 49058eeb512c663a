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

from bench.metrics import lower_is_better, metric_names

#: Every registered metric (bench.metrics registry), in table order.
METRICS = metric_names()
#: Metrics where lower is better (tables bold the minimum).
LOWER_IS_BETTER = {m for m in METRICS if lower_is_better(m)}


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
        path = self.json_path(cell_id)
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            return None  # an unreadable record counts as not done; it is rewritten

    def done(self, cell_id: str, config_hash: str | None = None) -> bool:
        """Finished ok (and, when given, with this configuration hash)."""
        record = self.read(cell_id)
        return (bool(record) and record.get("status") == "ok"
                and (config_hash is None or record.get("config_hash") == config_hash))

    def write(self, record: dict, arrays: dict[str, np.ndarray] | None = None) -> Path:
        """Arrays first, then the record: a record on disk always has its arrays."""
        cell_id = record["cell_id"]
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
