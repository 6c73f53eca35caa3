"""A workshop's dress rehearsal on a real JupyterHub: a teacher and two learners, chapter 08.

The teacher prepares chapter 08 into the room's shared run cache (``ftlab prepare``), which
also opens the class study on the journal beside it. Two learners log in at the hub's login
page in headless Chromium, open chapter 08 in their own JupyterLab and, at the same time, run
its setup, its searches (every run the teacher prepared must come back from the shared cache,
none trained again), its workshop cell (which joins the class study) and, as the chapter's
Explore section says, a SearchWidget on the class study, whose Search button each presses.
The teacher's ClassStudy must then count every learner's trials exactly once, and no browser
console, hub, proxy, server or kernel log may report an error.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import pytest

from hubserver import HUB_OUT, LEARNERS
from labserver import NOTEBOOKS

CHAPTER = next(iter(sorted(NOTEBOOKS.glob("08_*.ipynb"))), None)
SETUP = "import math, warnings, optuna, ftlab"
SEARCHES = "calls = []"
WORKSHOP = "import os\nfrom ftlab import ClassStudy"
EXPLORE = "from ftlab import SearchWidget"
"""The chapter's cells a learner runs, by how their source begins."""
CLASS_TRIALS = 2
"""Trials each learner's SearchWidget adds to the class study."""
JOIN_CLASS = ("from ftlab.ui.widgets import SearchWidget\n"
              f'class_search = SearchWidget(storage=journal, study_name="class", n_trials={CLASS_TRIALS})\n'
              "class_search")
"""The cell a learner adds below the Explore widget, as the chapter tells them to."""
OK_COLOUR = "#1a7f37"
"""A RunnerWidget's status colour for a finished press (base.STATUS_COLORS['ok'])."""
PREPARE_S = 240
CELL_S = 180

if CHAPTER is None:
    pytest.skip("JupyterHub dress rehearsal skipped: notebooks/08_*.ipynb does not exist", allow_module_level=True)


@dataclass
class Rehearsal:
    """What the room did and saw, for the checks below."""

    class_before: dict[str, Any]
    class_after: dict[str, Any]
    run_files_prepared: set[str]
    run_files_after_searches: set[str]
    search_sources: dict[str, list[str]]
    search_todo: dict[str, list[int]]
    class_search_status: dict[str, dict[str, Any]]
    output_problems: dict[str, list[str]]
    console_errors: list[str]
    log_errors: list[str]
    seconds: dict[str, float] = field(default_factory=dict)


def _learner_copy(home: Path) -> str:
    """Chapter 08 in ``home`` as a learner gets it: ``PROFILE = "ci"`` injected the way papermill
    does (as tests/browser does), outputs cleared, so each prompt shows a number only once run."""
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    nb = parameterize_notebook(load_notebook_node(str(CHAPTER)), {"PROFILE": "ci"})
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    home.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, home / CHAPTER.name)
    return CHAPTER.name


def _run_files(runs: Path) -> set[str]:
    return {str(p.relative_to(runs)) for p in runs.rglob("*.json") if "prepare" not in p.parts}


def _parameter_cells(path: Path) -> list[int]:
    """Indexes of the parameters cell and the one papermill injected after it."""
    cells = json.loads(path.read_text())["cells"]
    return [i for i, c in enumerate(cells) if {"parameters", "injected-parameters"} & set(c["metadata"].get("tags", []))]


def _arrive(hub, contexts, timings: dict[str, float]) -> tuple[list, str]:
    """Each learner gets their copy of the chapter, logs in at the hub and opens it; the
    learners and the chapter's path in their homes."""
    import labpage as lp
    from learner import Learner

    learners = []
    for name, context in zip(LEARNERS, contexts):
        lab = hub.lab(name)
        path = _learner_copy(lab.notebooks)
        learner = Learner(name, context.new_page(), lab)
        learner.page.set_default_timeout(60_000)
        learners.append(learner)
        timings[f"{name}_login_s"] = learner.log_in(hub.url)
        timings[f"{name}_open_s"] = lp.open_notebook(learner.page, lab, path, f"rehearsal-{name}")
    hub.track()  # the servers and kernels the hub started, ended by id even if the hub dies
    return learners, path


def _search_the_class_study(learners, path: str) -> dict[str, dict[str, Any]]:
    """Each learner adds the class-study SearchWidget below the chapter's Explore widget, runs
    it, and presses Search, all at once; the status each widget ends with."""
    from learner import run_together, status, wait_finished

    added = [lr.add_cell_below(lr.cell(path, EXPLORE), JOIN_CLASS) for lr in learners]
    run_together(learners, added, CELL_S)
    widgets = [cell.locator(".ftlab-search-widget") for cell in added]
    for widget in widgets:
        widget.locator(".ftlab-search").click()
    for widget in widgets:
        wait_finished(widget, CELL_S)
    return {lr.name: status(w) for lr, w in zip(learners, widgets)}


