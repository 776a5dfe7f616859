"""The house: every module of harness/ has a layer in docs/architecture.md, every import points
to its own layer or one below, and the import graph has no circle. Imports inside functions
and under `if TYPE_CHECKING:` count: a lazy import hides a loop, it does not remove it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HARNESS = ROOT / "harness"
ARCHITECTURE = ROOT / "docs" / "architecture.md"


def layers() -> dict[str, tuple[int, str]]:
    """module (without `harness.`) -> (layer number, layer name), from the ```layers block."""
    block = re.search(r"^```layers\n(.*?)^```", ARCHITECTURE.read_text(), re.MULTILINE | re.DOTALL)
    assert block, f"{ARCHITECTURE} has no ```layers block"
    found: dict[str, tuple[int, str]] = {}
    for line in block.group(1).splitlines():
        number, _, rest = line.partition(" ")
        name, _, modules = rest.partition(":")
        for module in modules.split():
            assert module not in found, f"{module} is in two layers"
            found[module] = (int(number), name)
    return found


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(HARNESS.rglob("*.py")):
        parts = path.relative_to(HARNESS).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if name:  # harness/__init__.py: the package's docstring, imports nothing
            found[name] = path
    return found


def imports(path: Path, known: set[str]) -> set[str]:
    """The harness modules `path` imports, wherever in the file the import is."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            if name.startswith("harness.") and name.removeprefix("harness.") in known:
                found.add(name.removeprefix("harness."))
    return found


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(path, set(found)) - {name} for name, path in found.items()}


def test_every_module_has_a_layer() -> None:
    assigned = layers()
    missing = sorted(set(modules()) - set(assigned))
    stale = sorted(set(assigned) - set(modules()))
    assert not missing, f"modules with no layer in docs/architecture.md: {missing}"
    assert not stale, f"docs/architecture.md names modules that do not exist: {stale}"


def test_imports_point_down() -> None:
    assigned = layers()
    upward = [f"{module} ({assigned[module][1]}) imports {target} ({assigned[target][1]})"
              for module, targets in graph().items() for target in sorted(targets)
              if assigned[target][0] > assigned[module][0]]
    assert not upward, "imports that run up a layer:\n" + "\n".join(upward)


def test_no_import_circle() -> None:
    edges = graph()
    state: dict[str, str] = {}
    circles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(edges[module]):
            if state.get(target) == "open":
                circles.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[module] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert not circles, "import circles:\n" + "\n".join(" -> ".join(c) for c in circles)


def test_the_check_sees_a_lazy_upward_import(tmp_path: Path) -> None:
    """The checker itself: an import inside a function is found."""
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from harness.cell import run_cell\n    return run_cell\n")
    assert imports(source, {"cell", "archive"}) == {"cell"}
