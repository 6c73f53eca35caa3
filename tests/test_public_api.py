"""The public surface: what ``import ftlab`` offers the chapters, and what it costs.

A chapter imports from ``ftlab`` itself (plus the ``ftlab.lessons`` modules whose mechanism
it shows), so the folders below may move without breaking a chapter; ``import ftlab`` loads
none of the heavy libraries, so a command, a worker or a test that needs one function does
not pay seconds for the rest.
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import ftlab

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb")) + sorted((ROOT / "notebooks").glob("solutions/*.ipynb"))
PACKAGE_DIR = Path(ftlab.__file__).parent
HEAVY = ("torch", "transformers", "peft", "bitsandbytes", "datasets", "optuna", "matplotlib", "ray", "scipy",
         "accelerate", "ipywidgets")
"""Libraries that ``import ftlab`` must leave for the first function that needs them."""
LESSONS = "ftlab.lessons"


def _code_cells(path: Path) -> list[tuple[int, ast.Module]]:
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return [(i, ast.parse("".join(c["source"]))) for i, c in enumerate(cells) if c["cell_type"] == "code"]


def outside_the_surface(tree: ast.Module, public: set[str]) -> list[str]:
    """What a cell reaches in ftlab beyond ``public`` and the lessons: ``from ftlab.x import``
    of a module that is not a lesson, a name ``from ftlab import`` does not offer, an
    ``import ftlab.x``, and ``ftlab.x`` attribute access to something not public."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "ftlab":
            module = node.module or ""
            if module == "ftlab":
                found += [f"from ftlab import {a.name}" for a in node.names if a.name not in public]
            elif module == LESSONS:
                pass  # from ftlab.lessons import weight_decay as wd: a lesson module
            elif not module.startswith(LESSONS + "."):
                found.append(f"from {module} import {', '.join(a.name for a in node.names)}")
        elif isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names
                      if a.name.startswith("ftlab.") and not a.name.startswith(LESSONS + ".")]
        elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "ftlab"
              and node.attr not in public):
            found.append(f"ftlab.{node.attr}")
    return found


