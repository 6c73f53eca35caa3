"""Training across several processes, measured per rank: DDP, ZeRO-1, ZeRO-2 and FSDP (chapter 09).

This package owns running one RunConfig's training steps on several processes, with the
engines torch ships (``DistributedDataParallel``, ``ZeroRedundancyOptimizer``, FSDP2's
``fully_shard``), and measuring each rank exactly: its memory breakdown the way
:mod:`ftlab.memory` measures one process (local shards of sharded tensors), the bytes every
collective moves, the step time and the loss. It also owns starting those processes from a
notebook without ever hanging, and the from-scratch all-reduce the chapter opens with.
What each rank *should* hold is predicted in :mod:`ftlab.memory.predict`
(``estimate(..., devices=, strategy=)``), below this package, so ``ftlab fits`` and the
widgets can answer without starting anything.

* :mod:`~ftlab.distributed.plan`: :class:`Plan` (the run, the ranks, the strategies, checked
  before any process starts; its ``torchrun`` line) and the errors;
* :mod:`~ftlab.distributed.steps`: the step every rank takes (model, wrapping, optimizer, data);
* :mod:`~ftlab.distributed.measure`: one rank's bytes; :mod:`~ftlab.distributed.comm`:
  collectives counted; :mod:`~ftlab.distributed.scratch`: averaging gradients by hand;
* :mod:`~ftlab.distributed.worker`: what each rank runs (``-m ftlab.distributed.worker``);
* :mod:`~ftlab.distributed.launcher`: starting the ranks with timeouts, or saying why not;
  :mod:`~ftlab.distributed.results`: what they measured, beside the prediction and one process.

It sits in the training layer: it trains (it builds Trainer's optimizer through
``ftlab.training.train``), and nothing below it imports it.
"""
from ftlab.distributed.comm import CommCounter, ring_traffic
from ftlab.distributed.launcher import launch, max_processes, measure_or_explain, why_not_launch
from ftlab.distributed.plan import DistributedError, LaunchError, Plan
from ftlab.distributed.results import DistributedResult, one_process
from ftlab.distributed.scratch import average_gradients, ring_all_reduce

__all__ = ["Plan", "DistributedError", "LaunchError", "launch", "measure_or_explain", "why_not_launch",
           "max_processes", "DistributedResult", "one_process", "CommCounter", "ring_traffic", "average_gradients",
           "ring_all_reduce"]
