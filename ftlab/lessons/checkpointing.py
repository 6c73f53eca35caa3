"""Gradient (activation) checkpointing, measured: what it saves, what it costs, and its traps.

Checkpointing keeps only each decoder layer's input during the forward pass and recomputes
the layer's inside during the backward pass. The activation memory then grows with the
number of layers times one hidden state, instead of with everything every layer computes;
the price is roughly one extra forward pass of compute.
"""
from __future__ import annotations

import time
import warnings
from typing import Any, Sequence

import torch
from torch.utils.checkpoint import checkpoint

from ftlab.config.run_config import RunConfig
from ftlab.memory import measure_training_step
from ftlab.setup.models import load_model


def random_batch(batch_size: int, seq_len: int, vocab_size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Token ids with labels = inputs: every position is trained, no padding (a full-size step)."""
    ids = torch.randint(0, vocab_size, (batch_size, seq_len), generator=torch.Generator().manual_seed(seed))
    return {"input_ids": ids, "labels": ids.clone()}


def activation_sweep(config: RunConfig, seq_lens: Sequence[int], batch_sizes: Sequence[int],
                     repeats: int = 2) -> list[dict[str, Any]]:
    """For each (checkpointing, batch, seq_len): exact activation bytes and the step time.

    The step time is the median of ``repeats`` forward+backward passes after one warm-up,
    measured without the activation meter.
    """
    rows = []
    for ckpt in (False, True):
        model, tokenizer = load_model(config.replace(gradient_checkpointing=ckpt))
        vocab = model.get_input_embeddings().num_embeddings
        for batch_size in batch_sizes:
            for seq_len in seq_lens:
                batch = random_batch(batch_size, seq_len, vocab)
                mem = measure_training_step(model, batch)
                model.zero_grad(set_to_none=True)
                times = []
                for _ in range(repeats):
                    start = time.perf_counter()
                    model(**batch).loss.backward()
                    times.append(time.perf_counter() - start)
                    model.zero_grad(set_to_none=True)
                rows.append({"gradient_checkpointing": ckpt, "batch_size": batch_size, "seq_len": seq_len,
                             "activations": mem.activations, "step_time": sorted(times)[len(times) // 2]})
    return rows


class RecomputeInBackward(torch.autograd.Function):
    """Checkpointing of one block, by hand: what ``torch.utils.checkpoint`` does, in a few lines.

    The forward runs the block under ``no_grad``, so autograd saves nothing inside it, and
    keeps only the block's input. The backward runs the block again on that input, this time
    recording a graph, and pushes the incoming gradient through it. The block's parameters
    are passed in as inputs so that autograd hands their gradients back. This is the
    reentrant design (a backward inside the backward); a test checks its gradients against
    ``torch.utils.checkpoint`` and the plain block.
    """

    @staticmethod
    def forward(ctx, block, x, *params):  # type: ignore[override]
        ctx.block = block
        ctx.save_for_backward(x)  # the only tensor kept for backward
        with torch.no_grad():
            return block(x)

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        x = x.detach().requires_grad_(x.requires_grad)
        params = list(ctx.block.parameters())
        with torch.enable_grad():
            out = ctx.block(x)  # the forward again, now keeping what backward needs
        wanted = [t for t in (x, *params) if t.requires_grad]
        grads = iter(torch.autograd.grad(out, wanted, grad_out))
        return (None, *[next(grads) if t.requires_grad else None for t in (x, *params)])


def recompute_in_backward(block: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``block(x)`` checkpointed by :class:`RecomputeInBackward`."""
    return RecomputeInBackward.apply(block, x, *block.parameters())


def reentrant_trap(seed: int = 0) -> dict[str, float]:
    """The classic LoRA + checkpointing trap, from scratch with ``torch.utils.checkpoint``.

    A frozen embedding feeds a checkpointed block that holds a frozen weight plus a small
    trainable adapter (a LoRA stand-in). With *reentrant* checkpointing the block's
    recomputation only builds a graph if one of its tensor inputs requires grad; the frozen
    embedding's output does not, so the adapter silently gets no gradient at all. Making the
    embedding output require grad (what ``enable_input_require_grads`` does) fixes it, and
    non-reentrant checkpointing never had the problem. Returns the adapter's gradient norm
    per setup (0.0 = no gradient).
    """
    gen = torch.Generator().manual_seed(seed)
    embed = torch.nn.Embedding(50, 16)
    frozen = torch.nn.Linear(16, 16)
    adapter = torch.nn.Linear(16, 16, bias=False)
    with torch.no_grad():
        embed.weight.copy_(torch.randn(50, 16, generator=gen))
        adapter.weight.copy_(torch.randn(16, 16, generator=gen) * 0.1)
    embed.requires_grad_(False)
    frozen.requires_grad_(False)
    ids = torch.randint(0, 50, (4, 8), generator=gen)

    def block(h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(frozen(h) + adapter(h))

    out: dict[str, float] = {}
    for name, reentrant, input_grads in (("reentrant", True, False),
                                         ("reentrant + input requires grad", True, True),
                                         ("non-reentrant", False, False)):
        adapter.zero_grad(set_to_none=True)
        hidden = embed(ids)
        if input_grads:
            hidden.requires_grad_(True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns that no input requires grad: that is the trap
            loss = checkpoint(block, hidden, use_reentrant=reentrant).pow(2).mean()
        if loss.requires_grad:
            loss.backward()
        grad = adapter.weight.grad
        out[name] = float(grad.norm()) if grad is not None else 0.0
    return out


def reentrant_symptoms(seed: int = 0) -> tuple[str, str]:
    """What a learner sees when they fall into the trap of :func:`reentrant_trap` without
    ftlab hiding it: the warning ``torch.utils.checkpoint`` gives when no input requires
    grad, and the error ``backward()`` raises when nothing in the loss requires grad (the
    whole model frozen behind a reentrant checkpoint). Returns (warning, error), the texts
    as PyTorch words them, so they can be searched for."""
    gen = torch.Generator().manual_seed(seed)
    frozen = torch.nn.Linear(16, 16).requires_grad_(False)
    hidden = torch.randn(4, 16, generator=gen)  # a frozen embedding's output: requires_grad is False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loss = checkpoint(frozen, hidden, use_reentrant=True).pow(2).mean()
    try:
        loss.backward()
    except RuntimeError as err:
        error = str(err)
    else:  # pragma: no cover - PyTorch would have to change its reentrant checkpoint
        error = ""
    return (str(caught[0].message) if caught else ""), error


def library_guards_input_grads(config: RunConfig) -> bool:
    """Whether transformers made the input embeddings' output require grad when checkpointing
    was enabled (v5 does this for every model, so the reentrant trap cannot happen through it)."""
    model, _ = load_model(config.replace(gradient_checkpointing=True))
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(base, "_require_grads_hook", None) is not None
