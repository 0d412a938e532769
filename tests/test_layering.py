"""The folders are the architecture: every import in src/stillmotion points down its layers, none goes round.

The rules are those of the design (../shared/DESIGN.md, "Layout"):
``cli, server, webui -> service -> jobs -> engine -> memory, speed, models, media``; ``models`` imports
nothing above it; errors.py, config.py and bounded_json.py are leaves anyone may import (they import
nothing of the package);
the web UI and the API's routes reach jobs through the service; the engine imports no fault switches;
``memory/plan.py`` never touches ``torch.cuda``; and no module imports itself round a circle. Imports are read
with ``ast`` from the source, so every one counts: at the top, inside functions (a deferred import is still a
dependency) and under ``TYPE_CHECKING``. A failure names the file, the line and the rule.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "stillmotion"

# Lowest first. A module imports its own layer and the layers below it, never one above. Within a layer any
# import is allowed (no circles: test_no_module_imports_itself_round_a_circle).
LAYERS: tuple[frozenset[str], ...] = (
    # Leaves and shared helpers: the package itself (__version__), settings, the user-facing errors, atomic
    # writes, logging set-up, the start-up heap freeze.
    frozenset({PACKAGE, "errors", "config", "atomic_file", "bounded_json", "logging_setup", "startup_heap"}),
    frozenset({"models", "media", "memory", "speed"}),
    frozenset({"engine"}),
    # The fault switches are an engine hook (engine/hooks.py) that the worker, the CLI and the benchmark
    # install; the engine never imports them (tests/engine/test_hooks.py).
    frozenset({"jobs", "faults"}),
    frozenset({"service"}),
    frozenset({"server", "webui", "cli", "batch_cli", "cli_progress", "doctor", "bench"}),
)
LAYER_OF = {name: rank for rank, names in enumerate(LAYERS) for name in names}
LEAVES = frozenset({"errors", "config", "bounded_json"})

# Imports that break a rule only in code another helper of issue 18 is rewriting right now. The lead empties
# this list when merging those rewrites; nothing else may be added here: fix the import instead.
KNOWN_OFFENDERS: frozenset[tuple[str, str]] = frozenset()


@dataclass(frozen=True)
class Import:
    """One import statement's target inside the package."""

    importer: str  # module name, e.g. stillmotion.models.family
    imported: str  # the module it loads (a submodule when ``from package import submodule``)
    path: Path
    line: int

    def __str__(self) -> str:
        return f"{self.path.relative_to(SRC)}:{self.line} imports {self.imported}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(source: str, importer: str, is_package: bool) -> list[tuple[str, int]]:
    """(dotted name, line) of every import in ``source``, wherever it is: module level, functions, classes,
    ``if TYPE_CHECKING:``. ``from a import b`` gives ``a.b`` (b may be a submodule); relative imports are
    made absolute."""
    names: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = importer.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            names.extend((f"{base}.{alias.name}", node.lineno) for alias in node.names)
    return names


@cache
def package_imports() -> tuple[dict[str, Path], tuple[Import, ...]]:
    """Every module of the package (name -> file) and every import of one of them by another."""
    modules = {module_name(path): path for path in sorted((SRC / PACKAGE).rglob("*.py"))}
    found: dict[Import, None] = {}  # in order, once per line (``from a import b, c`` is one import of a)
    for importer, path in modules.items():
        is_package = path.name == "__init__.py"
        for name, line in imported_names(path.read_text(), importer, is_package):
            target = name
            while target and target not in modules:  # ``a.b.func`` -> the module ``a.b``
                target = target.rpartition(".")[0]
            if target and target != importer:
                found[Import(importer, target, path, line)] = None
    return modules, tuple(found)


