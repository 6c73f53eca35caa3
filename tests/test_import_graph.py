"""No import cycle inside ftlab, read from the source, not from what happens to import.

A cycle can work today only because of the order in which modules happen to be first
imported, and break when an unrelated import moves. So every ``import`` statement counts,
at module level or inside a function, and so does what Python runs implicitly: importing
``ftlab.memory.measure`` from outside ``ftlab.memory`` first runs ``ftlab/memory/__init__.py``.
(A module's own ancestors are already running when it runs, so they add no edge.)
"""
from __future__ import annotations

import ast
from pathlib import Path

import ftlab

PACKAGE_DIR = Path(ftlab.__file__).parent


def module_names(package_dir: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py below ``package_dir`` (a package's
    ``__init__.py`` is the package itself)."""
    root = package_dir.name
    names = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = [root, *path.relative_to(package_dir).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def imported_modules(name: str, path: Path, modules: set[str]) -> set[str]:
    """The package's modules that importing ``name`` runs, directly or implicitly."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            targets.add(base)
            targets.update(f"{base}.{alias.name}" for alias in node.names)  # submodules named in the list
    running = set(_ancestors(name))
    edges = set()
    for target in targets & modules:
        edges.add(target)
        edges.update(a for a in _ancestors(target) if a not in running)
    edges.discard(name)
    return edges & modules


def import_graph(package_dir: Path) -> dict[str, set[str]]:
    modules = module_names(package_dir)
    return {name: imported_modules(name, path, set(modules)) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(_cycle_in(graph, component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _cycle_in(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A concrete path start -> ... -> start inside one strongly connected component."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        v = frontier.pop(0)
        for w in sorted(graph[v] & component):
            if w == start:
                return paths[v] + [start]
            if w not in paths:
                paths[w] = paths[v] + [w]
                frontier.append(w)
    raise AssertionError("a strongly connected component always has a cycle")


def test_the_checker_finds_a_cycle_through_a_package_init(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from .high import f\n")
    (pkg / "sub" / "low.py").write_text("X = 1\n")
    (pkg / "sub" / "high.py").write_text("from ..models import g\n")
    (pkg / "models.py").write_text("def g():\n    from .sub.low import X\n    return X\n")
    assert cycles(import_graph(pkg)) == [["pkg.models", "pkg.sub", "pkg.sub.high", "pkg.models"]]


def test_ftlab_has_no_import_cycle():
    found = cycles(import_graph(PACKAGE_DIR))
    assert not found, "import cycles: " + "; ".join(" -> ".join(c) for c in found)


LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("foundation", ("foundation",)),
    ("configuration", ("config",)),
    ("set-up", ("setup",)),
    ("measurement", ("memory",)),
    ("runs", ("runs",)),
    ("training", ("training", "distributed")),
    ("experiments", ("experiments",)),
    ("presentation", ("ui", "cli")),
    ("lessons", ("lessons",)),
)
"""ftlab's layers, bottom to top (the README's module map): each is named and holds one or
two of the package's top-level folders, and a module's layer is its folder's. A module may
import its own layer and those below it, never one above: the training path (everything
below lessons) therefore never imports a lesson, and a lesson may use anything it teaches
with. The tree on disk is this list: every folder is in one layer, every module in a folder."""

ROOT_MODULES: dict[str, str] = {"errors": "foundation", "version": "foundation"}
"""The documented exception to "every module is in a folder": ``ftlab.errors`` (imported by
every layer and by users, as ``from ftlab.errors import ...``) and ``ftlab.version`` (read by
pyproject.toml), both of the foundation layer."""


def layer_of(module: str) -> int | None:
    """The index of the layer ``module`` belongs to, from its top-level folder (or
    :data:`ROOT_MODULES`); None for the package's public face (``ftlab`` itself, which
    gathers the API from every layer but the lessons) and for a module in no layer."""
    parts = module.split(".")
    if len(parts) < 2:
        return None
    top = parts[1]
    if len(parts) == 2 and top in ROOT_MODULES:
        return [name for name, _ in LAYERS].index(ROOT_MODULES[top])
    return next((i for i, (_, folders) in enumerate(LAYERS) if top in folders), None)


def layer_violations(graph: dict[str, set[str]], root: str = "ftlab") -> list[str]:
    lessons = len(LAYERS) - 1
    found = []
    for module, targets in sorted(graph.items()):
        mine = layer_of(module.replace(root, "ftlab", 1))
        for target in sorted(targets):
            theirs = layer_of(target.replace(root, "ftlab", 1))
            if theirs is None:
                continue
            if (mine is None and theirs == lessons) or (mine is not None and theirs > mine):
                where = LAYERS[mine][0] if mine is not None else "the public API"
                found.append(f"{module} ({where}) imports {target} ({LAYERS[theirs][0]})")
    return found


def test_every_ftlab_module_has_a_layer():
    unplaced = [m for m in module_names(PACKAGE_DIR) if m != "ftlab" and layer_of(m) is None]
    assert not unplaced, f"modules in no layer of LAYERS: {unplaced}"


def test_the_folders_are_the_layers():
    """Every top-level folder of the package is in exactly one layer, and every module but
    the package itself and :data:`ROOT_MODULES` lives in a folder."""
    folders = sorted(p.name for p in PACKAGE_DIR.iterdir() if (p / "__init__.py").is_file())
    listed = sorted(f for _, fs in LAYERS for f in fs)
    assert folders == listed, f"folders on disk {folders} != folders in LAYERS {listed}"
    loose = sorted(p.stem for p in PACKAGE_DIR.glob("*.py") if p.stem != "__init__" and p.stem not in ROOT_MODULES)
    assert not loose, f"modules outside a layer folder: {loose}; move each into its layer's folder"


def test_no_module_imports_a_higher_layer():
    found = layer_violations(import_graph(PACKAGE_DIR))
    assert not found, "layering broken:\n" + "\n".join(found)


def test_the_layer_check_catches_the_training_path_importing_a_lesson(tmp_path):
    pkg = tmp_path / "ftlab"
    for sub in ("training", "lessons", "memory"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "lessons" / "decay.py").write_text("def norm():\n    return 1\n")
    (pkg / "training" / "train.py").write_text("def f():\n    from ftlab.lessons.decay import norm\n")
    (pkg / "memory" / "predict.py").write_text("from ..training import train\n")
    assert layer_violations(import_graph(pkg)) == [
        "ftlab.memory.predict (measurement) imports ftlab.training (training)",
        "ftlab.memory.predict (measurement) imports ftlab.training.train (training)",
        "ftlab.training.train (training) imports ftlab.lessons (lessons)",
        "ftlab.training.train (training) imports ftlab.lessons.decay (lessons)",
    ]
