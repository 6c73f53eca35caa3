"""A throwaway JupyterHub for the workshop dress rehearsal: hub, proxy and one JupyterLab per learner.

``HubServer`` starts ``jupyterhub`` on 127.0.0.1 (random free ports for the proxy, its API and
the hub) in a temporary folder, with the shared-password authenticator (no system users, so it
runs as a normal user and as root alike) and ``SimpleLocalProcessSpawner``, which starts each
user's ``jupyterhub-singleuser`` (JupyterLab) with a home of its own under that folder. Every
Jupyter, IPython and matplotlib folder of a user points into that home, the ftlab run cache
into the room's shared runs folder, and only the model cache (``FTLAB_CACHE``, which ``make
setup`` filled) is the real one: the user's ~/.jupyter, ~/.local/share/jupyter and
~/.cache/ftlab/runs are never touched. The hub runs in a process group of its own, and
``stop`` ends it and every process it started (proxy, single-user servers, kernels) by id.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from labserver import OUT, SERVER_ERROR, USER_SETTINGS, LabServer, _error_end, free_port, terminate, token_api  # tests/browser (conftest.py)
from processes import descendants, end

LEARNERS = ["learner1", "learner2"]
TEACHER = "teacher"
"""The hub's accounts: two learners and their teacher."""
HUB_OUT = OUT.parent / "hub"
"""Where the hub's log, the teacher's ``prepare`` output, screenshots and timings are kept (out/hub/)."""
PASSWORD = "dress-rehearsal"
"""Everyone's password (SharedPasswordAuthenticator wants 8 characters or more)."""
SERVICE = "dress-rehearsal"
"""The hub service whose token the test uses to reach the hub's and the learners' REST APIs."""

LOG_ERROR = re.compile(SERVER_ERROR.pattern + r"|\[ConfigProxy\] .*\berror\b")
"""An error in the hub's log: the hub's, the single-user servers' and their kernels' ERROR and
CRITICAL records and tracebacks (labserver.SERVER_ERROR), and the proxy's ``error:`` lines
(a request it could not forward)."""

READY = "JupyterHub is now running at"
"""The hub's log line once its proxy routes to it."""

CONFIG = '''\
"""jupyterhub_config.py of the dress rehearsal: written by tests/hub/hubserver.py, settings in hub.json."""
import json, os
s = json.load(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "hub.json")))
c = get_config()  # noqa: F821
c.JupyterHub.ip, c.JupyterHub.port = "127.0.0.1", s["port"]
c.JupyterHub.hub_ip, c.JupyterHub.hub_port = "127.0.0.1", s["hub_port"]
c.JupyterHub.db_url = "sqlite:///" + os.path.join(s["root"], "jupyterhub.sqlite")
c.JupyterHub.cookie_secret_file = os.path.join(s["root"], "jupyterhub_cookie_secret")
c.JupyterHub.pid_file = os.path.join(s["root"], "jupyterhub.pid")
c.ConfigurableHTTPProxy.command = [s["proxy"]]
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:%d" % s["proxy_api_port"]
c.ConfigurableHTTPProxy.pid_file = os.path.join(s["root"], "proxy.pid")
c.JupyterHub.authenticator_class = "shared-password"
c.SharedPasswordAuthenticator.user_password = s["password"]
c.Authenticator.allowed_users = set(s["users"])
c.JupyterHub.spawner_class = "jupyterhub.spawner.SimpleLocalProcessSpawner"
c.SimpleLocalProcessSpawner.home_dir_template = os.path.join(s["root"], "home", "{username}")
c.Spawner.cmd = [s["single_user"]]
c.Spawner.args = s["args"]
c.Spawner.default_url = "/lab"
c.Spawner.start_timeout = c.Spawner.http_timeout = 120


def _in_home(*parts):
    return lambda spawner: os.path.join(spawner.home_dir, *parts)


c.Spawner.environment = {**s["environment"], **{name: _in_home(*parts) for name, parts in s["in_home"].items()}}
c.JupyterHub.services = [{"name": s["service"], "api_token": s["token"]}]
c.JupyterHub.load_roles = [{"name": s["service"], "services": [s["service"]],
                            "scopes": ["admin:users", "admin:servers", "access:servers", "list:users"]}]
'''
"""The hub's configuration; the values come from ``hub.json`` beside it (``HubServer.settings``)."""

IN_HOME = {
    "JUPYTER_CONFIG_DIR": [".jupyter"],
    "JUPYTER_DATA_DIR": [".local", "share", "jupyter"],
    "JUPYTER_RUNTIME_DIR": [".local", "share", "jupyter", "runtime"],
    "JUPYTERLAB_SETTINGS_DIR": [".jupyter", "lab", "user-settings"],
    "JUPYTERLAB_WORKSPACES_DIR": [".jupyter", "lab", "workspaces"],
    "IPYTHONDIR": [".ipython"],
    "MPLCONFIGDIR": [".config", "matplotlib"],
}
"""Per-user folders, each under that user's temporary home (set explicitly: a variable already in
the hub's environment would otherwise not be replaced by the home's default)."""


