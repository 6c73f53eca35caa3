"""Starting the worker processes from a notebook, and never hanging while they run.

:func:`launch` writes the plan to a folder, runs the plan's own ``torchrun`` line
(``python -m torch.distributed.run``, the line a learner runs on GPUs) as one process group
with a wall-clock limit, reads back the JSON file each rank wrote and returns a
:class:`~ftlab.distributed.results.DistributedResult`. Workers that fail or overrun are
stopped, all of them, and reported with the lines they printed.

Where processes cannot run at all (a Python inside the browser, a torch without
``torch.distributed``, a single CPU core), :func:`why_not_launch` says why, and
:func:`measure_or_explain` returns that reason instead of a result, so a chapter can show
the predictor's answer in its place.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist

from ftlab.distributed.plan import DistributedError, LaunchError, Plan
from ftlab.distributed.results import DistributedResult

RANKS_PER_CORE = 2
"""CPU ranks ftlab starts per core at most. Each rank runs one thread; beyond two per core a
rank spends most of a step waiting for a core, not for the strategy, and its timeouts fire."""
STOP_GRACE_S = 5.0
"""Seconds workers get to exit after SIGTERM before they are killed."""


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity, where the platform says)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def max_processes() -> int:
    """Ranks this machine can start: one per GPU, or :data:`RANKS_PER_CORE` per CPU core."""
    return torch.cuda.device_count() if torch.cuda.is_available() else RANKS_PER_CORE * usable_cores()


def _capacity(nproc: int) -> str | None:
    if nproc <= max_processes():
        return None
    if torch.cuda.is_available():
        gpus = torch.cuda.device_count()
        return f"this machine has {gpus} GPU{'s' if gpus != 1 else ''}, one rank each"
    return f"this machine has {usable_cores()} CPU cores, and ftlab starts at most {RANKS_PER_CORE} ranks per core"


def why_not_launch(nproc: int = 2) -> str | None:
    """Why ``nproc`` worker processes cannot run here, in one sentence; None when they can."""
    if sys.platform == "emscripten":
        return "this Python runs inside the browser (JupyterLite/Pyodide), which cannot start processes"
    if not dist.is_available():
        return "this torch build has no torch.distributed"
    if not torch.cuda.is_available() and not dist.is_gloo_available():
        return "this torch build has no gloo backend, which CPU ranks talk through"
    if not torch.cuda.is_available() and usable_cores() < 2:
        return ("this machine gives Python one CPU core: two ranks would take turns on it, each waiting at every "
                "collective for a rank that is not running")
    return _capacity(nproc)


def _stop(process: subprocess.Popen) -> None:
    """Stop the whole process group (torchrun and its ranks): SIGTERM, then SIGKILL."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except (AttributeError, ProcessLookupError):  # no process groups (Windows), or already gone
        process.kill()
        process.wait()


def _failure(log: Path) -> str:
    """What the workers said before failing: each rank's exception line, else the log's last lines."""
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines() if log.is_file() else []
    errors = [line for line in lines if re.match(r"\[rank\d+\]: [\w.]*(Error|Exception)\b", line)]
    return " | ".join(dict.fromkeys(errors)) or " | ".join(lines[-5:]) or "(no output)"


def launch(plan: Plan, out: str | Path | None = None) -> DistributedResult:
    """Run ``plan`` on ``plan.nproc`` local processes and return what every rank measured.

    ``out``: keep the plan, the workers' log and the rank files in this folder (default: a
    temporary one, removed afterwards). Raises DistributedError before starting anything
    when the machine cannot hold ``nproc`` ranks, LaunchError when processes cannot start
    here, fail, or run past ``plan.timeout_s`` (they are stopped first).
    """
    capacity = _capacity(plan.nproc)
    if capacity:
        raise DistributedError("launch", "nproc", plan.nproc, f"at most {max_processes()}: {capacity}")
    reason = why_not_launch(plan.nproc)
    if reason:
        raise LaunchError(f"cannot start {plan.nproc} worker processes: {reason}")
    with tempfile.TemporaryDirectory(prefix="ftlab-ranks-") as scratch:
        folder = Path(out) if out is not None else Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "plan.json").write_text(plan.to_json(), encoding="utf-8")
        log = folder / "workers.log"
        threads = 1 if torch.cuda.is_available() else max(1, usable_cores() // plan.nproc)
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
        started = time.time()
        with log.open("w", encoding="utf-8") as sink:
            process = subprocess.Popen([sys.executable, "-m", "torch.distributed.run",
                                        *plan.torchrun_args(str(folder / "plan.json"), str(folder))],
                                       stdout=sink, stderr=subprocess.STDOUT, env=env, start_new_session=True)
            try:
                code = process.wait(timeout=plan.timeout_s)
            except subprocess.TimeoutExpired:
                _stop(process)
                raise LaunchError(f"the {plan.nproc} worker processes did not finish within Plan.timeout_s="
                                  f"{plan.timeout_s:g} s and were stopped; raise timeout_s, or lower steps or the "
                                  f"batch (last output: {_failure(log)})") from None
            except BaseException:  # Ctrl-C in the notebook: leave nothing running
                _stop(process)
                raise
        if code != 0:
            raise LaunchError(f"the worker processes failed (exit status {code}): {_failure(log)}")
        return DistributedResult.read(plan, folder, started, seconds=time.time() - started)


def measure_or_explain(plan: Plan, out: str | Path | None = None) -> tuple[DistributedResult | None, str | None]:
    """``(result, None)`` when the plan ran here, ``(None, why not)`` when processes could not
    start or did not finish: what a chapter needs to fall back to the predictor's answer."""
    reason = why_not_launch(plan.nproc)
    if reason:
        return None, reason
    try:
        return launch(plan, out), None
    except LaunchError as err:
        return None, str(err)
