"""A chapter's exercises stay unspoiled wherever the chapter is read.

GitHub, nbviewer, VS Code and Colab ignore ``jupyter.source_hidden``: an answer cell that
JupyterLab collapses shows its code and its printed answer right under the question
everywhere else. So after its exercises heading a chapter keeps each question, a
"**Your prediction:**" line and an empty code cell to try it in (comments only, such as
``# your try``), and names the notebook that holds the worked answers,
``notebooks/solutions/<chapter>_solutions.ipynb``. That notebook starts as a chapter does,
with the hosted-setup cell (so it opens and runs on Colab and Kaggle) and then the
parameters cell (``PROFILE = None``, so papermill and nbval choose its workload).
"""
from __future__ import annotations

import ast

import json
import re
from pathlib import Path
from typing import Any

import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
CHAPTERS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
SOLUTIONS = sorted((NOTEBOOK_DIR / "solutions").glob("*.ipynb"))
EXERCISES_HEADING = re.compile(r"^#{1,6}\s+Exercises\b", re.MULTILINE | re.IGNORECASE)
HOW_TO_MOVE = ("move each answer (its code and executed output) to {solutions}, under its question, and leave in the "
               "chapter the question, a '**Your prediction:** _..._' line and an empty code cell '# your try'")


def _cells(path: Path) -> list[dict[str, Any]]:
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def _source(cell: dict[str, Any]) -> str:
    source = cell.get("source", "")
    return source if isinstance(source, str) else "".join(source)


def _tags(cell: dict[str, Any]) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def _hidden(cell: dict[str, Any]) -> bool:
    return bool(cell.get("metadata", {}).get("jupyter", {}).get("source_hidden"))


def exercises_start(cells: list[dict[str, Any]]) -> int | None:
    """The index of the markdown cell with the chapter's exercises heading (``## Exercises...``), or None."""
    return next((i for i, c in enumerate(cells) if c["cell_type"] == "markdown" and EXERCISES_HEADING.search(_source(c))),
                None)


def solutions_of(chapter: Path) -> Path:
    return chapter.parent / "solutions" / f"{chapter.stem}_solutions.ipynb"


def _relative(path: Path) -> str:
    return path.relative_to(NOTEBOOK_DIR.parent).as_posix()


def only_comments(source: str) -> bool:
    """A learner's empty try: nothing but blank lines and comments."""
    return all(not line.strip() or line.lstrip().startswith("#") for line in source.splitlines())


