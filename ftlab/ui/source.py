"""The code of a mechanism, shown in the chapter that teaches it.

A chapter prints a function of ``ftlab.lessons`` with :func:`code_of` rather than copying
it into a cell: the learner reads the very code the tests check against the library, and a
test (``tests/test_committed_notebooks.py``) compares each printed listing with the
package, so the two cannot drift apart. The docstring is left out because the chapter's
prose around the cell already says what the docstring says.
"""
from __future__ import annotations

import ast
import inspect
import textwrap
from typing import Callable


def code_of(function: Callable[..., object]) -> str:
    """The source of ``function`` without its docstring (and without blank lines left where
    it was), dedented: what a chapter prints of a mechanism."""
    source = textwrap.dedent(inspect.getsource(function))
    node = ast.parse(source).body[0]
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        raise TypeError(f"code_of({function!r}): give a function, not a {type(node).__name__}")
    lines = source.splitlines()
    first = node.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        del lines[first.lineno - 1:first.end_lineno]
    return "\n".join(lines).rstrip()
