"""Workload profiles: one notebook, three sizes.

``ci`` keeps a chapter to seconds on two CPU cores (nbval in CI), ``cpu`` is long enough
that the effect a chapter teaches is really visible on a laptop (a few minutes), ``gpu``
is the full lesson. The profile only sets sizes (steps, batch, sequence length, how much
is evaluated); the knobs a chapter studies are never changed by it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from .config import RunConfig
from .errors import ConfigError

PROFILES = ("ci", "cpu", "gpu")


@dataclass(frozen=True)
class Workload:
    """The sizes one profile gives a run."""

    name: str
    max_steps: int
    per_device_train_batch_size: int
    max_seq_length: int
    eval_steps: int
    eval_size: int
    exact_match_size: int

    def fields(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "name"}


WORKLOADS: dict[str, Workload] = {
    "ci": Workload("ci", max_steps=6, per_device_train_batch_size=4, max_seq_length=96,
                   eval_steps=3, eval_size=8, exact_match_size=8),
    "cpu": Workload("cpu", max_steps=80, per_device_train_batch_size=8, max_seq_length=96,
                    eval_steps=20, eval_size=64, exact_match_size=64),
    "gpu": Workload("gpu", max_steps=400, per_device_train_batch_size=16, max_seq_length=128,
                    eval_steps=50, eval_size=300, exact_match_size=300),
}


def profile_name() -> str:
    """FTLAB_PROFILE if set, else ``gpu`` when CUDA is present, else ``cpu``."""
    name = os.environ.get("FTLAB_PROFILE", "").strip().lower()
    if not name:
        return "gpu" if torch.cuda.is_available() else "cpu"
    if name not in PROFILES:
        raise ConfigError("FTLAB_PROFILE", name, f"one of {', '.join(PROFILES)} (environment variable)")
    return name


def workload(name: str | None = None) -> Workload:
    """The workload of a profile (default: the current one)."""
    name = name or profile_name()
    if name not in WORKLOADS:
        raise ConfigError("profile", name, f"one of {', '.join(PROFILES)}")
    return WORKLOADS[name]


def base_config(profile: str | None = None, **overrides: Any) -> RunConfig:
    """A RunConfig sized for the profile, with the chapter's own knobs in ``overrides``."""
    return RunConfig(**{**workload(profile).fields(), **overrides})