def layer(module: str) -> str:
    """The top-level folder or file of ``module``: stillmotion.jobs.store.db -> jobs."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def broken_rule(item: Import) -> str | None:
    """The rule ``item`` breaks, in words, or None."""
    here, there = layer(item.importer), layer(item.imported)
    if here in LEAVES:
        return "errors.py, config.py and bounded_json.py are leaves: they import nothing of the package"
    if here == "models" and there not in {"models", *LEAVES}:
        return "models/ imports nothing above it (only models and the leaves)"
    if LAYER_OF[there] > LAYER_OF[here]:
        chain = " -> ".join("/".join(sorted(names)) for names in reversed(LAYERS))
        return f"imports point down the layers ({chain}); {here} may not import {there}"
    if here == "webui" and there == "jobs":
        return "the web UI reaches jobs through the service (JobService) only"
    if item.importer.startswith(f"{PACKAGE}.server.routes.") and there == "jobs":
        return "the API's routes reach jobs through the service (JobService) only"
    if here == "engine" and item.imported == f"{PACKAGE}.faults":
        return "the engine imports no fault switches (faults are a hook the worker or the CLI installs)"
    return None


def offences(imports: Iterable[Import]) -> list[str]:
    return [f"{item}: {rule}" for item in imports if (rule := broken_rule(item))]


def test_the_parser_sees_imports_in_functions_and_under_type_checking() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "import stillmotion.errors\n"
        "if TYPE_CHECKING:\n"
        "    from stillmotion.engine.request import ResolvedRequest\n"
        "def load() -> None:\n"
        "    from stillmotion.jobs import store\n"
        "class Late:\n"
        "    def run(self) -> None:\n"
        "        from . import sibling\n"
        "        from ..memory.plan import build_plan\n"
    )
    assert imported_names(source, "stillmotion.models.family", is_package=False) == [
        ("typing.TYPE_CHECKING", 1),
        ("stillmotion.errors", 2),
        ("stillmotion.engine.request.ResolvedRequest", 4),
        ("stillmotion.jobs.store", 6),
        ("stillmotion.models.sibling", 9),
        ("stillmotion.memory.plan.build_plan", 10),
    ]


def test_every_module_sits_in_a_layer() -> None:
    modules, imports = package_imports()
    assert len(modules) > 50 and len(imports) > 200  # the whole package was read
    unplaced = sorted({layer(name) for name in modules} - set(LAYER_OF))
    assert not unplaced, f"put {unplaced} in one of LAYERS (tests/test_layering.py) and the design's layout"


def test_imports_point_down_the_layers_and_through_the_service() -> None:
    _, imports = package_imports()
    found = offences(item for item in imports if (item.importer, item.imported) not in KNOWN_OFFENDERS)
    assert not found, "imports against the layering rules:\n" + "\n".join(found)


def test_known_offenders_still_offend() -> None:
    """An allowed offence that was fixed leaves the list, so the list only shrinks."""
    _, imports = package_imports()
    still = {(item.importer, item.imported) for item in imports if broken_rule(item)}
    fixed = sorted(KNOWN_OFFENDERS - still)
    assert not fixed, f"fixed, remove from KNOWN_OFFENDERS in tests/test_layering.py: {fixed}"


def test_the_memory_plan_never_touches_torch_cuda() -> None:
    """The planner is pure (request + model + budget -> plan): the device is asked in memory/device.py."""
    path = SRC / PACKAGE / "memory" / "plan.py"
    touches = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and node.attr == "cuda" and ast.unparse(node.value) == "torch":
            touches.append(node.lineno)
        elif isinstance(node, ast.Import) and any(a.name.startswith("torch.cuda") for a in node.names):
            touches.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and (
            (node.module or "").startswith("torch.cuda")
            or (node.module == "torch" and any(a.name == "cuda" for a in node.names))
        ):
            touches.append(node.lineno)
    assert not touches, f"memory/plan.py touches torch.cuda at lines {touches}"


def test_no_module_imports_itself_round_a_circle() -> None:
    modules, imports = package_imports()
    edges: dict[str, dict[str, Import]] = {name: {} for name in modules}
    for item in imports:
        edges[item.importer].setdefault(item.imported, item)
    circles = [circle for circle in strongly_connected(edges) if len(circle) > 1]
    described = []
    for circle in circles:
        members = set(circle)
        described.append(
            "a circle of "
            + ", ".join(sorted(members))
            + ":\n"
            + "\n".join(f"  {edges[a][b]}" for a in sorted(members) for b in sorted(edges[a]) if b in members)
        )
    assert not circles, "import circles (a shared part belongs in a module below both):\n" + "\n".join(
        described
    )


def strongly_connected(edges: dict[str, dict[str, Import]]) -> list[list[str]]:
    """Tarjan's strongly connected components, iteratively (no recursion limit on deep chains)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(edges[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(edges[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(component)
    return components
