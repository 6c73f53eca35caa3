"""Fixtures of the browser tests: headless Chromium, a throwaway JupyterLab, one page per test.

Chromium is Debian's package (``/usr/bin/chromium``, or ``FTLAB_CHROMIUM``): Playwright
cannot download its own browser without internet. Where it is missing the test module
skips as a whole, with one line saying why (``make test`` installs it as root with apt-get).

The server (``labserver.LabServer``) runs in a temporary folder holding three copies of the
notebooks: ``committed/`` as in the repository (untrusted, as a fresh clone is),
``trusted/`` the same signed with ``jupyter trust`` (as ``make setup`` does; marked in its
metadata, as a signature covers any file with the same content), and ``ci/``
parametrized with ``PROFILE = "ci"`` the way papermill does (the committed notebooks carry
the ``PROFILE = "cpu"`` they were executed with, which would override FTLAB_PROFILE).
Screenshots, ``timings.json`` and the server's log go to ``out/browser/``.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import pytest

from labserver import CHROMIUM, NO_CHROMIUM, NOTEBOOKS, OUT, TRUSTED, LabServer, seed_run_cache

VIEWPORT = {"width": 1400, "height": 1000}


@dataclass
class Timings:
    """Seconds and latencies per test, rewritten atomically to ``out/browser/timings.json`` on
    every record, so an interrupted session still leaves what it measured."""

    path: Path
    data: dict[str, Any] = field(default_factory=dict)

    def record(self, test: str, **values: Any) -> None:
        self.data.setdefault(test, {}).update(_rounded(values))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.data, indent=2) + "\n")
        os.replace(tmp, self.path)


def _rounded(value: Any) -> Any:
    """Seconds to the millisecond, in nested dicts and lists too."""
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    return value


@dataclass
class BrowserPage:
    """A page of its own per test, with what its console reported as an error."""

    page: Any
    name: str
    console_errors: list[str] = field(default_factory=list)

    def screenshot(self, suffix: str = "") -> Path:
        path = OUT / f"{self.name}{suffix}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        # cells scrolled into view are painted a frame or two later (content-visibility: auto)
        self.page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
        self.page.wait_for_timeout(300)
        self.page.screenshot(path=str(path))
        return path


@pytest.fixture(scope="session")
def timings() -> Timings:
    t = Timings(OUT / "timings.json")
    t.record("session", started=time.strftime("%Y-%m-%d %H:%M:%S"))
    return t


@pytest.fixture(scope="session")
def browser(timings):
    """Headless Chromium (skips every test, with one reason, where it cannot run)."""
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        pytest.skip("browser tests skipped: Playwright is not installed (pip install -e '.[dev]')")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(NO_CHROMIUM)
    with sync_playwright() as p:
        try:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--disable-dev-shm-usage"])
        except Error as exc:
            pytest.skip(f"browser tests skipped: {CHROMIUM} does not start: {str(exc).splitlines()[0]}")
        timings.record("session", chromium=browser.version)
        yield browser
        browser.close()


def write_ci_copy(notebook: Path, folder: Path) -> Path:
    """``notebook`` with ``PROFILE = "ci"`` injected the way papermill does, written into ``folder``."""
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    nb = parameterize_notebook(load_notebook_node(str(notebook)), {"PROFILE": "ci"})
    nbformat.write(nb, folder / notebook.name)
    return folder / notebook.name


@pytest.fixture(scope="session")
def lab(browser, tmp_path_factory, timings):
    """JupyterLab on 127.0.0.1 (random port, a token) over temporary notebook copies, FTLAB_PROFILE=ci,
    a temporary run cache and Jupyter folders; stopped by its process id at the end.

    With ``FTLAB_BROWSER_RUNS`` naming a run cache (``make test`` names the one nbval has just
    filled with the same ``ci`` runs), the temporary cache starts as a copy of it: Run All then
    replays the chapter's runs from the cache, as it does for a learner who opens a chapter a
    second time, and only the Playground's presses train. Without it, Run All trains everything
    (about two minutes more)."""
    root = tmp_path_factory.mktemp("jupyterlab")
    server = LabServer(root)
    shutil.copytree(NOTEBOOKS, server.notebooks / "committed")
    (server.notebooks / "trusted").mkdir()
    (server.notebooks / "ci").mkdir()
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        write_ci_copy(path, server.notebooks / "ci")
    seeded = seed_run_cache(root / "runs")
    if seeded:
        timings.record("session", runs_copied_from=seeded)
    started = time.perf_counter()
    server.start()
    timings.record("session", server_start_s=time.perf_counter() - started)
    for name in TRUSTED:  # signed in the server's own (temporary) signature database
        # a signature is a digest of the content: marked, so the identical committed/ copy stays unsigned
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        nb.metadata["ftlab_browser_test"] = "trusted copy"
        nbformat.write(nb, server.notebooks / "trusted" / name)
        subprocess.run([sys.executable, "-m", "jupyter", "trust", str(server.notebooks / "trusted" / name)],
                       env=server.env(), check=True, capture_output=True)
    try:
        yield server
    finally:
        server.stop()
        OUT.mkdir(parents=True, exist_ok=True)
        shutil.copy(server.log_path, OUT / "jupyter-lab.log")  # kept for reading after a failure
        timings.record("session", server_s=time.perf_counter() - started, jupyterlab_log=str(OUT / "jupyter-lab.log"))


@pytest.fixture()
def page(browser, lab, request) -> BrowserPage:
    """A fresh browser context and page; its console errors and uncaught exceptions are kept.
    Afterwards the kernels it started are shut down and the page is closed."""
    context = browser.new_context(viewport=VIEWPORT)
    name = request.node.name.replace("[", "-").replace("]", "").replace("/", "_")
    bp = BrowserPage(context.new_page(), name)
    bp.page.on("console", lambda m: bp.console_errors.append(f"console.{m.type}: {m.text}")
               if m.type == "error" else None)
    bp.page.on("pageerror", lambda e: bp.console_errors.append(f"uncaught: {e}"))
    bp.page.set_default_timeout(30_000)
    try:
        yield bp
    finally:
        request.config.stash.setdefault(CONSOLE_ERRORS, []).extend(f"{name}: {e}" for e in bp.console_errors)
        # kernels first, while the page's websockets are open: the server closes them itself. A page
        # closed first leaves the shutdown's last messages to a closed socket, and tornado logs
        # "WebSocketClosedError" tracebacks that the server-log test would rightly count
        lab.shutdown_kernels()
        context.close()


CONSOLE_ERRORS = pytest.StashKey[list]()
"""Every page's console errors, for the last test."""


@pytest.fixture()
def all_console_errors(request) -> list[str]:
    return request.config.stash.setdefault(CONSOLE_ERRORS, [])
