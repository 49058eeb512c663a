"""A record's ``.npz`` read one array at a time, when it is first asked for.

Why: a record of a cell with masks holds its full test maps (3 MB of float32 at 200 x 64 px,
compressed) beside the few kilobytes the report and the claims read (scores, labels, the pixel
summary). Reading every record whole made a 1020-record report decompress about 1.5 GB of maps it
never used; this mapping reads the archive's member list once and each array on first access.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from pathlib import Path

import numpy as np


class StoredArrays(MutableMapping):
    """``{name: array}`` of one ``.npz``; an array is read (and kept) on first access.

    Opening checks the archive (a truncated file raises here, as an eager read would); a damaged
    member raises when it is read, naming the file. Assigned and deleted entries change only this
    mapping, never the file.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        with np.load(self.path, allow_pickle=False) as data:
            self._names = list(data.files)
        self._read: dict[str, np.ndarray] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._read:
            if name not in self._names:
                raise KeyError(name)
            try:
                with np.load(self.path, allow_pickle=False) as data:
                    self._read[name] = data[name]
            except Exception as exc:  # noqa: BLE001 - zipfile, zlib and numpy each raise their own
                raise ValueError(f"array {name!r} of {self.path} is unreadable: {type(exc).__name__}: {exc}") from exc
        return self._read[name]

    def __setitem__(self, name: str, value: np.ndarray) -> None:
        if name not in self._names:
            self._names.append(name)
        self._read[name] = value

    def __delitem__(self, name: str) -> None:
        if name not in self._names:
            raise KeyError(name)
        self._names.remove(name)
        self._read.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._names))

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def __repr__(self) -> str:
        return f"StoredArrays({str(self.path)!r}, {len(self._read)}/{len(self._names)} read)"
