"""Shared fixtures: where the real MedMNIST files live, and a fast torch setup."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("UAD_BENCH_SHARED_DATA", PROJECT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` with the real PneumoniaMNIST/BreastMNIST files (never committed)."""
    if not (SHARED_DATA / "pneumoniamnist.npz").exists():
        pytest.skip(f"real MedMNIST files not found in {SHARED_DATA} (set UAD_BENCH_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    """Two cores: keep intra-op threads at 2 so parallel test work does not thrash."""
    try:
        import torch

        torch.set_num_threads(min(2, os.cpu_count() or 1))
    except ImportError:  # pragma: no cover
        pass
    yield


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module (``pytestmark = pytest.mark.usefixtures("one_thread")``):
    several test runs share two cores, and OpenMP oversubscription makes small convs ten times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
