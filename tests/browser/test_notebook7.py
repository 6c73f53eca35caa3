"""Chapter 02's Playground in Notebook 7's interface, not only in JupyterLab's.

Notebook 7 (the ``notebook`` package, a dev dependency) is served by the same Jupyter server
as JupyterLab, at ``/notebooks/<path>``, and draws widgets with its own copy of the
ipywidgets manager: a learner who opens a chapter there must get the same Playground. After
Run All it renders, and a press of Run with new knobs ends in a finished run and adds one row;
the chapter adds no error to the browser console.
"""
from __future__ import annotations

import json
import os
import re

import pytest

from labserver import CHROMIUM, NO_CHROMIUM, NOTEBOOKS, LabServer, seed_run_cache

if not os.access(CHROMIUM, os.X_OK):
    pytest.skip(NO_CHROMIUM, allow_module_level=True)
pytest.importorskip("playwright.sync_api",
                    reason="browser tests skipped: Playwright is not installed (pip install -e '.[dev]')")
pytest.importorskip("notebook", reason="Notebook 7 test skipped: the notebook package is not installed "
                                       "(pip install -e '.[dev]')")

import labpage as lp  # noqa: E402  (imports Playwright)
from conftest import VIEWPORT, BrowserPage, write_ci_copy  # noqa: E402

CHAPTER = "02_learning_rate_and_schedules.ipynb"
SETTING = {"learning_rate": "2e-3", "lr_scheduler_type": "constant"}
"""Knobs the chapter's own runs do not use, so the press trains (or reads the cache), never 'already shown'."""
RUN_ALL_S = 900
RUN_S = 300
FINISHED = re.compile(r": trained in |: from the run cache in |interrupted|Error|already shown")
OK_COLOUR = "#1a7f37"


@pytest.fixture(scope="module")
def server(browser, tmp_path_factory):
    """A Jupyter server of its own (the one the `lab` fixture starts, over chapter 02 alone): Notebook
    7's pages log errors of their own (below) that the Lab tests' server-log check must not see."""
    root = tmp_path_factory.mktemp("notebook7")
    lab = LabServer(root)
    (lab.notebooks / "ci").mkdir(parents=True)
    write_ci_copy(NOTEBOOKS / CHAPTER, lab.notebooks / "ci")
    seed_run_cache(root / "runs")  # `make test`: the runs nbval just trained
    lab.start()
    try:
        yield lab
    finally:
        lab.stop()


@pytest.fixture()
def page(browser, server):
    """A page of its own, keeping its console errors (not shared with the Lab tests' record)."""
    context = browser.new_context(viewport=VIEWPORT)
    bp = BrowserPage(context.new_page(), "notebook7-02")
    bp.page.on("console", lambda m: bp.console_errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
    bp.page.on("pageerror", lambda e: bp.console_errors.append(f"uncaught: {e}"))
    bp.page.set_default_timeout(30_000)
    try:
        yield bp
    finally:
        server.shutdown_kernels()
        context.close()


def test_playground_runs_in_notebook7(page, server, timings):
    lab = server
    p = page.page
    # Notebook 7.6.5 with JupyterLab 4.6.6 throws on its own file browser, with no notebook open
    # (reproduced on a bare `jupyter notebook`): what the bare page throws is the baseline, and
    # the chapter may add no error to it.
    p.goto(f"{lab.url}/tree?token={lab.token}")
    p.wait_for_selector(".jp-DirListing-content", timeout=60_000)
    p.wait_for_timeout(2000)
    baseline = set(page.console_errors)
    timings.record(page.name, notebook7_file_browser_errors=sorted(baseline))
    path = f"ci/{CHAPTER}"
    cells = len(json.loads((lab.notebooks / path).read_text())["cells"])
    p.goto(f"{lab.url}/notebooks/{path}?token={lab.token}")
    p.wait_for_function("n => document.querySelectorAll('.jp-NotebookPanel .jp-Notebook .jp-Cell').length >= n",
                        arg=cells, timeout=60_000, polling=100)
    assert p.locator("#jp-NotebookLogo, .jp-NotebookKernelStatus, #top-panel").count() >= 1, \
        "this page is not Notebook 7's interface"
    lab.wait_kernels_ready(120)
    timings.record(page.name, run_all_s=lp.run_all(p, RUN_ALL_S))
    unrun = [x for x in lp.prompts(p) if not re.fullmatch(r"\[\d+\]:", x)]
    assert unrun == [], f"Run All left cells unrun or failed: {unrun}; outputs: {lp.output_problems(p)}"
    assert lp.output_problems(p) == []

    root = p.locator(".ftlab-playground")
    assert root.count() >= 1, "no Playground rendered after Run All in Notebook 7"
    root = root.first
    lp.show(root)
    panels = root.locator("img.ftlab-panel")
    assert panels.count() >= 1 and all(im["complete"] and im["w"] > 0 for im in lp.images_loaded(panels))
    rows = lp.table_rows(root)
    for field, value in SETTING.items():
        lp.set_knob(root, field, value)
    root.locator(".ftlab-run").click()
    status = root.locator(".ftlab-status")
    p.wait_for_function("([el, re]) => new RegExp(re).test(el.textContent)",
                        arg=[status.element_handle(), FINISHED.pattern], timeout=RUN_S * 1000, polling=250)
    text = status.inner_text()
    assert "already shown" not in text and "Error" not in text, text
    assert OK_COLOUR in (root.locator(".ftlab-status span").get_attribute("style") or ""), text
    assert lp.table_rows(root) == rows + 1, "the press added no row to the Playground's table"
    page.screenshot()
    assert lp.output_problems(p) == []
    assert [e for e in page.console_errors if e not in baseline] == []