@pytest.fixture(scope="module")
def rehearsal(hub, teacher, browser) -> Rehearsal:
    """The whole session of the room, both learners in lockstep; every page left (its kernels
    shut down first) before the logs are read."""
    import labpage as lp
    from learner import run_together

    seconds: dict[str, float] = {}
    HUB_OUT.mkdir(parents=True, exist_ok=True)
    contexts = [browser.new_context(viewport={"width": 1400, "height": 1000}) for _ in LEARNERS]
    learners = []
    try:
        learners, path = _arrive(hub, contexts, seconds)
        for index in _parameter_cells(learners[0].lab.notebooks / path):
            run_together(learners, [lr.page.locator(".jp-NotebookPanel .jp-Cell").nth(index) for lr in learners], CELL_S)
        seconds["setup_s"] = run_together(learners, [lr.cell(path, SETUP) for lr in learners], CELL_S)

        started = time.perf_counter()
        teacher.wait_prepared(PREPARE_S)
        seconds["waited_for_prepare_s"] = time.perf_counter() - started
        class_before = teacher.class_summary()
        prepared = _run_files(teacher.runs)

        searches = [lr.cell(path, SEARCHES) for lr in learners]
        seconds["searches_s"] = run_together(learners, searches, CELL_S)
        after_searches = _run_files(teacher.runs)
        sources = {lr.name: lr.trial_sources(cell) for lr, cell in zip(learners, searches)}
        todo = {lr.name: lr.trials_to_run(cell) for lr, cell in zip(learners, searches)}

        seconds["workshop_cell_s"] = run_together(learners, [lr.cell(path, WORKSHOP) for lr in learners], CELL_S)
        started = time.perf_counter()
        search_status = _search_the_class_study(learners, path)
        seconds["class_search_s"] = time.perf_counter() - started
        for learner in learners:
            learner.page.screenshot(path=str(HUB_OUT / f"{learner.name}.png"))
        class_after = teacher.class_summary()
        problems = {lr.name: lp.output_problems(lr.page) for lr in learners}
    finally:
        for learner in learners:
            learner.lab.shutdown_kernels()  # while the page is open: see tests/browser/conftest.py
            learner.leave()
        for context in contexts:
            context.close()
    (HUB_OUT / "timings.json").write_text(json.dumps({k: round(v, 1) for k, v in seconds.items()}, indent=1) + "\n")
    return Rehearsal(class_before, class_after, prepared, after_searches, sources, todo, search_status, problems,
                     [e for lr in learners for e in lr.console_errors], hub.log_errors(), seconds)


def test_class_study_counts_every_learner_trial_once(rehearsal):
    """The teacher's ClassStudy, after the room: the trials the prepared chapter had, plus exactly
    each learner's own, credited to that learner (their JupyterHub name); the workshop cell each
    learner ran re-contributed the chapter's runs and added nothing."""
    before, after = rehearsal.class_before, rehearsal.class_after
    assert before["trials"] > 0 and not set(before["contributors"]) & set(LEARNERS), before
    assert after["repeated"] == [], f"runs counted twice (contributor, config hash): {after['repeated']}"
    assert after["contributors"] == {**before["contributors"], **{name: CLASS_TRIALS for name in LEARNERS}}, \
        f"trials per contributor before the learners: {before['contributors']}, after: {after['contributors']}"
    assert after["trials"] == before["trials"] + CLASS_TRIALS * len(LEARNERS), after
    for name, shown in rehearsal.class_search_status.items():
        assert OK_COLOUR in shown["style"], f"{name}'s Search ended with: {shown['text']}"


def test_prepared_runs_come_from_the_shared_cache(rehearsal):
    """The chapter's searches, in both learners' kernels, are the ones the teacher prepared: each
    search found its budget already spent, no trial trained again, and neither learner wrote a
    run of their own into the shared cache."""
    for name, todo in rehearsal.search_todo.items():
        assert todo, f"{name}: the search cell printed no search"
        assert todo == [0] * len(todo), f"{name}: the chapter's searches still lacked {todo} trials, " \
                                        f"where the teacher had prepared them all"
        trained = rehearsal.search_sources[name].count("trained")
        assert trained == 0, f"{name}: {trained} trials of the chapter's searches trained again"
    added = rehearsal.run_files_after_searches - rehearsal.run_files_prepared
    assert not added, f"the learners' searches wrote {len(added)} new runs into the shared cache"


def test_no_error_in_outputs_consoles_or_logs(rehearsal):
    """No cell output shows an error, no browser console reports one, and neither does the
    hub's log (hub, proxy, both learners' servers and their kernels)."""
    assert rehearsal.output_problems == {name: [] for name in LEARNERS}
    assert rehearsal.console_errors == []
    assert rehearsal.log_errors == [], "the hub's log reports:\n" + "\n---\n".join(rehearsal.log_errors)
