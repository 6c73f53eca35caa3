"""One rank's memory, measured the way :mod:`ftlab.memory.measure` measures one process.

Weights, gradients and optimizer state are read off the tensors the rank holds. Under
FSDP a parameter (its gradient, its AdamW moments) is a ``DTensor`` whose ``numel()`` is the
*global* size; what this rank stores is its local shard, ``to_local()``, and that is what is
counted here. Activations go through the same ``saved_tensors_hooks`` meter, with one
change: FSDP swaps each layer's parameters for freshly gathered whole tensors while the
layer computes, and a matmul saves its (gathered) weight for backward, so the meter must
recognise a parameter by what the module holds *at that moment*, not at the start.
:class:`RankActivationMeter` also records the most whole-parameter bytes held at once, the
working set FSDP gathers beside its shards.
"""
from __future__ import annotations

import torch
from torch.distributed.tensor import DTensor

from ftlab.memory import ActivationMeter, MemoryBreakdown, tensor_bytes


def local(t: torch.Tensor) -> torch.Tensor:
    """The part of ``t`` this rank stores: a DTensor's local shard, any other tensor itself."""
    return t.to_local() if isinstance(t, DTensor) else t


def rank_weight_bytes(model: torch.nn.Module) -> int:
    """Parameters as this rank stores them (shards under FSDP; each tied tensor once)."""
    return sum(tensor_bytes(local(p)) for p in model.parameters())


def rank_gradient_bytes(model: torch.nn.Module) -> int:
    """Gradients as this rank stores them after backward (all-reduced whole ones under DDP,
    reduce-scattered shards under FSDP)."""
    return sum(tensor_bytes(local(p.grad)) for p in model.parameters() if p.grad is not None)


def rank_optimizer_bytes(optimizer: torch.optim.Optimizer) -> int:
    """State this rank's optimizer keeps: ZeroRedundancyOptimizer steps (and keeps state for)
    only the tensors assigned to this rank, in its inner ``optim``; FSDP's moments are shards."""
    inner = getattr(optimizer, "optim", optimizer)
    return sum(tensor_bytes(local(v)) for state in inner.state.values() for v in state.values()
               if isinstance(v, torch.Tensor) and v.dim() > 0)


def whole_parameter_bytes(model: torch.nn.Module) -> int:
    """Bytes of the parameters the model holds whole right now: under FSDP, the gathered ones."""
    return sum(tensor_bytes(p) for p in model.parameters() if not isinstance(p, DTensor))


class RankActivationMeter(ActivationMeter):
    """:class:`~ftlab.memory.ActivationMeter` for a rank whose parameters change under it.

    Before each saved tensor is counted, the set of parameter storages is read again from
    the model (FSDP has just gathered the computing layer's weights into new storages), so a
    saved gathered weight is a parameter, not an activation. ``gathered`` is the largest
    :func:`whole_parameter_bytes` seen while saving (forward) or unpacking (backward): the
    weights FSDP held whole at once, when ``sharded``.
    """

    def __init__(self, model: torch.nn.Module, sharded: bool) -> None:
        super().__init__(torch.nn.Module())  # no parameters yet: they are read at every save
        self._model = model
        self._sharded = sharded
        self.gathered = 0
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)

    def _look(self) -> None:
        if self._sharded:
            self.gathered = max(self.gathered, whole_parameter_bytes(self._model))

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        self._look()
        self._param_storages = {local(p).untyped_storage().data_ptr() for p in self._model.parameters()}
        return super()._pack(t)

    def _unpack(self, t: torch.Tensor) -> torch.Tensor:
        self._look()
        return t


def rank_breakdown(model: torch.nn.Module, optimizer: torch.optim.Optimizer, meter: RankActivationMeter
                   ) -> MemoryBreakdown:
    """The rank's four kinds of memory after its first optimizer step, before its gradients
    are zeroed (and, on a GPU, the allocator's peak so far)."""
    peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
    return MemoryBreakdown(weights=rank_weight_bytes(model), gradients=rank_gradient_bytes(model),
                           optimizer=rank_optimizer_bytes(optimizer), activations=meter.bytes, cuda_peak=peak)
