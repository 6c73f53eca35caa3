"""The logits floor, and how a chunked cross-entropy removes it.

A causal LM's loss turns every token's hidden state into a score for every vocabulary entry
and takes a softmax over them. transformers computes those logits whole, upcasts them to
fp32 and calls ``F.cross_entropy``, whose log-softmax saves a tokens x vocab fp32 tensor for
backward: at a 128k vocabulary that is 1 GiB per 2048 tokens, the largest single activation
of a step, and gradient checkpointing of the decoder layers does not touch it. Checkpointing
the loss itself saves only its input, but backward recomputes the same full logits and forms
their gradient whole, so the peak stays.

:class:`ChunkedCrossEntropy` is the way out, written out: the head's matmul and the loss in
one function that walks the vocabulary in chunks. Forward keeps a running log-sum-exp per
token (and the target's logit) and throws each chunk's logits away; it saves only its input
hidden states, the labels and that log-sum-exp. Backward recomputes one chunk of logits at a
time, turns it into ``softmax - one_hot`` from the saved log-sum-exp, and adds that chunk's
share of both gradients. No tokens x vocab tensor ever exists. On GPUs this is what Liger
Kernel's fused linear cross-entropy and Apple's Cut Cross-Entropy do with Triton kernels
(Cut Cross-Entropy also skips chunks whose probabilities vanish); here it is plain torch, so
every line can be read and checked against ``F.cross_entropy``.

:func:`loss_memory` measures the three ways on CPU with ftlab's exact meters (saved tensors,
and the peak of live tensors through backward); ``ftlab.memory`` predicts the chunked loss as
``loss="chunked"`` (``fits_table(loss="chunked")``).
"""
from __future__ import annotations

import functools
from types import SimpleNamespace
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ftlab.errors import ArgumentError
from ftlab.memory.fits import LOSS_CHUNK
from ftlab.memory.peak import measure_step_peak

IGNORE_INDEX = -100
"""Labels that carry no loss (prompt tokens, padding), as transformers and ``F.cross_entropy`` use them."""


class ChunkedCrossEntropy(torch.autograd.Function):
    """``mean(cross_entropy(hidden @ weight.T, labels))`` over the labelled tokens, with the
    logits formed ``chunk`` vocabulary entries at a time in forward and again in backward.

    Inputs: ``hidden`` (tokens x hidden), ``weight`` (vocab x hidden, the output head),
    ``labels`` (tokens, :data:`IGNORE_INDEX` for tokens without loss), ``chunk`` (int). It
    computes in fp32 whatever the inputs' dtype, as transformers upcasts the logits, and
    outside autocast, so a bf16 run gets the same arithmetic. With no labelled token the
    loss is 0 (``F.cross_entropy`` would give nan).
    """

    @staticmethod
    def forward(ctx: Any, hidden: Tensor, weight: Tensor, labels: Tensor, chunk: int) -> Tensor:
        with torch.autocast(hidden.device.type, enabled=False):
            h32 = hidden.float()
            lse = torch.full((hidden.shape[0],), float("-inf"), device=hidden.device)
            target = torch.zeros(hidden.shape[0], device=hidden.device)
            valid = labels != IGNORE_INDEX
            for start in range(0, weight.shape[0], chunk):
                logits = h32 @ weight[start:start + chunk].float().T  # one chunk of logits, freed next round
                lse = torch.logaddexp(lse, torch.logsumexp(logits, dim=1))
                rows = (valid & (labels >= start) & (labels < start + logits.shape[1])).nonzero().squeeze(1)
                target[rows] = logits[rows, labels[rows] - start]
            count = int(valid.sum())
            loss = ((lse - target) * valid).sum() / max(count, 1)
        ctx.save_for_backward(hidden, weight, labels, lse)
        ctx.chunk, ctx.count = chunk, count
        return loss

    @staticmethod
    def backward(ctx: Any, grad_loss: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:
        hidden, weight, labels, lse = ctx.saved_tensors
        need_hidden, need_weight = ctx.needs_input_grad[:2]
        with torch.autocast(hidden.device.type, enabled=False):
            h32 = hidden.float()
            valid = labels != IGNORE_INDEX
            scale = (grad_loss.float() / max(ctx.count, 1)) * valid  # per token: d loss / d its own loss
            grad_hidden = torch.zeros_like(h32) if need_hidden else None
            grad_weight = torch.zeros(weight.shape, device=weight.device) if need_weight else None
            for start in range(0, weight.shape[0], ctx.chunk):
                w = weight[start:start + ctx.chunk].float()
                g = torch.exp(h32 @ w.T - lse[:, None])  # this chunk's softmax, from the saved log-sum-exp
                rows = (valid & (labels >= start) & (labels < start + w.shape[0])).nonzero().squeeze(1)
                g[rows, labels[rows] - start] -= 1  # softmax - one_hot: d loss / d logits
                g *= scale[:, None]
                if grad_hidden is not None:
                    grad_hidden += g @ w
                if grad_weight is not None:
                    grad_weight[start:start + w.shape[0]] = g.T @ h32
        return (grad_hidden.to(hidden.dtype) if grad_hidden is not None else None,
                grad_weight.to(weight.dtype) if grad_weight is not None else None, None, None)


def chunked_cross_entropy(hidden: Tensor, weight: Tensor, labels: Tensor, chunk_size: int = LOSS_CHUNK) -> Tensor:
    """The mean cross-entropy of ``hidden @ weight.T`` against ``labels`` without full logits.

    ``hidden`` is (..., hidden) and ``labels`` the matching (...) ids; both are flattened (a
    view, so the saved hidden state is the caller's own storage)."""
    if not (isinstance(chunk_size, int) and chunk_size >= 1):
        raise ArgumentError("chunked_cross_entropy", "chunk_size", chunk_size,
                            "an int >= 1: vocabulary entries whose logits exist at once")
    return ChunkedCrossEntropy.apply(hidden.reshape(-1, hidden.shape[-1]), weight, labels.reshape(-1), chunk_size)


def plain_cross_entropy(hidden: Tensor, weight: Tensor, labels: Tensor) -> Tensor:
    """What transformers computes: the whole logits, upcast to fp32, then ``F.cross_entropy``."""
    logits = (hidden @ weight.T).float()
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX)


