"""The package's layering stays true: data <- cleaning <- training <- search <- cli/demo.

Every import of a faceclean module (at module level or inside a function) is read with
``ast``; a module may import only from its own stage or a stage below it, and no two
modules import each other, directly or around a cycle."""

from __future__ import annotations

import ast
import warnings
from pathlib import Path

import pytest

import faceclean

PACKAGE = Path(faceclean.__file__).parent
LAYERS = {"core": 0, "data": 1, "cleaning": 2, "training": 3, "search": 4, "top": 5}
CORE = {"__init__", "errors", "progress", "_lazy", "_legacy", "outputs"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def stage(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1 or (len(parts) == 2 and parts[1] in CORE):
        return "core"
    if parts[1] in ("data", "cleaning", "training", "search"):
        return parts[1]
    return "top"  # cli, demo


def imports(path: Path) -> set[str]:
    """The faceclean modules ``path`` imports (``from faceclean.x import y`` counts as
    ``faceclean.x.y`` when that is a module, else ``faceclean.x``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("faceclean")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.startswith("faceclean"):
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    found.add(sub if sub in MODULES else node.module)
    return found


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def test_the_tree_shows_the_four_stages():
    for name in ("data", "cleaning", "training", "search", "cli"):
        assert (PACKAGE / name / "__init__.py").is_file()
        assert ast.get_docstring(ast.parse((PACKAGE / name / "__init__.py").read_text()))
    flat = {p.stem for p in PACKAGE.glob("*.py")}
    assert flat <= CORE | {"demo"}, f"modules outside a stage: {flat - CORE - {'demo'}}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_from_a_stage_above_its_own(module):
    mine = LAYERS[stage(module)]
    above = [m for m in imports(MODULES[module]) if LAYERS[stage(m)] > mine]
    assert not above, f"{module} ({stage(module)}) imports from a higher stage: {above}"


def test_the_checker_sees_an_upward_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from faceclean.search.face_search import search\n")
    assert imports(bad) == {"faceclean.search.face_search"}
    assert LAYERS[stage("faceclean.search.face_search")] > LAYERS[stage("faceclean.data.store")]


def test_no_import_cycles():
    graph = {m: {i for i in imports(p) if i in MODULES and i != m} for m, p in MODULES.items()}
    # Package __init__s only name their submodules lazily; edges into them are not cycles.
    state: dict[str, int] = {}

    def visit(m: str, trail: list[str]) -> None:
        state[m] = 1
        for n in graph[m]:
            if state.get(n) == 1:
                raise AssertionError("import cycle: " + " -> ".join(trail + [m, n]))
            if n not in state:
                visit(n, trail + [m])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])


def test_old_flat_paths_still_import_with_a_deprecation_warning():
    with pytest.warns(DeprecationWarning, match="faceclean.data.extraction"):
        from faceclean.extract import extract  # noqa: F401
    from faceclean.data import extract as new

    assert extract is new
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from faceclean.search_space import TOKENS as old_tokens
    from faceclean.search import TOKENS, load_space, search  # noqa: F401

    assert old_tokens is TOKENS and callable(search) and callable(load_space)
