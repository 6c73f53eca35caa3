"""What the ranks measured, read back, set beside the prediction and beside one process.

:class:`DistributedResult` holds each rank's report (the JSON the worker wrote) and answers
the chapter's questions per strategy: each rank's memory breakdown and what
:func:`ftlab.memory.estimate` predicted for it, the bytes each collective moved per step and
the formula's bytes, the step time, and the loss of the whole batch (the mean of the
ranks' losses: every rank averages the same number of tokens). :func:`one_process` takes
the same steps in this process on the whole batch, the run the ranks must reproduce.
"""
from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ftlab.distributed.plan import LaunchError, Plan
from ftlab.distributed.steps import token_rows, train_steps
from ftlab.memory import MemoryBreakdown, communication_bytes, estimate, model_architecture, setup_for


@dataclass
class DistributedResult:
    """The reports of a plan's ranks (``ranks[r]`` is rank ``r``'s) and the launch's wall time."""

    plan: Plan
    ranks: list[dict[str, Any]]
    started: float
    """When the launch began (``time.time()``)."""
    seconds: float
    """The launch's wall time, start to exit."""

    @classmethod
    def read(cls, plan: Plan, folder: Path, started: float, seconds: float) -> "DistributedResult":
        files = [folder / f"rank{r}.json" for r in range(plan.nproc)]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise LaunchError(f"the workers exited without writing {', '.join(missing)}")
        return cls(plan, [json.loads(f.read_text(encoding="utf-8")) for f in files], started, seconds)

    @property
    def startup_seconds(self) -> float:
        """Seconds until the last rank was ready to work: starting Python and importing torch,
        transformers and ftlab in every process (each rank pays it; the strategies do not)."""
        return max(r["started_at"] for r in self.ranks) - self.started

    def _record(self, strategy: str, rank: int) -> dict[str, Any]:
        return self.ranks[rank]["strategies"][strategy]

    def memory(self, strategy: str, rank: int) -> MemoryBreakdown:
        """Rank ``rank``'s measured breakdown under ``strategy`` after its first step."""
        return MemoryBreakdown.from_dict(self._record(strategy, rank)["memory"])

    def predicted(self, strategy: str, rank: int) -> MemoryBreakdown:
        """What :func:`~ftlab.memory.estimate` says for that rank, from the config alone."""
        return estimate(self.plan.rank_config, devices=self.plan.nproc, strategy=strategy, rank=rank)

    def gathered(self, strategy: str, rank: int) -> int:
        """The most whole-parameter bytes the rank held at once during its first step (FSDP's gathered layers)."""
        return self._record(strategy, rank)["gathered"]

    def comm(self, strategy: str, rank: int = 0) -> dict[str, int]:
        """Payload bytes per kind of collective in the rank's last step."""
        return self._record(strategy, rank)["comm"][-1]

    def predicted_comm(self, strategy: str) -> dict[str, int]:
        config = self.plan.rank_config
        return communication_bytes(model_architecture(config.model), setup_for(config), self.plan.nproc, strategy)

    def losses(self, strategy: str) -> list[float]:
        """The loss of the whole batch at each step: the mean of the ranks' losses."""
        per_rank = [self._record(strategy, r)["losses"] for r in range(self.plan.nproc)]
        return [sum(step) / len(step) for step in zip(*per_rank)]

    def step_seconds(self, strategy: str) -> float:
        """Median over steps (the first, which also measures, left out when there are more) of
        the slowest rank's seconds: a step ends when its last rank does."""
        per_rank = [self._record(strategy, r)["seconds"] for r in range(self.plan.nproc)]
        slowest = [max(step) for step in zip(*per_rank)]
        return statistics.median(slowest[1:] or slowest)


def one_process(plan: Plan) -> dict[str, Any]:
    """The plan's steps in this process, on the whole batch of each step: the losses, the
    seconds and the first step's memory breakdown that the ranks together must reproduce."""
    rows = token_rows(plan.config, plan.steps * plan.config.per_device_train_batch_size)
    return train_steps(plan.config, None, rows, plan.steps, rank=0, nproc=1, device=torch.device("cpu"))
