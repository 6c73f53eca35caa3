"""Data parallelism by hand: what DDP does to the gradients, in a few lines.

Every rank computes the gradients of its own share of the batch; the step must use the
gradient of the whole batch. :func:`average_gradients` does it the short way (one all-reduce
of all gradients flattened into one vector, divided by the number of ranks);
:func:`ring_all_reduce` writes the all-reduce itself out as NCCL's ring does, with plain
sends and receives. The worker checks both against DDP's gradients.

Averaging the ranks' gradients gives the whole batch's gradient only if every rank's loss
averages the same number of tokens. With prompt-masked SFT data (labels -100 on prompt
tokens) the ranks' counts differ, and the mean of per-rank means weights a token on a rank
with few labelled tokens more than one on a busy rank: chapter 05's accumulation lesson,
across ranks. :func:`token_mean_loss` is the fix: each rank divides its summed token losses
by the count of labelled tokens on *all* ranks (:func:`global_token_count`, one all-reduce of
an integer). That is what ``TrainingArguments(average_tokens_across_devices=True)`` makes
Trainer do.

They live here rather than in :mod:`ftlab.lessons` because the worker processes run them,
and the training layer never imports a lesson.
"""
from __future__ import annotations

import torch
import torch.distributed as dist


def flat_gradients(model: torch.nn.Module) -> torch.Tensor:
    """Every gradient of ``model``, in parameter order, as one vector (a copy)."""
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def average_gradients(model: torch.nn.Module) -> None:
    """Replace each rank's gradients with the average over ranks: sum with one all-reduce of
    the flattened gradients, divide by the world size, copy back."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    flat = flat_gradients(model)
    dist.all_reduce(flat)  # the sum over ranks, the same on every rank afterwards
    flat /= dist.get_world_size()
    for g, part in zip(grads, flat.split([g.numel() for g in grads])):
        g.copy_(part.view_as(g))


def _exchange(send: torch.Tensor, receive_like: torch.Tensor) -> torch.Tensor:
    """Send ``send`` to the next rank on the ring while receiving a tensor from the previous one."""
    rank, n = dist.get_rank(), dist.get_world_size()
    received = torch.empty_like(receive_like)
    for request in (dist.isend(send.contiguous(), (rank + 1) % n), dist.irecv(received, (rank - 1) % n)):
        request.wait()
    return received


def ring_all_reduce(flat: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The sum of ``flat`` over all ranks, as a ring computes it, and the bytes this rank sent.

    Cut the vector into ``n`` chunks. Reduce-scatter: ``n - 1`` times, send one chunk to the
    next rank and add the chunk the previous rank sent; afterwards rank ``r`` holds the full
    sum of chunk ``(r + 1) % n``. All-gather: ``n - 1`` times, pass the finished chunks on.
    Each rank sends ``2 (n - 1)`` chunks of ``1/n`` of the vector, whatever ``n`` is: why an
    all-reduce costs about twice the gradients' bytes per rank however many GPUs there are.
    """
    rank, n = dist.get_rank(), dist.get_world_size()
    chunks = list(flat.clone().tensor_split(n))
    sent = 0
    for step in range(n - 1):  # reduce-scatter
        out, into = (rank - step) % n, (rank - step - 1) % n
        chunks[into] += _exchange(chunks[out], chunks[into])
        sent += chunks[out].numel() * chunks[out].element_size()
    for step in range(n - 1):  # all-gather
        out, into = (rank + 1 - step) % n, (rank - step) % n
        chunks[into] = _exchange(chunks[out], chunks[into])
        sent += chunks[out].numel() * chunks[out].element_size()
    return torch.cat(chunks), sent


IGNORE_INDEX = -100
"""The label of a token without loss (prompt tokens, padding), as transformers uses it."""


def labelled_tokens(labels: torch.Tensor) -> int:
    """Tokens that carry a loss in a causal LM batch: labels that are not -100 after
    transformers' shift by one (the first position predicts nothing)."""
    return int((labels[..., 1:] != IGNORE_INDEX).sum())


def global_token_count(labels: torch.Tensor) -> int:
    """The tokens with a loss on every rank together: one all-reduce (a sum) of this rank's count."""
    count = torch.tensor(labelled_tokens(labels), dtype=torch.int64)
    dist.all_reduce(count)
    return int(count)


def token_mean_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], global_tokens: int,
                    world_size: int) -> torch.Tensor:
    """This rank's loss, so that averaging the ranks' gradients gives the token mean of the whole batch.

    The model sums its token losses and divides by ``global_tokens`` (transformers' loss takes
    ``num_items_in_batch`` for exactly this); the result is multiplied by ``world_size``
    because the gradient all-reduce (DDP's, or :func:`average_gradients`) divides the sum by
    it. Trainer does the same two things when ``average_tokens_across_devices`` is on: it
    gathers ``num_items_in_batch`` across ranks and multiplies the loss by the process count.
    """
    return model(**batch, num_items_in_batch=torch.tensor(global_tokens)).loss * world_size
