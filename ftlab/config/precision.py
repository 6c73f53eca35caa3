"""Which precision a run gets, decided in one place from what the machine can do.

:func:`probe` reads the machine into :class:`Capabilities` (a small frozen dataclass, so a
test builds a T4, an A100, a Mac or a CPU with or without native bf16 in one line), and
:func:`choose_precision` turns capabilities, profile and model into a :class:`Precision`
with the reason for it. The profiles (:mod:`ftlab.config.profiles`) apply it to every run
they size; ``ftlab doctor`` prints it.

The rules, and the measurements behind them (``benchmarks/precision.py``,
``benchmarks/README.md``):

* ``ci`` profile: fp32 everywhere. CI checks code paths on whatever runner it gets; fp32
  keeps its numbers the same on every machine.
* CUDA with bf16 (Ampere and newer): bf16 autocast, no loss scaling needed.
* CUDA without bf16 (T4, V100): fp16 autocast with loss scaling (Trainer's ``fp16=True``):
  on those cards fp16 runs on the tensor cores and fp32 does not.
* Apple MPS: fp32. Metal emulates bf16 with fp32 on M1/M2, fp16 autocast needs loss
  scaling on MPS (torch >= 2.8), and neither has been measured for this workbook; set
  ``fp16=True`` yourself to try it.
* CPU without native bf16 (no AVX512-BF16 or AMX, or not known): fp32. bf16 autocast is
  then emulated, and it is not a little slower but many times slower (an order of
  magnitude and more per step; the figures are in ``benchmarks/README.md``, "precision.py").
* CPU with native bf16: bf16 autocast for SmolLM2-135M and any other hub or local model
  (their steps are matrix multiplies, which bf16 made about twice as fast). fp32 for the
  byte-level presets (``tiny``, ``tiny-pretrained``): their 128-wide matrices are too small
  for bf16 to pay much, and fp32 keeps the knob chapters' numbers, read against their seed
  noise, the same on every CPU.
"""
from __future__ import annotations

import functools
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from ftlab.config.run_config import BYTE_LEVEL_PRESETS

DEVICES = ("cuda", "mps", "cpu")

NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
"""x86 ``/proc/cpuinfo`` flags of instructions that compute bf16 dot products natively."""

CPU_FP32_MODELS = BYTE_LEVEL_PRESETS
"""Models kept in fp32 on a CPU even with native bf16 (see the module docstring)."""


@dataclass(frozen=True)
class Capabilities:
    """What the machine offers a run, as :func:`probe` reads it (or a test writes it).

    ``device``: ``"cuda"``, ``"mps"`` or ``"cpu"``, the device a run trains on.
    ``device_name``: the GPU's name, ``"Apple MPS"``, or the CPU's model name.
    ``device_memory``: bytes the GPU offers (CUDA: total memory; MPS: Metal's recommended
    maximum, shared with the system); None on a CPU.
    ``cuda_bf16``: the CUDA device computes in bf16 (Ampere and newer).
    ``cpu_bf16``: the CPU has native bf16 instructions (:data:`NATIVE_BF16_FLAGS`); None when
    that cannot be read (not Linux, not x86).
    ``cpu_capability``: the vector instruction set torch dispatches to (``AVX2``, ``AVX512``...).
    ``ram``: bytes of system memory; None when unknown.
    """

    device: str = "cpu"
    device_name: str = "CPU"
    device_memory: int | None = None
    cuda_bf16: bool = False
    cpu_bf16: bool | None = None
    cpu_capability: str = ""
    ram: int | None = None

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ValueError(f"Capabilities(device={self.device!r}): choose one of {', '.join(DEVICES)}")


@dataclass(frozen=True)
class Precision:
    """The precision fields of a RunConfig (Trainer's ``bf16`` / ``fp16``) and why."""

    bf16: bool
    fp16: bool
    reason: str

    @property
    def name(self) -> str:
        if self.bf16:
            return "bf16 autocast"
        return "fp16 autocast with loss scaling" if self.fp16 else "fp32"

    def fields(self) -> dict[str, bool]:
        """What a RunConfig takes: ``RunConfig(**precision.fields(), ...)``."""
        return {"bf16": self.bf16, "fp16": self.fp16}


def _fp32(reason: str) -> Precision:
    return Precision(bf16=False, fp16=False, reason=reason)


def choose_precision(caps: Capabilities, profile: str, model: str) -> Precision:
    """The precision a run of ``model`` in ``profile`` gets on a machine with ``caps``
    (the rules and their measurements are in the module docstring)."""
    if profile == "ci":
        return _fp32("the ci profile checks code paths on any runner: fp32 gives the same numbers everywhere")
    if caps.device == "cuda":
        if caps.cuda_bf16:
            return Precision(bf16=True, fp16=False, reason=f"{caps.device_name} computes in bf16: autocast, no loss scaling")
        return Precision(bf16=False, fp16=True, reason=f"{caps.device_name} has no bf16 (pre-Ampere): fp16 autocast "
                                                       f"with loss scaling uses its tensor cores")
    if caps.device == "mps":
        return _fp32("Apple MPS: bf16 is emulated on M1/M2 and fp16 is not measured here; fp16=True to try it")
    if not caps.cpu_bf16:
        known = "unknown" if caps.cpu_bf16 is None else "absent"
        return _fp32(f"native bf16 on this CPU: {known}; emulated bf16 ran 17-43x slower than fp32")
    if model in CPU_FP32_MODELS:
        return _fp32(f"{model} is too small for bf16 to have been shown to pay; fp32 keeps its numbers the same on every CPU")
    return Precision(bf16=True, fp16=False, reason="native bf16 on this CPU: a SmolLM2 step ran 1.9-2.2x faster "
                                                   "under bf16 autocast")


# --- the probe -----------------------------------------------------------------------------------


def cpu_native_bf16(cpuinfo: str | None, machine: str) -> bool | None:
    """Whether ``/proc/cpuinfo`` text (None: not readable) lists a native bf16 flag; None
    where the answer is not in it (no file, or not an x86 CPU, whose flags differ)."""
    if cpuinfo is None or machine.lower() not in ("x86_64", "amd64", "i686", "i386"):
        return None
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return any(flag in line.split(":", 1)[-1].split() for flag in NATIVE_BF16_FLAGS)
    return None


def _cpuinfo() -> str | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def _cpu_name(cpuinfo: str | None) -> str:
    for line in (cpuinfo or "").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[-1].strip()
    return platform.processor() or platform.machine() or "CPU"


def _ram() -> int | None:
    try:
        import psutil  # installed with Jupyter (ipykernel); the only portable way on Windows
        return int(psutil.virtual_memory().total)
    except ImportError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


@functools.lru_cache(maxsize=1)
def probe() -> Capabilities:
    """This machine's :class:`Capabilities` (read once per process)."""
    cpuinfo = _cpuinfo()
    cpu = dict(cpu_bf16=cpu_native_bf16(cpuinfo, platform.machine()),
               cpu_capability=torch.backends.cpu.get_cpu_capability(), ram=_ram())
    if torch.cuda.is_available():
        return Capabilities(device="cuda", device_name=torch.cuda.get_device_name(0),
                            device_memory=torch.cuda.get_device_properties(0).total_memory,
                            cuda_bf16=torch.cuda.is_bf16_supported(), **cpu)
    if torch.backends.mps.is_available():
        return Capabilities(device="mps", device_name="Apple MPS", device_memory=torch.mps.recommended_max_memory(), **cpu)
    return Capabilities(device="cpu", device_name=_cpu_name(cpuinfo), **cpu)
