"""The workshop teacher of the dress rehearsal: prepares the room's runs and reads the class study.

Before the room opens, the teacher runs ``ftlab prepare --profile ci --chapters 08`` with
``FTLAB_RUNS`` on the room's shared runs folder: it executes chapter 08 headless, so every
run of its searches lands in that cache, and the chapter's workshop cell opens the class
study on the journal file beside them (``<FTLAB_RUNS>/class-journal.log``, the path each
learner's copy of the chapter computes from the same ``FTLAB_RUNS``). Afterwards the teacher
reads the class study the way the teacher's notebook does, through ``ClassStudy``. Both run
as commands in a temporary home of the teacher's, so nothing of the real user's is written.
"""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from hubserver import _jupyter_free_env
from processes import descendants, end

CHAPTER = "08"
JOURNAL = "class-journal.log"
"""The class study's journal file, in the runs folder: chapter 08's workshop cell names it so."""

READ_CLASS_STUDY = """
import json, sys
from collections import Counter
from ftlab.ui.widgets import ClassStudy
view = ClassStudy(sys.argv[1])
pairs = Counter((t.user_attrs.get("contributor"), t.user_attrs.get("config_hash")) for t in view.study.get_trials())
print(json.dumps({**view.summary(), "repeated": [list(pair) for pair, n in pairs.items() if n > 1]}))
"""
"""The teacher's view of the class study: ``ClassStudy.summary()``, and each (contributor,
config hash) that is in the study more than once (a run counted twice)."""


@dataclass
class Teacher:
    """The teacher's commands, in ``home``, on the room's ``runs`` folder."""

    home: Path
    runs: Path
    environment: dict[str, str]
    prepare: subprocess.Popen | None = None

    @property
    def journal(self) -> Path:
        return self.runs / JOURNAL

    @property
    def log_path(self) -> Path:
        return self.home / "prepare.log"

    def env(self) -> dict[str, str]:
        """As in a terminal of the teacher's own JupyterLab on the hub (the name trials are credited to)."""
        return {**_jupyter_free_env(self.home), **self.environment, "JUPYTERHUB_USER": self.home.name}

    def start_prepare(self) -> None:
        """``ftlab prepare`` in the background: the learners log in meanwhile, as a room does."""
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.prepare = subprocess.Popen(
                [str(Path(sys.executable).parent / "ftlab"), "prepare", "--profile", "ci", "--chapters", CHAPTER],
                cwd=self.home, env=self.env(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)

    def wait_prepared(self, timeout: float) -> str:
        """Wait for ``ftlab prepare`` to end; its output, or AssertionError with it if it failed."""
        try:
            code = self.prepare.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"ftlab prepare still running after {timeout} s:\n{self.output()[-3000:]}") from None
        assert code == 0, f"ftlab prepare failed ({code}):\n{self.output()[-3000:]}"
        return self.output()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def class_summary(self) -> dict[str, Any]:
        """``ClassStudy(journal).summary()``: trials, trials per contributor, the best one; and
        ``repeated``, the (contributor, config hash) pairs found more than once."""
        done = subprocess.run([sys.executable, "-c", READ_CLASS_STUDY, str(self.journal)], cwd=self.home,
                              env=self.env(), capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"the teacher's ClassStudy failed:\n{done.stderr[-3000:]}"
        return json.loads(done.stdout.strip().splitlines()[-1])

    def stop(self) -> None:
        """``ftlab prepare`` and what it started (its kernel, Ray's workers), if still running."""
        if self.prepare is not None and self.prepare.poll() is None:
            end([*descendants(self.prepare.pid), psutil.Process(self.prepare.pid)])
