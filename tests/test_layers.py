"""The architecture shows in the tree and holds: layers (import-linter), no cycles, small modules."""

from __future__ import annotations

from pathlib import Path

import subprocess
import sys

import grimp

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "batchnb"
MAX_LINES = 450


def test_the_layers_contract_of_design_md_is_kept():
    # import-linter's own command, on the contract in pyproject.toml; its report names each broken
    # chain. In a process of its own: it reconfigures logging, which other tests read.
    command = Path(sys.executable).with_name("lint-imports")
    out = subprocess.run([str(command), "--config", str(REPO / "pyproject.toml"), "--no-cache"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 kept, 0 broken" in out.stdout


def _strongly_connected(graph: grimp.ImportGraph) -> list[list[str]]:
    modules = sorted(m for m in graph.modules if m.startswith("batchnb"))
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(root: str) -> None:
        # Iterative Tarjan: the package is small, but recursion limits are not a test's business.
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = counter[0]; counter[0] += 1
        stack.append(root); on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if not child.startswith("batchnb"):
                    continue
                if child not in index:
                    index[child] = low[child] = counter[0]; counter[0] += 1
                    stack.append(child); on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop(); on_stack.discard(member); component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))

    for module in modules:
        if module not in index:
            visit(module)
    return found


def test_no_import_cycle_counting_imports_inside_functions():
    graph = grimp.build_graph("batchnb", cache_dir=None, exclude_type_checking_imports=True)  # function bodies count
    # A package's __init__ importing its own children is how a package shows its surface;
    # a cycle through a child importing the package back is still one, and caught.
    cycles = [c for c in _strongly_connected(graph)]
    assert cycles == []


def test_modules_stay_small():
    big = {str(p.relative_to(REPO)): n for p in PACKAGE.rglob("*.py")
           if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert big == {}, f"modules over {MAX_LINES} lines: split them by purpose"


def test_every_layer_folder_of_design_md_is_a_package():
    for folder in ("spec", "formula", "cost", "staging", "node", "engine", "extensions", "backends", "agent",
                   "ui", "cli"):
        assert (PACKAGE / folder / "__init__.py").is_file(), folder
    for module in ("errors", "states", "pool", "job", "task", "result"):
        assert (PACKAGE / f"{module}.py").is_file(), module
