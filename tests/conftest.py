"""Shared fixtures: where the real MedMNIST files live, a fast torch setup, and a checkout that the
suite leaves as it found it (every default cache under a temporary folder, checked at the end)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("UAD_BENCH_SHARED_DATA", PROJECT.parent / "shared" / "data"))
#: What a test run may add to a checkout: interpreter and tool caches, an environment, an install.
TOOL_DEBRIS = re.compile(r"(^|/)(\.venv|venv|__pycache__|\.pytest_cache|\.ruff_cache|[^/]*\.egg-info)(/|$)")


def checkout_state() -> set[str] | None:
    """``git status`` of the checkout with every untracked and ignored file listed one by one (minus
    :data:`TOOL_DEBRIS`); None outside a git checkout."""
    command = ["git", "status", "--porcelain=v1", "-z", "--ignored=traditional", "--untracked-files=all",
               "--", ".", ":(exclude).venv", ":(exclude)venv"]
    try:
        out = subprocess.run(command, cwd=PROJECT, capture_output=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    entries = out.stdout.decode(errors="replace").split("\0")
    return {e for e in entries if e and not TOOL_DEBRIS.search(e[3:])}


@pytest.fixture(autouse=True, scope="session")
def _caches_outside_the_checkout(tmp_path_factory):
    """The default cache (``runs/cache``, decoded datasets included) and the user-level dataset cache
    go to a temporary folder for every test that does not choose its own (``$UAD_BENCH_CACHE``)."""
    before = os.environ.get("UAD_BENCH_CACHE")
    os.environ["UAD_BENCH_CACHE"] = str(tmp_path_factory.mktemp("uad_bench_cache"))
    yield
    if before is None:
        os.environ.pop("UAD_BENCH_CACHE", None)
    else:
        os.environ["UAD_BENCH_CACHE"] = before


@pytest.fixture(autouse=True, scope="session")
def _checkout_left_as_found(_caches_outside_the_checkout):
    """Fails the session (an error at teardown) when the tests added, removed or modified any file of
    the checkout, ignored files included (a cache under runs/, a report under reports/)."""
    before = checkout_state()
    yield
    after = checkout_state()
    if before is None or after is None:
        return
    added, removed = sorted(after - before), sorted(before - after)
    assert not added and not removed, (
        f"the test suite changed the checkout {PROJECT}: new or changed {added[:8]}"
        f"{' ...' if len(added) > 8 else ''}, gone {removed[:8]}{' ...' if len(removed) > 8 else ''}")


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
