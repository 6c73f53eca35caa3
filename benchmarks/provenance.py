"""What a benchmark result measured, written into every file of ``benchmarks/results/``: the commit of the code
and the processor (and GPU) it ran on, so that a figure the code has since outgrown shows its age, in the file and
beside it in ``benchmarks/README.md``.

    record(path, result)          # a script's results, with their provenance, written atomically
    python benchmarks/provenance.py   # the same fields as lines, for a results file that is not JSON
"""
from __future__ import annotations

import datetime
import subprocess
import sys
from pathlib import Path
from platform import processor
from typing import Any

from ftlab.foundation.storage import write_json_atomic

ROOT = Path(__file__).resolve().parent.parent


def commit() -> str:
    """The checkout's commit, marked ``+uncommitted changes`` when the code (ftlab, the scripts, the dependencies)
    differs from it: then the figure measured code that no commit holds. ``not recorded`` outside a git checkout."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    try:
        head = git("rev-parse", "HEAD")
        changed = git("status", "--porcelain", "--", "ftlab", "benchmarks/*.py", "pyproject.toml", "requirements.lock")
    except (OSError, subprocess.CalledProcessError):
        return "not recorded"
    return f"{head}+uncommitted changes" if changed else head


def cpu_model() -> str:
    """The processor's model name (``/proc/cpuinfo`` on Linux), which decides a CPU figure more than its core count."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return processor() or "not recorded"


def gpu_model() -> str | None:
    """The first CUDA device's name, None without one (torch is imported only if the script already did)."""
    torch = sys.modules.get("torch")
    return torch.cuda.get_device_name(0) if torch is not None and torch.cuda.is_available() else None


def provenance() -> dict[str, Any]:
    return {"commit": commit(), "cpu": cpu_model(), "gpu": gpu_model(),
            "recorded": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def record(path: Path, result: dict[str, Any]) -> Path:
    """``result`` with its ``provenance``, written to ``path`` atomically (a reader never sees half a file)."""
    return write_json_atomic(path, {**result, "provenance": provenance()})


if __name__ == "__main__":
    for name, value in provenance().items():
        print(f"{name}: {value}")