def test_the_check_finds_imports_from_outside_the_surface():
    tree = ast.parse("import ftlab\nfrom ftlab import train, hidden\nfrom ftlab.runs.table import values\n"
                     "from ftlab.lessons import lion\nfrom ftlab.lessons.lion import lion_step\nimport ftlab.memory\n"
                     "ftlab.train(c)\nftlab.setup.data.load_data(c)\n")
    assert outside_the_surface(tree, {"train"}) == [
        "from ftlab import hidden", "from ftlab.runs.table import values", "import ftlab.memory", "ftlab.setup"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_a_chapter_imports_only_the_public_surface_and_its_lessons(path: Path):
    public = set(ftlab.__all__)
    found = [f"cell {i}: {what}" for i, tree in _code_cells(path) for what in outside_the_surface(tree, public)]
    assert not found, (f"{path.name} reaches past ftlab's public surface (add the name to ftlab._PUBLIC, or "
                       f"import it from ftlab): " + "; ".join(found))


def test_every_public_name_is_there():
    assert len(set(ftlab.__all__)) == len(ftlab.__all__), "a name is listed twice in ftlab._PUBLIC"
    missing = [name for name in ftlab.__all__ if not hasattr(ftlab, name)]
    assert not missing, f"ftlab.__all__ names what its modules do not have: {missing}"


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'plot_landscapes'"):
        ftlab.plot_landscapes  # noqa: B018


def _loaded_after(code: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport sys\nprint(' '.join(sorted(sys.modules)))"],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    loaded = set(out.stdout.split())
    return [lib for lib in HEAVY if lib in loaded]


def test_import_ftlab_loads_no_heavy_library():
    assert _loaded_after("import ftlab") == []


def test_the_check_sees_a_heavy_library():
    assert _loaded_after("import ftlab, json; import optuna") == ["optuna"]


def test_every_package_declares_all_once():
    """``__all__`` is what a package offers: written once, not grown in several blocks."""
    wrong = []
    for init in sorted(PACKAGE_DIR.rglob("__init__.py")):
        tree = ast.parse(init.read_text(encoding="utf-8"))
        writes = [n for n in tree.body if isinstance(n, (ast.Assign, ast.AnnAssign, ast.AugAssign))
                  and "__all__" in {getattr(t, "id", None) for t in getattr(n, "targets", [getattr(n, "target", None)])}]
        if len(writes) != 1 or isinstance(writes[0], ast.AugAssign):
            wrong.append(f"{init.relative_to(PACKAGE_DIR.parent)}: {len(writes)} writes of __all__")
    assert not wrong, "; ".join(wrong)


def test_the_readme_module_map_names_every_module():
    """The README's module map is the folder tree: each module is named there, by its path
    (``setup/presets``) or by its name in its folder's row (``memory/`` ... ``predict``)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("### Module map")
    the_map = readme[start:readme.index("\n## ", start)]
    missing = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = path.relative_to(PACKAGE_DIR).with_suffix("").parts
        if parts[-1] in ("__init__", "__main__"):
            continue
        named = f"`{'/'.join(parts)}`" in the_map
        in_folder_row = any(f"`{'/'.join(parts[:i])}/`" in row and f"`{parts[-1]}`" in row
                            for row in the_map.splitlines() for i in range(1, len(parts)))
        if not (named or in_folder_row):
            missing.append("/".join(parts))
    assert not missing, f"modules missing from the README's module map: {missing}"


def test_the_type_checking_imports_are_the_public_table():
    """``ftlab/__init__.py`` names each public name twice: in ``_PUBLIC`` (what ``__getattr__``
    imports on first use) and in an ``if TYPE_CHECKING:`` block (what type checkers, editors and
    readers see). They must be the same names from the same modules."""
    import ast

    import ftlab
    tree = ast.parse(Path(ftlab.__file__).read_text(encoding="utf-8"))
    block = next(node for node in tree.body if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING")
    seen: dict[str, tuple[str, ...]] = {}
    for node in block.body:  # one module's names may take several lines
        seen[node.module] = seen.get(node.module, ()) + tuple(a.name for a in node.names)
    assert seen == dict(ftlab._PUBLIC)


LOUD_AT_IMPORT = ("transformers", "peft", "accelerate", "bitsandbytes", "datasets", "trl")
"""Libraries whose import (directly or through what they import) can log or draw a progress bar,
which ``import ftlab`` quiets inside a kernel: bitsandbytes warns at import on AVX512-BF16 CPUs."""


def imported_before_ftlab(tree: ast.Module) -> list[str]:
    """The loud libraries a cell imports before its first import of ftlab (in source order)."""
    found = []
    for node in sorted((n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))), key=lambda n: n.lineno):
        names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
        if any(n.split(".")[0] == "ftlab" for n in names):
            return found
        found += [n for n in names if n.split(".")[0] in LOUD_AT_IMPORT]
    return found


def test_the_order_check_sees_a_library_imported_before_ftlab():
    assert imported_before_ftlab(ast.parse("import torch\nfrom transformers.x import y\nfrom ftlab import train\n")) \
        == ["transformers.x"]
    assert imported_before_ftlab(ast.parse("from ftlab import train\nfrom transformers.x import y\n")) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_a_chapter_imports_ftlab_before_any_library_that_logs_at_import(path: Path):
    """A library imported before ftlab in a kernel logs before ftlab has quieted it, and the
    saved notebook keeps the line (chapter 04 once kept bitsandbytes' Hub-kernel warning)."""
    for i, tree in _code_cells(path):
        if any(isinstance(n, (ast.Import, ast.ImportFrom)) for n in ast.walk(tree)):
            early = imported_before_ftlab(tree)
            assert not early, f"{path.name} cell {i} imports {early} before ftlab: import ftlab first"
            if any(isinstance(n, ast.ImportFrom) and (n.module or "").split(".")[0] == "ftlab"
                   or isinstance(n, ast.Import) and any(a.name.split(".")[0] == "ftlab" for a in n.names)
                   for n in ast.walk(tree)):
                return