def checkpointed_cross_entropy(hidden: Tensor, weight: Tensor, labels: Tensor) -> Tensor:
    """:func:`plain_cross_entropy` under activation checkpointing: only its inputs are saved,
    and backward recomputes the whole logits."""
    return checkpoint(plain_cross_entropy, hidden, weight, labels, use_reentrant=False)


LOSSES: dict[str, Callable[[Tensor, Tensor, Tensor], Tensor]] = {
    "cross_entropy": plain_cross_entropy, "checkpointed": checkpointed_cross_entropy,
    "chunked": chunked_cross_entropy}
"""The three ways to compute a causal LM's loss that :func:`loss_memory` measures."""


def causal_lm_chunked_loss(model: nn.Module, input_ids: Tensor, labels: Tensor,
                           chunk_size: int = LOSS_CHUNK) -> Tensor:
    """A transformers causal LM's training loss with its head and loss replaced by
    :func:`chunked_cross_entropy`: the decoder's final hidden states, the labels shifted as
    transformers shifts them (padded with -100, then moved one left), the head's weight.
    Equal to ``model(input_ids=..., labels=...).loss``; what the predictor's ``loss="chunked"``
    is checked against."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = base.model(input_ids=input_ids).last_hidden_state
    shift = F.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:].contiguous()
    return chunked_cross_entropy(hidden, base.get_output_embeddings().weight, shift, chunk_size)


class LossHead(nn.Module):
    """A projection into ``hidden`` features, then the output head and a loss from :data:`LOSSES`:
    the smallest model whose step shows the logits floor (the projection stands for the
    decoder, so the hidden state is an activation that needs a gradient)."""

    def __init__(self, hidden: int, vocab: int, loss: str, chunk_size: int = LOSS_CHUNK, seed: int = 0) -> None:
        super().__init__()
        if loss not in LOSSES:
            raise ArgumentError("LossHead", "loss", loss, f"one of {', '.join(LOSSES)}")
        torch.manual_seed(seed)
        self.proj = nn.Linear(hidden, hidden, bias=False)
        self.head = nn.Linear(hidden, vocab, bias=False)
        self.compute = functools.partial(chunked_cross_entropy, chunk_size=chunk_size) if loss == "chunked" else LOSSES[loss]

    def forward(self, features: Tensor, labels: Tensor) -> SimpleNamespace:
        """``.loss`` as a transformers model's output has it (what ftlab's step meters read)."""
        return SimpleNamespace(loss=self.compute(self.proj(features), self.head.weight, labels))


def loss_memory(tokens: int = 1024, hidden: int = 64, vocab: int = 32768, chunk_size: int = 4096,
                seed: int = 0) -> list[dict[str, Any]]:
    """Each loss of :data:`LOSSES` in one training step of a :class:`LossHead`, measured exactly on
    CPU: ``saved`` (bytes autograd keeps for backward) and ``activation_peak`` (the most
    non-gradient bytes alive at once, backward's recomputation and the logits' gradient
    included), beside ``logits_fp32``, the bytes of the whole fp32 logits. A quarter of the
    labels are -100, as prompt tokens are."""
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(tokens, hidden, generator=generator)
    labels = torch.randint(0, vocab, (tokens,), generator=generator)
    labels[: tokens // 4] = IGNORE_INDEX
    rows = []
    for name in LOSSES:
        model = LossHead(hidden, vocab, name, chunk_size, seed)
        peak = measure_step_peak(model, {"features": features, "labels": labels})
        rows.append({"loss": name, "saved": peak.saved, "activation_peak": peak.activation_peak,
                     "logits_fp32": tokens * vocab * 4})
    return rows
