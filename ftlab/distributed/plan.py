"""What a distributed measurement runs, checked before any process starts.

A :class:`Plan` is one process's run (a :class:`~ftlab.config.run_config.RunConfig`) spread
over ``nproc`` processes: its ``per_device_train_batch_size`` sequences per step are split
evenly between the ranks, so the ranks together take exactly the step one process would
take, and their losses can be compared with it (the equivalence chapter 05 showed for
accumulation). Everything that would make a run fail half-way, or measure something else
than it says, is refused here with an error that names the field, the value and the fix:
an unknown strategy, a batch that does not split over the ranks, a quantized model, an
optimizer ZeRO and FSDP cannot shard.

The plan is also the file the GPU command reads: :meth:`Plan.command` is the exact
``torchrun`` line, and the chapter runs that same line on CPU processes.
"""
from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from typing import Any

from ftlab.config.run_config import RunConfig
from ftlab.errors import ArgumentError, ConfigError, FtlabError
from ftlab.memory import STRATEGIES, setup_for
from ftlab.memory.predict import check_strategy

WORKER = "ftlab.distributed.worker"
"""The module every rank runs (``torchrun ... -m ftlab.distributed.worker``)."""


class DistributedError(ArgumentError):
    """An argument of a distributed run (a strategy, a number of processes) that cannot work,
    raised before any process starts. An :class:`~ftlab.errors.ArgumentError`, so its message
    names the function, the argument, the value and what is allowed."""


class LaunchError(FtlabError, RuntimeError):
    """The worker processes failed or did not finish in time; the message says which and why
    (the last lines the workers printed), and no process is left running."""


@dataclass(frozen=True)
class Plan:
    """``config`` (one process's run) spread over ``nproc`` ranks, once per strategy.

    ``steps`` optimizer steps per strategy (default ``config.max_steps``); ``timeout_s``
    bounds the whole launch, every collective included (a rank that never arrives makes
    the others fail after it instead of waiting forever).
    """

    config: RunConfig
    nproc: int = 2
    strategies: tuple[str, ...] = tuple(STRATEGIES)
    steps: int = 0
    timeout_s: float = 300.0

    def __post_init__(self) -> None:
        strategies = (self.strategies,) if isinstance(self.strategies, str) else tuple(self.strategies)
        object.__setattr__(self, "strategies", strategies)
        object.__setattr__(self, "steps", self.steps or self.config.max_steps)
        check_plan(self)

    @property
    def per_rank_batch(self) -> int:
        return self.config.per_device_train_batch_size // self.nproc

    @property
    def rank_config(self) -> RunConfig:
        """The run each rank trains: the same config on its share of the batch."""
        return self.config.replace(per_device_train_batch_size=self.per_rank_batch)

    def to_json(self) -> str:
        return json.dumps({"config": self.config.to_dict(), "nproc": self.nproc, "strategies": list(self.strategies),
                           "steps": self.steps, "timeout_s": self.timeout_s}, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Plan":
        data: dict[str, Any] = json.loads(text)
        return cls(config=RunConfig.from_dict(data.pop("config")), **data)

    def torchrun_args(self, plan_file: str = "plan.json", out: str = "results") -> list[str]:
        """``torchrun``'s arguments for this plan on one machine: ``nproc`` ranks (one per GPU,
        or CPU processes), a rendezvous on a free local port, no restarts."""
        return ["--standalone", "--nproc-per-node", str(self.nproc), "--max-restarts", "0",
                "-m", WORKER, plan_file, "--out", out]

    def command(self, plan_file: str = "plan.json", out: str = "results") -> str:
        """The line that runs this plan (written to ``plan_file`` by :meth:`to_json`) on a machine
        with ``nproc`` GPUs; each rank writes ``<out>/rank<N>.json``. ``torchrun`` is
        ``python -m torch.distributed.run``, which is how the chapter starts the same line on CPUs."""
        return shlex.join(["torchrun", *self.torchrun_args(plan_file, out)])


def check_plan(plan: Plan) -> None:
    """Refuse, before any process starts, a plan that cannot run or would not measure what it says."""
    config = plan.config
    if not (isinstance(plan.nproc, int) and not isinstance(plan.nproc, bool) and plan.nproc >= 1):
        raise DistributedError("Plan", "nproc", plan.nproc, "an int >= 1: processes, one per GPU (or CPU ranks)")
    if not plan.strategies:
        raise DistributedError("Plan", "strategies", plan.strategies, f"one or more of {', '.join(STRATEGIES)}")
    for strategy in plan.strategies:
        check_strategy("Plan", strategy, plan.nproc, setup_for(config), error=DistributedError, argument="strategies")
    if not (isinstance(plan.steps, int) and plan.steps >= 1):
        raise DistributedError("Plan", "steps", plan.steps, "an int >= 1 (or 0 for config.max_steps, when that is >= 1)")
    if not (isinstance(plan.timeout_s, (int, float)) and plan.timeout_s > 0):
        raise DistributedError("Plan", "timeout_s", plan.timeout_s, "seconds > 0 for the whole launch")
    batch = config.per_device_train_batch_size
    if batch % plan.nproc:
        divisors = [n for n in range(1, batch + 1) if batch % n == 0]
        raise ConfigError("per_device_train_batch_size", batch,
                          f"a multiple of nproc={plan.nproc}: one process's {batch} sequences per step are split "
                          f"evenly over the ranks; use {plan.nproc * max(1, batch // plan.nproc)} or "
                          f"{plan.nproc * (batch // plan.nproc + 1)}, or nproc in {divisors}")
    if config.load_in_4bit or config.load_in_8bit:
        raise ConfigError("load_in_4bit" if config.load_in_4bit else "load_in_8bit", True,
                          "False for a distributed run: a quantized base is QLoRA's one-device answer, and bitsandbytes' "
                          "4-/8-bit weights cannot be sharded here")
    if config.gradient_accumulation_steps != 1:
        raise ConfigError("gradient_accumulation_steps", config.gradient_accumulation_steps,
                          "1 for a distributed run: each rank takes one batch per step, and more ranks are what "
                          "replaces accumulation; raise per_device_train_batch_size instead")
