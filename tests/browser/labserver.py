"""A throwaway JupyterLab server for the browser tests, and what the tests do in its pages.

``LabServer`` starts ``jupyter lab`` on 127.0.0.1 with a random free port and a token, in
a temporary folder holding copies of the notebooks, with every Jupyter, IPython and ftlab
run-cache folder pointing inside that folder: nothing of the user's is read or written
except the model cache (``~/.cache/ftlab``), which `make setup` filled. It is stopped by its
own process id. The page helpers drive JupyterLab 4 the way a learner does: the menus, the
keyboard and the widgets' own controls.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
OUT = REPO / "out" / "browser"
CHROMIUM = os.environ.get("FTLAB_CHROMIUM", "/usr/bin/chromium")
"""Debian's Chromium (``FTLAB_CHROMIUM`` names another build): Playwright cannot download one offline."""
NO_CHROMIUM = (f"browser tests skipped: no Chromium at {CHROMIUM} (install Debian's chromium package; "
               f"make test does it with apt-get when run as root)")

TRUSTED = ("02_learning_rate_and_schedules.ipynb", "06_lora_qlora_and_memory.ipynb")
"""The chapters with saved widgets: also served signed (``trusted/``), as ``make setup`` signs them."""

USER_SETTINGS = {
    # no request to the internet (there is none in CI) and no toast asking for permission
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                         "checkForUpdates": False},
}
"""JupyterLab settings written into the temporary settings folder before the server starts."""

SERVER_ERROR = re.compile(r"^\[(E|C) |\] (ERROR|CRITICAL) \||Traceback \(most recent call last\)")
"""What counts as an error in the server log (the server's and its kernels' records): ERROR and
CRITICAL records and tracebacks. Read before the server is stopped, whose last record is a
CRITICAL 'received signal 15, stopping'."""


