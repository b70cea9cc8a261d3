"""The house rules that keep sbrbench one-way: no import cycles, layers, one owner of the run layout."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "sbrbench"


def _modules() -> dict[str, Path]:
    out = {}
    for p in SRC.rglob("*.py"):
        parts = list(p.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _import_graph() -> dict[str, set[str]]:
    """Module → the sbrbench modules it imports anywhere (top level, functions, TYPE_CHECKING)."""
    mods = _modules()

    def resolve(name: str) -> str:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name

    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, p in mods.items():
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                graph[m] |= {resolve(a.name) for a in node.names if a.name.startswith("sbrbench")}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("sbrbench"):
                mod = node.module or ""
                graph[m] |= {f"{mod}.{a.name}" if f"{mod}.{a.name}" in mods else resolve(mod) for a in node.names}
        graph[m].discard(m)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
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
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles_counting_function_level_imports() -> None:
    assert _cycles(_import_graph()) == []


def test_the_cycle_check_finds_a_planted_cycle() -> None:
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(g) == [["a", "b", "c"]]


def _reaches(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for w in graph[todo.pop()]:
            if w not in seen:
                seen.add(w)
                todo.append(w)
    return seen


def test_data_flows_one_way() -> None:
    """cli → {train, evaluate, ablate, reproduce, leaderboard} → results → {models, data, metrics}."""
    g = _import_graph()
    commands = {"sbrbench.train", "sbrbench.evaluate", "sbrbench.ablate", "sbrbench.reproduce", "sbrbench.leaderboard"}
    upper = commands | {m for m in g if m.startswith(("sbrbench.cli", "sbrbench.train."))}
    for low in ("sbrbench.results", "sbrbench.config", "sbrbench.metrics", "sbrbench.batching", "sbrbench.graphs",
                "sbrbench.device"):
        assert not (_reaches(g, low) & upper), f"{low} reaches {sorted(_reaches(g, low) & upper)}"
    for m in g:
        if m.startswith(("sbrbench.models", "sbrbench.data")):
            bad = _reaches(g, m) & (upper | {"sbrbench.results"})
            assert not bad, f"{m} reaches {sorted(bad)}"
    assert "sbrbench.train" not in _reaches(g, "sbrbench.evaluate")
    outside = [m for m in g if not m.startswith("sbrbench.cli") and m != "sbrbench.__main__"]
    assert not [m for m in outside if any(w.startswith("sbrbench.cli") for w in g[m])]


def test_only_results_spells_out_the_run_directory_layout() -> None:
    pattern = re.compile(r"""["'](config\.json|metrics\.json|history\.csv|env\.json|state\.pt|ranks|checkpoint|"""
                         r"""(model|best)\.safetensors)["']""")
    offenders = [f"{p.relative_to(SRC)}:{i}" for p in SRC.rglob("*.py") if p.name != "results.py"
                 for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if pattern.search(line)]
    assert offenders == []


def test_cli_start_up_imports_no_heavy_library() -> None:
    code = ("import sys, sbrbench.cli; heavy = [m for m in ('torch', 'pandas', 'matplotlib', 'scipy') "
            "if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
