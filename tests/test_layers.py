"""The layers are true: ``bench`` -> ``methods`` -> ``datasets``, never the reverse, and no cycles.

Every import counts, also the ones inside functions (a lazy import is still a dependency), so the
test walks the AST of every module rather than ``sys.modules`` after an import.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
PACKAGES = ("bench", "methods", "datasets")
#: which top-level packages each package may import
ALLOWED = {"datasets": {"datasets"}, "methods": {"methods", "datasets"},
           "bench": {"bench", "methods", "datasets"}}


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((PROJECT / pkg).rglob("*.py")):
            parts = list(path.relative_to(PROJECT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _resolve(name: str, modules: dict) -> str | None:
    """The project module an imported name refers to (the longest prefix that is a module)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                names = [f"{base}.{a.name}" for a in node.names] or [base]
            for name in names:
                target = _resolve(name, modules)
                if target and target != mod:
                    graph[mod].add(target)
    return graph


def test_no_back_edges_between_layers():
    bad = [f"{src} imports {dst}" for src, dsts in import_graph().items() for dst in sorted(dsts)
           if dst.split(".")[0] not in ALLOWED[src.split(".")[0]]]
    assert not bad, "imports against the layers (bench -> methods -> datasets):\n" + "\n".join(bad)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    cycles = _cycles(import_graph())
    assert not cycles, "import cycles (lazy imports count):\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_graph_sees_function_level_imports():
    graph = import_graph()
    # bench.cli imports the runner only inside its command functions
    assert any(dst.startswith("bench.run") for dst in graph["bench.cli"])


def test_building_a_report_does_not_import_torch(tmp_path):
    """A report (tables, statistics, figures, diagnostics) is built from records alone."""
    code = (f"import sys\nfrom pathlib import Path\nsys.path.insert(0, {str(PROJECT / 'tests')!r})\n"
            "from test_report import make_fake_run\nfrom bench.report import build_report\n"
            f"run = make_fake_run(Path({str(tmp_path)!r}))\n"
            f"build_report(run, Path({str(tmp_path / 'report')!r}), n_resamples=50, tsne_points=60, strict=True)\n"
            "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'methods'))\n"
            "assert not loaded, loaded")
    subprocess.run([sys.executable, "-c", code], cwd=PROJECT, check=True)
