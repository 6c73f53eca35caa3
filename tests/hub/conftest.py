"""Fixtures of the JupyterHub dress rehearsal: the tools, the room, the teacher, the hub, Chromium.

The session installs what it lacks (``prerequisites``) and skips, with one line saying exactly
what is missing, where it cannot: no Chromium, no Playwright, no node or npm, no registry for
jupyterhub. Everything runs in one temporary folder (the room): the hub's state, each user's
home, and the shared runs folder the teacher prepares and every learner's kernel reads and
writes (``FTLAB_RUNS``). Only the model cache is the real one (``FTLAB_CACHE``), read for the
offline models ``make setup`` built. Logs and screenshots are kept in ``out/hub/``.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "browser"))  # labserver, labpage
sys.path.insert(0, str(Path(__file__).resolve().parent))

import prerequisites  # noqa: E402
from hubserver import HUB_OUT, LEARNERS, TEACHER, HubServer  # noqa: E402
from labserver import CHROMIUM, seed_run_cache  # noqa: E402
from teacher import Teacher  # noqa: E402


def _skip(reason: str) -> None:
    pytest.skip(f"JupyterHub dress rehearsal skipped: {reason}")


@pytest.fixture(scope="session")
def tools() -> dict[str, Path]:
    """Chromium and Playwright (found), jupyterhub and configurable-http-proxy (installed if absent)."""
    if not os.access(CHROMIUM, os.X_OK):
        _skip(f"no Chromium at {CHROMIUM} (install Debian's chromium package, or name another with FTLAB_CHROMIUM)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _skip("Playwright is not installed (pip install -e '.[dev]')")
    try:
        return {"jupyterhub": prerequisites.jupyterhub(), "single_user": prerequisites.single_user(),
                "proxy": prerequisites.proxy()}
    except prerequisites.Missing as missing:
        _skip(str(missing))


@pytest.fixture(scope="session")
def room(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("workshop")


@pytest.fixture(scope="session")
def room_environment(room) -> dict[str, str]:
    """What every user's server and the teacher's commands get: the ``ci`` workload, the shared
    runs folder, the real model cache, no network, one thread each (two cores, many processes)."""
    from ftlab.foundation.storage import cache_dir

    return {"FTLAB_PROFILE": "ci", "FTLAB_RUNS": str(room / "shared" / "runs"), "FTLAB_CACHE": str(cache_dir()),
            "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYDEVD_DISABLE_FILE_VALIDATION": "1"}


@pytest.fixture(scope="session")
def teacher(tools, room, room_environment):
    """The teacher, whose ``ftlab prepare`` starts now and runs while the hub starts and the
    learners log in; ended (with its kernel) at the end if still running.

    With ``FTLAB_BROWSER_RUNS`` naming a run cache (``make test`` names the one nbval has just
    filled with the same ``ci`` runs), the room's runs folder starts as a copy of it, as a
    teacher's would after a rehearsal of their own: ``ftlab prepare`` then replays the chapter
    instead of training it (about a minute less), and the learners' checks are the same."""
    runs = Path(room_environment["FTLAB_RUNS"])
    seed_run_cache(runs)
    t = Teacher(room / "home" / TEACHER, runs, room_environment)
    t.start_prepare()
    try:
        yield t
    finally:
        t.stop()
        HUB_OUT.mkdir(parents=True, exist_ok=True)
        shutil.copy(t.log_path, HUB_OUT / "prepare.log")


@pytest.fixture(scope="session")
def hub(tools, room, room_environment, teacher):
    """JupyterHub, its proxy and (once logged in) each user's JupyterLab, all on 127.0.0.1;
    stopped, with everything it started, by process id at the end of the session."""
    server = HubServer(room, LEARNERS + [TEACHER], tools["proxy"], tools["single_user"], room_environment)
    try:
        yield server.start()
    finally:
        server.stop()
        HUB_OUT.mkdir(parents=True, exist_ok=True)
        if server.log_path.exists():
            shutil.copy(server.log_path, HUB_OUT / "jupyterhub.log")


@pytest.fixture(scope="session")
def browser(tools):
    """Headless Chromium (the dress rehearsal skips, saying why, where it does not start)."""
    from playwright.sync_api import Error, sync_playwright

    with sync_playwright() as p:
        try:
            chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--disable-dev-shm-usage"])
        except Error as exc:
            _skip(f"{CHROMIUM} does not start: {str(exc).splitlines()[0]}")
        try:
            yield chromium
        finally:
            chromium.close()
