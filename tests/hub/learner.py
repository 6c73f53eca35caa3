"""What a learner does in the dress rehearsal, as Playwright calls: log in at the hub, then work in
their JupyterLab with the helpers of tests/browser/labpage.py.

Several learners work at once, as in a room: ``run_together`` starts the same cell in every
learner's page before waiting for any of them, so their kernels read and write the shared run
cache and the shared study at the same time.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

from playwright.sync_api import Locator, Page

import labpage as lp
from hubserver import PASSWORD, LearnerLab

TRIAL_LINE = re.compile(r"trial \d+ \[\d+/\d+\] .*\((from the run cache|trained)\)")
"""What ``ftlab.experiments.search`` prints for a trial, and where its run came from."""
SEARCH_LINE = re.compile(r"search \S+(?:: (\d+) trials? to run|, (\d+) trials?\b)")
"""What ``ftlab.experiments.search`` prints first (``progress=True``), or in its one line per search
(``progress="label"``, chapter 08): how many trials the study still lacked."""
SUMMARY_LINE = re.compile(r" · (\d+) trained.*?, (\d+) from the run cache")
"""The end of a one-line search summary: how many trials trained, and how many came from the cache."""


@dataclass
class Learner:
    """One learner: a browser context and page of their own, their JupyterLab, and what its
    console reported as an error."""

    name: str
    page: Page
    lab: LearnerLab
    console_errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.page.on("console", lambda m: self.console_errors.append(f"{self.name}: console.{m.type}: {m.text}")
                     if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.console_errors.append(f"{self.name}: uncaught: {e}"))

    def log_in(self, hub_url: str, timeout_s: float = 120) -> float:
        """The hub's login form, then wait until the hub has spawned their JupyterLab and it has
        loaded (its launcher shows): a page left while Lab still loads its settings makes the
        server log a StreamClosedError; seconds taken."""
        started = time.perf_counter()
        self.page.goto(f"{hub_url}/hub/login")
        self.page.fill("#username_input", self.name)
        self.page.fill("#password_input", PASSWORD)
        self.page.click("#login_submit")
        self.page.wait_for_url(re.compile(f"/user/{self.name}/lab"), timeout=timeout_s * 1000)
        self.page.wait_for_selector(".jp-Launcher-body", timeout=timeout_s * 1000)
        return time.perf_counter() - started

    def leave(self) -> None:
        """Leave JupyterLab for a blank page, so the browser closes its websockets itself: a
        context closed under them resets the connections, and the proxy logs that as an error."""
        self.page.goto("about:blank")

    def cell(self, path: str, startswith: str) -> Locator:
        return lp.code_cell(self.page, self.lab, path, startswith)

    def start(self, cell: Locator) -> None:
        """Click into ``cell`` and press Shift+Enter, without waiting for it."""
        cell.locator(".cm-content").click()
        self.page.keyboard.press("Shift+Enter")

    def wait_done(self, cell: Locator, timeout_s: float) -> None:
        """Until ``cell``'s prompt shows an execution number (it ran)."""
        self.page.wait_for_function("e => /\\[\\d+\\]/.test(e.textContent) && !e.textContent.includes('*')",
                                    arg=cell.locator(".jp-InputArea-prompt").element_handle(),
                                    timeout=timeout_s * 1000, polling=200)

    def add_cell_below(self, cell: Locator, source: str) -> Locator:
        """A new code cell below ``cell`` holding ``source``, typed in as a learner edits (pasted
        text: the editor's bracket closing does not double anything)."""
        cell.locator(".jp-InputArea-prompt").click()
        self.page.keyboard.press("Escape")
        self.page.keyboard.press("b")
        new = cell.locator("xpath=following-sibling::div[contains(@class, 'jp-Cell')][1]")
        new.locator(".cm-content").click()
        self.page.keyboard.insert_text(source)
        return new

    def output_text(self, cell: Locator) -> str:
        return cell.locator(".jp-OutputArea").inner_text()

    def trial_sources(self, cell: Locator) -> list[str]:
        """For each trial the cell printed (a line each, or counted in a search's one-line summary):
        ``from the run cache`` or ``trained``."""
        text = self.output_text(cell)
        sources = [m.group(1) for m in TRIAL_LINE.finditer(text)]
        for m in SUMMARY_LINE.finditer(text):
            sources += ["trained"] * int(m.group(1)) + ["from the run cache"] * int(m.group(2))
        return sources

    def trials_to_run(self, cell: Locator) -> list[int]:
        """For each search the cell ran: how many trials its study still lacked."""
        return [int(m.group(1) or m.group(2)) for m in SEARCH_LINE.finditer(self.output_text(cell))]


def run_together(learners: list[Learner], cells: list[Locator], timeout_s: float) -> float:
    """Start ``cells[i]`` in ``learners[i]``'s page for every learner, then wait for all; seconds taken."""
    started = time.perf_counter()
    for learner, cell in zip(learners, cells):
        learner.start(cell)
    for learner, cell in zip(learners, cells):
        learner.wait_done(cell, max(1.0, timeout_s - (time.perf_counter() - started)))
    return time.perf_counter() - started


FINISHED_COLOURS = ("#1a7f37", "#c62828")
"""A RunnerWidget's status colours once a press has ended: done, or an error (base.STATUS_COLORS)."""


def wait_finished(root: Locator, timeout_s: float) -> None:
    """Until the status line of the RunnerWidget ``root`` says the press ended (green or red)."""
    root.page.wait_for_function("([e, colours]) => colours.some(c => (e.querySelector('.ftlab-status span')"
                                "?.getAttribute('style') || '').includes(c))", arg=[root.element_handle(),
                                                                                   list(FINISHED_COLOURS)],
                                timeout=timeout_s * 1000, polling=200)


def status(root: Locator) -> dict[str, Any]:
    """A RunnerWidget's status line: its text and colour (``base.STATUS_COLORS``)."""
    span = root.locator(".ftlab-status span")
    return {"text": span.inner_text(), "style": span.get_attribute("style") or ""}
