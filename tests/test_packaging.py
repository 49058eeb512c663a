"""Packaging: every third-party import is declared, test tools stay in the `test` extra, and CI runs
exactly the README's install and test commands."""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
PACKAGES = ("bench", "methods", "datasets")

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def _pyproject() -> dict:
    return tomllib.loads((PROJECT / "pyproject.toml").read_text())


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].strip().lower().replace("_", "-") for r in requirements}


def _imported_top_levels() -> set[str]:
    found = set()
    for package in PACKAGES:
        for path in (PROJECT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    found |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - set(PACKAGES) - {"tomli"}


def test_every_imported_package_is_declared():
    project = _pyproject()["project"]
    declared = _names(project["dependencies"])
    # optional features import their package only where used (ray inside bench.run.executors.RayExecutor)
    declared |= {name for extra, reqs in project.get("optional-dependencies", {}).items() if extra != "test"
                 for name in _names(reqs)}
    owners = packages_distributions()
    # optional packages whose import name is not their distribution's, for when they are not installed
    not_installed = {"open_clip": ["open_clip_torch"]}
    missing = {}
    for module in sorted(_imported_top_levels()):
        dists = {d.lower().replace("_", "-") for d in owners.get(module, not_installed.get(module, [module]))}
        if not dists & declared:
            missing[module] = sorted(dists)
    assert not missing, f"imported but not declared in pyproject dependencies: {missing}"


def test_test_tools_are_an_extra_not_a_runtime_dependency():
    project = _pyproject()["project"]
    assert "pytest" not in _names(project["dependencies"])
    assert "pytest" in _names(project["optional-dependencies"]["test"])
    assert "pytest" not in _imported_top_levels()


def test_ci_runs_exactly_the_readme_commands():
    readme = (PROJECT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme, flags=re.S)
    install = next(line for b in blocks for line in b.splitlines() if line.startswith("pip install"))
    test = next(line for b in blocks for line in b.splitlines() if "pytest" in line)
    ci = (PROJECT / ".ci" / "run").read_text().splitlines()
    assert install in ci and test in ci
    assert '".[test,ray]"' in install      # the suite's Ray tests must run in CI, not be skipped


@pytest.mark.parametrize("requirement, minimum", [("pandas", "2.1"), ("scikit-learn", "1.5")])
def test_lower_bounds_cover_the_apis_used(requirement, minimum):
    spec = next(r for r in _pyproject()["project"]["dependencies"] if r.startswith(requirement))
    bound = re.search(r">=\s*([\d.]+)", spec).group(1)
    assert tuple(map(int, bound.split("."))) >= tuple(map(int, minimum.split(".")))