def token_api(url: str, token: str, method: str, path: str) -> Any:
    """A Jupyter server's (or JupyterHub's) REST API at ``url + path``, authorised by ``token``:
    the decoded JSON answer, or None for an empty one."""
    request = urllib.request.Request(url + path, method=method, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        body = response.read()
    return json.loads(body) if body else None


def _error_end(lines: list[str], start: int, most: int = 40) -> int:
    """Where the error record starting at ``lines[start]`` ends: after the first unindented line
    that follows an indented one (a traceback's exception line), or after ``most`` lines."""
    indented = False
    for i in range(start + 1, min(len(lines), start + most)):
        if lines[i].startswith((" ", "\t")):
            indented = True
        elif indented:
            return i + 1
    return min(len(lines), start + (most if indented else 1))


def free_port() -> int:
    """A TCP port nobody listens on now (the server is told not to try another one)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LabServer:
    """``jupyter lab`` in ``root`` (notebooks under ``root/notebooks``) on a random port."""

    root: Path
    env_extra: dict[str, str] = field(default_factory=dict)
    port: int = 0
    token: str = ""
    process: subprocess.Popen | None = None
    log_path: Path | None = None

    @property
    def notebooks(self) -> Path:
        return self.root / "notebooks"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        jupyter = self.root / "jupyter"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "JPY_"))}
        env.update({
            "FTLAB_PROFILE": "ci",
            "FTLAB_RUNS": str(self.root / "runs"),
            "JUPYTER_CONFIG_DIR": str(jupyter / "config"),
            "JUPYTER_DATA_DIR": str(jupyter / "data"),
            "JUPYTER_RUNTIME_DIR": str(jupyter / "runtime"),
            "JUPYTERLAB_SETTINGS_DIR": str(jupyter / "config" / "lab" / "user-settings"),
            "JUPYTERLAB_WORKSPACES_DIR": str(jupyter / "config" / "lab" / "workspaces"),
            "IPYTHONDIR": str(self.root / "ipython"),
            "MPLCONFIGDIR": str(self.root / "matplotlib"),
            "HF_HUB_OFFLINE": "1",
            "OMP_NUM_THREADS": "1",  # the kernel, the server and Chromium share two cores
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYDEVD_DISABLE_FILE_VALIDATION": "1",
        })
        env.update(self.env_extra)
        return env

    def start(self, timeout: float = 90) -> LabServer:
        self.token = os.urandom(16).hex()
        for folder in ("runs", "ipython", "matplotlib", "jupyter/config", "jupyter/data", "jupyter/runtime"):
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        settings = self.root / "jupyter" / "config" / "lab" / "user-settings"
        for name, values in USER_SETTINGS.items():
            path = settings / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))
        self.log_path = self.root / "jupyter-lab.log"
        for _attempt in range(3):  # a port taken between free_port() and the bind: take another
            self.port = free_port()
            cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={self.port}",
                   "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}",
                   f"--ServerApp.root_dir={self.notebooks}", "--LabApp.news_url=", "--LabApp.check_for_updates_class="
                   "jupyterlab.NeverCheckForUpdate"]
            if os.geteuid() == 0:
                cmd.append("--allow-root")
            with open(self.log_path, "ab") as log:
                self.process = subprocess.Popen(cmd, cwd=self.notebooks, env=self.env(), stdout=log,
                                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            if self._wait_ready(timeout):
                return self
            self.stop()
        raise RuntimeError(f"jupyter lab did not start; its log:\n{self.log()[-3000:]}")

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                self.api("GET", "/api/status")
                return True
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.3)
        return False

    def api(self, method: str, path: str) -> Any:
        return token_api(self.url, self.token, method, path)

    def wait_kernels_ready(self, timeout: float) -> None:
        """Until every kernel has started, is idle and has a client connected: a kernel shut down
        half-started prints a KeyboardInterrupt traceback, and a page still connecting to it
        gets a server error, both in the log that test_no_errors reads."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            kernels = self.api("GET", "/api/kernels")
            if kernels and all(k["execution_state"] == "idle" and k["connections"] > 0 for k in kernels):
                return
            time.sleep(0.2)
        raise TimeoutError(f"kernels not ready after {timeout} s: {self.api('GET', '/api/kernels')}")

    def shutdown_kernels(self) -> None:
        """Stop every kernel this server started (its REST API), so none outlives it."""
        try:
            for kernel in self.api("GET", "/api/kernels"):
                self.api("DELETE", f"/api/kernels/{kernel['id']}")
        except (urllib.error.URLError, OSError):
            pass

    def stop(self) -> None:
        """Kernels first, then the server by its process id: SIGTERM, SIGKILL after 15 s."""
        if self.process is None or self.process.poll() is not None:
            return
        self.shutdown_kernels()
        terminate(self.process, 15)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def log_errors(self) -> list[str]:
        """Each error the server log reports (see SERVER_ERROR), with the lines that explain it:
        the line before it and a traceback up to its exception line, so a failure in CI says what
        went wrong."""
        lines = self.log().splitlines()
        return ["\n".join(lines[max(0, i - 1):_error_end(lines, i)])
                for i, line in enumerate(lines) if SERVER_ERROR.search(line)]

    def page_url(self, notebook: str, workspace: str) -> str:
        """A notebook in a workspace of its own (``?reset``: no layout restored from earlier tests)."""
        return f"{self.url}/lab/workspaces/{workspace}/tree/{notebook}?reset&token={self.token}"


def seed_run_cache(runs: Path) -> str | None:
    """Copy the run cache ``FTLAB_BROWSER_RUNS`` names (in ``make test``, the one nbval has just
    filled) to ``runs``, never writing the original; the folder copied, or None."""
    seeded = os.environ.get("FTLAB_BROWSER_RUNS", "")
    if not (seeded and Path(seeded).is_dir()):
        return None
    shutil.copytree(seeded, runs)
    return seeded


def terminate(process: subprocess.Popen, grace_s: float) -> None:
    """SIGTERM ``process`` by its id, SIGKILL it if it is still there after ``grace_s``."""
    os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(5)
