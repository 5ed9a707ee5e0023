"""The layers, read from the code: every import points down, and no two folders import each other.

faces (agent/cli, agent/chat) → evals → agent core (agent/core → agent/models, agent/records)
→ tools → knowledge. Imports inside functions count as much as those at the top of a module.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("agent", "evals", "tools", "knowledge")
# Higher imports lower; folders of the same rank may not import each other.
RANKS = {
    "agent.cli": 7,  # the entry point: it launches every face, the chat included
    "agent.chat": 6,
    "evals": 5,
    "agent.core": 4,
    "agent.models": 3,
    "agent.records": 3,
    "agent": 3,  # agent/__init__.py: the offline environment, set before anything imports Gradio
    "tools": 2,
    "knowledge": 1,
}


def folder(module: str) -> str:
    """The layer folder a module belongs to: agent.core, agent.cli, ..., evals, tools, knowledge."""
    parts = module.split(".")
    if parts[0] == "agent" and len(parts) > 1 and f"agent.{parts[1]}" in RANKS:
        return f"agent.{parts[1]}"
    return parts[0]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every project module ``path`` imports, wherever the import statement is."""
    found: set[str] = set()
    package = module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else module_name(path)
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importing package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            found.add(base)
    return {name for name in found if name.split(".")[0] in PACKAGES}


def product_files() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def arrows() -> dict[tuple[str, str], list[str]]:
    """(from folder, to folder) -> the files that draw that arrow."""
    out: dict[tuple[str, str], list[str]] = defaultdict(list)
    for path in product_files():
        source = folder(module_name(path))
        for target in {folder(name) for name in imports(path)} - {source}:
            out[(source, target)].append(str(path.relative_to(ROOT)))
    return out


def test_every_import_points_down() -> None:
    upward = {
        f"{source} → {target}": files
        for (source, target), files in arrows().items()
        if RANKS[source] <= RANKS[target] and target != "agent"
    }
    assert upward == {}, f"imports that run up or sideways between layers: {upward}"


def test_no_import_loops_between_folders() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    for source, target in arrows():
        graph[source].add(target)

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(
            nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})) for nxt in graph.get(start, ())
        )

    loops = sorted(f"{a} ⇄ {b}" for a in list(graph) for b in graph[a] if reaches(b, a, {b}))
    assert loops == []


@pytest.mark.parametrize(
    ("source", "imported", "allowed"),
    [
        ("agent/core/turn.py", "agent.cli.common", False),
        ("knowledge/search.py", "tools.knowledge", False),
        ("agent/records/turns.py", "agent.core.results", False),
        ("agent/models/calls.py", "agent.records.users", False),
        ("evals/ladder/run.py", "agent.core.turn", True),
        ("agent/cli/ask.py", "evals.bench.agent", True),
    ],
)
def test_the_rule_itself(source: str, imported: str, allowed: bool) -> None:
    """The check catches an arrow that runs back up (so the tests above cannot pass by accident)."""
    a, b = folder(module_name(ROOT / source)), folder(imported)
    assert (RANKS[a] > RANKS[b]) is allowed


MAX_FUNCTION_LINES = 60


def test_no_product_function_is_over_60_lines() -> None:
    """Long functions do several jobs; nested functions count toward the one that holds them."""
    long = sorted(
        f"{path.relative_to(ROOT)}:{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for path in product_files()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    )
    assert long == []
