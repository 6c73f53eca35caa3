"""The peak of live tensor memory through a training step, measured exactly on a CPU.

:class:`~ftlab.memory.measure.ActivationMeter` counts what the forward pass *saves* for
backward. That is not the step's peak: during backward the gradient of the logits exists
beside the saved log-softmax, gradients accumulate in ``.grad``, and with gradient
checkpointing each decoder block is recomputed, its activations alive again for a while.
So checkpointing cuts the peak by less than it cuts the saved bytes.

:class:`LiveTensors` counts memory at the level of aten ops with a ``TorchDispatchMode``:
every op's output storage that is not one of its inputs' (views and in-place ops allocate
nothing) is a new allocation; a ``weakref.finalize`` on the storage's Python object, which
PyTorch keeps alive exactly as long as the storage itself, records when it is freed. This
is exact and deterministic on a CPU, where no allocator statistics exist, and unlike the
profiler's allocator events it names the storages, so gradients can be told apart. It sees
tensors only: scratch buffers a kernel allocates and frees inside one op are not counted.
"""
from __future__ import annotations

import itertools
import weakref
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from ftlab.memory.measure import ActivationMeter


def _storages(tree: Any) -> Iterator[torch.UntypedStorage]:
    for t in tree_leaves(tree):
        if isinstance(t, torch.Tensor) and t.layout == torch.strided and t.device.type != "meta":
            yield t.untyped_storage()


class LiveTensors(TorchDispatchMode):
    """Records every storage allocated inside it, and when it dies, as an ordered event list.

    ``events`` holds ``(storage id, +bytes)`` at a storage's birth and ``(storage id, -bytes)``
    when it is freed; their running sum is the live bytes above what existed on entry
    (weights, the batch: those storages are never counted). Ids, not addresses, name the
    storages, because a freed address is soon reused.
    """

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[int, int]] = []
        self._alive: dict[int, int] = {}  # data_ptr -> id of the storage born here that lives there
        self._ids = itertools.count()
        self._finalizers: list[weakref.finalize] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        inputs = {s.data_ptr() for s in _storages((args, kwargs))}
        for storage in _storages(out):
            ptr, size = storage.data_ptr(), storage.nbytes()
            if size and ptr not in inputs and ptr not in self._alive:
                sid = next(self._ids)
                self._alive[ptr] = sid
                self.events.append((sid, size))
                self._finalizers.append(weakref.finalize(storage, self._freed, ptr, sid, size))
        return out

    def _freed(self, ptr: int, sid: int, size: int) -> None:
        if self._alive.get(ptr) == sid:
            del self._alive[ptr]
        self.events.append((sid, -size))

    def storage_id(self, t: torch.Tensor) -> int | None:
        """The id of ``t``'s storage if it was allocated inside this mode and is alive."""
        return self._alive.get(t.untyped_storage().data_ptr())

    def __exit__(self, *exc: object) -> None:
        for f in self._finalizers:  # storages freed after the measurement are not part of it
            f.detach()
        super().__exit__(*exc)


@dataclass(frozen=True)
class StepPeak:
    """Bytes of one forward + backward, all above what was alive before it (weights, batch).

    ``saved``: bytes autograd saved for backward (what :class:`ActivationMeter` counts).
    ``forward`` / ``backward``: the most bytes alive at once during each pass (gradients included).
    ``gradients``: the ``.grad`` tensors the step leaves (they are alive from their creation on).
    ``activation_peak``: the most bytes alive at once that are not gradients: saved activations
    plus what backward holds beside them (the logits' gradient, a recomputed block, the
    gradients flowing through it, a tied embedding's first gradient, which autograd holds
    until the embedding's own arrives); what the predictor's activations + transient estimate.
    """

    saved: int
    forward: int
    backward: int
    gradients: int
    activation_peak: int

    @property
    def peak(self) -> int:
        """The most bytes alive at once in the step: what a device must hold beyond weights and batch."""
        return max(self.forward, self.backward)


def _max_running(deltas: Iterator[int], start: int = 0) -> tuple[int, int]:
    """(the largest running total, the final total) of ``start`` plus ``deltas``."""
    total = top = start
    for d in deltas:
        total += d
        top = max(top, total)
    return top, total


def measure_step_peak(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> StepPeak:
    """One training forward (``model(**batch).loss``) and backward, its memory measured over time.

    Gradients are set to None first, so the step creates them as a first micro-batch does
    (an accumulating step would add into existing ones instead), and again afterwards. The
    model's output object is dropped right after the loss is read, as ``Trainer`` does, so
    the logits live only as long as autograd needs them.
    """
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items()}
    model.train()
    model.zero_grad(set_to_none=True)
    with LiveTensors() as live:
        with ActivationMeter(model) as meter:
            loss = model(**batch).loss
        split = len(live.events)
        loss.backward()
        grads = {live.storage_id(p.grad): p.grad.untyped_storage().nbytes()
                 for p in model.parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    forward, at_split = _max_running(d for _, d in live.events[:split])
    backward, _ = _max_running((d for _, d in live.events[split:]), at_split)
    activation_peak, _ = _max_running(0 if sid in grads else d for sid, d in live.events)
    return StepPeak(saved=meter.bytes, forward=forward, backward=backward, gradients=sum(grads.values()),
                    activation_peak=activation_peak)