def only_checks(source: str) -> bool:
    """A cell of ``assert`` statements that nbval runs to check the chapter's own results: it
    prints nothing and answers no question."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return False
    return bool(tree.body) and all(isinstance(node, ast.Assert) for node in tree.body)


def answers_left(cells: list[dict[str, Any]]) -> list[str]:
    """What a reader sees of an answer in a chapter, one line each: a collapsed (``source_hidden``)
    cell anywhere, and code after the exercises heading that is more than comments."""
    start = exercises_start(cells)
    found = [f"cell {i}: a collapsed answer cell (jupyter.source_hidden), shown in full outside JupyterLab"
             for i, c in enumerate(cells) if c["cell_type"] == "code" and _hidden(c)]
    if start is not None:
        for i, cell in enumerate(cells[start + 1:], start + 1):
            if (cell["cell_type"] == "code" and not _hidden(cell) and not only_comments(_source(cell))
                    and not (only_checks(_source(cell)) and not cell.get("outputs"))):
                first = next(line for line in _source(cell).splitlines() if line.strip() and not line.lstrip().startswith("#"))
                found.append(f"cell {i}: code after the exercises heading: {first.strip()[:70]!r}")
    return found


WITH_EXERCISES = [p for p in CHAPTERS if exercises_start(_cells(p)) is not None]


# --- the checks on small synthetic notebooks --------------------------------------------------------------


def _code(source: str, hidden: bool = False) -> dict[str, Any]:
    metadata = {"jupyter": {"source_hidden": True, "outputs_hidden": True}} if hidden else {}
    return {"cell_type": "code", "metadata": metadata, "source": source, "outputs": [], "execution_count": None}


def _markdown(source: str) -> dict[str, Any]:
    return {"cell_type": "markdown", "metadata": {}, "source": source}


def test_the_check_finds_answers_left_in_a_chapter() -> None:
    cells = [_code("x = 1"), _markdown("## Exercises: predict, then run\n\n### 1. A question"),
             _code("# your try\n\n# a hint"), _code("print(x)", hidden=True), _code("# the answer\ny = x + 1")]
    assert answers_left(cells) == ["cell 3: a collapsed answer cell (jupyter.source_hidden), shown in full outside JupyterLab",
                                   "cell 4: code after the exercises heading: 'y = x + 1'"]
    assert answers_left(cells[:3]) == []
    assert answers_left(cells[:3] + [_code("# checked by nbval\nassert x == 1")]) == []  # a silent check is no answer
    assert answers_left([_code("print(1)", hidden=True)]) == [
        "cell 0: a collapsed answer cell (jupyter.source_hidden), shown in full outside JupyterLab"]


def test_the_exercises_heading_is_a_markdown_heading() -> None:
    assert exercises_start([_code("# Exercises"), _markdown("Exercises below"), _markdown("### Exercises")]) == 2
    assert exercises_start([_markdown("## The exercises of chapter 02")]) is None


# --- the committed notebooks ------------------------------------------------------------------------------


def test_there_are_chapters_with_exercises() -> None:
    assert len(WITH_EXERCISES) >= 4


@pytest.mark.parametrize("path", WITH_EXERCISES, ids=[p.name for p in WITH_EXERCISES])
def test_a_chapter_with_exercises_has_a_solutions_notebook(path: Path) -> None:
    solutions = solutions_of(path)
    assert solutions.is_file(), (f"{path.name} has an exercises section but no {_relative(solutions)}: "
                                 + HOW_TO_MOVE.format(solutions=_relative(solutions)))


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.name for p in CHAPTERS])
def test_a_chapter_keeps_no_answer_under_its_questions(path: Path) -> None:
    found = answers_left(_cells(path))
    assert not found, (f"{path.name}: {len(found)} answer cells a reader sees under the questions (GitHub, nbviewer, "
                       f"VS Code and Colab ignore source_hidden); "
                       + HOW_TO_MOVE.format(solutions=_relative(solutions_of(path))) + ":\n" + "\n".join(found))


@pytest.mark.parametrize("path", WITH_EXERCISES, ids=[p.name for p in WITH_EXERCISES])
def test_a_chapters_exercises_name_its_solutions_notebook(path: Path) -> None:
    cells = _cells(path)
    exercises = "\n".join(_source(c) for c in cells[exercises_start(cells):] if c["cell_type"] == "markdown")
    name = f"solutions/{solutions_of(path).name}"
    assert name in exercises, (f"{path.name}: its exercises' markdown does not say where the worked answers are; "
                               f"name `{name}` in it (as 06b_lora_knobs.ipynb does)")


@pytest.mark.parametrize("path", SOLUTIONS, ids=[p.name for p in SOLUTIONS])
def test_a_solutions_notebook_belongs_to_a_chapter(path: Path) -> None:
    chapter = NOTEBOOK_DIR / f"{path.stem.removesuffix('_solutions')}.ipynb"
    assert path.stem.endswith("_solutions") and chapter.is_file(), (
        f"{_relative(path)}: no chapter {_relative(chapter)}; a solutions notebook is named <chapter>_solutions.ipynb")


@pytest.mark.parametrize("path", SOLUTIONS, ids=[p.name for p in SOLUTIONS])
def test_a_solutions_notebook_starts_with_the_hosted_setup_and_parameters_cells(path: Path) -> None:
    code = [c for c in _cells(path) if c["cell_type"] == "code"]
    chapter = NOTEBOOK_DIR / f"{path.stem.removesuffix('_solutions')}.ipynb"
    hosted = [c for c in (_cells(chapter) if chapter.is_file() else []) if "hosted-setup" in _tags(c)]
    assert code and "hosted-setup" in _tags(code[0]), (
        f"{_relative(path)}: its first code cell must be the chapter's cell tagged 'hosted-setup' (copy it unchanged, "
        f"with its tag): without it the notebook cannot run on Colab or Kaggle")
    assert not hosted or _source(code[0]) == _source(hosted[0]), (
        f"{_relative(path)}: its hosted-setup cell differs from {chapter.name}'s; copy the chapter's unchanged")
    assert len(code) > 1 and "parameters" in _tags(code[1]) and "PROFILE = None" in _source(code[1]), (
        f"{_relative(path)}: its second code cell must be the chapter's parameters cell (tagged 'parameters', with "
        f"PROFILE = None), so that papermill and nbval set its workload")
    injected = [i for i, c in enumerate(_cells(path)) if "injected-parameters" in _tags(c)]
    assert not injected, (f"{_relative(path)}: cell {injected} holds papermill's injected parameters, which would pin "
                          f"every later run to that profile; strip it")
