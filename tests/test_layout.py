"""The package's layers (README, "How it works"): each module imports only from its own
layer's package or from layers below it, and no two modules import each other in a cycle.

Read from the source with ``ast`` (imports inside functions and ``TYPE_CHECKING`` blocks
count too: a cycle that only type checkers see still ties two modules together)."""

from __future__ import annotations

import ast
from pathlib import Path

import coda_aio

PACKAGE = Path(coda_aio.__file__).parent

# Top down. A module's layer is that of the longest prefix listed here.
LAYERS: list[tuple[str, ...]] = [
    ("coda_aio.__main__",),
    ("coda_aio.server",),
    ("coda_aio.routes",),
    ("coda_aio.pty_bridge", "coda_aio.rotator", "coda_aio.proxy"),
    (
        "coda_aio.terminal", "coda_aio.credentials", "coda_aio.agents", "coda_aio.access",
        "coda_aio.persistence", "coda_aio.file_transfer", "coda_aio.capacity",
    ),
    (
        "coda_aio.config", "coda_aio.background", "coda_aio.backoff",
        "coda_aio.files", "coda_aio.web_json", "coda_aio.ports", "coda_aio.prctl",
        "coda_aio.key_file", "coda_aio.process_table", "coda_aio.terminal_commands", "coda_aio.host_check", "coda_aio.secret_env", "coda_aio.connection_guard", "coda_aio",
    ),
]
# The stand-in workspace is a test double shipped for --demo-workspace: outside the layers,
# imported only by __main__ (and tests), importing nothing of the app but primitives.
TESTING = "coda_aio.testing"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> int:
    best, best_len = None, -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    assert best is not None, f"{module} is in no layer: add it to LAYERS and the README"
    return best


def unit_of(module: str) -> str:
    """The package or top-level module a module belongs to: imports inside one unit are free."""
    parts = module.split(".")
    return ".".join(parts[:2])


def imports_of(path: Path, module: str) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("coda_aio"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_pkg else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("coda_aio"):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if (PACKAGE.parent / sub.replace(".", "/")).with_suffix(".py").exists()
                          or (PACKAGE.parent / sub.replace(".", "/")).is_dir() else target)
    return found


def graph() -> dict[str, set[str]]:
    return {
        module_name(p): imports_of(p, module_name(p))
        for p in PACKAGE.rglob("*.py")
        if "web" not in p.relative_to(PACKAGE).parts[:1]
    }


def test_each_module_imports_only_downward() -> None:
    wrong = []
    for module, deps in graph().items():
        if module.startswith(TESTING):
            wrong += [f"{module} -> {d}" for d in deps
                      if not d.startswith(TESTING) and layer_of(d) != len(LAYERS) - 1]
            continue
        for dep in deps:
            if dep.startswith(TESTING):
                if module != "coda_aio.__main__":
                    wrong.append(f"{module} -> {dep} (only __main__ starts the stand-in)")
                continue
            if unit_of(dep) == unit_of(module):
                continue
            if layer_of(dep) < layer_of(module):
                wrong.append(f"{module} (layer {layer_of(module)}) -> {dep} (layer {layer_of(dep)})")
    assert not wrong, "imports from a layer above:\n" + "\n".join(sorted(wrong))


def test_no_import_cycle() -> None:
    deps = graph()
    # Cycles between packages/modules as units (a sub-package's modules may share freely).
    units: dict[str, set[str]] = {}
    for module, targets in deps.items():
        units.setdefault(unit_of(module), set()).update(
            unit_of(t) for t in targets if unit_of(t) != unit_of(module) and t != "coda_aio"
        )
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(unit: str) -> None:
        state[unit] = 1
        stack.append(unit)
        for nxt in sorted(units.get(unit, ())):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if not state.get(nxt):
                visit(nxt)
        stack.pop()
        state[unit] = 2

    for unit in sorted(units):
        if not state.get(unit):
            visit(unit)