def _jupyter_free_env(root: Path) -> dict[str, str]:
    """This process's environment without the Jupyter variables, with every Jupyter and IPython
    folder under ``root``: for the hub and for the teacher's commands."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "JPY_"))}
    env.update({name: str(root.joinpath(*parts)) for name, parts in IN_HOME.items()})
    env.update(HOME=str(root), PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    return env


@dataclass
class HubServer:
    """``jupyterhub`` in ``root``; users' homes under ``root/home``; ``environment`` for every
    user's server (ftlab's variables)."""

    root: Path
    users: list[str]
    proxy: Path
    single_user: Path
    environment: dict[str, str]
    port: int = 0
    token: str = ""
    process: subprocess.Popen | None = None
    started: list[psutil.Process] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.root / "jupyterhub.log"

    def home(self, user: str) -> Path:
        """``user``'s home (the spawner's ``home_dir_template``), with JupyterLab's settings in it."""
        home = self.root / "home" / user
        settings = home.joinpath(*IN_HOME["JUPYTERLAB_SETTINGS_DIR"])
        for name, values in USER_SETTINGS.items():
            (settings / name).parent.mkdir(parents=True, exist_ok=True)
            (settings / name).write_text(json.dumps(values))
        return home

    def settings(self) -> dict[str, Any]:
        args = ["--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
        if os.geteuid() == 0:  # jupyter refuses root without it (a container, CI)
            args.append("--allow-root")
        return {"root": str(self.root), "port": self.port, "hub_port": free_port(), "proxy_api_port": free_port(),
                "proxy": str(self.proxy), "single_user": str(self.single_user), "args": args,
                "password": PASSWORD, "users": self.users, "service": SERVICE, "token": self.token,
                "environment": self.environment, "in_home": IN_HOME}

    def start(self, timeout: float = 90) -> HubServer:
        """Start the hub (and so its proxy) and wait until the hub answers through the proxy."""
        self.token = os.urandom(16).hex()
        (self.root / "jupyterhub_config.py").write_text(CONFIG)
        for user in self.users:
            self.home(user)
        for _attempt in range(3):  # a port taken between free_port() and the bind: take others
            self.port = free_port()
            (self.root / "hub.json").write_text(json.dumps(self.settings(), indent=1))
            with open(self.log_path, "ab") as log:
                self.process = subprocess.Popen(
                    [str(Path(sys.executable).parent / "jupyterhub"), "-f", str(self.root / "jupyterhub_config.py")],
                    cwd=self.root, env=_jupyter_free_env(self.root / "hub-home"), stdout=log,
                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
            if self._wait_ready(timeout):
                return self
            self.stop()
        raise RuntimeError(f"jupyterhub did not start; its log:\n{self.log()[-3000:]}")

    def _wait_ready(self, timeout: float) -> bool:
        """Until the hub says it runs (its log; a request sent through the proxy before the
        hub's route is there makes the proxy log a 404 error), then answers through the proxy."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            if READY in self.log():
                try:
                    self.api("GET", "/hub/api/")
                    return True
                except (urllib.error.URLError, ConnectionError, OSError):
                    pass
            time.sleep(0.3)
        return False

    def api(self, method: str, path: str) -> Any:
        """The hub's (or, under /user/NAME/, a user server's) REST API, as the test's service."""
        return token_api(self.url, self.token, method, path)

    def lab(self, user: str) -> LearnerLab:
        """``user``'s JupyterLab behind the hub, for the helpers of tests/browser/labpage.py."""
        return LearnerLab(root=self.home(user), token=self.token, hub_url=self.url, user=user)

    def track(self) -> None:
        """Note every process the hub has started so far (proxy, servers, kernels): ``stop`` ends
        them by id even if the hub itself died and they lost their parent."""
        self.started += [p for p in descendants(self.process.pid) if p not in self.started]

    def stop(self) -> None:
        """The hub by its process id (SIGTERM: it stops the servers it spawned and its proxy),
        then by id every process it had started that is still there (SIGKILL after 10 s)."""
        if self.process is None:
            return
        self.track()
        if self.process.poll() is None:
            terminate(self.process, 20)
        end(self.started)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_errors(self) -> list[str]:
        """Each error the hub's log reports (see LOG_ERROR), with the lines that explain it."""
        lines = self.log().splitlines()
        return ["\n".join(lines[max(0, i - 1):_error_end(lines, i)])
                for i, line in enumerate(lines) if LOG_ERROR.search(line)]


@dataclass
class LearnerLab(LabServer):
    """One user's JupyterLab behind the hub, in the shape tests/browser/labpage.py drives: its
    files are the user's home, its REST API is reached through the proxy with the test
    service's token, and its pages carry no token (the browser logged in at the hub)."""

    hub_url: str = ""
    user: str = ""

    @property
    def url(self) -> str:
        return f"{self.hub_url}/user/{self.user}"

    @property
    def notebooks(self) -> Path:
        return self.root

    def page_url(self, notebook: str, workspace: str) -> str:
        return f"{self.url}/lab/workspaces/{workspace}/tree/{notebook}?reset"
