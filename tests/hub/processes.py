"""Ending the processes a test started, by id, whatever session they moved to.

JupyterHub starts each single-user server, and jupyter_client each kernel, in a session of
its own, so a process group does not hold them: the test notes the process tree of what it
started (``descendants``) and ends exactly those processes, never any by name.
"""
from __future__ import annotations

import psutil


def descendants(pid: int) -> list[psutil.Process]:
    """Every process under ``pid`` now (none if it is gone)."""
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def end(processes: list[psutil.Process], grace_s: float = 10) -> None:
    """SIGTERM those still running (a pid reused since is not touched: psutil checks the start
    time), SIGKILL those still there after ``grace_s``."""
    running = [p for p in processes if p.is_running()]
    for proc in running:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _gone, alive = psutil.wait_procs(running, timeout=grace_s)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
