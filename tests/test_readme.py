"""The README's code runs: every ```python block of README.md, so the docs cannot drift from the package.

Each block is checked twice. Its imports run as written, so a name that moved fails here rather than in a
learner's first cell. Then the whole block runs at a ``ci`` size (``FTLAB_PROFILE=ci``, a temporary
``FTLAB_RUNS``): the README shows SmolLM2 runs of 48 steps and searches of 12 trials, which take minutes, so
every ``RunConfig(...)`` call gets the tiny model and a few steps (its other knobs kept as written), a search
gets 2 trials, and a name the prose defines elsewhere (``base``) is a ci-sized config.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"

CI_SIZE = {"model": "tiny", "max_steps": 2, "eval_steps": 2, "train_size": 40, "eval_size": 4, "exact_match_size": 2,
           "max_new_tokens": 4}
"""What every ``RunConfig(...)`` of the README gets: seconds of training instead of minutes."""
CI_CALLS = {"n_trials": 2}
"""Keywords of other calls, shrunk the same way (a search's trials)."""

def python_blocks(text: str) -> list[tuple[int, str]]:
    """(line, code) of each ```python block."""
    return [(text[:m.start()].count("\n") + 2, m.group(1))
            for m in re.finditer(r"^```python\n(.*?)^```", text, re.MULTILINE | re.DOTALL)]


def _blocks() -> list:
    return [pytest.param(code, id=f"README.md:{line}")
            for line, code in python_blocks(README.read_text(encoding="utf-8"))]


class CiSized(ast.NodeTransformer):
    """Rewrites the calls of a block to the ``ci`` size (see the module's docstring)."""

    def visit_Call(self, node: ast.Call) -> ast.Call:
        self.generic_visit(node)
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        sizes = CI_SIZE if name == "RunConfig" else CI_CALLS
        shrunk = [ast.keyword(arg=k, value=ast.Constant(v)) for k, v in sizes.items()
                  if name == "RunConfig" or any(kw.arg == k for kw in node.keywords)]
        node.keywords = [kw for kw in node.keywords if kw.arg not in sizes] + shrunk
        return node


def test_the_readme_has_python_blocks():
    assert len(python_blocks(README.read_text(encoding="utf-8"))) >= 2


@pytest.mark.parametrize("code", _blocks())
def test_a_readme_blocks_imports_run(code):
    imports = [node for node in ast.parse(code).body if isinstance(node, (ast.Import, ast.ImportFrom))]
    assert imports
    exec(compile(ast.Module(body=imports, type_ignores=[]), "README.md", "exec"), {})


@pytest.mark.parametrize("code", _blocks())
def test_a_readme_block_runs_at_ci_size(code, tmp_path, monkeypatch):
    monkeypatch.setenv("FTLAB_PROFILE", "ci")
    monkeypatch.setenv("FTLAB_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    from ftlab import Run, RunConfig

    tree = ast.fix_missing_locations(CiSized().visit(ast.parse(code)))
    names = {"base": RunConfig(**CI_SIZE)}
    exec(compile(tree, "README.md", "exec"), names)
    runs = [value for value in names.values() if isinstance(value, Run)]
    assert all(run.config.max_steps == CI_SIZE["max_steps"] for run in runs)  # trained at the ci size
