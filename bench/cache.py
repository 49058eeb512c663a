"""On-disk cache of trained encoders and their embeddings, keyed by what determines them.

Why: a grid of E encoders x H heads must cost about E trainings, and a rerun none. The key hashes
the dataset (name and parameters), the encoder (name and parameters), the seed and a format
version; nothing else (not the head, not the run) can change an encoder. Entries are written to a
temporary directory and renamed into place, so an interrupted write leaves no half entry.

Entry layout: ``<cache>/<key>/meta.json``, ``encoder.pt`` (state dict; skipped for frozen
encoders, which are rebuilt), ``embeddings.npz`` (``train``, ``val``, ``test`` float32 and
``val_labels``, ``test_labels``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from bench.grid import stable_hash

CACHE_ENV = "UAD_BENCH_CACHE"
FORMAT_VERSION = 1


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV, "runs/cache")).expanduser()


def encoder_key(dataset_spec: dict, encoder_spec: dict, seed: int) -> str:
    payload = {"dataset": dataset_spec, "encoder": {k: v for k, v in encoder_spec.items() if k != "id"},
               "seed": seed, "format": FORMAT_VERSION}
    return stable_hash(payload, 20)


class EncoderCache:
    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else default_cache_dir()

    def path(self, key: str) -> Path:
        return self.root / key

    def has(self, key: str) -> bool:
        return (self.path(key) / "meta.json").is_file() and (self.path(key) / "embeddings.npz").is_file()

    def meta(self, key: str) -> dict:
        return json.loads((self.path(key) / "meta.json").read_text())

    def embeddings(self, key: str) -> dict[str, np.ndarray]:
        with np.load(self.path(key) / "embeddings.npz") as data:
            return {k: data[k] for k in data.files}

    def load_state(self, key: str, encoder) -> None:
        """Load the saved weights into a freshly built ``encoder`` (no-op for frozen encoders)."""
        import torch

        weights = self.path(key) / "encoder.pt"
        if weights.is_file():
            encoder.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        encoder.eval()

    def save(self, key: str, encoder, embeddings: dict[str, np.ndarray], meta: dict) -> Path:
        import torch

        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=self.root, prefix=f".{key}."))
        try:
            if getattr(encoder, "trainable", True):
                torch.save(encoder.state_dict(), tmp / "encoder.pt")
            np.savez(tmp / "embeddings.npz", **embeddings)
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True, default=str))
            final = self.path(key)
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return self.path(key)
