"""Communication counted, not estimated: the payload of every collective a step calls.

:class:`CommCounter` wraps the collectives of ``torch.distributed`` while it is active, so
every call that DDP's communication hook, ZeroRedundancyOptimizer or FSDP2 makes through
them is recorded with the size of its tensors. DDP's own C++ reducer talks to the process
group directly, so :func:`count_ddp` routes its bucket all-reduces through
``torch.distributed.all_reduce`` with DDP's standard hook (divide by the world size, then
all-reduce: what the reducer does itself).

A collective's *payload* is its whole tensor: what is reduced (all-reduce), gathered (the
all-gather's output), scattered (the reduce-scatter's input) or sent (broadcast). What
crosses the wire per rank depends on the algorithm; :func:`~ftlab.memory.predict.ring_traffic`
(re-exported here) applies the ring's factors (NCCL's usual algorithm; gloo picks its own).
"""
from __future__ import annotations

import functools
import inspect
from collections import Counter
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
from torch.nn.parallel import DistributedDataParallel

from ftlab.memory.predict import RING_FACTOR, ring_traffic  # noqa: F401  (the ring's factors live with the formulas)

COLLECTIVES: dict[str, str] = {
    "all_reduce": "all_reduce", "broadcast": "broadcast",
    "all_gather": "all_gather", "all_gather_into_tensor": "all_gather", "all_gather_single": "all_gather",
    "reduce_scatter": "reduce_scatter", "reduce_scatter_tensor": "reduce_scatter",
    "reduce_scatter_single": "reduce_scatter",
}
"""``torch.distributed`` function -> the kind of collective it is (FSDP2 calls the ``_single``
forms, ZeroRedundancyOptimizer ``broadcast``, DDP's hook ``all_reduce``)."""


def payload_bytes(arguments: dict[str, Any]) -> int:
    """The whole tensor of one call: the largest tensor (or list of tensors) among its arguments."""
    sizes = [0]
    for value in arguments.values():
        if isinstance(value, torch.Tensor):
            sizes.append(value.numel() * value.element_size())
        elif isinstance(value, (list, tuple)) and value and all(isinstance(t, torch.Tensor) for t in value):
            sizes.append(sum(t.numel() * t.element_size() for t in value))
    return max(sizes)


class CommCounter:
    """Context manager: bytes and calls of each kind of collective made inside it.

    ``bytes`` and ``calls`` are :class:`collections.Counter` s keyed by the kinds of
    :data:`COLLECTIVES`; :meth:`reset` starts a new count (one per step).
    """

    def __init__(self) -> None:
        self.bytes: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()
        self._originals: dict[str, Callable[..., Any]] = {}

    def reset(self) -> None:
        self.bytes.clear()
        self.calls.clear()

    def _counting(self, name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(original)

        @functools.wraps(original)
        def counted(*args: Any, **kwargs: Any) -> Any:
            kind = COLLECTIVES[name]
            self.bytes[kind] += payload_bytes(signature.bind(*args, **kwargs).arguments)
            self.calls[kind] += 1
            return original(*args, **kwargs)
        return counted

    def __enter__(self) -> "CommCounter":
        for name in COLLECTIVES:
            self._originals[name] = getattr(dist, name)
            setattr(dist, name, self._counting(name, self._originals[name]))
        return self

    def __exit__(self, *exc: object) -> None:
        for name, original in self._originals.items():
            setattr(dist, name, original)
        self._originals.clear()


def count_ddp(model: DistributedDataParallel) -> DistributedDataParallel:
    """Make DDP all-reduce its gradient buckets through ``torch.distributed.all_reduce`` (DDP's
    standard ``allreduce_hook``), where a :class:`CommCounter` sees them."""
    model.register_comm_hook(state=None, hook=allreduce_hook)
    return model


