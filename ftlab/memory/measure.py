"""Training memory, measured exactly from the tensors themselves, on any device.

A training step holds four kinds of memory: the weights, their gradients, the optimizer
state (AdamW keeps two fp32 moments per trainable weight), and the activations the
forward pass saves for the backward pass. The first three are read off the tensors. The
activations are counted with ``torch.autograd.graph.saved_tensors_hooks``: every tensor
autograd saves for backward passes through our hook, and we sum the bytes of the distinct
storages (views share storage; weights saved by a matmul are not activations). This is
deterministic and works on a CPU, where no allocator statistics exist, and it shows
exactly what gradient checkpointing removes. On CUDA the allocator's peak is recorded too.
"""
from __future__ import annotations

from typing import Any, Iterable

import torch

from ftlab.setup.models import count_parameters
from ftlab.memory.breakdown import MemoryBreakdown, MiB


def _storage_key(t: torch.Tensor) -> tuple[int, int]:
    storage = t.untyped_storage()
    return storage.data_ptr(), storage.nbytes()


def tensor_bytes(t: torch.Tensor) -> int:
    """Bytes a parameter really occupies, including bitsandbytes 4-bit quantization constants."""
    total = t.numel() * t.element_size()
    state = getattr(t, "quant_state", None)
    if state is not None:
        total += sum(x.numel() * x.element_size() for x in _quant_state_tensors(state))
    return total


def _quant_state_tensors(state: Any) -> Iterable[torch.Tensor]:
    for name in ("absmax", "code", "offset"):
        value = getattr(state, name, None)
        if isinstance(value, torch.Tensor):
            yield value
    nested = getattr(state, "state2", None)
    if nested is not None:
        yield from _quant_state_tensors(nested)


def _int8_row_scales(model: torch.nn.Module) -> Iterable[torch.Tensor]:
    """LLM.int8 keeps one fp32 scale per output row (``SCB``) beside each int8 matrix. It is
    not a parameter: bitsandbytes hangs it on the weight until the layer's first forward, then
    moves it to the layer's matmul ``state``; look in both places."""
    for module in model.modules():
        for holder in (getattr(module, "weight", None), getattr(module, "state", None)):
            scales = getattr(holder, "SCB", None)
            if isinstance(scales, torch.Tensor):
                yield scales


def weight_bytes(model: torch.nn.Module) -> int:
    """All parameters with their quantization constants, each storage counted once (tied
    embeddings are one tensor; a LoRA wrapper and its base layer share one ``SCB``)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for t in (*model.parameters(), *_int8_row_scales(model)):
        key = _storage_key(t)
        if key not in seen:
            seen.add(key)
            total += tensor_bytes(t)
    return total


def gradient_bytes(model: torch.nn.Module) -> int:
    return sum(p.grad.numel() * p.grad.element_size() for p in model.parameters() if p.grad is not None)


def optimizer_state_bytes(optimizer: torch.optim.Optimizer | None) -> int:
    """Every tensor the optimizer keeps per parameter (moments, 8-bit codes and scales...)."""
    if optimizer is None:
        return 0
    inner = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps the real optimizer
    total = 0
    for state in inner.state.values():
        for value in state.values():
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                total += value.numel() * value.element_size()
    return total


class ActivationMeter:
    """Context manager summing the bytes autograd saves for backward inside it.

    Parameters are excluded (a linear layer saves its weight, which is already counted as
    weights); each distinct storage is counted once.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self._param_storages = {_storage_key(p)[0] for p in model.parameters()}
        self._seen: set[tuple[int, int]] = set()
        self.bytes = 0
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        if isinstance(t, torch.Tensor) and t.layout == torch.strided and t.device.type != "meta":
            key = _storage_key(t)
            if key[0] not in self._param_storages and key not in self._seen:
                self._seen.add(key)
                self.bytes += key[1]
        return t

    def __enter__(self) -> "ActivationMeter":
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._hooks.__exit__(*exc)


def measure_training_step(model: torch.nn.Module, batch: dict[str, torch.Tensor],
                          optimizer: torch.optim.Optimizer | None = None) -> MemoryBreakdown:
    """One forward + backward (+ optimizer step if given) with every kind of memory measured.

    Gradients are left on the model afterwards only if no optimizer was given.
    """
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items()}
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
    model.train()
    with ActivationMeter(model) as meter:
        loss = model(**batch).loss
    loss.backward()
    grads = gradient_bytes(model)
    if optimizer is not None:
        optimizer.step()
    peak = torch.cuda.max_memory_allocated(device) if cuda else None
    result = MemoryBreakdown(weights=weight_bytes(model), gradients=grads,
                             optimizer=optimizer_state_bytes(optimizer), activations=meter.bytes, cuda_peak=peak)
    if optimizer is not None:
        optimizer.zero_grad(set_to_none=True)
    return result


def describe_model(model: torch.nn.Module) -> dict[str, object]:
    """The facts chapter 00 shows about a model: size, shape, dtype, memory of the weights."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    cfg = base.config
    total, trainable = count_parameters(model)
    return {"architecture": type(base).__name__, "parameters": total, "trainable_parameters": trainable,
            "layers": cfg.num_hidden_layers, "hidden_size": cfg.hidden_size, "attention_heads": cfg.num_attention_heads,
            "kv_heads": getattr(cfg, "num_key_value_heads", cfg.num_attention_heads), "vocab_size": cfg.vocab_size,
            "dtype": str(next(base.parameters()).dtype).replace("torch.", ""),
            "weight_MiB": round(weight_bytes(model) / MiB, 1)}
