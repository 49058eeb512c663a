"""One cheap reachability probe, so offline machines fail in seconds with a clear message.

Downloads (hub weights, MedMNIST files) go through libraries that retry for a minute or more
when there is no network; asking the host for a TCP connection first avoids that wait.
"""

from __future__ import annotations

import socket
from functools import lru_cache


@lru_cache(maxsize=32)
def host_reachable(host: str, port: int = 443, timeout: float = 3.0) -> bool:
    if not host:
        return False
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
