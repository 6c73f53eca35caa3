"""What the JupyterHub dress rehearsal needs installed, installed where it can be, and why not where it cannot.

JupyterHub comes from PyPI into the project's own virtual environment (``pip install
jupyterhub``) and its proxy, ``configurable-http-proxy``, from npm into ``.venv/node`` (never
globally: the project stays in its folder). Each function returns what it found or installed,
or raises :class:`Missing` with one line that says exactly what is missing and why, which the
fixtures turn into a skip: a machine without node or Chromium skips the rehearsal, it does not
fail it.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

VENV = Path(sys.prefix)
"""The virtual environment running the tests (``.venv`` after ``make setup``)."""
NODE_PREFIX = VENV / "node"
"""Where npm installs configurable-http-proxy (``npm install --prefix``)."""
PROXY = NODE_PREFIX / "node_modules" / ".bin" / "configurable-http-proxy"
INSTALL_TIMEOUT_S = 300


class Missing(Exception):
    """A prerequisite that is absent and could not be installed; the message says which and why."""


def _last_lines(text: str, n: int = 3) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-n:])


def _install(cmd: list[str], what: str) -> None:
    """Run an installer; Missing with its last output lines when it fails or hangs."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise Missing(f"{what}: `{' '.join(cmd)}` took over {INSTALL_TIMEOUT_S} s (no registry reachable?)") from None
    if done.returncode != 0:
        raise Missing(f"{what}: `{' '.join(cmd)}` failed ({done.returncode}): {_last_lines(done.stderr or done.stdout)}")


def jupyterhub() -> Path:
    """The ``jupyterhub`` command of this environment, pip-installed first if absent."""
    if importlib.util.find_spec("jupyterhub") is None:
        _install([sys.executable, "-m", "pip", "install", "--quiet", "jupyterhub"], "jupyterhub is not installed")
        importlib.invalidate_caches()
    command = Path(sys.executable).parent / "jupyterhub"
    if importlib.util.find_spec("jupyterhub") is None or not os.access(command, os.X_OK):
        raise Missing(f"jupyterhub is not importable or {command} is missing after `pip install jupyterhub`")
    return command


def single_user() -> Path:
    """``jupyterhub-singleuser``: what the spawner starts for each user (installed with jupyterhub)."""
    command = Path(sys.executable).parent / "jupyterhub-singleuser"
    if not os.access(command, os.X_OK):
        raise Missing(f"{command} is missing (it comes with jupyterhub)")
    return command


def proxy() -> Path:
    """configurable-http-proxy, npm-installed under ``.venv/node`` if absent, and checked to start."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise Missing(f"configurable-http-proxy needs node and npm, and {'node' if node is None else 'npm'} is not "
                      f"on PATH (install Debian's nodejs and npm packages)")
    if not os.access(PROXY, os.X_OK):
        _install([npm, "install", "--prefix", str(NODE_PREFIX), "--no-audit", "--no-fund", "--loglevel=error",
                  "configurable-http-proxy"], "configurable-http-proxy is not installed")
    try:
        done = subprocess.run([str(PROXY), "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise Missing(f"{PROXY} does not run: {err}") from None
    if done.returncode != 0:
        raise Missing(f"{PROXY} does not run with {node}: {_last_lines(done.stderr)}")
    return PROXY

